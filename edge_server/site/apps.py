"""The site's apps on the lenders' workers: a directory named after its digest.

The edge server copies the top-level package (or module) of each ``--app``
into ``offload-apps-<digest>/`` and registers it with Dask's
``UploadDirectory`` plugin, which the nanny of every worker, present and
future, unpacks into its local directory. A task looks for the directory of
the digest it was given, so a worker holding other code never runs a job;
the job process then checks each call's function fingerprint against its
copy (:func:`edge_server.worker.execute`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path

from offload._exceptions import ConfigError

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def bundle(modules: Sequence[str], into: Path) -> Path:
    """Copy the packages of ``modules`` into ``into/offload-apps-<digest>``; return that path."""
    staging = into / "staging"
    staging.mkdir(parents=True)
    for top in sorted({m.split(".")[0] for m in modules}):
        spec = importlib.util.find_spec(top)
        if spec is None or (spec.origin is None and not spec.submodule_search_locations):
            raise ConfigError(f"cannot find the app package {top!r} to send to the site")
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(source, staging / top, ignore=_IGNORE)
        else:
            shutil.copy2(str(spec.origin), staging / Path(str(spec.origin)).name)
    final = into / f"offload-apps-{digest(staging)[:16]}"
    staging.rename(final)
    return final


def digest(directory: Path) -> str:
    """SHA-256 over the relative paths and contents of the files under ``directory``."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def find(name: str, *roots: str) -> Path | None:
    """The unpacked apps directory ``name`` under one of ``roots`` (a worker's, its nanny's)."""
    for root in roots:
        for base in (Path(root), Path(root).parent):
            candidate = base / name
            if candidate.is_dir():
                return candidate
    return None
