"""An app as a bundle: its files, named by content, packed for ``offload deploy``.

:func:`pack` reads a module file (``my_app.py``), a package directory (one
with ``__init__.py``: its files go under its name), an app directory (its
modules and data files go to the top) or a wheel (as pip would install it
into site-packages: ``*.data/purelib`` and ``platlib`` too, scripts and
headers left out). :func:`bundle_of` packs the app a function belongs to, for
provisioning on first use. Paths are checked as the server checks them
(:mod:`offload.runtime.bundles`); a symbolic link is refused.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _exceptions as errors
from .runtime import bundles

#: What packing leaves out of a directory: byte code, caches, hidden files.
SKIPPED_DIRS = frozenset(("__pycache__",))
SKIPPED_SUFFIXES = (".pyc", ".pyo")

#: Limits of a bundle packed here (each server has its own, usually lower).
PACK_MAX_FILES = 100_000
PACK_MAX_BYTES = 2**30


@dataclass(frozen=True)
class Bundle:
    """An app's files, named by content, ready to deploy."""

    app: str
    files: tuple[bundles.Entry, ...]
    data: dict[str, bytes] = field(repr=False)  # sha256 -> the bytes
    serve: tuple[str, ...] = ()  # modules whose functions are served (default: the server's)
    source: str = ""  # what was packed

    @property
    def size(self) -> int:
        """Bytes of its files."""
        return sum(e.size for e in self.files)

    @property
    def modules(self) -> list[str]:
        """Every module its files can be imported as."""
        return bundles.modules(self.files)

    def manifest(self) -> list[list[Any]]:
        """The JSON manifest: ``[[path, sha256, size, "file"], ...]``."""
        return [e.as_json() for e in self.files]


# -- packing --------------------------------------------------------------------------------------


def pack(path: str | os.PathLike[str], serve: Sequence[str] = (), app: str | None = None) -> Bundle:
    """The bundle of the app at ``path``: a ``.py`` file, a package or app directory, a wheel.

    A directory with an ``__init__.py`` is a package (its files go under its
    name); one without is an app directory (its modules and data files go to
    the top). ``serve``: the modules whose ``@offload`` functions the server
    serves (default: the top-level ones and every module that mentions
    ``offload``). ``__pycache__``, ``*.pyc`` and hidden files are left out;
    a symbolic link is refused.
    """
    source = Path(path)
    files: dict[str, bytes] = {}
    if source.is_symlink():
        raise errors.DeployRefused(f"not deployed: {source} is a symbolic link")
    if source.is_dir():
        name = app or source.resolve().name
        prefix = f"{source.resolve().name}/" if (source / "__init__.py").is_file() else ""
        _walk(source, prefix, files)
    elif source.suffix == ".whl" and source.is_file():
        name = app or _wheel_name(source)
        _unzip(source, files)
    elif source.suffix == ".py" and source.is_file():
        name = app or source.stem
        files[source.name] = source.read_bytes()
    else:
        raise errors.DeployRefused(
            f"not deployed: {source} is not a .py module, a directory or a .whl wheel"
        )
    return _bundle(name, files, serve, str(source))


def _bundle(name: str, files: dict[str, bytes], serve: Sequence[str], source: str) -> Bundle:
    data: dict[str, bytes] = {}
    entries = []
    for path, content in sorted(files.items()):
        digest = bundles.sha256(content)
        data[digest] = content
        entries.append([path, digest, len(content), bundles.FILE])
    checked = bundles.check_manifest(entries, PACK_MAX_FILES, PACK_MAX_BYTES)
    bundles.check_modules(list(serve))
    return Bundle(bundles.check_app_name(name), tuple(checked), data, tuple(serve), source)


def _walk(directory: Path, prefix: str, files: dict[str, bytes]) -> None:
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in SKIPPED_DIRS:
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            raise errors.DeployRefused(
                f"not deployed: {path} is a symbolic link (a bundle holds regular files only)"
            )
        if entry.is_dir(follow_symlinks=False):
            _walk(path, f"{prefix}{entry.name}/", files)
        elif entry.is_file(follow_symlinks=False):
            if not entry.name.endswith(SKIPPED_SUFFIXES):
                files[prefix + entry.name] = path.read_bytes()
        else:
            raise errors.DeployRefused(f"not deployed: {path} is not a regular file")


def _wheel_name(wheel: Path) -> str:
    """A wheel's distribution name (``my_app-1.0-py3-none-any.whl`` -> ``my_app``)."""
    return wheel.name.split("-")[0].replace(".", "_").lower()


def _unzip(wheel: Path, files: dict[str, bytes]) -> None:
    """A wheel's files as installed to site-packages (``*.data/purelib`` and ``platlib`` too)."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise errors.DeployRefused(f"not deployed: {wheel} is not a wheel: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise errors.DeployRefused(f"not deployed: {wheel} holds a link, {info.filename}")
            path = info.filename
            top, _, rest = path.partition("/")
            if top.endswith(".data"):
                kind, _, rest = rest.partition("/")
                if kind not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: not importable code
                path = rest
            if path.split("/")[-1].endswith(SKIPPED_SUFFIXES) or "__pycache__" in path.split("/"):
                continue
            files[path] = archive.read(info)


_packed: dict[str, Bundle] = {}
_packing = threading.Lock()


def bundle_of(fn: Any) -> Bundle:
    """The bundle of the app ``fn`` belongs to: its top-level module or package (packed once)."""
    module_name = fn.wire_name.split(":")[0]
    top = module_name.split(".")[0]
    with _packing:
        packed = _packed.get(top)
        if packed is not None:
            return packed
        module = sys.modules.get(top)
        if module is None or top == "__main__":
            raise errors.DeployRefused(
                f"cannot provision {fn.wire_name}: its module is not importable by name "
                "(a script run as __main__?)"
            )
        search = getattr(module, "__path__", None)
        if search:
            directory = Path(next(iter(search)))
            files: dict[str, bytes] = {}
            _walk(directory, f"{top}/", files)
            packed = _bundle(top, files, (), str(directory))
        elif getattr(module, "__file__", None):
            packed = pack(module.__file__, app=top)  # type: ignore[arg-type]
        else:
            raise errors.DeployRefused(f"cannot provision {fn.wire_name}: {top} has no files")
        _packed[top] = packed
        return packed
