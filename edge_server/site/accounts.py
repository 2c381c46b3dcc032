"""The site's credit control requests: quotes, statements, lending and lent machines.

Each answers one JSON control request of ``owner`` (``quote``, ``credits``,
``lend``, ``resources``) from the :class:`~edge_server.credits.Credits`
ledger and the cluster's workers; malformed bodies are refused with
:class:`~offload.ProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from offload._exceptions import InsufficientCredits, ProtocolError

from ..admission import Job
from ..config import ServerConfig
from ..credits import Credits, slot_of

log = logging.getLogger("edge_server.site")

MACHINE_PREFIX = "offload-m"  # then the machine's id and its signature (worker_name)


class Accounts:
    """The credit control requests of one site."""

    def __init__(
        self,
        credits: Credits,
        config: ServerConfig,
        cluster: Callable[[], dict[str, dict[str, Any]]],
    ) -> None:
        """``cluster()``: the workers the scheduler has now (address -> info)."""
        self.credits = credits
        self.config = config
        self._cluster = cluster

    def charge(self, job: Job, usage_json: bytes) -> None:
        """A run of ``job`` reported its usage: its owner pays the lender of the machine."""
        try:
            usage = json.loads(usage_json)
            start, end = float(usage["start"]), float(usage["end"] or usage["start"])
            memory = max(0, int(usage.get("memory", 0)))
            job.cpu_s += max(0.0, float(usage.get("cpu_s", 0.0)))
        except (ValueError, KeyError, TypeError):
            log.warning("job %d: unreadable usage from its task", job.id)
            return
        machine = self.machine_of(str(usage.get("worker", "")))
        info = self.credits.machine(machine) if machine is not None else None
        lender = info["lender"] if info is not None else None
        end = min(end, time.time())
        self.credits.charge_run(job.owner, lender, min(start, end), end, memory, job.id, machine)

    def admit(self, job: Job) -> None:
        """Refuse a job whose owner cannot pay for a second of a core now."""
        ok, have, need = self.credits.afford(job.owner)
        if not ok:
            raise InsufficientCredits(
                f"{have / 1e6:.6f} credits; a job here needs at least {need / 1e6:.6f} "
                "(lend a machine with offload lend to earn some)"
            )

    def price_s(self, current: float) -> float:
        """Credits a core-second costs now (``current`` when the store cannot say)."""
        try:
            return self.credits.price_now()[0] / 1e6 / 3600
        except Exception as exc:  # the store failed: keep the last price
            log.warning("cannot read the site's prices: %s", exc)
            return current

    def quote(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        seconds = body.get("seconds")
        memory = body.get("memory", 0)
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 365 * 86400:
            raise ProtocolError("seconds must be a number from 0 to a year")
        if not isinstance(memory, int) or memory < 0:
            raise ProtocolError("memory must be a byte count")
        quote = self.credits.quote(float(seconds), memory)
        quote["balance"] = self.credits.balance(owner)
        return {"quote": quote}

    def credits_of(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        limit = body.get("limit", 50)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ProtocolError("limit must be an integer from 1 to 1000")
        day, slot = slot_of(time.time())
        return {
            "credits": {
                "owner": owner,
                "balance": self.credits.balance(owner),
                "statement": self.credits.statement(owner, limit),
                "prices": {"day": day, "slot": slot, "slots": self.credits.prices(day)},
            }
        }

    def lend(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        host, hours = body.get("host"), body.get("hours", "")
        cores, memory = body.get("cores"), body.get("memory", 0)
        if not isinstance(host, str) or not 0 < len(host) <= 255:
            raise ProtocolError("host must be a name")
        if not isinstance(cores, int) or not 1 <= cores <= 1024:
            raise ProtocolError("cores must be from 1 to 1024")
        if not isinstance(memory, int) or memory < 0 or not isinstance(hours, str):
            raise ProtocolError("memory must be a byte count, hours a text")
        machine = self.credits.register(owner, host, cores, memory, hours[:40])
        return {
            "lend": {
                "machine": machine,
                "name": self.worker_name(machine),
                "scheduler": self.config.scheduler,
                "tls": self.config.site_tls_ca is not None,
            }
        }

    def resources(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        online = {str(w.get("name", "")) for w in self._cluster().values()}
        machines = self.credits.machines(owner)
        for machine in machines:
            machine["worker"] = self.worker_name(machine["id"])  # its owner's to know
            machine["online"] = machine["worker"] in online
        return {"resources": machines}

    def worker_name(self, machine: int) -> str:
        """The name machine ``machine``'s Dask worker goes by: ``offload-m12-<signature>``.

        Signed with the site's secret, so a worker can earn only for the machine
        its lender registered (the lender alone is told the name): a worker
        named after someone else's machine is paid nothing (it counts as the
        site's own, ``site:house``).
        """
        tag = hmac.new(self.credits.secret, b"machine %d" % machine, hashlib.sha256)
        return f"{MACHINE_PREFIX}{machine}-{tag.hexdigest()[:24]}"

    def machine_of(self, worker_name: str) -> int | None:
        """The machine id of a lent worker's name, if the name is its signed one; else None."""
        number, _, _ = worker_name.removeprefix(MACHINE_PREFIX).partition("-")
        if not worker_name.startswith(MACHINE_PREFIX) or not number.isdigit() or len(number) > 18:
            return None
        expected = self.worker_name(int(number))
        return int(number) if hmac.compare_digest(worker_name, expected) else None
