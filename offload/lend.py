"""``offload lend``: make this machine a worker of a site, for its owner's credits.

::

    offload lend --site tcp://coordinator:5555 [--cores N] [--memory 2GB]
                 [--hours 18:00-08:00] [--for 2h] [--tls-ca CA --tls-cert PEM --tls-key KEY]

1. Registers the machine with the site's edge server under this client's
   CurveZMQ key (``client_key``): the site answers with the machine's id, the
   name its Dask worker goes by (``offload-m<id>-<signature>``, signed by the
   site: how it knows whose machine ran a job, and so whom to pay) and the
   scheduler's address.
2. Within its hours it runs a Dask worker under a nanny with ``--cores``
   threads (one job per thread) and ``--memory`` (the nanny restarts a worker
   past it), so the owner keeps the rest of the machine.
3. When its hours end (or ``--for`` has passed, or SIGTERM/SIGINT) it retires
   gracefully: the scheduler gives it no more tasks, each running
   checkpointed job is asked to stop at its next checkpoint and moves to
   another worker from there (:func:`edge_server.site.task.retire`), jobs
   without checkpoints get ``--grace`` to finish, then the worker closes.
   With hours it waits for the next window; otherwise it exits.

Jobs run in their own process with the site's per-job limits, in a working
directory deleted when they end (:mod:`edge_server.site.task`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from . import _exceptions as errors

log = logging.getLogger("offload.lend")


@dataclass(frozen=True)
class Hours:
    """A daily window ``HH:MM-HH:MM`` (it may wrap past midnight), or always."""

    start: int | None = None  # minutes after midnight
    end: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Hours:
        if not text:
            return cls()
        try:
            start, end = (_minutes(part) for part in text.split("-"))
        except ValueError:
            raise errors.ConfigError(f"hours must be HH:MM-HH:MM, not {text!r}") from None
        if start == end:
            return cls()
        return cls(start, end)

    def __str__(self) -> str:
        if self.start is None or self.end is None:
            return "always"
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )

    def open_at(self, at: datetime.datetime) -> bool:
        if self.start is None or self.end is None:
            return True
        now = at.hour * 60 + at.minute
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def seconds_to_change(self, at: datetime.datetime) -> float | None:
        """Seconds until the window opens or closes next (None: always open)."""
        if self.start is None or self.end is None:
            return None
        now = at.hour * 60 + at.minute
        edge = self.end if self.open_at(at) else self.start
        minutes = (edge - now) % (24 * 60) or 24 * 60
        return minutes * 60 - at.second - at.microsecond / 1e6


def _minutes(text: str) -> int:
    hours, _, minutes = text.strip().partition(":")
    h, m = int(hours), int(minutes or 0)
    if not (0 <= h <= 24 and 0 <= m < 60):
        raise ValueError(text)
    return (h * 60 + m) % (24 * 60)


def lend(
    site: Any,
    cores: int,
    memory: int,
    hours: Hours,
    security: Any = None,
    duration: float | None = None,
    grace: float = 60.0,
    host: str | None = None,
    local_directory: str | None = None,
    on_ready: Any = None,
) -> int:
    """Register with the site (``site``: a ServerJobs), then serve its hours; the exit status."""
    host = host or socket.gethostname()
    memory_text = f"{memory}" if memory else "auto"
    answer = site.lend(host, cores, memory, str(hours))
    log.info(
        "lending %s as machine %d (%s): %d cores, memory %s, hours %s, scheduler %s",
        host,
        answer["machine"],
        answer["name"],
        cores,
        memory_text,
        hours,
        answer["scheduler"],
    )
    return asyncio.run(
        _serve(answer, cores, memory, hours, security, duration, grace, local_directory, on_ready)
    )


async def _serve(
    answer: dict[str, Any],
    cores: int,
    memory: int,
    hours: Hours,
    security: Any,
    duration: float | None,
    grace: float,
    local_directory: str | None,
    on_ready: Any,
) -> int:
    from distributed import Nanny

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    until = time.monotonic() + duration if duration is not None else None
    while not stop.is_set():
        now = datetime.datetime.now()
        if not hours.open_at(now):
            wait = hours.seconds_to_change(now) or 60.0
            log.info("outside the lending hours %s: waiting %.0f s", hours, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(wait, 3600))
            continue
        nanny = Nanny(
            answer["scheduler"],
            nthreads=cores,
            memory_limit=memory or "auto",
            name=answer["name"],
            security=security,
            local_directory=local_directory,
            dashboard=False,
        )
        await nanny
        if on_ready is not None:
            on_ready(nanny)
        left = hours.seconds_to_change(datetime.datetime.now())
        if until is not None:
            left = (
                min(left, until - time.monotonic())
                if left is not None
                else until - time.monotonic()
            )
        finished = asyncio.ensure_future(nanny.finished())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            [finished, stopping],
            timeout=max(0.0, left) if left is not None else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopping.cancel()
        if not finished.done():
            await retire(answer["scheduler"], nanny, security, grace)
        finished.cancel()
        if (until is not None and time.monotonic() >= until) or hours.start is None:
            break
    return 0


async def retire(scheduler: str, nanny: Any, security: Any, grace: float) -> None:
    """Retire the nanny's worker gracefully (see the module docstring), then close it."""
    from distributed import Client

    from edge_server.site import task

    address = nanny.worker_address
    log.info("retiring worker %s: its checkpointed jobs move, the others get %g s", address, grace)
    try:
        async with Client(scheduler, asynchronous=True, security=security, timeout=30) as client:
            await client.retire_workers(workers=[address], close_workers=False, remove=False)
            await client.run(task.retire, workers=[address])
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                running = await client.run(task.running, workers=[address])
                if not any(running.values()):
                    break
                await asyncio.sleep(0.2)
    except Exception as exc:  # the scheduler is gone: close anyway
        log.warning("could not retire %s gracefully: %s", address, exc)
    await nanny.close(timeout=10)
    log.info("worker %s closed", address)
