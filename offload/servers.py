"""The edge servers a client knows: its server, others jobs went to, and whether they answer.

:class:`Servers` owns every :class:`~offload.remote.Remote` of a client: the
configured server (``primary``), and connections made on demand to other
addresses (a job resumed on another server, the backup server). It answers
the router's two questions, "does the server answer now?" (without blocking
the per-call path once known) and "where does a lost job go?", and keeps the
link measured: a bandwidth probe once the server first answers, an idle PING
every ``retry_interval``, from the profiler's thread.

It also knows the other servers (:meth:`Servers.known`): those configured in
``servers``, and with ``servers="auto"`` those a :class:`~offload.discovery.Browser`
finds on the LAN, each marked trusted or not (:mod:`offload.fleet`); with
them, :attr:`Servers.usable` keeps the ones calls may go to
(:mod:`offload.usable`). A connection to another server is made only to a
trusted server, with the key it was trusted by.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from concurrent.futures import Future
from typing import Any

from . import _exceptions as errors
from .config import Config
from .discovery import Browser
from .fleet import Known, listing
from .profiler import LOCAL, REMOTE, Link
from .profiler.choice import Candidate
from .remote import Remote
from .usable import Usable

log = logging.getLogger("offload")


def config_bps(config: Config) -> float:
    """The bandwidth assumed for a link until measured, in bytes per second."""
    return config.assumed_mbit_s * 1e6 / 8


class Servers:
    """The connections of one client, made lazily, closed together."""

    def __init__(self, config: Config, link: Link) -> None:
        self._config = config
        self._link = link
        self._lock = threading.Lock()
        self._closed = False
        self._others: dict[str, Remote] = {}
        self._probe: Future[dict[str, Any]] | None = None
        self._probed_at = 0.0
        self._refused = False  # the server refused this client's key (said once)
        #: The configured server's connection, or None when offline by configuration.
        self.primary: Remote | None = None
        if config.server:
            self.primary = Remote(config, link)
            self._probe = self.primary.ping(timed=False)  # its time includes connecting
            self._greet(self.primary)
        # Probed from the profiler's thread once the server answers: never from a
        # callback, which runs on the thread that must read the probe's reply.
        self._probe_link = bool(config.probe_bytes) and link.up_bps.mean is None
        #: With several servers (``servers``): those calls may go to now, else None.
        self.usable: Usable | None = None
        if config.discover or config.static_servers:
            self.usable = Usable(config, self.get)
        #: Finds servers on the LAN with ``servers="auto"`` (else None).
        self.browser: Browser | None = None
        if config.discover:
            try:
                self.browser = Browser()
            except OSError as exc:  # no multicast here: the configured servers still work
                log.warning("cannot look for servers on the LAN: %s", exc)

    def known(self) -> list[Known]:
        """Every configured or discovered server, each trusted or not."""
        return listing(self._config, self.browser.servers() if self.browser else [])

    @property
    def fleet(self) -> bool:
        """Whether calls are routed among several servers (``servers`` is set)."""
        return self.usable is not None

    def candidates(self) -> tuple[Candidate, ...]:
        """The servers a call may go to now (the first call waits for their first PONGs)."""
        if self.usable is None:
            return ()
        return self.usable.ready(self.known)

    def lose(self, remote: Remote) -> bool:
        """``remote`` lost a call: route no call there until it answers again (probation)."""
        return self.usable.lose(remote.address) if self.usable is not None else False

    def loads(self) -> dict[str, dict[str, Any]]:
        """Each connected server's latest load (from its latest PONG), by address."""
        with self._lock:
            remotes = [r for r in (self.primary, *self._others.values()) if r is not None]
        return {r.address: r.server_info["load"] for r in remotes if "load" in r.server_info}

    @property
    def info(self) -> dict[str, Any]:
        """The configured server's self-description, from its latest PONG."""
        return self.primary.server_info if self.primary is not None else {}

    def require(self) -> Remote:
        """The configured server's connection; ServerUnavailable when there is none."""
        if self.primary is None:
            raise errors.ServerUnavailable("no server configured (offload.configure(server=...))")
        return self.primary

    def up(self) -> bool:
        """Whether the server answers now; probes again every ``retry_interval``.

        Only the very first call may wait (up to ``connect_timeout``) for the
        first PONG; after that this reads a flag.
        """
        if self.usable is not None:
            return bool(self.candidates())
        if self.primary is None:
            return False
        conn = self.primary.conn
        if conn.up:
            return True
        probe = self._probe
        if conn.up is None and probe is not None:
            try:
                probe.result(self._config.connect_timeout)
                return True
            except errors.AuthenticationFailed as exc:
                conn.up = False
                self._say_refused(exc)
            except Exception:
                conn.up = False
        elif probe is not None and not self._refused and probe.done():
            # The refusal may have reached the connection before this call looked.
            refusal = probe.exception()
            if isinstance(refusal, errors.AuthenticationFailed):
                self._say_refused(refusal)
        now = time.monotonic()
        if now - self._probed_at > self._config.retry_interval:
            self._probed_at = now
            self._probe = self.primary.ping()
        return False

    def _say_refused(self, exc: errors.AuthenticationFailed) -> None:
        """Auto calls will run here because the server refused the keys: never silently."""
        if not self._refused:
            self._refused = True
            warnings.warn(
                f"offload: running calls locally: AuthenticationFailed: {exc}",
                RuntimeWarning,
                stacklevel=6,
            )
        log.warning("%s", exc)

    def get(self, where: str) -> Remote | None:
        """The connection a run goes over: None for ``"local"``, else "remote" or an address."""
        if where == LOCAL:
            return None
        primary = self.primary
        if where == REMOTE and primary is None and self.usable is not None:
            candidates = self.candidates()  # mode="remote" with servers but no ``server``
            where = candidates[0].address if candidates else where
        if where == REMOTE or (primary is not None and where == primary.address):
            return self.require()
        with self._lock:
            if self._closed:
                raise errors.ServerUnavailable("the client was shut down")
            remote = self._others.get(where)
            if remote is None:
                config = self._config.replace(server=where, **self._keys(where))
                remote = self._others[where] = Remote(config, Link(config_bps(config)))
                remote.ping(timed=False)
                self._greet(remote)
        return remote

    def _greet(self, remote: Remote) -> None:
        """Tell the server where this client is, if it shares its location (answer unread)."""
        if self._config.share_location and self._config.location:
            with contextlib.suppress(errors.OffloadError):
                remote.control({"op": "hello", "location": self._config.location})

    def _keys(self, address: str) -> dict[str, Any]:
        """How to connect to ``address``: a discovered server with the key it is trusted by."""
        if self.browser is None:
            return {}
        for server in self.known():
            if server.address == address and server.role == "discovered":
                if not server.trusted:
                    raise errors.ServerUnavailable(f"{address} is not trusted ({server.why})")
                if server.key_file:
                    return {"server_key": server.key_file}
                return {"server_key": None, "client_key": None}  # an insecure server
        return {}

    def fallback_target(self) -> str:
        """Where a job goes when its server is lost: the backup server if it answers, else here."""
        backup = self._config.backup_server
        if backup and not self._closed:
            remote = self.get(backup)
            assert remote is not None
            try:
                remote.ping().result(self._config.connect_timeout)
                return backup
            except Exception:
                log.debug("backup server %s does not answer", backup)
        return LOCAL

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the server to answer; return its self-description or raise ServerUnavailable."""
        remote = self.require()
        try:
            return remote.ping().result(timeout or self._config.connect_timeout)
        except TimeoutError as exc:
            raise errors.ServerUnavailable(f"{remote.address} did not answer") from exc

    def probe(self, nbytes: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Measure bandwidth actively: ``nbytes`` up in a PING, then down in its PONG."""
        nbytes = nbytes or self._config.probe_bytes or 2**20
        timeout = timeout or max(self._config.connect_timeout, 10.0)
        remote = self.require()
        for up, down in ((nbytes, 0), (0, nbytes)):
            start = time.perf_counter()
            try:
                remote.ping(up=up, down=down).result(timeout)
            except TimeoutError as exc:
                raise errors.ServerUnavailable(f"{remote.address} did not answer") from exc
            self._link.on_probe(up, down, time.perf_counter() - start)
        return self._link.snapshot()

    def tick(self) -> None:
        """From the profiler's thread: the first bandwidth probe, and an idle PING now and then."""
        remote, now = self.primary, time.monotonic()
        if self._closed:
            return
        if self.usable is not None:
            self.usable.refresh(self.known())
        if remote is None:
            return
        if self._probe_link and remote.conn.up:
            self._probe_link = False
            try:
                self.probe()
            except errors.OffloadError as exc:
                log.debug("bandwidth probe failed: %r", exc)
        elif now - self._probed_at > self._config.retry_interval:
            self._probed_at = now
            self._probe = remote.ping()

    def in_flight(self) -> int:
        """Requests sent to any server and not yet answered."""
        with self._lock:
            remotes = [r for r in (self.primary, *self._others.values()) if r is not None]
        return sum(r.conn.in_flight() for r in remotes)

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            self._closed = True
            remotes = [r for r in (self.primary, *self._others.values()) if r is not None]
        if self.browser is not None:
            self.browser.stop()
        if self.usable is not None:
            self.usable.close()
        for remote in remotes:
            remote.close()
