"""The fair queue's rotation stays one entry per waiting client, however its clients leave it."""

from __future__ import annotations

from edge_server.admission import Job
from edge_server.fairqueue import FairQueue


def _never(client: bytes) -> bool:
    return False


def test_clients_leaving_by_pop_remove_and_push_back_keep_the_turns_fair():
    queue = FairQueue()
    jobs = [Job(i, client, i, [], 0.0) for i, client in enumerate([b"a", b"b", b"c"] * 2 + [b"a"])]
    for job in jobs:
        queue.append(job)
    first = [queue.pop(_never) for _ in range(3)]
    assert [j.client for j in first if j] == [b"a", b"b", b"c"]
    queue.remove(jobs[4])  # b's last call: b leaves from the middle of the rotation
    queue.push_back(first[0])  # a's call comes back: a is first again
    taken = []
    while (job := queue.pop(_never)) is not None:
        taken.append(job.id)
    assert taken == [0, 5, 3, 6] and len(queue) == 0  # a, c, a, a: c once, b never again
    for job in jobs[:3]:
        queue.append(job)
    assert [queue.pop(_never).id for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
