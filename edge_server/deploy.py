"""Apps deployed to a running server: ``deploy``, ``rollback`` and ``apps`` control requests.

A deployment is content-addressed, as a cloudlet's VM overlay is sent over
a base it already has: the client sends the manifest (JSON: each file's
path, SHA-256 and size) and the server answers with the hashes it lacks;
the client sends the manifest again with those files' bytes as frames after
it, and only those travel. Nothing is kept between the two requests::

    client                                        server (event loop)
    {"op": "deploy", "app", "files": [...]}  ->   who? (--deployers), limits, paths,
                                                  clashes; hashes it lacks
                                             <-   {"missing": [sha256, ...], "bytes"}
    {..., "send": [sha256, ...]} + bytes     ->   (a thread) check every hash, unpack
                                                  into a staging directory, import it
                                                  in a fresh interpreter (edge_server.appcheck),
                                                  rename it into apps/APP/vN
                                             <-   {"app", "version", "functions", ...}
                                                  (the loop) serve vN: new workers

Control messages are JSON, never pickle; a file's bytes are a raw frame.
What the server refuses (:class:`~offload.DeployRefused`: bad paths, links,
limits, hashes, shadowed modules, an app that does not import, a key not in
``--deployers``) is listed in README's *Deploying apps*; nothing of a
refused deployment is left.

Serving a new version (or rolling back to an old one) starts a new
generation of workers: idle workers are replaced at once, busy ones when
their job ends (running jobs are not disturbed), and a call that waited
in the queue with the old version's fingerprint is refused with
:class:`~offload.VersionMismatch` by the new worker, never run on other code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from offload._exceptions import (
    DeployRefused,
    NotADeployer,
    OffloadError,
    ProtocolError,
    ServerBusy,
    ServerUnavailable,
)
from offload.runtime import bundles, errors, protocol

from .apps import AppStore, Version
from .config import ServerConfig
from .install import Deployment, install, keys
from .pool import Deployed
from .registry import Registry
from .security import Throttle

log = logging.getLogger("edge_server.deploy")

#: Control operations this module answers.
OPS = frozenset(("deploy", "rollback", "apps"))

#: Bytes of a deploy request's JSON (its manifest): a few hundred thousand files' worth.
JSON_MAX = 4 * 2**20

Send = Callable[[bytes, list[Any]], None]


class Deployer:
    """The server's apps: deploy, roll back and list them; one deployment at a time."""

    def __init__(
        self,
        config: ServerConfig,
        store: AppStore,
        static: Registry,
        send: Send,
        wake: int,
        switch: Callable[[], None],
        in_use: Callable[[], set[Path]] = set,
    ) -> None:
        self.config = config
        self.store = store
        self._static = static
        self._send = send
        self._wake = wake
        self._switch = switch
        self._in_use = in_use
        self._busy: Deployment | None = None
        self._done: queue.SimpleQueue[Deployment] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._throttle = Throttle(log)

    @classmethod
    def open(
        cls,
        config: ServerConfig,
        static: Registry,
        send: Send,
        wake: int,
        switch: Callable[[], None],
        in_use: Callable[[], set[Path]] = set,
    ) -> Deployer:
        """The deployer of a server: its apps read from ``DATA_DIR/apps``.

        ``wake``: a pipe the loop polls (a byte says a deployment is done);
        ``switch()``: serve the apps as they are now; ``in_use()``: the app
        directories live workers imported.
        """
        store = AppStore(Path(config.data_dir).absolute() / "apps", config.deploy_keep)
        try:
            store.load()
        except OSError as exc:
            log.error("cannot read the deployed apps in %s: %s", store.directory, exc)
        return cls(config, store, static, send, wake, switch, in_use)

    # -- what the event loop asks ---------------------------------------------------------------

    def handle(
        self,
        client: bytes,
        owner: str,
        request_id: int,
        body: dict[str, Any],
        blobs: list[Any],
        closing: bool,
    ) -> None:
        """Answer a control request about apps (``body["op"]`` in :data:`OPS`)."""
        if closing and body.get("op") != "apps":
            self._send(client, errors.error_reply(request_id, ServerUnavailable("server closing")))
        else:
            self.request(client, owner, request_id, body, blobs)

    def request(
        self, client: bytes, owner: str, request_id: int, body: dict[str, Any], blobs: list[Any]
    ) -> None:
        """Answer one request (``body["op"]`` in :data:`OPS`); a deployment's answer is later."""
        try:
            op = body.get("op")
            if op != "deploy" and blobs:
                raise ProtocolError(f"a request to {op} carries no files")
            if op == "apps":
                self._answer(client, request_id, {"apps": self.listing()})
            elif op == "rollback":
                self._allowed(owner)
                self._answer(client, request_id, self._rollback(body))
            else:
                self._allowed(owner)
                self._deploy(client, owner, request_id, body, blobs)
        except NotADeployer as exc:  # any authorized client can ask: rate-limited lines
            self._throttle.note("refused_deploys", "deployment refused: %s", exc)
            self._send(client, errors.error_reply(request_id, exc))
        except OffloadError as exc:
            if isinstance(exc, DeployRefused):
                log.warning("deployment refused (key %s): %s", owner or "-", exc)
            self._send(client, errors.error_reply(request_id, exc))
        except Exception as exc:  # a bug: this request fails, the server serves on
            log.exception("apps request failed")
            self._send(client, errors.error_reply(request_id, ServerUnavailable(f"server: {exc}")))

    def finish(self) -> None:
        """On the event loop: answer the deployments whose thread is done, and serve them."""
        while True:
            try:
                job = self._done.get_nowait()
            except queue.Empty:
                return
            self._busy = None
            if job.version is not None:
                try:
                    self._serve(job.version)
                except (OSError, OffloadError) as exc:
                    job.error = DeployRefused(f"cannot switch to the new version: {exc}")
            if job.error is not None:
                log.warning("deployment of %s refused: %s", job.app, job.error)
                self._send(job.client, errors.error_reply(job.request_id, job.error))
            elif job.missing:  # a copy it held changed on disk: those files must come again
                self._answer(job.client, job.request_id, self._missing(job.entries, job.missing))
            else:
                version = job.version
                assert version is not None
                log.info(
                    "deployed %s version %d (%d files, %d bytes received, %.2f s to set up; "
                    "key %s)",
                    version.app,
                    version.number,
                    len(version.files),
                    job.received,
                    job.setup_s,
                    job.owner,
                )
                self._answer(
                    job.client,
                    job.request_id,
                    {
                        **version.described(),
                        "received_files": job.received_files,
                        "received_bytes": job.received,
                        "setup_s": job.setup_s,
                    },
                )

    def close(self) -> None:
        """Stop a deployment in progress (its check is killed, its files removed) and wait."""
        job = self._busy
        if job is not None:
            job.closing = True
            process = job.process
            if process is not None:
                with contextlib.suppress(OSError):
                    process.kill()
        if self._thread is not None:
            self._thread.join(10.0)

    def served(self, info: dict[str, Any]) -> tuple[Registry, tuple[Deployed, ...]]:
        """What to serve: the ``--app`` modules and each deployed app's current version.

        ``info`` (what PONGs say) is updated: the functions, whether it deploys.
        """
        static = self._static
        fingerprints = dict(static.fingerprints)
        deployed = []
        for version in self.store.current.values():
            if any(name in fingerprints for name in version.functions):
                log.error("deployed app %s clashes with an --app module: not served", version.app)
                continue
            fingerprints.update({n: bytes.fromhex(fp) for n, fp in version.functions.items()})
            deployed.append((str(version.root), version.serve, version.modules))
        info.update(functions=sorted(fingerprints), deploys=self.config.deployers is not None)
        return Registry(static.functions, fingerprints, static.allowlist), tuple(deployed)

    def listing(self) -> list[dict[str, Any]]:
        """Every app: those deployed, with their versions, and the ``--app`` modules."""
        return self.store.listing(self.config.apps, self._static.fingerprints)

    # -- deploy ---------------------------------------------------------------------------------

    def _allowed(self, owner: str) -> None:
        directory = self.config.deployers
        if directory is None:
            raise NotADeployer(
                "this server takes no deployments (its operator starts it with --deployers DIR)"
            )
        if not owner or owner not in keys(directory):
            raise NotADeployer(
                f"key {owner or '(none)'} may not deploy here: it is not in this server's "
                f"deployers ({directory})"
            )

    def _deploy(
        self, client: bytes, owner: str, request_id: int, body: dict[str, Any], blobs: list[Any]
    ) -> None:
        if self._busy is not None:
            raise ServerBusy("another deployment is in progress here; try again in a moment")
        config = self.config
        app = bundles.check_app_name(body.get("app"))
        entries = bundles.check_manifest(
            body.get("files"), config.deploy_max_files, config.deploy_max_bytes
        )
        serve = bundles.check_modules(body.get("serve") or [])
        modules = bundles.modules(entries)
        for module in serve:
            if module not in modules:
                raise DeployRefused(f"serve names {module!r}, which the bundle does not hold")
        self._check_names(app, bundles.top_level(entries))
        fresh = body.get("fresh") is True
        digest = bundles.manifest_digest(entries, serve)
        same = [v for v in self.store.versions(app) if v.digest == digest]
        if same and not fresh:  # this very bundle is here: serve it again, nothing travels
            if blobs:
                raise ProtocolError("files sent for a bundle the server already holds")
            version, current = same[0], self.store.current.get(app)
            if version is not current:
                self._serve(version)
                log.info("%s version %d served again (deployed anew)", app, version.number)
            self._answer(
                client,
                request_id,
                {
                    **version.described(),
                    "unchanged": version is current,
                    "received_files": 0,
                    "received_bytes": 0,
                    "setup_s": 0.0,
                },
            )
            return
        sizes: dict[str, int] = {}
        for entry in entries:
            if sizes.setdefault(entry.sha256, entry.size) != entry.size:
                raise DeployRefused(f"{entry.path!r} has the hash of another file of another size")
        names = body.get("send", [])
        if not isinstance(names, list) or len(names) != len(blobs):
            raise DeployRefused(
                f"send lists {len(names) if isinstance(names, list) else '?'} "
                f"hashes for {len(blobs)} frames"
            )
        sent: dict[str, Any] = {}
        for digest_sent, blob in zip(names, blobs):
            if not isinstance(digest_sent, str) or digest_sent not in sizes:
                raise DeployRefused(
                    f"a file was sent that the manifest does not list ({str(digest_sent)[:70]!r})"
                )
            if digest_sent in sent:
                raise DeployRefused(f"the file {digest_sent} was sent twice")
            if len(blob) != sizes[digest_sent]:
                raise DeployRefused(
                    f"the file {digest_sent} is {len(blob)} bytes; the manifest says "
                    f"{sizes[digest_sent]}"
                )
            sent[digest_sent] = blob.buffer if hasattr(blob, "buffer") else memoryview(blob)
        held = {} if fresh else self.store.known()
        missing = [h for h in sizes if h not in sent and h not in held]
        if missing:
            self._answer(client, request_id, self._missing(entries, missing))
            return
        job = Deployment(
            client,
            request_id,
            owner,
            app,
            self.store.next_number(app),
            entries,
            serve,
            sent,
            {h: p for h, p in held.items() if h in sizes and h not in sent},
            [os.getcwd() if p == "" else p for p in sys.path],
            sum(len(b) for b in sent.values()),
            len(sent),
        )
        self._busy = job
        self._thread = threading.Thread(
            target=self._run, args=(job,), name="edge-deploy", daemon=True
        )
        self._thread.start()

    def _check_names(self, app: str, top: list[str]) -> None:
        """Refuse top-level modules another app, or an ``--app`` module, already has."""
        if not top:
            raise DeployRefused("the bundle holds no Python module to import")
        static = {m.split(".")[0] for m in self.config.apps}
        for name in top:
            if name in static:
                raise DeployRefused(f"module {name!r} is served here with --app; rename it")
            for other, version in self.store.current.items():
                if other != app and name in version.top:
                    raise DeployRefused(f"module {name!r} belongs to app {other!r} here; rename it")

    def _missing(self, entries: Sequence[bundles.Entry], missing: list[str]) -> dict[str, Any]:
        sizes = {e.sha256: e.size for e in entries}  # the answer: send these
        return {"missing": sorted(missing), "bytes": sum(sizes[h] for h in missing)}

    def _run(self, job: Deployment) -> None:
        """The deployment's thread: install it; the loop is woken to answer."""
        try:
            install(job, self.store, self.config.deploy_check_seconds)
        finally:
            self._done.put(job)
            with contextlib.suppress(OSError):
                os.write(self._wake, b"\0")

    # -- serving a version ----------------------------------------------------------------------

    def _serve(self, version: Version) -> None:
        """Make ``version`` its app's current one; new workers; old versions beyond keep go."""
        self._check_names(version.app, version.top)
        self.store.add(version)
        self.store.set_current(version)
        self._switch()
        for old in self.store.collect(version.app, self._in_use()):
            self.store.delete(old)

    def _rollback(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._busy is not None:
            raise ServerBusy("a deployment is in progress here; try again in a moment")
        app = bundles.check_app_name(body.get("app"))
        current, target = self.store.rollback(app, body.get("version"))
        self._check_names(app, target.top)
        if target is not current:
            self.store.set_current(target)
            self._switch()
        log.info("rolled %s back from version %d to %d", app, current.number, target.number)
        return {**target.described(), "previous": current.number}

    def _answer(self, client: bytes, request_id: int, body: dict[str, Any]) -> None:
        self._send(client, protocol.json_message(protocol.CONTROL, request_id, body))
