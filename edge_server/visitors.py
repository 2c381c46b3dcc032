"""Who used this server lately, for its operator: FlexConnect's nearby users (issue 13, item 8).

Each client is known by its CurveZMQ public key, or on an insecure server by
an anonymous id (a keyed hash of its connection's routing id, under a key
drawn when the server starts: stable while it runs, not linkable across
restarts or servers). For each, the server counts calls and bytes and keeps
when it was first and last seen and, when the client shares it (the
``hello`` control op, sent by a client configured with ``location`` and
``share_location=True``), its location, so the list gives its distance.

Only operator keys (``--operator-keys DIR``: the ``*.key`` of the people
who run the server) may ask for the list (the ``clients`` control op);
anyone else is refused with :class:`~offload.NotAllowed`, and sees nothing
of other clients. At most :data:`MAX_VISITORS` are kept (the least recently
seen go first).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from offload._exceptions import ConfigError, NotAllowed, ProtocolError
from offload.geo import distance_km, format_location, parse_location

log = logging.getLogger("edge_server")

#: Clients remembered at once.
MAX_VISITORS = 4096


def operator_keys(directory: str | None) -> frozenset[str]:
    """The public keys (Z85) of the ``*.key`` files in ``directory``; ConfigError if none."""
    if directory is None:
        return frozenset()
    import zmq.auth

    keys = set()
    for file in sorted(Path(directory).glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(file))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"operator key {file}: {exc}") from exc
        keys.add(public.decode())
    if not keys:
        raise ConfigError(f"no operator keys (*.key) in {directory}")
    return frozenset(keys)


class Visitors:
    """Per client: first and last seen, calls, bytes, and its location if it shares one."""

    def __init__(self, operators: frozenset[str], location: str | None = None) -> None:
        self.operators = operators
        self._here = parse_location(location) if location else None
        self._salt = secrets.token_bytes(16)
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._names: dict[bytes, str] = {}  # routing id -> its anonymous name

    def who(self, client: bytes, owner: str) -> str:
        """A client's name in the list: its public key, or an anonymous id."""
        if owner:
            return owner
        name = self._names.get(client)
        if name is None:  # hashed once per client, not twice per call
            if len(self._names) >= MAX_VISITORS:
                self._names.clear()
            digest = hashlib.blake2b(client, key=self._salt, digest_size=6).hexdigest()
            name = self._names[client] = f"anonymous-{digest}"
        return name

    def _entry(self, client: bytes, owner: str) -> dict[str, Any]:
        name = self.who(client, owner)
        now = time.time()
        entry = self._seen.get(name)
        if entry is None:
            entry = {"first_seen": now, "calls": 0, "bytes_in": 0, "bytes_out": 0, "at": None}
            self._seen[name] = entry
            while len(self._seen) > MAX_VISITORS:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(name)
        entry["last_seen"] = now
        return entry

    def call(self, client: bytes, owner: str, nbytes: int) -> None:
        """A call of ``nbytes`` came in."""
        entry = self._entry(client, owner)
        entry["calls"] += 1
        entry["bytes_in"] += nbytes

    def replied(self, client: bytes, owner: str, nbytes: int) -> None:
        """A reply of ``nbytes`` went out."""
        name = self.who(client, owner)
        if name in self._seen:
            self._seen[name]["bytes_out"] += nbytes

    def hello(self, client: bytes, owner: str, body: dict[str, Any]) -> None:
        """The client says where it is (``location``: "LAT,LON"), or nothing."""
        entry = self._entry(client, owner)
        location = body.get("location")
        if location is None:
            return
        if not isinstance(location, str) or len(location) > 64:
            raise ProtocolError("location must be a string 'LAT,LON'")
        try:
            entry["at"] = parse_location(location)
        except ValueError as exc:
            raise ProtocolError(f"location: {exc}") from exc

    def listing(self, owner: str) -> list[dict[str, Any]]:
        """Every client seen lately, most recent first; NotAllowed unless ``owner`` operates."""
        if owner not in self.operators:
            raise NotAllowed("only the server's operator keys may list its clients")
        return self.rows()

    def rows(self) -> list[dict[str, Any]]:
        """Every client seen lately, most recent first (for an operator's own view)."""
        rows = []
        for name, entry in reversed(list(self._seen.items())):  # a copy: the loop adds to it
            at = entry["at"]
            distance = distance_km(self._here, at) if at and self._here else None
            rows.append(
                {
                    "client": name,
                    "first_seen": entry["first_seen"],
                    "last_seen": entry["last_seen"],
                    "calls": entry["calls"],
                    "bytes_in": entry["bytes_in"],
                    "bytes_out": entry["bytes_out"],
                    "location": format_location(at) if at else None,
                    "distance_km": round(distance, 1) if distance is not None else None,
                }
            )
        return rows
