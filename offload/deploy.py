"""Apps to edge servers: pack them, deploy them, list and roll them back; provision on first use.

``offload deploy PATH`` packs an app into a :class:`~offload.bundle.Bundle`
(a module file ``my_app.py``, a package directory, a directory of modules
and data files, or a wheel) and deploys it to each server that lets this client's key
deploy (its ``--deployers``). Only the files a server lacks travel: the
first request names every file by its SHA-256, the server answers with
those it has no copy of, the second carries their bytes (see
:mod:`edge_server.deploy`). Requests and answers are JSON; a file's bytes
are a frame of their own, never pickle.

A function marked ``@offload(provision=True)`` (or every function, with the
``provision`` setting) is deployed on first use: when its server lacks it,
its app (the top-level module or package it is defined in) is deployed
before the call, and the decision counts the transfer like any other (the
remote side's estimate includes the bundle's upload while the server lacks
it; the bytes and seconds it took go to the function's totals and the
link's bandwidth).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from . import _exceptions as errors
from .bundle import Bundle, bundle_of
from .config import Config
from .futures import chain, running_future, settle
from .profiler import Decider

log = logging.getLogger("offload")


class Remote(Protocol):
    """What a deployment needs of a connection (:class:`offload.remote.Remote` is one)."""

    config: Config
    server_info: dict[str, Any]

    @property
    def address(self) -> str: ...

    def control(
        self, body: dict[str, Any], extra: Sequence[Any] = ()
    ) -> tuple[int, Future[Any]]: ...


#: Rounds of "these are missing" a deployment goes through before giving up.
MAX_ROUNDS = 3


@dataclass(frozen=True)
class Deployed:
    """What one server said to one deployment."""

    server: str
    app: str
    version: int
    unchanged: bool  # the server already served exactly this bundle
    functions: dict[str, str]  # wire name -> fingerprint (hex)
    total_files: int
    total_bytes: int
    sent_files: int  # files whose bytes travelled (the rest the server had)
    sent_bytes: int
    up_bytes: int  # every byte of the requests, manifests included
    down_bytes: int  # of the answers
    seconds: float  # from the first request to the last answer
    setup_s: float  # of them, the server unpacking and checking it
    last_round_s: float  # the round trip that carried the files (or the only one)
    last_round_up: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


# -- talking to a server --------------------------------------------------------------------------


def deploy_async(remote: Remote, bundle: Bundle, *, fresh: bool = False) -> Future[Deployed]:
    """Deploy ``bundle`` over ``remote``; the future resolves to the server's :class:`Deployed`.

    ``fresh``: send every file, and make a new version even of a bundle the
    server already serves (as if it held nothing).
    """
    outer: Future[Deployed] = running_future()
    body: dict[str, Any] = {"op": "deploy", "app": bundle.app, "files": bundle.manifest()}
    if bundle.serve:
        body["serve"] = list(bundle.serve)
    if fresh:
        body["fresh"] = True
    tally = {"up": 0, "down": 0, "files": 0, "bytes": 0, "rounds": 0}
    start = time.perf_counter()

    def send(hashes: list[str]) -> None:
        try:
            blobs = [bundle.data[h] for h in hashes]
        except KeyError as exc:
            settle(
                outer,
                exc=errors.ProtocolError(f"the server asked for a file not in the bundle: {exc}"),
            )
            return
        request = {**body, "send": hashes} if hashes else body
        tally["rounds"] += 1
        tally["files"] += len(blobs)
        tally["bytes"] += sum(len(b) for b in blobs)
        up = len(json.dumps(request)) + sum(len(b) for b in blobs)
        tally["up"] += up
        round_start = time.perf_counter()
        try:
            _, answer = remote.control(request, blobs)
        except errors.OffloadError as exc:
            settle(outer, exc=exc)
            return
        answer.add_done_callback(functools.partial(answered, round_start, up))

    def answered(round_start: float, up: int, answer: Future[Any]) -> None:
        exc = answer.exception()
        if exc is not None:
            settle(outer, exc=exc)
            return
        body_in, _ = answer.result()
        tally["down"] += len(json.dumps(body_in))
        missing = body_in.get("missing")
        if missing is not None:
            if tally["rounds"] >= MAX_ROUNDS or not isinstance(missing, list):
                settle(
                    outer,
                    exc=errors.DeployRefused(
                        f"{remote.address} still lacks {len(missing)} files after "
                        f"{tally['rounds']} rounds"
                    ),
                )
                return
            send([str(h) for h in missing])
            return
        try:
            deployed = Deployed(
                server=remote.address,
                app=str(body_in["app"]),
                version=int(body_in["version"]),
                unchanged=bool(body_in.get("unchanged", False)),
                functions={str(k): str(v) for k, v in body_in["functions"].items()},
                total_files=len(bundle.files),
                total_bytes=bundle.size,
                sent_files=tally["files"],
                sent_bytes=tally["bytes"],
                up_bytes=tally["up"],
                down_bytes=tally["down"],
                seconds=time.perf_counter() - start,
                setup_s=float(body_in.get("setup_s", 0.0)),
                last_round_s=time.perf_counter() - round_start,
                last_round_up=up,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            settle(outer, exc=errors.ProtocolError(f"a malformed deploy answer: {exc!r}"))
            return
        settle(outer, deployed)

    send(list(bundle.data) if fresh else [])  # fresh: every file in the first request
    return outer


def deploy(
    remote: Remote, bundle: Bundle, *, fresh: bool = False, timeout: float = 300.0
) -> Deployed:
    """Deploy ``bundle`` over ``remote`` and wait for the answer (:func:`deploy_async`)."""
    return _wait(remote, deploy_async(remote, bundle, fresh=fresh), timeout)


def apps(remote: Remote, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The server's apps: deployed ones with their versions, and its ``--app`` modules."""
    _, answer = remote.control({"op": "apps"})
    body, _ = _wait(remote, answer, timeout)
    listed = body.get("apps")
    if not isinstance(listed, list):
        raise errors.ProtocolError("an apps answer without a list of apps")
    return listed


def rollback(
    remote: Remote, app: str, version: int | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """Serve ``app``'s previous version again (or ``version``); the server's answer."""
    request: dict[str, Any] = {"op": "rollback", "app": app}
    if version is not None:
        request["version"] = version
    _, answer = remote.control(request)
    body, _ = _wait(remote, answer, timeout)
    return dict(body)


def _wait(remote: Remote, future: Future[Any], timeout: float) -> Any:
    try:
        return future.result(timeout)
    except TimeoutError as exc:
        raise errors.ServerUnavailable(
            f"{remote.address} did not answer within {timeout:g} s"
        ) from exc


# -- provisioning on first use --------------------------------------------------------------------


class Provisioner:
    """Provisioning on first use over one connection: one deployment per app at a time.

    :meth:`wanted` and :meth:`lacks` say whether a call must wait for its
    app; :meth:`then` deploys it and sends the call after (the call fails
    with the deployment's error if it is refused); :meth:`on_unknown`
    does the same when the server answers ``UnknownFunction``. A refused
    deployment is remembered for ``retry_s`` seconds, so the calls that
    follow do not each try again.
    """

    def __init__(self, remote: Remote, retry_s: float = 60.0) -> None:
        self._remote = remote
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._deployments: dict[str, tuple[float, Future[Deployed]]] = {}

    def wanted(self, fn: Any) -> bool:
        """Whether ``fn``'s app is deployed to this server when it lacks it."""
        wanted = fn.provision if fn.provision is not None else self._remote.config.provision
        return bool(wanted) and self._remote.server_info.get("deploys", True) is not False

    def lacks(self, fn: Any) -> bool:
        """Whether the server's latest PONG said it does not hold ``fn`` (False: not known)."""
        functions = self._remote.server_info.get("functions")
        return isinstance(functions, list) and fn.wire_name not in functions

    def refused(self, fn: Any) -> bool:
        """Whether deploying ``fn``'s app was refused lately (the server will not take it)."""
        with self._lock:
            found = self._deployments.get(_top(fn))
        if found is None or not found[1].done():
            return False
        return found[1].exception() is not None and time.monotonic() - found[0] < self._retry_s

    def pending_bytes(self, fn: Any) -> int:
        """Bytes of ``fn``'s app if a call would have to send it first, else 0 (the decision)."""
        if not self.wanted(fn) or not self.lacks(fn) or self.refused(fn):
            return 0
        try:
            return bundle_of(fn).size
        except errors.OffloadError:
            return 0

    def provision(self, fn: Any) -> Future[Deployed]:
        """Deploy ``fn``'s app, or join its deployment in flight (or refused lately)."""
        top = _top(fn)
        with self._lock:
            found = self._deployments.get(top)
            if found is not None:
                when, future = found
                if not future.done() or (
                    future.exception() is not None and time.monotonic() - when < self._retry_s
                ):
                    return future
            future = running_future()
            self._deployments[top] = (time.monotonic(), future)
        try:
            chain(future, deploy_async(self._remote, bundle_of(fn)))
        except errors.OffloadError as exc:
            settle(future, exc=exc)
        return future

    def then(self, fn: Any, future: Future[Any], send: Callable[..., Any]) -> None:
        """Deploy ``fn``'s app, then ``send(provisioned=...)`` the call (else fail ``future``)."""
        self.provision(fn).add_done_callback(functools.partial(self._sent, future, send))

    def on_unknown(
        self, fn: Any, future: Future[Any], send: Callable[..., Any]
    ) -> Callable[[Future[Any]], None]:
        """A callback for a first try: on ``UnknownFunction``, :meth:`then`; else its outcome."""

        def done(inner: Future[Any]) -> None:
            if type(inner.exception()) is errors.UnknownFunction:
                self.then(fn, future, send)
            else:
                chain(future, inner)

        return done

    def _sent(self, future: Future[Any], send: Callable[..., Any], done: Future[Any]) -> None:
        exc = done.exception()
        if exc is not None:
            settle(future, exc=exc)
            return
        deployed: Deployed = done.result()
        info = self._remote.server_info
        if isinstance(info.get("functions"), list):  # until the next PONG says so itself
            functions = sorted({*info["functions"], *deployed.functions})
            self._remote.server_info = {**info, "functions": functions}
        try:
            send(provisioned=deployed)
        except Exception as err:
            settle(future, exc=err)


def count_transfer(decider: Decider, fn: Any, deployed: Deployed) -> None:
    """Tell ``decider`` about the deployment a call of ``fn`` waited for."""
    try:  # the round trip that carried the files teaches the link; the rest is the server's
        waited = deployed.setup_s + (deployed.seconds - deployed.last_round_s)
        decider.observe_transfer(
            fn, deployed.up_bytes, deployed.down_bytes, deployed.seconds, waited
        )
    except Exception:
        log.warning("the profiler could not learn from a deployment", exc_info=True)


def _top(fn: Any) -> str:
    return str(fn.wire_name.split(":")[0].split(".")[0])
