"""Where a control request goes: apps to the deployer, everything else to the ledger.

Its JSON is decoded once, here. A request about apps (``deploy``,
``rollback``, ``apps``) may be up to :data:`edge_server.deploy.JSON_MAX` and
carry files; any other is one JSON frame of at most :data:`CONTROL_MAX`
bytes, and a larger one is refused without being parsed past that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from offload._exceptions import OffloadError, ProtocolError
from offload.runtime import protocol

from .deploy import JSON_MAX, OPS, Deployer
from .ledger import Ledger

CONTROL_MAX = 65536  # bytes of one control request's JSON (not about apps)


def route_control(
    client: bytes,
    owner: str,
    request_id: int,
    frames: list[Any],
    deployer: Deployer,
    ledger: Ledger,
    closing: bool,
    refuse: Callable[[bytes, int, OffloadError], None],
) -> None:
    """Answer one control request from ``owner`` through whoever owns its ``op``."""
    plain = len(frames) == 3 and len(frames[2]) <= CONTROL_MAX
    body = None
    if plain or (len(frames) >= 3 and len(frames[2]) <= JSON_MAX):
        with contextlib.suppress(ProtocolError):  # unreadable: the ledger says why below
            body = protocol.decode_json(frames[2].buffer)
    if body is not None and body.get("op") in OPS:
        deployer.handle(client, owner, request_id, body, frames[3:], closing)
    elif not plain:
        refuse(client, request_id, ProtocolError("bad control request"))
    elif body is None:
        ledger.control(client, owner, request_id, frames[2].buffer)
    else:
        ledger.answer(client, owner, request_id, body)
