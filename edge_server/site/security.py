"""TLS between the site's machines: Dask's own security configuration.

Every link of the Dask cluster (edge server's client to the scheduler,
scheduler to workers, worker to worker) runs over ``tls://`` with mutual
authentication when the site is given a CA certificate and, for each
machine, a certificate signed by it and its key::

    dask scheduler --tls-ca-file ca.pem --tls-cert site.pem --tls-key site.key
    edge-server --engine dask --scheduler tls://coordinator:8786 \\
        --site-tls-ca ca.pem --site-tls-cert site.pem --site-tls-key site.key ...
    offload lend --site tcp://coordinator:5555 \\
        --tls-ca ca.pem --tls-cert lender.pem --tls-key lender.key

A machine without a certificate the CA signed cannot join (the handshake
fails) and ``require_encryption`` refuses plain ``tcp://``. The calls,
checkpoints and results of jobs do not travel on these links but on the
edge server's site socket, which is CURVE-encrypted when the server has a
key (:mod:`.engine`).
"""

from __future__ import annotations

from typing import Any

from ..config import ServerConfig


def tls_security(ca: str | None, cert: str | None, key: str | None) -> Any:
    """A ``distributed.Security`` for every role from PEM files (None without a CA)."""
    if ca is None:
        return None
    from distributed.security import Security

    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        require_encryption=True,
    )


def security_of(config: ServerConfig) -> Any:
    """The edge server's Dask security from its ``--site-tls-*`` options."""
    return tls_security(config.site_tls_ca, config.site_tls_cert, config.site_tls_key)
