"""``offload``: the command line for users of edge servers.

``offload keys generate NAME [--dir DIR]`` writes a CurveZMQ key pair,
``NAME.key`` (public: give it to the server's operator, who puts it in the
directory of authorized keys) and ``NAME.key_secret`` (keep it; point
``OFFLOAD_CLIENT_KEY`` or ``client_key`` at it). A server's own pair is made
the same way; its public half is the clients' ``server_key``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq.auth


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offload", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="CurveZMQ keys").add_subparsers(
        dest="action", required=True
    )
    generate = keys.add_parser("generate", help="write NAME.key and NAME.key_secret")
    generate.add_argument("name")
    generate.add_argument("--dir", default=".", help="where to write them (default: here)")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{args.name}.key_secret"
    if secret.exists():
        print(f"offload: {secret} exists; not overwriting a secret key", file=sys.stderr)
        return 1
    public, secret_path = zmq.auth.create_certificates(str(directory), args.name)
    Path(secret_path).chmod(0o600)
    print(f"public key: {public}\nsecret key: {secret_path} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
