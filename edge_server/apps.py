"""Deployed apps on disk: each app's versions, the current one, and the files they hold by hash.

Layout, under ``DATA_DIR/apps/``::

    my_app/v3/            the files of version 3, as the bundle named them; this
                          directory goes on the workers' sys.path
    my_app/v3.json        what version 3 is: its manifest, the modules it serves,
                          their functions and fingerprints, who deployed it and when
    my_app/current        "3": the version served
    .staging-<hex>/       a deployment being unpacked (removed if it fails, and at start)

A version directory appears whole (a staging directory is renamed into place)
and only after it has passed its checks; its metadata file is written after
it, so a directory without one is an interrupted deployment, removed at the
next start. Files are written read-only. Old versions beyond ``keep`` go when
a new one arrives, except the current one and any a live worker still uses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload._exceptions import DeployRefused
from offload.human import duration, parse_duration, parse_size, size
from offload.runtime.bundles import Entry, top_level

log = logging.getLogger("edge_server.apps")

STAGING = ".staging-"


@dataclass(frozen=True)
class Version:
    """One deployed version of an app."""

    app: str
    number: int
    root: Path  # the directory that goes on sys.path
    files: tuple[Entry, ...]
    serve: tuple[str, ...]  # the modules whose @offload functions are served
    modules: tuple[str, ...]  # every module of the bundle (their classes may be arguments)
    functions: dict[str, str]  # wire name -> fingerprint (hex)
    deployed_at: float
    deployer: str  # the deploying client's public key (Z85)
    digest: str  # of the manifest and serve list: the same bundle has the same one

    @property
    def top(self) -> list[str]:
        """The top-level module names this version adds to sys.path."""
        return top_level(self.files)

    @property
    def size(self) -> int:
        """Bytes of its files."""
        return sum(e.size for e in self.files)

    def to_json(self) -> dict[str, Any]:
        """Its metadata file's contents."""
        return {
            "app": self.app,
            "version": self.number,
            "files": [e.as_json() for e in self.files],
            "serve": list(self.serve),
            "modules": list(self.modules),
            "functions": self.functions,
            "deployed_at": self.deployed_at,
            "deployer": self.deployer,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any], root: Path) -> Version:
        """A version from its metadata file (``root``: its directory)."""
        return cls(
            app=str(body["app"]),
            number=int(body["version"]),
            root=root,
            files=tuple(Entry(str(p), str(h), int(s)) for p, h, s, _ in body["files"]),
            serve=tuple(str(m) for m in body["serve"]),
            modules=tuple(str(m) for m in body["modules"]),
            functions={str(k): str(v) for k, v in body["functions"].items()},
            deployed_at=float(body["deployed_at"]),
            deployer=str(body["deployer"]),
            digest=str(body["digest"]),
        )

    def described(self) -> dict[str, Any]:
        """How a deploy or rollback answer names it."""
        return {
            "app": self.app,
            "version": self.number,
            "functions": dict(sorted(self.functions.items())),
            "serve": list(self.serve),
            "files": len(self.files),
            "bytes": self.size,
            "digest": self.digest,
        }

    def listing(self) -> dict[str, Any]:
        """How ``offload apps`` shows it."""
        return {
            "version": self.number,
            "deployed_at": self.deployed_at,
            "deployer": self.deployer,
            "files": len(self.files),
            "bytes": self.size,
            "digest": self.digest,
            "serve": list(self.serve),
            "functions": dict(sorted(self.functions.items())),
        }


class AppStore:
    """The apps deployed under ``directory``: their versions, and the current one of each."""

    def __init__(self, directory: Path, keep: int = 5) -> None:
        self.directory = directory
        self.keep = keep
        self._versions: dict[str, dict[int, Version]] = {}
        #: The version each app serves.
        self.current: dict[str, Version] = {}

    def load(self) -> None:
        """Read what is on disk; remove interrupted deployments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in self.directory.iterdir():
            if entry.name.startswith(STAGING):
                remove(entry)
                log.info("removed an interrupted deployment: %s", entry.name)
            elif entry.is_dir() and not entry.name.startswith(".") and not entry.is_symlink():
                self._load_app(entry)

    def _load_app(self, directory: Path) -> None:
        versions: dict[int, Version] = {}
        for meta in directory.glob("v*.json"):
            root = meta.with_suffix("")
            try:
                version = Version.from_json(json.loads(meta.read_text()), root)
                if version.app != directory.name or root.name != f"v{version.number}":
                    raise ValueError("it names another app or version")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("ignoring %s: unreadable (%s)", meta, exc)
                continue
            if not root.is_dir():
                log.error("ignoring %s: its directory is gone", meta)
                continue
            versions[version.number] = version
        for root in directory.glob("v*"):
            if root.is_dir() and not root.with_suffix(".json").exists():
                remove(root)  # renamed into place, its metadata never written
                log.info("removed an interrupted deployment: %s", root)
        if not versions:
            return
        self._versions[directory.name] = versions
        number = None
        with contextlib.suppress(OSError, ValueError):
            number = int((directory / "current").read_text().strip())
        if number not in versions:
            number = max(versions)
        self.current[directory.name] = versions[number]

    # -- what is there ----------------------------------------------------------------------

    def versions(self, app: str) -> list[Version]:
        """The versions of ``app`` on disk, newest first."""
        return sorted(self._versions.get(app, {}).values(), key=lambda v: -v.number)

    def apps(self) -> list[str]:
        """The apps with at least one version."""
        return sorted(self._versions)

    def known(self) -> dict[str, Path]:
        """A file on disk holding each hash (what need not travel again)."""
        held: dict[str, Path] = {}
        for versions in self._versions.values():
            for version in versions.values():
                for entry in version.files:
                    held.setdefault(entry.sha256, version.root / entry.path)
        return held

    def listing(
        self, modules: Sequence[str], fingerprints: Mapping[str, bytes]
    ) -> list[dict[str, Any]]:
        """Every app, for ``offload apps``: the ``--app`` ``modules``, then those deployed."""
        apps: list[dict[str, Any]] = []
        for module in modules:
            functions = {n: fp.hex() for n, fp in fingerprints.items() if n.split(":")[0] == module}
            apps.append(
                {
                    "app": module,
                    "source": "--app",
                    "current": None,
                    "versions": [],
                    "functions": dict(sorted(functions.items())),
                }
            )
        for app in self.apps():
            current = self.current.get(app)
            apps.append(
                {
                    "app": app,
                    "source": "deployed",
                    "current": current.number if current else None,
                    "versions": [v.listing() for v in self.versions(app)],
                    "functions": dict(sorted(current.functions.items())) if current else {},
                }
            )
        return apps

    def rollback(self, app: str, wanted: Any = None) -> tuple[Version, Version]:
        """(current, the version to go back to): the one before, or version ``wanted``."""
        current = self.current.get(app)
        if current is None:
            raise DeployRefused(f"no app {app!r} is deployed here")
        versions = self.versions(app)
        found = [
            v
            for v in versions
            if (v.number < current.number if wanted is None else v.number == wanted)
        ]
        if not found and wanted is None:
            raise DeployRefused(f"{app} version {current.number} is the oldest kept here")
        if not found:
            kept = ", ".join(str(v.number) for v in versions)
            raise DeployRefused(f"{app} has no version {str(wanted)[:20]} here (kept: {kept})")
        return current, found[0]

    def next_number(self, app: str) -> int:
        """The number a new version of ``app`` gets."""
        return max(self._versions.get(app, {}), default=0) + 1

    # -- changing it (a deployment's thread stages and installs; the loop switches) -----------

    def staging(self) -> Path:
        """A new, empty staging directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{STAGING}{secrets.token_hex(8)}"
        path.mkdir(mode=0o755)
        return path

    def install(self, staging: Path, version: Version) -> None:
        """Move a checked staging directory into place as ``version`` (its files read-only)."""
        app_dir = self.directory / version.app
        app_dir.mkdir(exist_ok=True)
        for entry in version.files:
            os.chmod(staging / entry.path, 0o444)
        os.rename(staging, version.root)
        try:
            write_atomically(
                app_dir / f"v{version.number}.json", json.dumps(version.to_json(), indent=1)
            )
        except BaseException:
            remove(version.root)
            raise

    def add(self, version: Version) -> None:
        """Know an installed version (on the event loop, after :meth:`install`)."""
        self._versions.setdefault(version.app, {})[version.number] = version

    def set_current(self, version: Version) -> None:
        """Serve ``version`` of its app from now on (and after a restart)."""
        write_atomically(self.directory / version.app / "current", f"{version.number}\n")
        self.current[version.app] = version

    def collect(self, app: str, in_use: set[Path]) -> list[Version]:
        """Forget ``app``'s versions beyond ``keep`` (never the current one or one in use)."""
        current = self.current.get(app)
        others = [v for v in self.versions(app) if v is not current]
        gone = [v for v in others[self.keep - 1 :] if v.root not in in_use]
        for version in gone:
            del self._versions[app][version.number]
        return gone

    def delete(self, version: Version) -> None:
        """Remove a version :meth:`collect` let go of from the disk."""
        with contextlib.suppress(OSError):
            os.unlink(self.directory / version.app / f"v{version.number}.json")
        remove(version.root)
        log.info(
            "removed %s version %d (older than the %d kept)", version.app, version.number, self.keep
        )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(path: Path) -> None:
    """Remove a directory tree this store wrote, read-only files and all."""

    def retry(func: Any, name: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o755)
            os.chmod(name, 0o644)
            func(name)

    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
        return
    shutil.rmtree(path, onerror=retry)


def now() -> float:
    """Wall-clock seconds (a version's ``deployed_at``)."""
    return time.time()


def add_arguments(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """``edge-server``'s options about deployed apps (``defaults``: a ServerConfig)."""
    parser.add_argument(
        "--deployers",
        metavar="DIR",
        help="directory of the public keys (*.key) of clients that may deploy apps here with "
        "offload deploy (needs --secret-key; default: no one may). Apps go to DATA_DIR/apps "
        "and new workers import them; those deployed before are served either way",
    )
    parser.add_argument(
        "--deploy-max-bytes",
        type=parse_size,
        default=defaults.deploy_max_bytes,
        metavar="SIZE",
        help=f"largest app a deployment may bring (default {size(defaults.deploy_max_bytes)})",
    )
    parser.add_argument(
        "--deploy-max-files",
        type=int,
        default=defaults.deploy_max_files,
        metavar="N",
        help="most files an app may have (default: %(default)s)",
    )
    parser.add_argument(
        "--deploy-keep",
        type=int,
        default=defaults.deploy_keep,
        metavar="N",
        help="versions of each app kept for offload deploy --rollback (default: %(default)s)",
    )
    parser.add_argument(
        "--deploy-check-seconds",
        type=parse_duration,
        default=defaults.deploy_check_seconds,
        metavar="DURATION",
        help="how long a new app version may take to import in the fresh interpreter that "
        f"checks it (default: {duration(defaults.deploy_check_seconds)})",
    )
