"""offload: run marked functions here or on a nearby edge server, decided per call.

::

    from offload import configure, explain, offload

    @offload
    def work(x): ...

    configure(server="tcp://edge.local:5555")   # or OFFLOAD_SERVER, or offload.toml
    work(3)                  # runs where it is cheaper; locally when offline
    work.submit(3)           # a concurrent.futures.Future
    explain(work, 3)         # where it would run, and why
"""

from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Future,
    as_completed,
    wait,
)

from ._default import configure, default_client, explain, stats
from ._exceptions import (
    AuthenticationFailed,
    CallTimeout,
    CodeShippingDisabled,
    ConfigError,
    DeployRefused,
    ForbiddenType,
    InlineRefused,
    InsufficientCredits,
    JobCancelled,
    JobLookupError,
    JobNotFinished,
    JobPaused,
    JobStopped,
    LimitExceeded,
    MissingDependency,
    NotADeployer,
    NotAllowed,
    NotCancellable,
    NotCheckpointable,
    NotMovable,
    OffloadError,
    PayloadTooLarge,
    ProtocolError,
    RemoteCallError,
    RemoteError,
    RemoteTraceback,
    ResultNotKept,
    SerializationError,
    ServerBusy,
    ServerUnavailable,
    StoreError,
    UnknownFunction,
    UnknownJob,
    UnloadableResult,
    VersionMismatch,
    WorkerCrashed,
)
from .api import OffloadedFunction, offload
from .batch import BatchResult, Dropped, Failed
from .client import Client
from .config import Config
from .control import JobInfo
from .jobs import Job, Progress
from .local import LocalServer, serve_local
from .profiler import Explanation
from .runtime.checkpoint import checkpoint, restore

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AuthenticationFailed",
    "BatchResult",
    "CallTimeout",
    "Client",
    "CodeShippingDisabled",
    "Config",
    "ConfigError",
    "DeployRefused",
    "Dropped",
    "Explanation",
    "Failed",
    "ForbiddenType",
    "Future",
    "InlineRefused",
    "InsufficientCredits",
    "Job",
    "JobCancelled",
    "JobInfo",
    "JobLookupError",
    "JobNotFinished",
    "JobPaused",
    "JobStopped",
    "LimitExceeded",
    "LocalServer",
    "MissingDependency",
    "NotADeployer",
    "NotAllowed",
    "NotCancellable",
    "NotCheckpointable",
    "NotMovable",
    "OffloadError",
    "OffloadedFunction",
    "PayloadTooLarge",
    "Progress",
    "ProtocolError",
    "RemoteCallError",
    "RemoteError",
    "RemoteTraceback",
    "ResultNotKept",
    "SerializationError",
    "ServerBusy",
    "ServerUnavailable",
    "StoreError",
    "UnknownFunction",
    "UnknownJob",
    "UnloadableResult",
    "VersionMismatch",
    "WorkerCrashed",
    "as_completed",
    "checkpoint",
    "configure",
    "default_client",
    "explain",
    "offload",
    "restore",
    "serve_local",
    "stats",
    "wait",
]
