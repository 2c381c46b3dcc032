"""Every error `offload` raises, in one tree under :class:`OffloadError`.

Lower-level errors (ZeroMQ, pickle, struct, OS, SQLite) are translated into
these at the boundary where they happen, so callers only ever need to catch
what is here. Both ends use the same classes: the server raises them, and a
failure that must reach a client travels as a short code (the one mapping is
:data:`ERROR_CODES`; :mod:`offload.runtime.errors` turns an exception into an
ERROR reply and the reply back into the class). The wire code of each class
that has one is in brackets.

    OffloadError
    ├── ConfigError
    ├── ProtocolError                       [protocol]
    ├── SerializationError                  [serialization]
    │   ├── ForbiddenType                   [forbidden_type]
    │   └── UnloadableResult                [unloadable_result]
    ├── PayloadTooLarge                     [payload_too_large]
    ├── ServerUnavailable                   [unavailable]
    │   ├── AuthenticationFailed
    │   └── JobPaused
    ├── ServerBusy                          [busy]
    ├── InsufficientCredits                 [insufficient_credits]
    ├── NotAllowed                          [not_allowed]
    ├── StoreError
    ├── NotCheckpointable
    ├── DeployRefused                       [deploy_refused]
    │   ├── NotADeployer                    [not_a_deployer]
    │   └── MissingDependency               [missing_dependency]
    ├── JobLookupError
    │   ├── UnknownJob                      [unknown_job]
    │   ├── JobNotFinished                  [not_finished]
    │   ├── ResultNotKept                   [not_kept]
    │   ├── NotCancellable                  [not_cancellable]
    │   └── NotMovable                      [not_movable]
    └── RemoteCallError
        ├── UnknownFunction                 [unknown_function]
        │   └── CodeShippingDisabled        [code_shipping_disabled]
        ├── InlineRefused                   [inline_refused]
        ├── VersionMismatch                 [version_mismatch]
        ├── WorkerCrashed                   [worker_crashed]
        ├── CallTimeout                     [timeout]
        ├── LimitExceeded                   [limit_exceeded]
        ├── JobStopped                      [stopped]
        ├── JobCancelled                    [cancelled]
        └── RemoteError                     [remote]

:class:`RemoteTraceback` is no error of its own: it carries the server's
traceback text as the ``__cause__`` of an exception rebuilt on the client.
"""

from __future__ import annotations

import pickle
import re


class OffloadError(Exception):
    """Base class of every error raised by offload."""


class ConfigError(OffloadError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class ProtocolError(OffloadError):
    """A message does not follow the wire protocol (bad magic, version or layout)."""


class SerializationError(OffloadError):
    """A value could not be serialized or deserialized."""


class ForbiddenType(SerializationError, pickle.UnpicklingError):
    """The restricted unpickler refused a global that is not on its allowlist."""


class UnloadableResult(SerializationError):
    """The call ran, but its result could not be serialized or loaded (so it is not rerun)."""


class PayloadTooLarge(OffloadError):
    """A message is larger than the configured maximum message size."""


class ServerUnavailable(OffloadError, ConnectionError):
    """No edge server answered, or the connection to it was lost."""


class JobPaused(ServerUnavailable):
    """A ``mode="remote"`` job lost its server and paused rather than go on here.

    ``job`` is the paused :class:`~offload.Job`: ``exc.job.resume("local")``
    (or another server's address) goes on from its latest checkpoint.
    """

    def __init__(self, message: str, job: object = None) -> None:
        super().__init__(message)
        self.job = job

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), None))


class AuthenticationFailed(ServerUnavailable):
    """The server refused this client's CurveZMQ handshake: check the keys the message names.

    The client's public key is not in the server's ``--authorized-keys``, or
    ``server_key`` is not that server's public key, or only one side uses CurveZMQ.
    """


class ServerBusy(OffloadError):
    """The server's queue is full; the call was not accepted."""


class InsufficientCredits(OffloadError):
    """The job's owner has too few credits for it on this site; refused before it ran.

    Lend a machine (``offload lend``) to earn credits, or ask the site for a grant.
    """


class NotAllowed(OffloadError, PermissionError):
    """The server refused a request this client's key may not make (an operator's, say)."""


class StoreError(OffloadError):
    """The server's job store could not be read or written (SQLite failed: disk full, I/O).

    Raised inside the server only; a client whose request it fails sees
    :class:`ServerUnavailable`.
    """


class RemoteCallError(OffloadError):
    """Base class of failures reported by the server for one call."""


class UnknownFunction(RemoteCallError, LookupError):
    """The server holds no function under the requested name."""


class CodeShippingDisabled(UnknownFunction):
    """The client shipped a function by value but the server does not allow it."""


class InlineRefused(RemoteCallError):
    """The server will not run this call inline (``@offload(isolation="thread")``).

    It runs inline calls only when started with ``--allow-inline``, and only of
    functions from its own ``--app`` modules: never code shipped by value, a
    deployed app's function, or a checkpointed call. Nothing ran; in ``auto``
    mode the call runs here instead, warned (the server never quietly runs it
    in a worker process instead).
    """


class VersionMismatch(RemoteCallError):
    """The server's copy of the function differs from the client's (fingerprints differ)."""


class WorkerCrashed(RemoteCallError):
    """The worker process running the call died (os._exit, segfault, killed)."""


class CallTimeout(RemoteCallError, TimeoutError):
    """The call ran past its timeout and its worker was stopped."""


class LimitExceeded(RemoteCallError):
    """The call went past a resource limit of its worker (memory, CPU time, open files).

    The message names the limit; the worker was replaced, other calls were not disturbed.
    """


class JobStopped(RemoteCallError):
    """A checkpointed job stopped at a safe point when asked: paused, or its server closing.

    Its last checkpoint reached the client first, so it can resume from there.
    """


class JobCancelled(RemoteCallError):
    """The job was cancelled on the server (``offload cancel``) before it finished."""


class JobLookupError(OffloadError, LookupError):
    """Base class of failures to find a job or its result on the server."""


class UnknownJob(JobLookupError):
    """The server holds no job of this client under that id (never, expired, or another's)."""


class JobNotFinished(JobLookupError):
    """The job is still queued or running, so it has no result yet."""


class ResultNotKept(JobLookupError):
    """The job finished, but its result was delivered to its client and not kept, or expired."""


class NotCancellable(JobLookupError):
    """The job has already finished (or is on its way out), so it cannot be cancelled."""


class NotMovable(JobLookupError):
    """The job is not paused or interrupted, so it cannot be recorded as gone on elsewhere."""


class NotCheckpointable(OffloadError, TypeError):
    """Pause or resume of a call whose function takes no checkpoints (``checkpoint_every``)."""


class DeployRefused(OffloadError):
    """The server refused to deploy an app, or to roll one back (``offload deploy``).

    The message says why: a path it will not write (``..``, absolute, a link),
    a bundle over its size or file limits, a file whose bytes do not match its
    hash, a module that would shadow one the server already has, an app that
    fails to import. Nothing of a refused bundle is left on the server.
    """


class NotADeployer(DeployRefused):
    """This client's key may not deploy here: not in the server's ``--deployers``, or none set."""


class MissingDependency(DeployRefused):
    """The app imports a module the server does not have; ``module`` names it."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        if module is None:  # rebuilt from the wire: the message names it first
            found = re.search(r"module '([^']+)'", message)
            module = found.group(1) if found else ""
        self.module = module

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.module))


class RemoteError(RemoteCallError):
    """The function raised an exception whose type cannot be rebuilt on the client.

    ``remote_type`` is the exception's qualified type name, ``remote_traceback``
    the formatted traceback from the server.
    """

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class RemoteTraceback(Exception):
    """Carries a traceback text from the server; set as ``__cause__`` of a remote exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nRemote traceback:\n{self.tb}"


#: Wire codes of server-side errors, mapped to the class the client raises.
ERROR_CODES: dict[str, type[OffloadError]] = {
    "protocol": ProtocolError,
    "serialization": SerializationError,
    "forbidden_type": ForbiddenType,
    "unloadable_result": UnloadableResult,
    "payload_too_large": PayloadTooLarge,
    "busy": ServerBusy,
    "insufficient_credits": InsufficientCredits,
    "not_allowed": NotAllowed,
    "unavailable": ServerUnavailable,
    "unknown_function": UnknownFunction,
    "code_shipping_disabled": CodeShippingDisabled,
    "inline_refused": InlineRefused,
    "version_mismatch": VersionMismatch,
    "worker_crashed": WorkerCrashed,
    "timeout": CallTimeout,
    "stopped": JobStopped,
    "limit_exceeded": LimitExceeded,
    "cancelled": JobCancelled,
    "unknown_job": UnknownJob,
    "not_finished": JobNotFinished,
    "not_kept": ResultNotKept,
    "not_cancellable": NotCancellable,
    "not_movable": NotMovable,
    "remote": RemoteError,
    "deploy_refused": DeployRefused,
    "not_a_deployer": NotADeployer,
    "missing_dependency": MissingDependency,
}
#: The other way: each class that has a wire code, mapped to it.
CODE_OF: dict[type[OffloadError], str] = {cls: code for code, cls in ERROR_CODES.items()}
