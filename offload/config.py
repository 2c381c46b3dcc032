"""Client configuration: one frozen dataclass, read once and passed down.

Values come from, in increasing priority: the defaults below, a TOML file
(``OFFLOAD_CONFIG``, else ``./offload.toml``, else
``~/.config/offload/config.toml``; keys as the field names, optionally under an
``[offload]`` table), ``OFFLOAD_<FIELD>`` environment variables, and keyword
arguments. Nothing else in the package reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError
from .geo import parse_location
from .profiler.decider import Policy
from .profiler.energy import PROFILES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("auto", "local", "remote")
MIGRATE = ("auto", "never")


@dataclass(frozen=True)
class Config:
    """Settings of a :class:`offload.Client`.

    server: address of the edge server (``tcp://host:port``); ``None`` means
        offline: ``auto`` calls run locally and ``remote`` calls fail.
    mode: default for functions decorated without a mode.
    timeout: default per-call timeout in seconds, enforced by the server.
    connect_timeout: how long the first ``auto`` call waits for the server's
        first answer before deciding it is absent and running locally.
    heartbeat_interval: how often a client with calls in flight pings.
    heartbeat_timeout: silence after which in-flight calls fail with
        :class:`~offload.ServerUnavailable` (``auto`` calls then run locally).
    retry_interval: how often an unreachable server is probed again.
    max_message_size: largest message sent or accepted, in bytes.
    compression: ``"auto"`` (lz4 where a sample shows it pays) or ``"off"``.
    local_workers: threads running ``submit``-ted local calls (``None``: CPU count).
    objective: what ``auto`` minimizes: ``"time"``, ``"energy"``, or a number
        from 0 to 1, the weight of time against energy.
    credit_value_s: on a site that charges credits (``offload credits``), the
        seconds of waiting one credit is worth to you: ``auto`` counts a call's
        predicted cost there as that much more time (0: credits do not count).
    energy_profile: the device's power draws, one of
        :data:`offload.profiler.PROFILES` (a measured draw replaces the CPU's).
    profile_cache: file keeping function profiles across runs; ``""`` (or
        ``None`` when building a ``Config`` directly) keeps them in memory
        only. :meth:`load` defaults it to
        ``$XDG_CACHE_HOME/offload/profiles.json`` (``~/.cache/...``).
    assumed_mbit_s: link bandwidth assumed until a transfer or probe measures it.
    probe_bytes: bytes each way of an active bandwidth probe on connecting
        when nothing is known about the link (0: never probe).
    profile_interval: seconds between device samples (and idle pings).
    explore_every, hysteresis, battery_low, cpu_busy, memory_low: the
        decision's knobs, see :mod:`offload.profiler.decision`.
    backup_server: where a checkpointed job resumes when ``server`` is lost
        (else it resumes here).
    server_key: file with the server's CurveZMQ public key (``offload keys
        generate`` writes one); with ``client_key`` the connection is encrypted
        and authenticated, and this client is known by its public key.
    client_key: file with this client's CurveZMQ secret key (``NAME.key_secret``).
    crash_tolerance: worker crashes on one server without a checkpoint in
        between after which a checkpointed job leaves that server.
    checkpoint_dir: a directory where each job's latest checkpoint is also
        written (``<function>-<job id>.ckpt``), so it outlives this process.
    servers: more edge servers than ``server``: ``"auto"`` finds them on the
        LAN (DNS-SD over mDNS; needs ``offload[fleet]``), or a list of
        addresses (``OFFLOAD_SERVERS`` separates them with commas). Each
        ``auto`` call then runs here or on the server predicted best among
        those trusted and answering (``server`` and ``backup_server`` too),
        and a lost server's calls go to the next best (see
        :mod:`offload.profiler.choice` and :mod:`offload.usable`).
    known_servers: a directory of the public keys (``*.key``) of servers this
        client trusts; a discovered server is called only when its advertised
        key is one of them (or ``server_key``'s).
    insecure: also trust discovered servers that advertise no key (a lab LAN,
        a test on loopback).
    location: where this device is, ``"LAT,LON"`` in degrees: servers are
        listed with their distance from here.
    share_location: tell the servers this client connects to its ``location``
        (their operators see the distance to it in ``offload clients``).
    probation: seconds a server that lost calls must answer again before
        calls go there again (with several servers).
    provision: deploy the app of an ``@offload`` function to a server that
        lacks it, on first use (``@offload(provision=...)`` decides per
        function); the client's key must be in the server's ``--deployers``.
    migrate: ``"auto"`` moves a running checkpointed job to another server
        predicted to finish it sooner, the move of its last checkpoint
        included (``@offload(migrate=...)`` decides per function; warned and
        logged, see :mod:`offload.migration`), the default since ``bench fleet``
        showed it wins; ``"never"`` keeps every job where it runs.
    """

    server: str | None = None
    mode: str = "auto"
    timeout: float | None = None
    connect_timeout: float = 1.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    retry_interval: float = 5.0
    max_message_size: int = 512 * 2**20
    compression: str = "auto"
    local_workers: int | None = None
    objective: str = "time"
    credit_value_s: float = 0.0
    energy_profile: str = "smartphone-wifi"
    profile_cache: str | None = None
    assumed_mbit_s: float = 27.0
    probe_bytes: int = 0
    profile_interval: float = 1.0
    explore_every: int = Policy.explore_every
    hysteresis: float = Policy.hysteresis
    battery_low: float = Policy.battery_low
    cpu_busy: float = Policy.cpu_busy
    memory_low: float = Policy.memory_low
    backup_server: str | None = None
    server_key: str | None = None
    client_key: str | None = None
    crash_tolerance: int = 2
    checkpoint_dir: str | None = None
    servers: str | tuple[str, ...] | None = None
    known_servers: str | None = None
    insecure: bool = False
    location: str | None = None
    probation: float = 5.0
    share_location: bool = False
    provision: bool = False
    migrate: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.migrate not in MIGRATE:
            raise ConfigError(f"migrate must be one of {MIGRATE}, not {self.migrate!r}")
        if self.compression not in ("auto", "off"):
            raise ConfigError(f"compression must be 'auto' or 'off', not {self.compression!r}")
        for name in (
            "connect_timeout",
            "heartbeat_interval",
            "heartbeat_timeout",
            "retry_interval",
            "max_message_size",
            "assumed_mbit_s",
            "profile_interval",
            "explore_every",
            "crash_tolerance",
            "probation",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        _ = self.time_weight  # raises on a bad objective
        for name in ("battery_low", "cpu_busy", "memory_low", "hysteresis"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be a fraction from 0 up to 1, not {value!r}")
        if self.energy_profile not in PROFILES:
            raise ConfigError(
                f"energy_profile must be one of {sorted(PROFILES)}, not {self.energy_profile!r}"
            )
        # A client key alone is fine with known_servers: their keys are the server keys.
        alone = self.client_key is not None and self.known_servers is not None
        if (self.server_key is None) != (self.client_key is None) and not alone:
            raise ConfigError("server_key and client_key go together (CurveZMQ needs both)")
        if isinstance(self.servers, list):  # from a TOML file; a frozen config holds tuples
            object.__setattr__(self, "servers", tuple(self.servers))
        for address in (self.server, *self.static_servers):
            if address is not None and "://" not in address:
                raise ConfigError(
                    f"server must be a ZeroMQ address like tcp://host:port, not {address!r}"
                )
        if self.location is not None:
            try:
                parse_location(self.location)
            except ValueError as exc:
                raise ConfigError(f"location: {exc}") from exc
        if self.known_servers is not None and not os.path.isdir(self.known_servers):
            raise ConfigError(f"known_servers {self.known_servers!r} is not a directory")

    @property
    def discover(self) -> bool:
        """Whether servers are found on the LAN (``servers="auto"``)."""
        return self.servers == "auto"

    @property
    def static_servers(self) -> tuple[str, ...]:
        """The servers configured by address in ``servers`` (not ``server``)."""
        if self.servers is None or self.servers == "auto":
            return ()
        if isinstance(self.servers, str):
            return tuple(a.strip() for a in self.servers.split(",") if a.strip())
        return tuple(self.servers)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a config from a TOML file, ``OFFLOAD_*`` variables and ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        file = _find_file(path, env)
        if file is not None:
            values.update(read_toml(file, "offload"))
        for f in fields(cls):
            raw = env.get(f"OFFLOAD_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "profile_cache" not in values:
            cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            values["profile_cache"] = str(Path(cache) / "offload" / "profiles.json")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**values)

    @property
    def time_weight(self) -> float:
        """The weight of time against energy that ``objective`` names (1: time only)."""
        named = {"time": 1.0, "energy": 0.0}
        try:
            weight = named[self.objective] if self.objective in named else float(self.objective)
        except (TypeError, ValueError):
            weight = -1.0
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(
                "objective must be 'time', 'energy' or a weight from 0 to 1, "
                f"not {self.objective!r}"
            )
        return weight

    def policy(self) -> Policy:
        """The decision's knobs from this configuration."""
        return Policy(
            time_weight=self.time_weight,
            credit_value_s=self.credit_value_s,
            hysteresis=self.hysteresis,
            explore_every=self.explore_every,
            battery_low=self.battery_low,
            cpu_busy=self.cpu_busy,
            memory_low=self.memory_low,
        )

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _find_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if "OFFLOAD_CONFIG" in env:
        return Path(env["OFFLOAD_CONFIG"])
    for candidate in (Path("offload.toml"), Path.home() / ".config" / "offload" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_toml(file: Path, section: str) -> dict[str, Any]:
    """The table ``section`` of a TOML file, or the whole file if it has no such table."""
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from exc
    return dict(data.get(section, data))


def _parse(name: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if raw.lower() in ("", "none") and "None" in kind:
            return None
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("bool"):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ConfigError(f"OFFLOAD_{name.upper()}={raw!r} is not a number or boolean") from exc
    return raw
