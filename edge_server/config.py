"""Server configuration: one frozen dataclass, built once from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass

from offload._exceptions import ConfigError
from offload.geo import parse_location

from .visitors import operator_keys


@dataclass(frozen=True)
class ServerConfig:
    """Settings of an :class:`~edge_server.server.EdgeServer`.

    bind: ZeroMQ address to listen on; a ``*`` port picks a free one.
    apps: modules whose ``@offload`` functions are served (the replicated code).
    types: extra ``module:Name`` types call arguments may contain.
    workers: worker processes running jobs (default: CPU count).
    allow_code_shipping: accept functions sent by value (runs client code!).
    allow_inline: run calls that ask for it (``@offload(isolation="thread")``)
        in threads of the server process, not worker processes; only
        functions of ``apps``, never shipped or deployed code nor
        checkpointed calls. No crash, memory or CPU isolation, and a hung
        call cannot be stopped: see :mod:`edge_server.inline`. Off: such
        calls are refused with InlineRefused.
    max_message_size: largest call accepted, in bytes.
    queue_size: calls waiting for a worker before new ones get ServerBusy.
    compression: lz4 on results where it pays (``"auto"``) or ``"off"``.
    max_call_seconds: the longest any call may run, whatever timeout its client
        asked for (a client may ask for none).
    busy_poll: seconds after handing a job to a worker during which the server
        polls for the reply instead of sleeping, only while a core is spare (no
        call queued, fewer jobs running than cores); 0 (the default) disables;
        see :meth:`EdgeServer._wait <edge_server.server.EdgeServer._wait>`.
    close_grace: on stop (SIGTERM), how long running jobs get: checkpointed ones
        are asked for a checkpoint at once and stop there, others may finish.
    purge_on_exit: delete all job data this server stored when it exits.
    orphans: what happens to the jobs of a client that disconnected: ``"stop"``
        (queued ones dropped, running ones' workers replaced) or ``"keep"``
        (they run, and their results are kept for ``offload result``).
    data_dir: where the job store (``jobs.sqlite``) lives.
    keep_results: ``"orphaned"`` keeps the result of a job whose client is
        gone when it finishes; ``"all"`` keeps every result (for clients that
        fetch them later; costs a copy of each result on disk).
    result_ttl, history_ttl: seconds a kept result, and a finished job's
        record, stay in the store.
    limit_memory, limit_cpu, limit_files: per job, the memory (bytes of private
        memory beyond what the worker holds when it starts), CPU seconds and
        open files it may use (``resource.setrlimit``); past one, the call
        fails with LimitExceeded naming it and its worker is replaced.
    limit_processes: processes (and threads) a job may start; see
        :mod:`edge_server.pids` (a cgroup per worker as root, else RLIMIT_NPROC).
    limit_disk: bytes a job may write to its scratch directory (its cwd and
        TMPDIR, emptied after each job) and /dev/shm, and the largest file it
        may write anywhere; see :mod:`edge_server.scratch`. As root,
        ``limit_memory`` alone also gives each worker a private /dev/shm.
    secret_key: file with this server's CurveZMQ secret key; with it every
        connection is encrypted and only clients whose public keys are in
        ``authorized_keys`` (a directory of ``*.key`` files) get in, refused
        by ZAP before a byte of a call is read. Without it the server is open
        to anyone who can connect (the CLI insists on ``--insecure`` then).
    operator_keys: a directory of the public keys (``*.key``) of the people who
        run the server: they, and no one else, may list its clients
        (:mod:`edge_server.visitors`). Needs ``secret_key``.
    location: where the server is, ``"LAT,LON"``: the client list gives the
        distance to clients that share their location.
    max_running_per_client: calls of one client running at once; its others
        wait (the queue serves clients round-robin either way).
    client_timeout: silence (no message, no heartbeat) after which a client
        counts as gone; clients with calls in flight ping every second.
    memory_budget, client_budget: bytes all clients together, and one client,
        may make the server hold: queued and running calls' payloads, and
        replies not yet sent (see :mod:`edge_server.budget`). A call past
        either gets ServerBusy before its payload is stored; a reply past
        either is dropped, and its job's record says so.
    payload_file_min: a queued call's payload of at least this many bytes is
        written to a file by a writer thread, not into SQLite by the event loop.
    engine: where jobs run: ``"local"`` (this machine's worker processes) or
        ``"dask"`` (each job a task on the Dask cluster at ``scheduler``: a site
        of lent machines, see :mod:`edge_server.site`).
    scheduler: the Dask scheduler's address (``tcp://host:8786``, ``tls://...``).
    site_bind: where this server listens for the site's tasks (they fetch their
        call and send back checkpoints and results here); a ``*`` port picks one.
    site_address: the address lenders reach ``site_bind`` at (default: as bound).
    site_tls_ca, site_tls_cert, site_tls_key: PEM files of Dask's TLS security
        between the site's machines (this server's Dask client uses them).
    credit_grant: micro-credits a new owner gets on a site.
    price_cpu, price_memory: a site's starting prices, in micro-credits per
        core-hour and per GB-hour; prices move each day within a quarter and
        four times these (:mod:`edge_server.credits`).
    deployers: a directory of the public keys (``*.key``) of clients that may
        deploy apps here (``offload deploy``; see :mod:`edge_server.deploy`);
        ``None``, the default, refuses every deployment. Needs ``secret_key``.
        Apps deployed before are served either way.
    deploy_max_bytes, deploy_max_files: the largest bundle a deployment may
        bring, in bytes and in files.
    deploy_keep: versions of each app kept on disk (for ``--rollback``).
    deploy_check_seconds: how long the fresh interpreter that imports a new
        version before it is served may take.
    """

    bind: str = "tcp://127.0.0.1:5555"
    apps: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    workers: int = os.cpu_count() or 1
    allow_code_shipping: bool = False
    allow_inline: bool = False
    max_message_size: int = 512 * 2**20
    queue_size: int = 1000
    compression: str = "auto"
    max_call_seconds: float = 3600.0
    busy_poll: float = 0.0  # measured: 100 us of CPU per no-op call, no gain in p50
    close_grace: float = 10.0
    orphans: str = "stop"
    secret_key: str | None = None
    authorized_keys: str | None = None
    operator_keys: str | None = None
    location: str | None = None
    limit_memory: int | None = None
    limit_cpu: float | None = None
    limit_files: int | None = None
    limit_processes: int | None = None
    limit_disk: int | None = None
    max_running_per_client: int = 1_000_000
    client_timeout: float = 15.0
    purge_on_exit: bool = False
    data_dir: str = os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "edge-server"
    )
    keep_results: str = "orphaned"
    result_ttl: float = 7 * 86400.0
    history_ttl: float = 30 * 86400.0
    memory_budget: int = 2**30  # sized for a 4 GB board
    client_budget: int = 256 * 2**20
    payload_file_min: int = 256 * 2**10
    engine: str = "local"
    scheduler: str | None = None
    site_bind: str = "tcp://127.0.0.1:*"
    site_address: str | None = None
    site_tls_ca: str | None = None
    site_tls_cert: str | None = None
    site_tls_key: str | None = None
    credit_grant: int = 100_000_000
    price_cpu: int = 1_000_000
    price_memory: int = 250_000
    deployers: str | None = None
    deploy_max_bytes: int = 64 * 2**20
    deploy_max_files: int = 2000
    deploy_keep: int = 5
    deploy_check_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.queue_size < 1:
            raise ConfigError("queue_size must be at least 1")
        if self.max_message_size < 1024:
            raise ConfigError("max_message_size must be at least 1024 bytes")
        if self.max_call_seconds <= 0:
            raise ConfigError("max_call_seconds must be positive")
        if not 0 <= self.busy_poll <= 0.01:
            raise ConfigError("busy_poll must be between 0 and 10 ms")
        if self.compression not in ("auto", "off"):
            raise ConfigError("compression must be 'auto' or 'off'")
        if self.orphans not in ("stop", "keep"):
            raise ConfigError("orphans must be 'stop' or 'keep'")
        if self.keep_results not in ("orphaned", "all"):
            raise ConfigError("keep_results must be 'orphaned' or 'all'")
        if self.result_ttl <= 0 or self.history_ttl <= 0:
            raise ConfigError("result_ttl and history_ttl must be positive")
        limits = ("limit_memory", "limit_cpu", "limit_files", "limit_processes", "limit_disk")
        for name in limits:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive")
        if (self.secret_key is None) != (self.authorized_keys is None):
            raise ConfigError("secret_key and authorized_keys go together")
        if self.authorized_keys is not None and not os.path.isdir(self.authorized_keys):
            raise ConfigError(f"authorized_keys {self.authorized_keys!r} is not a directory")
        if self.operator_keys is not None and self.authorized_keys is None:
            raise ConfigError("operator_keys needs CurveZMQ (secret_key and authorized_keys)")
        if self.operator_keys is not None and not os.path.isdir(self.operator_keys):
            raise ConfigError(f"operator_keys {self.operator_keys!r} is not a directory")
        operator_keys(self.operator_keys)  # ConfigError if none can be read
        if self.location is not None:
            try:
                parse_location(self.location)
            except ValueError as exc:
                raise ConfigError(f"location: {exc}") from exc
        if self.max_running_per_client < 1:
            raise ConfigError("max_running_per_client must be at least 1")
        if self.client_timeout <= 0:
            raise ConfigError("client_timeout must be positive")
        if self.close_grace < 0:
            raise ConfigError("close_grace must be 0 or more")
        if not 2**20 <= self.client_budget <= self.memory_budget:
            raise ConfigError("client_budget must be at least 1 MB and at most memory_budget")
        if self.engine not in ("local", "dask"):
            raise ConfigError("engine must be 'local' or 'dask'")
        if self.allow_inline and self.engine != "local":
            raise ConfigError("allow_inline runs calls in this process: not with the dask engine")
        if self.engine == "dask" and not self.scheduler:
            raise ConfigError("the dask engine needs a scheduler address")
        tls = (self.site_tls_ca, self.site_tls_cert, self.site_tls_key)
        if any(tls) and not all(tls):
            raise ConfigError("site TLS needs the CA, the certificate and the key")
        if self.credit_grant < 0 or self.price_cpu < 4 or self.price_memory < 4:
            raise ConfigError("credit_grant must be 0 or more, prices at least 4")
        if self.payload_file_min < 1024:
            raise ConfigError("payload_file_min must be at least 1024 bytes")
        if self.deployers is not None:
            if self.secret_key is None:
                raise ConfigError(
                    "deployers needs secret_key: a deployment is allowed by its client's key"
                )
            if not os.path.isdir(self.deployers):
                raise ConfigError(f"deployers {self.deployers!r} is not a directory")
        if self.deploy_max_bytes < 1 or self.deploy_max_files < 1:
            raise ConfigError("deploy_max_bytes and deploy_max_files must be positive")
        if self.deploy_keep < 2:
            raise ConfigError("deploy_keep must be at least 2 (the current version and one back)")
        if self.deploy_check_seconds <= 0:
            raise ConfigError("deploy_check_seconds must be positive")
