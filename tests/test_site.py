"""A site on Dask (issue 14): a real scheduler, lenders and an edge server, separate processes.

One site for the module, encrypted (CurveZMQ keys for the server, a
borrowing client and a lender): a Dask scheduler on loopback, an edge server
with ``--engine dask``, and lenders started by ``offload lend`` (each a
nanny and a worker, in a process group of its own so a test can kill the
whole machine). The tests share it in order: a job runs and leaves nothing
behind; a lender killed mid-job and the job resumes elsewhere from its
checkpoint; a lender retiring at the end of its time and its job moving;
cancel; then the credits balance, exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

pytest.importorskip("distributed")

import offload
from edge_server.credits import GRANTS, account
from offload.cli import main as offload_main
from offload.runtime import protocol, serialize
from tests import site_apps

GRANT = 50_000_000  # micro-credits a new user gets (50 credits)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    return env


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Site:
    """The processes of one site and what the tests need to reach them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.authorized = root / "authorized"
        self.authorized.mkdir(parents=True)
        for name in ("server", "alice", "lender"):
            assert offload_main(["keys", "generate", name, "--dir", str(self.keys)]) == 0
        for name in ("alice", "lender"):
            (self.authorized / f"{name}.key").write_bytes((self.keys / f"{name}.key").read_bytes())
        self.port = _free_port()
        self.scheduler = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.lenders: dict[str, subprocess.Popen] = {}
        self.data = root / "data"

    def start(self) -> None:
        log = open(self.root / "scheduler.log", "wb")  # noqa: SIM115
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-dashboard"],
            stdout=log, stderr=log, env=_env(), start_new_session=True,
        )  # fmt: skip
        self.processes.append(scheduler)
        _wait_port(self.port)
        self.server = offload.serve_local(
            ["tests.site_apps"],
            data_dir=str(self.data),
            extra_args=[
                "--engine", "dask", "--scheduler", self.scheduler,
                "--secret-key", str(self.keys / "server.key_secret"),
                "--authorized-keys", str(self.authorized),
                "--credit-grant", str(GRANT / 1e6),
                "--log-level", "INFO",
            ],
        )  # fmt: skip

    def client_args(self, who: str) -> list[str]:
        return [
            "--server", self.server.address,
            "--server-key", str(self.keys / "server.key"),
            "--client-key", str(self.keys / f"{who}.key_secret"),
        ]  # fmt: skip

    def lend(self, name: str, *extra: str) -> subprocess.Popen:
        """Start ``offload lend`` for the lender's key as machine ``name``; wait until it serves."""
        before = self.settled()
        (self.root / name).mkdir(exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-c", "from offload.cli import main; raise SystemExit(main())",
             "lend", *self.client_args("lender"), "--cores", "1", "--memory", "1GB",
             "--local-directory", str(self.root / name), "--grace", "20", "--host", name,
             *extra],
            stdout=log, stderr=log, env=_env(), start_new_session=True,
        )  # fmt: skip
        self.lenders[name] = process
        deadline = time.monotonic() + 30
        while self.workers() <= before:
            assert process.poll() is None, (self.root / f"{name}.log").read_text()
            assert time.monotonic() < deadline, "the lender's worker did not join"
            time.sleep(0.1)
        return process

    def settled(self, timeout: float = 30.0) -> int:
        """The site's workers, once they are one per running lender: a lender stopped a
        moment ago counts until the site next looks at its cluster (``REFRESH_S``)."""
        deadline = time.monotonic() + timeout
        while (count := self.workers()) != len(self.lenders):
            assert time.monotonic() < deadline, f"{count} workers, {len(self.lenders)} lenders"
            time.sleep(0.1)
        return count

    def workers(self) -> int:
        with self.client("alice") as client:
            return int(client.server.health()["site"]["workers"])

    def client(self, who: str = "alice") -> offload.Client:
        return offload.Client(
            self.server.address,
            server_key=str(self.keys / "server.key"),
            client_key=str(self.keys / f"{who}.key_secret"),
            mode="remote",
            heartbeat_timeout=20,
        )

    def stop(self) -> None:
        for process in self.lenders.values():
            _stop(process, signal.SIGKILL)
        self.server.stop()
        for process in self.processes:
            _stop(process)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("site"))
    try:
        site.start()
        # Distinct host names: the same lender registers each as a machine of its own.
        site.lend("m1", "--hours", "00:00-24:00")
        site.lend("m2")
        yield site
    finally:
        site.stop()


def _running_on(client: offload.Client, timeout: float = 20.0) -> tuple[str, str]:
    """(job id, worker name) of the one job the site runs now, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.server.health()["site"]["running"]
        if running and all(name != "?" and name for name in running.values()):
            return next(iter(running.items()))
        time.sleep(0.05)
    raise TimeoutError("no job started on the site")


def _lender_of(site: Site, worker_name: str) -> str:
    with site.client("lender") as lender:
        for machine in lender.server.resources():
            if machine["worker"] == worker_name:
                return str(machine["host"])
    raise LookupError(worker_name)


def test_a_job_runs_on_a_lenders_machine_in_its_own_directory_which_goes(site: Site) -> None:
    with site.client() as client:
        assert client.submit(site_apps.add, 2, 3).result(timeout=60) == 5
        workdir, pid = client.submit(site_apps.where, "scratch.txt").result(timeout=60)
        info = client.server.health()
    assert info["engine"] == "dask" and info["site"]["workers"] == 2
    lenders = [site.root / "m1", site.root / "m2"]
    assert any(str(workdir).startswith(str(d)) for d in lenders), workdir
    assert not Path(workdir).exists()  # FlexConnect's "delete data": gone with the job
    assert not list(site.root.glob("m*/**/offload-job*"))
    lender_pids = {p.pid for p in site.lenders.values()}
    assert pid not in lender_pids  # a process of its own, not the lender's worker


def test_a_lost_lender_and_its_job_resumes_from_its_checkpoint_elsewhere(site: Site) -> None:
    n, step = 30, 0.1
    with site.client() as client:
        job = client.submit(site_apps.count_up, n, step)
        _, worker = _running_on(client)
        deadline = time.monotonic() + 30  # a checkpoint streamed back (a busy machine is slow)
        while job.progress.checkpoints == 0:
            assert time.monotonic() < deadline, "no checkpoint came home"
            time.sleep(0.05)
        victim = _lender_of(site, worker)
        _stop(site.lenders.pop(victim), signal.SIGKILL)  # the machine is switched off
        total, pids = job.result(timeout=60)
        assert total == sum(i * i for i in range(n))
        assert len(pids) == 2  # two job processes, the second resumed the first's work
        history = client.server.jobs(limit=1)[0]
        assert history.state == "done"


def test_a_lender_retires_at_the_end_of_its_time_and_its_job_moves(site: Site) -> None:
    """m3 lends for 10 s: its checkpointed job stops at a checkpoint and goes on elsewhere.

    One 12 s job per lender, submitted once the site counts m3 (its 10 s run from its
    start: most often 1-2 s before): each lender's one slot takes one, so m3 is running
    one when its time ends, unless joining took it most of its time.
    """
    site.lend("m3", "--for", "10s")
    n, step = 120, 0.1
    with site.client() as client:
        jobs = [client.submit(site_apps.count_up, n, step) for _ in site.lenders]
        results = [job.result(timeout=60) for job in jobs]
    expected = sum(i * i for i in range(n))
    assert [total for total, _ in results] == [expected] * len(jobs)
    assert any(len(pids) == 2 for _, pids in results)  # one moved from m3 to another
    retired = site.lenders.pop("m3")
    assert retired.wait(30) == 0  # --for: it retired and exited by itself
    assert "retiring worker" in (site.root / "m3.log").read_text()
    for name in [*site.lenders, "m3"]:  # the machine switched off mid-job kept its leftovers
        assert not list((site.root / name).glob("**/offload-job*"))
    site.lend("m4")


def test_cancel_stops_the_job_on_the_lender(site: Site) -> None:
    with site.client() as client:
        job = client.submit(site_apps.count_up, 1000, 0.05)
        job_id, _ = _running_on(client)
        client.server.cancel(int(job_id))
        deadline = time.monotonic() + 10
        while client.server.health()["site"]["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.server.status(int(job_id)).state == "cancelled"
        assert client.submit(site_apps.add, 1, 1).result(timeout=60) == 2  # the slot is free
        job.cancel()


def test_pause_stops_at_a_checkpoint_on_the_lender_and_resume_finishes_exactly(site: Site) -> None:
    n, step = 30, 0.1
    with site.client() as client:
        job = client.submit(site_apps.count_up, n, step)
        _running_on(client)
        time.sleep(0.6)
        job.pause()  # waits until the job has stopped at a checkpoint and its state is home
        assert job.paused and job.progress.checkpoints > 0
        assert not client.server.health()["site"]["running"]
        job.resume("remote")
        total, pids = job.result(timeout=60)
    assert total == sum(i * i for i in range(n)) and len(pids) == 2


def test_credits_balance_exactly_after_the_runs_and_failures(site: Site) -> None:
    with site.client() as client:
        quote = client.quote(site_apps.add, 1, 2)
        assert quote["micro_credits"] >= 0 and quote["balance"] <= GRANT
        # A randomized burst with failures: bad arguments (the function raises) among good ones.
        import random

        rng = random.Random(14)
        futures = [
            client.submit(site_apps.add, rng.randrange(100), rng.choice([1, "x"])) for _ in range(6)
        ]
        for future in futures:
            with contextlib.suppress(TypeError):
                future.result(timeout=60)
        mine = client.server.credits(limit=1000)
    with site.client("lender") as lender:
        earned = lender.server.credits(limit=1000)
        machines = lender.server.resources()
    time.sleep(0.3)  # the store's last writes
    db = sqlite3.connect(site.data / "jobs.sqlite")
    try:
        total, entries = db.execute("SELECT SUM(amount), COUNT(*) FROM credit_entries").fetchone()
        by_account = dict(db.execute("SELECT account, SUM(amount) FROM credit_entries GROUP BY 1"))
        paid = db.execute(
            "SELECT COUNT(*), SUM(amount) FROM credit_entries WHERE account=? AND amount<0",
            (account(mine["owner"]),),
        ).fetchone()
    finally:
        db.close()
    assert total == 0 and entries > 0  # double entry: the ledger sums to zero
    assert by_account[GRANTS] == -2 * GRANT  # two users, one grant each
    spent = GRANT - mine["balance"]
    assert spent > 0 and spent == -paid[1]
    assert earned["balance"] == GRANT + spent  # every run was on the lender's machines
    assert sum(m["earned"] for m in machines) == spent
    assert paid[0] >= 10  # each run paid (the lost one did not report, so it is not here)
    assert {m["host"] for m in machines} >= {"m1", "m2", "m3", "m4"}
    # Online: the lenders still running; not m3 (retired), nor the one switched off.
    online = {m["host"] for m in machines if m["online"]}
    assert online == set(site.lenders), (online, set(site.lenders))


def test_insufficient_credits_refuse_a_job_before_it_runs(site: Site, tmp_path: Path) -> None:
    broke = offload.serve_local(
        ["tests.site_apps"],
        data_dir=str(tmp_path / "broke"),
        extra_args=["--engine", "dask", "--scheduler", site.scheduler, "--credit-grant", "0",
                    "--log-level", "WARNING"],
    )  # fmt: skip
    try:
        with offload.Client(broke.address, mode="remote", heartbeat_timeout=20) as client:
            with pytest.raises(offload.InsufficientCredits):
                client.submit(site_apps.add, 1, 2).result(timeout=30)
            assert client.server.credits()["balance"] == 0
            assert client.server.jobs() == [] or client.server.jobs()[0].state != "done"
    finally:
        broke.stop()


def test_offload_credits_and_resources_commands(site: Site, capsys) -> None:
    assert offload_main(["credits", *site.client_args("alice")]) == 0
    text = capsys.readouterr().out
    assert "balance" in text and "core-hour" in text
    assert offload_main(["resources", "--json", *site.client_args("lender")]) == 0
    import json

    machines = json.loads(capsys.readouterr().out)
    assert {"cores", "memory", "hours", "online", "earned"} <= set(machines[0])
    assert offload_main(["quote", "tests.site_apps:add", "1", "2", "--seconds", "3600",
                         *site.client_args("alice")]) == 0  # fmt: skip
    assert "credits" in capsys.readouterr().out


def test_every_pong_carries_the_sites_price_and_the_decision_can_weigh_it(site: Site) -> None:
    with site.client() as client:
        info = client.ping(timeout=20)
        price = info["load"]["price_s"]  # credits per core-second now, from the price table
        quote = client.server.quote(3600.0)  # an hour at the slot's price
        assert price > 0 and quote["price_cpu"] / 1e6 / 3600 == pytest.approx(price)
        assert client.servers.get("remote").link.price_s == pytest.approx(price)
    # An engine that is not a site charges nothing and says no price.
    plain = offload.serve_local(["tests.site_apps"], extra_args=["--log-level", "WARNING"])
    try:
        with offload.Client(plain) as client:
            assert "price_s" not in client.ping(timeout=20)["load"]
    finally:
        plain.stop()


def _curve_dealer(site: Site, who: str) -> zmq.Socket:
    """A raw DEALER speaking CurveZMQ as ``who`` to the site's edge server."""
    public, secret = zmq.auth.load_certificate(str(site.keys / f"{who}.key_secret"))
    server_public, _ = zmq.auth.load_certificate(str(site.keys / "server.key"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = (
        public,
        secret or b"",
        server_public,
    )
    sock.connect(site.server.address)
    return sock


def test_a_starts_call_on_the_site_is_submitted_only_after_its_go(site: Site) -> None:
    """A fleet client's call (STARTS, AWAITS_GO) is told STARTED, then waits for GO on a site."""
    fn = site_apps.add
    codecs, frames = serialize.dumps(((2, 40), {}))
    flags = protocol.STARTS | protocol.AWAITS_GO
    call = protocol.encode_header(
        protocol.CALL, 7, flags=flags, fingerprint=fn.fingerprint, name=fn.wire_name.encode(),
        codecs=codecs,
    )  # fmt: skip
    with _curve_dealer(site, "alice") as sock, site.client() as client:
        sock.send_multipart([call, *[bytes(memoryview(f)) for f in frames]])
        assert sock.poll(30_000), "no STARTED"
        header = protocol.decode_header(sock.recv_multipart()[0])
        assert (header.kind, header.request_id, header.flags) == (
            protocol.STARTED,
            7,
            protocol.AWAITS_GO,
        )
        assert not sock.poll(1500), "a reply came before GO"
        site_info = client.server.health()["site"]
        assert len(site_info["running"]) == 1  # its slot is kept for it ...
        assert set(site_info["attempts"].values()) == {0}  # ... and no task was submitted
        sock.send_multipart([protocol.encode_header(protocol.GO, 7)])
        assert sock.poll(60_000), "no result after GO"
        reply = sock.recv_multipart()
        assert protocol.decode_header(reply[0]).kind == protocol.RESULT
    with offload.Client(
        servers=[site.server.address],
        server_key=str(site.keys / "server.key"),
        client_key=str(site.keys / "alice.key_secret"),
        mode="remote",
        heartbeat_timeout=20,
    ) as fleet:  # the client's side of the exchange: it says GO itself
        assert [fleet.call(fn, (i, 1), {}) for i in range(3)] == [1, 2, 3]
