"""A deployment's work off the event loop: unpack the bundle, check it in a fresh interpreter.

:func:`install` runs in the deployment's thread (:mod:`edge_server.deploy`):
it checks the bytes sent against their hashes, writes every file of the
bundle into a staging directory (a file the server already holds is copied
from a version on disk, its hash checked again on the way), imports the
result in a fresh interpreter (:mod:`edge_server.appcheck`) and renames it
into place as the app's next version. Whatever fails, the staging
directory is removed: a refused deployment leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq.auth

from offload._exceptions import DeployRefused, MissingDependency, OffloadError
from offload.runtime import bundles

from .apps import AppStore, Version, now, remove

log = logging.getLogger("edge_server.deploy")

_CHUNK = 2**20


@dataclass
class Deployment:
    """One deployment between its request and its answer."""

    client: bytes
    request_id: int
    owner: str
    app: str
    number: int
    entries: list[bundles.Entry]
    serve: list[str]
    sent: dict[str, Any]  # sha256 -> the frame's buffer
    held: dict[str, Path]  # sha256 -> a file on disk with those bytes
    path: list[str]  # the server's sys.path, for the check
    received: int  # bytes of the files sent
    received_files: int = 0
    started: float = field(default_factory=time.perf_counter)
    process: subprocess.Popen[str] | None = None  # the fresh interpreter checking it
    closing: bool = False  # the server is stopping: give up
    version: Version | None = None
    error: OffloadError | None = None
    missing: list[str] = field(default_factory=list)
    setup_s: float = 0.0


def install(job: Deployment, store: AppStore, timeout: float) -> None:
    """Unpack, check and install ``job`` (sets its ``version``, ``missing`` or ``error``)."""
    staging: Path | None = None
    try:
        staging = store.staging()
        job.missing = _unpack(staging, job)
        if not job.missing:
            answer = _check(staging, job, timeout)
            version = Version(
                app=job.app,
                number=job.number,
                root=store.directory / job.app / f"v{job.number}",
                files=tuple(sorted(job.entries, key=lambda e: e.path)),
                serve=tuple(answer["serve"]),
                modules=tuple(bundles.modules(job.entries)),
                functions=dict(answer["functions"]),
                deployed_at=now(),
                deployer=job.owner,
                digest=bundles.manifest_digest(job.entries, job.serve),
            )
            store.install(staging, version)
            staging = None
            job.version = version
            job.setup_s = time.perf_counter() - job.started
    except OffloadError as exc:
        job.error = exc
    except Exception as exc:  # the disk, a bug: refused, the server serves on
        log.exception("deployment of %s failed", job.app)
        job.error = DeployRefused(f"the server could not install it: {exc!r}"[:2000])
    finally:
        if staging is not None:
            remove(staging)
        job.sent.clear()  # let go of the frames' memory


def keys(directory: str) -> set[str]:
    """The public keys (Z85) of the ``*.key`` files in ``directory`` (read at every request)."""
    keys = set()
    with contextlib.suppress(OSError):
        for path in Path(directory).glob("*.key"):
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError):
                log.warning("deployers: %s is not a key file", path)
                continue
            keys.add(public.decode())
    return keys


def _unpack(staging: Path, job: Deployment) -> list[str]:
    """Write the bundle's files under ``staging``; the hashes of held copies that changed."""
    changed: list[str] = []
    for digest, blob in job.sent.items():
        if hashlib.sha256(blob).hexdigest() != digest:
            raise DeployRefused(f"the bytes sent as {digest} do not have that hash")
    for entry in job.entries:
        target = staging / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "wb") as out:
            blob = job.sent.get(entry.sha256)
            if blob is not None:
                out.write(blob)
            elif not _copy(job.held[entry.sha256], out, entry.sha256):
                changed.append(entry.sha256)
    return sorted(set(changed))


def _copy(source: Path, out: Any, digest: str) -> bool:
    """Copy a held file into ``out``; False if its bytes no longer have ``digest``."""
    h = hashlib.sha256()
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as src:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest() == digest


def _check(staging: Path, job: Deployment, timeout: float) -> dict[str, Any]:
    """Import the unpacked bundle in a fresh interpreter (:mod:`edge_server.appcheck`)."""
    request = {
        "root": str(staging),
        "path": job.path,
        "serve": job.serve,
        "modules": bundles.modules(job.entries),
        "top": bundles.top_level(job.entries),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(job.path)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the unpacked tree as it came
    with tempfile.TemporaryDirectory(prefix="edge-appcheck-") as cwd:
        if job.closing:
            raise DeployRefused("the server is closing")
        process = job.process = subprocess.Popen(
            [sys.executable, "-m", "edge_server.appcheck"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        try:
            stdout, stderr = process.communicate(json.dumps(request), timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.communicate()
            raise DeployRefused(
                f"importing {job.app} took over {timeout:g} s (--deploy-check-seconds)"
            ) from exc
        finally:
            job.process = None
    if job.closing:
        raise DeployRefused("the server is closing")
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1])
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ValueError("not an answer")
    except (IndexError, ValueError) as exc:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise DeployRefused(
            f"the check of {job.app} ended without an answer (exit status {process.returncode})"
            + (f":\n{tail}" if tail else "")
        ) from exc
    if answer["ok"]:
        return answer
    if answer.get("kind") == "missing":
        raise MissingDependency(str(answer.get("message")), str(answer.get("module")))
    raise DeployRefused(f"{job.app}: {answer.get('message')}")
