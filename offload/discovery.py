"""Finding edge servers on the LAN: DNS-SD over mDNS, as ``_offload._tcp.local.``.

Why zeroconf: a nearby server is one on the same network, and mDNS needs no
directory server, no configuration and no address in the app: a server that
starts with ``--advertise`` is found by every client on its link within a
second, and a server that stops is gone from their lists at once (its
goodbye). python-zeroconf is pure Python (Cython-compiled where a wheel has
it) with one dependency; it is the optional extra ``offload[fleet]`` and
imported only when discovery is used.

A server's TXT record (each string at most 255 bytes, the whole kept under
:data:`TXT_BUDGET`) carries ``txtvers``, ``name``, ``site``, ``loc``
(``LAT,LON``), ``key`` (its CurveZMQ public key, Z85, when it is secure),
``proto`` (wire protocol version), ``workers``, and per app module
``app:MODULE`` = a digest of its functions' names and code fingerprints
(:func:`app_digest`); when they do not fit, one ``apps`` digest of them all.
A record that breaks these rules is ignored with one log line.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import ConfigError
from .geo import parse_location

log = logging.getLogger("offload")

SERVICE_TYPE = "_offload._tcp.local."
TXT_VERSION = "1"
TXT_BUDGET = 1300  # bytes of TXT a server advertises (RFC 6763, 6.2: fits one packet)
TXT_ACCEPTED = 2048  # a record larger than this is ignored
_KEYS = {"txtvers", "name", "site", "loc", "key", "proto", "workers", "apps"}


def app_digest(fingerprints: Mapping[str, bytes]) -> str:
    """16 hex digits naming a set of functions at their code fingerprints (wire name -> fp)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(fingerprints):
        h.update(f"{name}:{fingerprints[name].hex()}\n".encode())
    return h.hexdigest()


def module_digest(module: str) -> str:
    """:func:`app_digest` of the ``@offload`` functions of app module ``module`` (imported)."""
    import importlib

    from .api import find_offloaded

    functions = find_offloaded(importlib.import_module(module))
    return app_digest({name: fn.fingerprint for name, fn in functions.items()})


def encode_txt(fields: Mapping[str, str], apps: Mapping[str, str]) -> dict[str, str]:
    """The TXT properties: ``fields`` and an ``app:MODULE`` per app, or one ``apps`` digest."""
    props = {"txtvers": TXT_VERSION, **fields}
    for key, value in props.items():
        if len(f"{key}={value}".encode()) > 255:
            raise ConfigError(f"{key} is too long to advertise (255 bytes with its name)")
    per_app = {f"app:{module}": digest for module, digest in apps.items()}
    size = sum(len(f"{k}={v}".encode()) + 1 for k, v in {**props, **per_app}.items())
    if size <= TXT_BUDGET and all(len(f"{k}={v}".encode()) <= 255 for k, v in per_app.items()):
        return {**props, **per_app}
    return {**props, "apps": app_digest({m: bytes.fromhex(d) for m, d in apps.items()})}


@dataclass(frozen=True)
class Found:
    """A server one TXT record describes."""

    service: str  # the DNS-SD instance name
    address: str  # tcp://IP:PORT
    name: str
    site: str = ""
    location: tuple[float, float] | None = None
    key: str | None = None  # CurveZMQ public key, Z85; None: an insecure server
    protocol: int | None = None
    workers: int | None = None
    apps: dict[str, str] = field(default_factory=dict)  # module -> digest
    apps_digest: str | None = None  # when the apps did not fit one by one


def decode_txt(service: str, address: str, text: bytes, props: Mapping[bytes, Any]) -> Found:
    """A :class:`Found` from a TXT record; ValueError saying what is wrong with it."""
    if len(text) > TXT_ACCEPTED:
        raise ValueError(f"TXT record of {len(text)} bytes (at most {TXT_ACCEPTED})")
    values: dict[str, str] = {}
    for raw_key, raw_value in props.items():
        key = raw_key.decode("utf-8") if isinstance(raw_key, bytes) else str(raw_key)
        if raw_value is None:
            raise ValueError(f"{key} has no value")
        value = raw_value.decode("utf-8") if isinstance(raw_value, bytes) else str(raw_value)
        values[key] = value
    if values.get("txtvers") != TXT_VERSION:
        raise ValueError(f"txtvers {values.get('txtvers')!r}, not {TXT_VERSION}")
    unknown = {k for k in values if k not in _KEYS and not k.startswith("app:")}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    public = values.get("key")
    if public is not None and len(public) != 40:
        raise ValueError("key is not a 40-character Z85 CurveZMQ public key")
    apps = {k[4:]: v for k, v in values.items() if k.startswith("app:")}
    for digest in [*apps.values(), values.get("apps", "0" * 16)]:
        if len(digest) != 16:
            raise ValueError("an app digest is not 16 hex digits")
        int(digest, 16)
    return Found(
        service=service,
        address=address,
        name=values.get("name") or service.removesuffix("." + SERVICE_TYPE),
        site=values.get("site", ""),
        location=parse_location(values["loc"]) if "loc" in values else None,
        key=public,
        protocol=int(values["proto"]) if "proto" in values else None,
        workers=int(values["workers"]) if "workers" in values else None,
        apps=apps,
        apps_digest=values.get("apps"),
    )


class Browser:
    """Servers advertised on the LAN, kept up to date in a thread-safe dict; stoppable.

    zeroconf's listener only queues what changed; this browser's own thread
    asks for each new or updated service's record (which may block), so
    zeroconf's event loop never waits on it.
    """

    def __init__(self, resolve_timeout: float = 2.0) -> None:
        try:
            import zeroconf
        except ImportError as exc:
            raise ConfigError(
                "servers='auto' needs python-zeroconf: pip install 'offload[fleet]'"
            ) from exc
        self._zc_module = zeroconf
        self._timeout_ms = int(resolve_timeout * 1000)
        self._lock = threading.Lock()
        self._found: dict[str, Found] = {}
        self._ignored: set[str] = set()
        self._changes: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._zc = zeroconf.Zeroconf()
        self._browser = zeroconf.ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])
        self._thread = threading.Thread(target=self._run, name="offload-browser", daemon=True)
        self._thread.start()

    def servers(self) -> list[Found]:
        """The servers found so far (a copy)."""
        with self._lock:
            return list(self._found.values())

    def wait(self, seconds: float) -> list[Found]:
        """The servers found after waiting ``seconds`` (for a command that lists once)."""
        time.sleep(seconds)
        return self.servers()

    def stop(self) -> None:
        """Stop browsing and close the mDNS sockets."""
        self._changes.put(None)
        self._browser.cancel()
        self._thread.join(5.0)
        self._zc.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        self._changes.put((state_change.name, name))

    def _run(self) -> None:
        while (change := self._changes.get()) is not None:
            state, name = change
            if state == "Removed":
                with self._lock:
                    self._found.pop(name, None)
                self._ignored.discard(name)
                continue
            try:
                info = self._zc.get_service_info(SERVICE_TYPE, name, timeout=self._timeout_ms)
            except Exception as exc:  # a closing zeroconf, a bad name
                log.debug("cannot resolve %s: %r", name, exc)
                continue
            if info is None:
                continue
            try:
                addresses = info.parsed_addresses()
                if not addresses or not info.port:
                    raise ValueError("no address or port")
                address = f"tcp://{_host(addresses)}:{info.port}"
                found = decode_txt(name, address, info.text or b"", info.properties)
            except (ValueError, UnicodeDecodeError) as exc:
                with self._lock:
                    self._found.pop(name, None)
                if name not in self._ignored:
                    self._ignored.add(name)
                    log.warning("ignoring the malformed advertisement of %s: %s", name, exc)
                continue
            self._ignored.discard(name)
            with self._lock:
                self._found[name] = found


def _host(addresses: list[str]) -> str:
    """The address to connect to: IPv4 first; an IPv6 address in brackets."""
    for address in addresses:
        if ":" not in address:
            return address
    return f"[{addresses[0]}]"
