"""Byte budgets: how much of the server's memory, shared memory and queue one client may hold.

Every byte a client makes the server hold is charged to it, and to the server,
from the moment its call is admitted until it is let go: the call's payload
while it waits in the queue and while a worker runs it (the frames, their copy
in the worker's arena, the payload file), then the reply while ZeroMQ still
sends it from the worker's result arena (a client that never reads its
replies keeps them there), and a kept result until it is written to disk. Two ceilings:

* ``memory_budget``: all clients together;
* ``client_budget``: one client (its ZeroMQ identity). A client that holds
  nothing may still send one call as large as ``max_message_size`` (and get its
  reply): the budget bounds what a client piles up, the message limit one call.

A call that would pass either is refused with :class:`~offload.ServerBusy`
before its payload is stored, saying which budget and how much is held. A
reply that would pass either is dropped: its arena is freed at once, its
client gets ServerBusy instead, and the job's record says why (the result is
not held in RAM for a client that does not read). A client's charges end with
its jobs and with ZeroMQ letting go of its replies (sent, or its connection closed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from offload._exceptions import ServerBusy

_MB = 2**20


def megabytes(n: int) -> str:
    """``n`` bytes, readably."""
    return f"{n / _MB:.1f} MB"


class Budget:
    """Bytes held per client and in all, against the two ceilings."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.held = 0
        self.by_client: Counter[bytes] = Counter()
        #: Let go of what has been sent since the loop last looked (set by the dispatcher).
        self.settle: Callable[[], None] = lambda: None
        #: Bytes held outside these counts, of a client (None: of all): the kept results
        #: still waiting for the disk (set by the ledger, from the store).
        self.outside: Callable[[bytes | None], int] = lambda client: 0

    def of(self, client: bytes | None = None) -> int:
        """Bytes held for ``client`` (None: for all clients)."""
        if client is None:
            return self.held + self.outside(None)
        return self.by_client.get(client, 0) + self.outside(client)

    def over(self, client: bytes, size: int) -> str | None:
        """Why holding ``size`` more bytes for ``client`` is not possible, or None if it is."""
        mine = self.of(client)
        if mine and mine + size > self.per_client:
            return (
                f"client budget: this client holds {megabytes(mine)} of "
                f"{megabytes(self.per_client)} (queued calls and unread replies); "
                f"{megabytes(size)} more do not fit"
            )
        held = self.of()
        if held + size > self.total:
            return (
                f"memory budget: the server holds {megabytes(held)} of "
                f"{megabytes(self.total)} for all clients; {megabytes(size)} more do not fit"
            )
        return None

    def take(self, client: bytes, size: int, what: str = "call") -> int:
        """Hold ``size`` bytes for ``client`` and return it; :class:`ServerBusy` if over budget."""
        why = self.over(client, size)
        if why is not None:
            self.settle()
            why = self.over(client, size)
        if why is not None:
            raise ServerBusy(f"{what} refused, {why}")
        self.charge(client, size)
        return size

    def charge(self, client: bytes, size: int) -> None:
        """Hold ``size`` bytes for ``client`` whatever the budget (it is already held)."""
        if size > 0:
            self.held += size
            self.by_client[client] += size

    def release(self, client: bytes, size: int) -> None:
        """``client`` no longer holds ``size`` of its bytes."""
        if size <= 0:
            return
        left = self.by_client.get(client, 0) - size
        freed = size if left >= 0 else size + left
        self.held = max(0, self.held - freed)
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)

    def snapshot(self) -> dict[str, int]:
        """What health reports: bytes held, the ceilings, and clients holding any."""
        return {
            "held_bytes": self.of(),
            "memory_budget": self.total,
            "client_budget": self.per_client,
            "clients_holding": len(self.by_client),
        }
