"""Jobs that cannot stay: a vanished client's (``--orphans stop``), and a closing server's.

A client is gone when neither its calls nor its heartbeats have been heard for
``--client-timeout`` seconds. Its queued calls are dropped and its running jobs
stopped (their workers replaced), each recorded as cancelled. Calls recovered
after a restart are kept whatever their old client does now. When the server
closes, its queued calls go back to their clients (:func:`begin_closing`).
"""

from __future__ import annotations

import logging

from offload._exceptions import ServerUnavailable
from offload.runtime.states import JobState

from . import stopsig
from .dispatch import Dispatcher
from .fairqueue import FairQueue
from .ledger import Ledger

log = logging.getLogger("edge_server")


def stop_orphans(client: bytes, queue: FairQueue, workers: Dispatcher, ledger: Ledger) -> None:
    """Stop every queued and running job of ``client``, which vanished."""
    dropped = [job for job in queue if job.client == client and not job.keep]
    for job in dropped:
        queue.remove(job)
        ledger.ended(job, JobState.CANCELLED, "its client is gone")
    running = [w for w in workers.running() if w.job and w.job.client == client]
    running = [w for w in running if w.job and not w.job.keep]
    for worker in running:
        stopped = workers.stop_job(worker, "its client is gone")
        ledger.ended(stopped, JobState.CANCELLED, "its client is gone")
    if dropped or running:
        log.info("client gone: %d queued and %d running jobs stopped", len(dropped), len(running))


def begin_closing(
    queue: FairQueue, connected: set[bytes] | dict[bytes, float], workers: Dispatcher
) -> None:
    """Closing: queued calls go back to clients still there, running jobs are asked to stop.

    The calls of clients that are gone stay queued in the store and run after
    a restart; checkpointed jobs stop at their next checkpoint and hand it home.
    """
    workers.stopping = True
    handed_back = [j for j in queue if j.client in connected and not j.keep]
    for job in handed_back:
        queue.remove(job)
        workers.fail(job, ServerUnavailable("server closing"))
    log.info(
        "closing: %d queued calls handed back, %d kept for the restart, running jobs asked to stop",
        len(handed_back),
        len(queue),
    )
    for worker in workers.running():
        workers.signal(worker, stopsig.CLOSING)
