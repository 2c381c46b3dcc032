"""``edge-server --advertise``: announce this server on the LAN (DNS-SD over mDNS).

Clients configured with ``servers="auto"`` find it (:mod:`offload.discovery`
says why mDNS and what the TXT record holds). Registering probes the name
for about 1.7 s, so it runs in a thread of its own while the server already
serves; stopping sends the goodbye that takes the server off every client's
list at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import socket
import threading

from offload._exceptions import ConfigError
from offload.api import find_offloaded
from offload.discovery import SERVICE_TYPE, app_digest, encode_txt
from offload.geo import format_location, parse_location
from offload.runtime import protocol

from .config import ServerConfig

log = logging.getLogger("edge_server")
_NEEDS_ZEROCONF = "--advertise needs python-zeroconf: pip install 'offload[fleet]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of advertising, on the server's command line."""
    parser.add_argument(
        "--advertise",
        action="store_true",
        help="announce this server on the LAN (DNS-SD over mDNS as _offload._tcp) so clients "
        "with servers=auto find it; needs offload[fleet]",
    )
    parser.add_argument(
        "--name", help="the name clients list this server by (default: the host name)"
    )
    parser.add_argument("--site", default="", help='where it is, for people: "Aalborg library"')
    parser.add_argument(
        "--location", metavar="LAT,LON", help="its coordinates in degrees: 57.048,9.919"
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ConfigError on a bad ``--location`` or a missing zeroconf (before anything starts)."""
    if args.advertise:
        try:
            import zeroconf  # noqa: F401
        except ImportError as exc:
            raise ConfigError(_NEEDS_ZEROCONF) from exc
    if args.location is not None:
        try:
            parse_location(args.location)
        except ValueError as exc:
            raise ConfigError(f"--location: {exc}") from exc


def txt_fields(config: ServerConfig, args: argparse.Namespace) -> dict[str, str]:
    """This server's TXT record without its apps."""
    fields = {
        "name": args.name or socket.gethostname(),
        "proto": str(protocol.VERSION),
        "workers": str(config.workers),
    }
    if args.site:
        fields["site"] = args.site
    if args.location:
        fields["loc"] = format_location(parse_location(args.location))
    if config.secret_key:
        import zmq.auth

        public, _ = zmq.auth.load_certificate(config.secret_key)
        fields["key"] = public.decode()
    return fields


def app_digests(modules: tuple[str, ...]) -> dict[str, str]:
    """Each app module's functions and fingerprints as one digest (modules already imported)."""
    digests = {}
    for module in modules:
        functions = find_offloaded(importlib.import_module(module))
        digests[module] = app_digest({n: fn.fingerprint for n, fn in functions.items()})
    return digests


class Advertiser:
    """One registration of this server; :meth:`stop` withdraws it."""

    def __init__(self, address: str, properties: dict[str, str]) -> None:
        try:
            import zeroconf
        except ImportError as exc:
            raise ConfigError(_NEEDS_ZEROCONF) from exc
        host, port = _split(address)
        name = properties["name"]
        label = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:40] or "edge-server"
        self._zc = zeroconf.Zeroconf()
        self.info = zeroconf.ServiceInfo(
            SERVICE_TYPE,
            f"{name[:63]}.{SERVICE_TYPE}",
            port=port,
            properties=properties,
            server=f"{label}-{port}.local.",
            parsed_addresses=_addresses(host),
        )
        self._stopped = threading.Event()
        self._registered = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._register, name="advertise", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        try:
            self._zc.register_service(self.info, allow_name_change=True)
        except Exception as exc:
            log.error("cannot advertise on the LAN: %r", exc)
            return
        with self._lock:
            self._registered = True
        log.info(
            "advertised as %r on %s (%s)",
            self.info.name,
            ", ".join(self.info.parsed_addresses()),
            SERVICE_TYPE,
        )

    def stop(self) -> None:
        """Withdraw the advertisement (a goodbye packet) and close the mDNS sockets."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join(5.0)
        with self._lock:
            if self._registered:
                try:
                    self._zc.unregister_service(self.info)
                except Exception as exc:
                    log.warning("cannot withdraw the advertisement: %r", exc)
        self._zc.close()


def start(config: ServerConfig, args: argparse.Namespace, address: str) -> Advertiser | None:
    """Advertise the server bound to ``address`` if ``--advertise`` asks for it."""
    if not args.advertise:
        return None
    properties = encode_txt(txt_fields(config, args), app_digests(config.apps))
    return Advertiser(address, properties)


def _split(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port)."""
    if not address.startswith("tcp://"):
        raise ConfigError(f"only tcp:// addresses can be advertised, not {address!r}")
    host, _, port = address[len("tcp://") :].rpartition(":")
    return host.strip("[]"), int(port)


def _addresses(host: str) -> list[str]:
    """The addresses clients reach a server bound to ``host`` at (all of them for a wildcard)."""
    if host not in ("0.0.0.0", "*", "::", ""):
        return [socket.gethostbyname(host)]
    import ifaddr  # zeroconf's own dependency

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found or ["127.0.0.1"]
