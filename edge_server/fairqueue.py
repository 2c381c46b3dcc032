"""The calls waiting for a worker, served round-robin between clients.

One client's thousand calls wait behind each other, not in front of another
client's one: each turn of the rotation takes one call from each client in
line, so a newcomer's call is next after at most one call of every client
ahead of it. A client at its running limit is skipped until one of its calls
ends. The bound on the whole queue (``ServerBusy`` beyond it) is the server's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from .admission import Job


class FairQueue:
    """Per-client FIFO queues and a rotation of the clients that have calls waiting."""

    def __init__(self) -> None:
        self._by_client: dict[bytes, deque[Job]] = {}
        self._rotation: deque[bytes] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def clients(self) -> int:
        """How many clients have calls waiting (a newcomer's call waits behind one of each)."""
        return len(self._rotation)

    def __iter__(self) -> Iterator[Job]:
        for waiting in list(self._by_client.values()):
            yield from list(waiting)

    def append(self, job: Job) -> None:
        """Queue ``job`` behind its own client's calls."""
        waiting = self._by_client.get(job.client)
        if waiting is None:
            waiting = self._by_client[job.client] = deque()
            self._rotation.append(job.client)
        waiting.append(job)
        self._size += 1

    def push_back(self, job: Job) -> None:
        """Return a call that could not be handed out: first again, its client next."""
        waiting = self._by_client.get(job.client)
        if waiting is None:
            waiting = self._by_client[job.client] = deque()
        else:
            self._rotation.remove(job.client)
        self._rotation.appendleft(job.client)
        waiting.appendleft(job)
        self._size += 1

    def remove(self, job: Job) -> None:
        """Take ``job`` out of the queue (cancelled, or its client gone)."""
        waiting = self._by_client[job.client]
        waiting.remove(job)
        self._size -= 1
        if not waiting:
            self._forget(job.client)

    def pop(self, busy: Callable[[bytes], bool]) -> Job | None:
        """The next call in the rotation from a client not ``busy`` (at its running limit)."""
        for _ in range(len(self._rotation)):
            client = self._rotation[0]
            self._rotation.rotate(-1)  # this client goes to the back either way
            if busy(client):
                continue
            waiting = self._by_client[client]
            job = waiting.popleft()
            self._size -= 1
            if not waiting:
                self._forget(client)
            return job
        return None

    def _forget(self, client: bytes) -> None:
        del self._by_client[client]
        if self._rotation and self._rotation[-1] == client:  # pop just rotated it to the back
            self._rotation.pop()
        else:
            self._rotation.remove(client)
