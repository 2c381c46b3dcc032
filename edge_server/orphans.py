"""A vanished client's jobs: stopped when ``--orphans stop`` (the default) says so.

A client is gone when neither its calls nor its heartbeats have been heard for
``--client-timeout`` seconds. Its queued calls are dropped and its running jobs
stopped (their workers replaced), each recorded as cancelled. Calls recovered
after a restart are kept whatever their old client does now.
"""

from __future__ import annotations

import logging

from offload.runtime.states import JobState

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
