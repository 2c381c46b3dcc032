"""The Dask task of one site job, run on a lender's worker: fetch, run in isolation, report.

:func:`run_site_job` is what the edge server submits. Its spec holds no
payload, only where the edge server's site socket is, the job's id and a
one-time token, the apps' directory name and the per-job limits. It

1. makes a working directory of its own under the worker's local directory;
2. connects to the site socket (a ZeroMQ DEALER; CURVE with the server's
   public key when the server has one) and says HELLO; the answer is the
   call, and the latest checkpoint if an earlier attempt on another worker
   streamed any;
3. starts the job process (:mod:`.job`: :func:`edge_server.worker.run_worker`
   with the limits) in that directory, hands it the call over a Unix socket
   (large frames through a shared-memory arena, as on an edge server);
4. relays: each checkpoint goes to the edge server as it is taken; a STOP
   from the server (pause, closing) becomes the worker's stop signal, a KILL
   (cancel, timeout) kills the process; the result goes back with the run's
   usage (wall time, CPU seconds, peak memory) and waits for the server's ACK;
5. deletes the working directory, the arenas and the process, however it ended.

Messages on the site socket (task -> server; every one carries the job id
and its token)::

    HELLO [b"H", job, token, worker address, worker name]
    CKPT  [b"C", job, token, CHECKPOINT header, *state]
    DONE  [b"D", job, token, usage JSON, reply header, *payload]   (ACK'd)
    MOVED [b"M", job, token, usage JSON]   retiring: stopped at a checkpoint, rescheduled
    USAGE [b"U", job, token, usage JSON]   killed (cancel, timeout): what the run used

    server -> task: CALL [b"J", JSON {"call": n}, *call frames, *checkpoint frames],
                    ACK [b"A"], STOP [b"S", kind], KILL [b"X", why]

When the lender's hours end, :func:`retire` (run on the worker by
``offload lend``) asks each checkpointed job to stop at its next
checkpoint; its task then reports MOVED and raises Dask's ``Reschedule``,
and the edge server hands the next attempt that checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from offload._exceptions import ServerUnavailable, WorkerCrashed
from offload.runtime import errors, protocol

from .. import pids, stopsig
from ..arena import ArenaReader, ArenaWriter, arena_dir, remove_files
from ..channel import Channel
from . import apps

HELLO_TIMEOUT_MS = 30_000
ACK_TIMEOUT_MS = 30_000
START_TIMEOUT_S = 60.0

_lock = threading.Lock()
_running: dict[int, _Run] = {}  # job id -> its run on this worker
_retiring = threading.Event()
_verified: set[str] = set()  # apps directories whose digest this worker checked


class _Run:
    def __init__(self, job: int, checkpointed: bool) -> None:
        self.job = job
        self.checkpointed = checkpointed
        self.pid = 0
        self.asked_to_move = False

    def ask_to_move(self) -> None:
        """Stop at the next checkpoint (the worker's CLOSING signal), once."""
        if self.checkpointed and self.pid and not self.asked_to_move:
            self.asked_to_move = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, stopsig.signum(stopsig.CLOSING, 0))


def retire() -> int:
    """On this worker: take no more jobs, move the checkpointed ones; how many still run."""
    _retiring.set()
    with _lock:
        runs = list(_running.values())
    for run in runs:
        run.ask_to_move()
    return len(runs)


def running() -> list[int]:
    """The site jobs running on this worker now."""
    with _lock:
        return sorted(_running)


def run_site_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of one job (see the module docstring); returns how it ended."""
    from distributed import Reschedule, get_worker

    worker = get_worker()
    if _retiring.is_set():
        raise Reschedule()
    work = Path(tempfile.mkdtemp(prefix=f"offload-job{spec['job']}-", dir=worker.local_directory))
    try:
        return _Task(spec, worker, work).run()
    except _Moved:
        raise Reschedule() from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Moved(Exception):
    """The job stopped at a checkpoint because this worker retires."""


class _Task:
    def __init__(self, spec: dict[str, Any], worker: Any, work: Path) -> None:
        self.spec = spec
        self.worker = worker
        self.work = work
        self.job = int(spec["job"])
        self.ids = [self.job.to_bytes(8, "big"), bytes.fromhex(spec["token"])]
        self.usage: dict[str, Any] = {
            "worker": str(worker.name),
            "address": worker.address,
            "start": time.time(),
            "end": None,
            "cpu_s": 0.0,
            "memory": 0,
        }

    # -- the site socket --------------------------------------------------------------------

    def _send(self, kind: bytes, *frames: Any) -> None:
        self.sock.send_multipart([kind, *self.ids, *frames])

    def _recv(self, timeout_ms: int) -> list[bytes] | None:
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            return self.sock.recv_multipart()
        return None

    def run(self) -> dict[str, Any]:
        context = zmq.Context()
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 5000)
        if self.spec.get("server_key"):
            self.sock.curve_serverkey = self.spec["server_key"].encode()
            self.sock.curve_publickey, self.sock.curve_secretkey = zmq.curve_keypair()
        try:
            self.sock.connect(self.spec["site"])
            self._send(b"H", self.worker.address.encode(), str(self.worker.name).encode())
            answer = self._recv(HELLO_TIMEOUT_MS)
            if answer is None or answer[0] != b"J":
                return {"status": "refused" if answer else "no answer from the edge server"}
            count = int(json.loads(answer[1])["call"])
            call, resume = answer[2 : 2 + count], answer[2 + count :]
            ended = self._run_job(call, resume)
            # The job's process is gone; its directory goes before the result is sent, so a
            # client holding the result knows nothing of the job is left on the lender.
            shutil.rmtree(self.work, ignore_errors=True)
            return ended if isinstance(ended, dict) else self._done(ended)
        finally:
            self.sock.close()
            context.term()

    # -- the job process ----------------------------------------------------------------------

    def _apps(self) -> Path:
        name = self.spec["apps"]
        found = apps.find(name, self.worker.local_directory)  # or its nanny's, one up
        if found is None:
            raise ServerUnavailable(f"this worker does not hold the site's apps {name}")
        if name not in _verified:
            if not name.endswith(apps.digest(found)[:16]):
                raise ServerUnavailable(f"the apps in {found} do not match their digest")
            _verified.add(name)
        return found

    def _run_job(self, call: list[bytes], resume: list[bytes]) -> dict[str, Any] | list[Any]:
        """The job's reply frames (to send once cleaned up), or how it ended without one."""
        header = protocol.decode_header(call[0])
        run = _Run(self.job, bool(header.flags & protocol.CHECKPOINTED))
        directory = arena_dir()
        prefix = f"offload-site-{os.getpid()}-{self.job}-{secrets.token_hex(4)}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # In a private (0700) directory with a short path: a Unix socket's path has at most
        # 107 bytes, and a lender's local directory may be deep.
        sockets = tempfile.mkdtemp(prefix="offload-s")
        path = os.path.join(sockets, "w.sock")
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(START_TIMEOUT_S)
        process: subprocess.Popen[bytes] | None = None
        channel: Channel | None = None
        writer = ArenaWriter(directory, prefix + "-in")
        group = memory_group = None
        try:
            try:
                apps_dir = self._apps()
            except ServerUnavailable as exc:
                return errors.error_reply(header.request_id, exc)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(apps_dir), env.get("PYTHONPATH", "")) if p
            )
            env["TMPDIR"] = str(self.work)
            process = subprocess.Popen(
                [sys.executable, "-m", "edge_server.site.job"],
                stdin=subprocess.PIPE,
                cwd=self.work,
                env=env,
            )
            limits = self.spec.get("limits", {})
            if limits.get("processes") is not None:
                group = pids.group(os.getpid(), f"site{self.job}-{prefix[-8:]}")
                pids.adopt(group, process.pid)
            if limits.get("memory") is not None:
                memory_group = pids.group(os.getpid(), f"site{self.job}-{prefix[-8:]}", "memory")
                pids.adopt(memory_group, process.pid)
            settings = {
                **{k: self.spec[k] for k in ("modules", "types", "max_message_size", "limits")},
                "compression": self.spec.get("compression", "auto"),
                "apps_dir": str(apps_dir),
                "socket": path,
                "arena_dir": str(directory),
                "prefix": prefix + "-out",
            }
            assert process.stdin is not None
            process.stdin.write(json.dumps(settings).encode() + b"\n")
            process.stdin.close()
            run.pid = process.pid
            conn, _ = listener.accept()
            channel = Channel(conn)
            ready = channel.recv()
            cpu_before = int.from_bytes(ready[2], "big")
            if resume:
                channel.send([b"K", *resume])
            name, spans, inline = writer.pack(call[1:])
            channel.send([b"J", self.ids[0], call[0], name, spans, *inline])
            with _lock:
                _running[self.job] = run
            if _retiring.is_set():
                run.ask_to_move()
            return self._relay(run, process, channel, header, cpu_before, directory)
        except (TimeoutError, OSError, EOFError) as exc:
            how = _ended(process) if process is not None else "did not start"
            crashed = WorkerCrashed(f"the job's process on the lender failed: {exc} ({how})")
            return errors.error_reply(header.request_id, crashed)
        finally:
            with _lock:
                _running.pop(self.job, None)
            if process is not None:
                try:
                    process.wait(timeout=5)  # it was told to stop
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if channel is not None:
                channel.close()
            listener.close()
            shutil.rmtree(sockets, ignore_errors=True)
            writer.close()
            remove_files(directory, prefix)
            pids.release(memory_group)
            pids.release(group)

    def _relay(
        self,
        run: _Run,
        process: subprocess.Popen[bytes],
        channel: Channel,
        header: protocol.Header,
        cpu_before: int,
        directory: Path,
    ) -> dict[str, Any] | list[Any]:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(channel.fileno(), zmq.POLLIN)
        reader = ArenaReader(directory)
        while True:
            events = dict(poller.poll(1000))
            if _retiring.is_set():
                run.ask_to_move()
            if self.sock in events:
                order = self.sock.recv_multipart()
                if order[0] == b"S" and len(order) > 1 and run.checkpointed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, stopsig.signum(order[1][0], 0))
                elif order[0] == b"X":
                    process.kill()
                    process.wait()
                    self._measure(process)
                    self._send(b"U", self._usage())
                    return {"status": "killed", **self.usage}
            if channel.fileno() not in events:
                continue
            try:
                messages = channel.feed()
            except (EOFError, OSError):
                how = _ended(process)
                self._measure(process)
                crashed = WorkerCrashed(f"the job's process on the lender died ({how})")
                return errors.error_reply(header.request_id, crashed)
            for message in messages:
                kind = bytes(message[0])
                if kind == b"C":
                    self._send(b"C", *[bytes(f) for f in message[2:]])
                    continue
                if kind not in (b"D", b"E"):
                    continue
                cpu_ns = int.from_bytes(message[2], "big")
                self.usage["cpu_s"] = max(0, cpu_ns - cpu_before) / 1e9
                self._measure(process)
                payload = reader.unpack(bytes(message[4]), bytes(message[5]), message[6:])
                reply = [bytes(message[3]), *[bytes(p) for p in payload]]
                del payload
                with contextlib.suppress(OSError):
                    channel.send([b"S"])  # the job process exits
                if run.asked_to_move and _stopped(reply):
                    self._send(b"M", self._usage())
                    raise _Moved()
                return reply

    def _measure(self, process: subprocess.Popen[bytes]) -> None:
        self.usage["end"] = time.time()
        self.usage["memory"] = max(self.usage["memory"], _peak_memory(process.pid))

    def _usage(self) -> bytes:
        if self.usage["end"] is None:
            self.usage["end"] = time.time()
        return json.dumps(self.usage).encode()

    def _done(self, reply: list[Any]) -> dict[str, Any]:
        """Send the result with the run's usage; wait for the server to have it."""
        self._send(b"D", self._usage(), *reply)
        ack = self._recv(ACK_TIMEOUT_MS)
        status = "done" if ack is not None and ack[0] == b"A" else "unacknowledged"
        return {"status": status, "workdir": str(self.work), **self.usage}


def _stopped(reply: list[bytes]) -> bool:
    header = protocol.decode_header(reply[0])
    if header.kind != protocol.ERROR or len(reply) < 2:
        return False
    with contextlib.suppress(Exception):
        return protocol.decode_json(reply[1]).get("code") == "stopped"
    return False


def _peak_memory(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _ended(process: subprocess.Popen[bytes] | None) -> str:
    if process is None:
        return "not started"
    try:
        code = process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
