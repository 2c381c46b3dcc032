"""The socket clients connect to: its options, CurveZMQ encryption and ZAP authentication.

:func:`open_frontend` binds the ROUTER socket. With a secret key it is a
CURVE server and an :class:`~edge_server.security.Authenticator` admits only clients whose
public keys are in the ``authorized_keys`` directory: anyone else is refused
(and logged) during the handshake, before a byte of a call is read. ZAP stamps
every message of an admitted client with its public key (Z85) as ``User-Id``,
which :func:`~edge_server.security.owner` reads: that key owns the client's jobs.
"""

from __future__ import annotations

import logging

import zmq
import zmq.auth

from offload._exceptions import ConfigError

from .config import ServerConfig
from .security import Authenticator, Throttle

log = logging.getLogger("edge_server")


def open_frontend(
    config: ServerConfig, context: zmq.Context, throttle: Throttle
) -> tuple[zmq.Socket, Authenticator | None]:
    """The bound frontend socket, and its authenticator if encrypted.

    Raises :class:`~offload.ConfigError` if the address cannot be bound.
    """
    frontend = context.socket(zmq.ROUTER)
    frontend.setsockopt(zmq.LINGER, 1000)
    frontend.setsockopt(zmq.MAXMSGSIZE, config.max_message_size + 65536)
    # TCP keepalive drops a client that vanished (a phone leaving Wi-Fi leaves a
    # half-open connection), and with it the replies queued for it. Not ZeroMQ's
    # heartbeat: its timeout only counts whole messages, so it would cut a slow
    # upload of a large call.
    frontend.setsockopt(zmq.TCP_KEEPALIVE, 1)
    frontend.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
    frontend.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
    frontend.setsockopt(zmq.TCP_KEEPALIVE_CNT, 6)
    frontend.setsockopt(zmq.SNDHWM, 10_000)  # per client; beyond it replies are dropped
    # A client whose connection takes no data for client_timeout (vanished, or its window
    # shut because it never reads) is dropped, and the replies held for it with it.
    frontend.setsockopt(zmq.TCP_MAXRT, int(config.client_timeout * 1000))
    authenticator = None
    try:
        authenticator = secure(config, context, frontend, throttle)
        frontend.bind(config.bind)
    except (zmq.ZMQError, ConfigError) as exc:
        if authenticator is not None:
            authenticator.stop()
        frontend.close()
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot bind {config.bind}: {exc}") from exc
    return frontend, authenticator


def secure(
    config: ServerConfig, context: zmq.Context, frontend: zmq.Socket, throttle: Throttle
) -> Authenticator | None:
    """Turn CURVE on for ``frontend`` and start the authenticator (None: insecure, said loudly)."""
    if config.secret_key is None:
        log.warning(
            "INSECURE: no --secret-key; traffic is in the clear, anyone who can connect to "
            "%s may run jobs, every client sees every job, and results have no owners",
            config.bind,
        )
        return None
    try:
        public, secret = zmq.auth.load_certificate(config.secret_key)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {config.secret_key}: {exc}") from exc
    if secret is None:
        raise ConfigError(f"{config.secret_key} holds no secret key")
    authenticator = Authenticator(context, throttle, str(config.authorized_keys or ""))
    authenticator.start()
    authenticator.configure_curve(domain="*", location=config.authorized_keys or "")
    frontend.curve_publickey, frontend.curve_secretkey = public, secret
    frontend.curve_server = True
    log.info("CurveZMQ on: clients must hold a key in %s", config.authorized_keys)
    return authenticator
