"""The replicated code: functions and types the server imports from its ``--app`` modules."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from offload._exceptions import ConfigError
from offload.api import find_offloaded
from offload.runtime.serialize import Allowlist

log = logging.getLogger("edge_server.registry")


@dataclass(frozen=True)
class Registry:
    """``@offload`` functions by wire name, their fingerprints, and what arguments may contain."""

    functions: dict[str, Any]
    fingerprints: dict[str, bytes]
    allowlist: Allowlist

    @classmethod
    def load(
        cls,
        modules: Sequence[str],
        types: Sequence[str] = (),
        deployed: Sequence[tuple[str, Sequence[str], Sequence[str]]] = (),
    ) -> Registry:
        """Import ``modules`` and collect their functions; ``types`` are ``module:Name`` strings.

        ``deployed``: apps deployed to the server, as (directory, modules to
        serve, every module of the app); each directory goes on ``sys.path``
        after what is there (a deployment was refused if it shadowed anything
        there). An app that fails to import is left out, logged: the others
        and the ``--app`` modules are served.
        """
        functions: dict[str, Any] = {}
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is None or not (name + ".").startswith(exc.name + "."):
                    raise ConfigError(f"cannot import app module {name!r}: {exc}") from exc
                looked = ", ".join(p or os.getcwd() for p in sys.path)
                raise ConfigError(
                    f"cannot import app module {name!r}: no module {exc.name!r} in {looked} "
                    "(run edge-server in the app's directory, or add it to PYTHONPATH)"
                ) from exc
            except ImportError as exc:
                raise ConfigError(f"cannot import app module {name!r}: {exc}") from exc
            functions.update(find_offloaded(module))
        trusted = list(modules)
        for directory, serve, everything in deployed:
            if directory not in sys.path:
                sys.path.append(directory)
            try:
                found = {}
                for name in serve:
                    found.update(find_offloaded(importlib.import_module(name)))
            except (Exception, SystemExit):
                log.exception("deployed app in %s does not import: not served here", directory)
                continue
            functions.update(found)
            trusted += everything
        extra = [_import_type(spec) for spec in types]
        return cls(
            functions,
            {name: fn.fingerprint for name, fn in functions.items()},
            Allowlist().extended(trusted, extra),
        )


def _import_type(spec: str) -> type:
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import type {spec!r}: {exc}") from exc
    if not isinstance(obj, type):
        raise ConfigError(f"{spec!r} is not a type")
    return obj
