"""The servers a client knows of, and which of them it trusts.

Configured servers (``server``, ``backup_server``, a ``servers`` list) are
trusted as configured: their addresses (and ``server_key``) came from the
user. A server found on the LAN (:mod:`offload.discovery`) is trusted only
when the CurveZMQ key it advertises is one this client knows (a ``*.key`` in
``known_servers``, or ``server_key``), or, with ``insecure=True``, when it
advertises no key at all. An untrusted server is listed and never called:
anyone on a LAN can advertise anything, and the key is what CurveZMQ then
proves, so a server that claims a trusted key without holding it fails the
handshake.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

from ._exceptions import ConfigError
from .config import Config
from .discovery import Found
from .geo import distance_km, format_location, parse_location

log = logging.getLogger("offload")


@dataclass(frozen=True)
class Known:
    """One server: where it is, how the client knows it, and whether it may be called."""

    address: str
    role: str  # "server", "backup_server", "listed" (in ``servers``) or "discovered"
    trusted: bool
    why: str  # why it is (not) trusted
    key_file: str | None = None  # the server's public key file, to connect with CURVE
    found: Found | None = None  # its advertisement, if it was discovered

    @property
    def key(self) -> str | None:
        return self.found.key if self.found is not None else None

    def distance_km(self, config: Config) -> float | None:
        """The great-circle distance from ``config.location`` to the server, if both are known."""
        if config.location is None or self.found is None or self.found.location is None:
            return None
        return distance_km(parse_location(config.location), self.found.location)

    def holds(self, module: str, digest: str) -> bool | None:
        """Whether the server advertises app ``module`` at ``digest``; None: cannot tell."""
        if self.found is None:
            return None
        if module in self.found.apps:
            return self.found.apps[module] == digest
        return None if self.found.apps_digest else False

    def describe(self, config: Config) -> dict[str, object]:
        """The fields ``offload servers`` lists (before it asks the server anything)."""
        found = self.found
        distance = self.distance_km(config)
        return {
            "address": self.address,
            "role": self.role,
            "name": found.name if found else None,
            "site": found.site if found else None,
            "location": format_location(found.location) if found and found.location else None,
            "distance_km": round(distance, 1) if distance is not None else None,
            "trusted": self.trusted,
            "trust": self.why,
            "key": self.key,
        }


def known_keys(config: Config) -> dict[str, str]:
    """Public keys (Z85) this client trusts -> the file holding each."""
    files: list[Path] = []
    if config.known_servers:
        files += sorted(Path(config.known_servers).glob("*.key"))
    if config.server_key:
        files.append(Path(config.server_key))
    keys: dict[str, str] = {}
    for file in files:
        try:
            public, _ = zmq.auth.load_certificate(str(file))
        except (OSError, ValueError) as exc:
            log.warning("ignoring the server key file %s: %s", file, exc)
            continue
        keys.setdefault(public.decode(), str(file))
    return keys


def listing(config: Config, discovered: list[Found]) -> list[Known]:
    """Every configured or discovered server, configured ones first, one entry per address."""
    by_address: dict[str, Found] = {}
    for found in sorted(discovered, key=lambda f: f.name):
        by_address.setdefault(found.address, found)
    configured = [
        ("server", config.server),
        ("backup_server", config.backup_server),
        *(("listed", address) for address in config.static_servers),
    ]
    servers: dict[str, Known] = {}
    for role, address in configured:
        if address is not None and address not in servers:
            seen = by_address.pop(address) if address in by_address else None
            key_file = config.server_key if role == "server" else None
            if seen is not None and seen.key is not None and role != "server":
                key_file = known_keys(config).get(seen.key)
            servers[address] = Known(address, role, True, "configured", key_file, seen)
    keys = known_keys(config) if by_address else {}
    for address, found in by_address.items():
        if found.key is None:
            trusted = config.insecure
            why = "no key, insecure=True" if trusted else "no key; needs insecure=True"
            servers[address] = Known(address, "discovered", trusted, why, None, found)
        elif found.key in keys:
            key_file = keys[found.key]
            why = f"key in {Path(key_file).name}"
            servers[address] = Known(address, "discovered", True, why, key_file, found)
        else:
            servers[address] = Known(address, "discovered", False, "unknown key", None, found)
    return list(servers.values())


def curve_keys(config: Config) -> tuple[bytes, bytes, bytes] | None:
    """(client public, client secret, server public) keys from the config's key files."""
    if config.client_key is None or config.server_key is None:
        return None
    try:
        public, secret = zmq.auth.load_certificate(config.client_key)
        server, _ = zmq.auth.load_certificate(config.server_key)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CurveZMQ keys: {exc}") from exc
    if secret is None:
        raise ConfigError(f"{config.client_key} holds no secret key (use NAME.key_secret)")
    return public, secret, server
