"""bench fleet's policies: each gives a call function, (payload, serve_s) -> where it ran.

The fixed policies (:func:`fixed`) send every call to the first answering
server of a preference list, else run it here; :func:`ours` is
``servers=[...]`` in ``auto`` mode, and can say what it predicts before each
call (:meth:`Ours.predict`, read outside the timed call) for the per-call dump.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import offload

from .fleet_app import work
from .fleet_setup import CLIENT, SERVERS, Fleet

Call = Callable[[bytes, float], str]


def _here(serve_s: float) -> str:
    work(b"", serve_s)  # as slow here as fleet_app.SLOWDOWN says
    return "here"


@contextlib.contextmanager
def fixed(fleet: Fleet, choose: Callable[[dict[str, offload.Client]], list[str]]) -> Iterator[Call]:
    """Calls go to the first answering server of ``choose`` (a preference list), else here."""
    with contextlib.ExitStack() as stack:
        clients = {
            n: stack.enter_context(offload.Client(a, **CLIENT)) for n, a in fleet.address.items()
        }
        for client in clients.values():
            client.server_up()  # the first answer, before the clock runs

        def call(payload: bytes, serve_s: float) -> str:
            for name in choose(clients):
                if clients[name].server_up():
                    try:
                        return fleet.name_of(clients[name].call(work, (payload, serve_s), {}))
                    except offload.OffloadError:
                        continue
            return _here(serve_s)

        yield call


class Ours:
    """``servers=[...]`` in ``auto`` mode: the per-call choice among here and the servers."""

    def __init__(self, fleet: Fleet, client: offload.Client) -> None:
        self._fleet = fleet
        self._client = client
        self._names = {address: name for name, address in fleet.address.items()}

    def __call__(self, payload: bytes, serve_s: float) -> str:
        return self._fleet.name_of(self._client.call(work, (payload, serve_s), {}))

    def predict(self, payload: bytes, serve_s: float) -> dict[str, Any]:
        """What the client would choose for this call now, its estimate of each side, and
        why a server is left out (``offload.explain``: it runs nothing, changes nothing)."""
        result = self._client.explain(work, payload, serve_s)
        side = "here" if result.side == "local" else self._names.get(result.server or "", "?")
        estimates = {
            self._names.get(row["where"], row["where"]): row["time_s"]
            for row in result.candidates
            if row["time_s"] is not None
        }
        left_out = {
            self._names.get(row["where"], row["where"]): row["why"]
            for row in result.candidates
            if row["time_s"] is None
        }
        return {"side": side, "estimates": estimates, "left_out": left_out}


@contextlib.contextmanager
def ours(fleet: Fleet) -> Iterator[Ours]:
    """:class:`Ours`, on a client of its own."""
    settings = {**CLIENT, "mode": "auto", "probation": 2.0}
    with offload.Client(servers=list(fleet.address.values()), **settings) as client:
        yield Ours(fleet, client)


def _lowest_rtt(clients: dict[str, offload.Client]) -> list[str]:
    rtts = {}
    for name, client in clients.items():
        start = time.perf_counter()
        with contextlib.suppress(offload.OffloadError):
            for _ in range(3):
                client.ping(timeout=2)
            rtts[name] = time.perf_counter() - start
    return sorted(rtts, key=rtts.__getitem__)


def policies(fleet: Fleet, rng: random.Random) -> dict[str, Callable[[], Any]]:
    nearest = min(SERVERS, key=lambda n: SERVERS[n][0])
    ranked: list[str] = []

    def by_rtt(clients: dict[str, offload.Client]) -> list[str]:
        if not ranked:
            ranked.extend(_lowest_rtt(clients))
        return ranked[:1]

    return {
        "nearest": lambda: fixed(fleet, lambda _: [nearest]),
        "lowest_rtt": lambda: fixed(fleet, by_rtt),
        "random": lambda: fixed(fleet, lambda c: [rng.choice(sorted(c))]),
        "primary_backup": lambda: fixed(fleet, lambda _: ["mid", "near"]),
        "ours": lambda: ours(fleet),
    }
