"""App bundles: the files ``offload deploy`` sends, named by their content, checked on both ends.

A bundle is an app's files as a manifest, a list of ``[path, sha256, size,
kind]`` entries (JSON, never pickle), plus the bytes of those files the
server lacks. ``path`` is relative to the directory the server puts on its
workers' ``sys.path``: ``my_app.py``, ``pkg/__init__.py``, ``pkg/data/x.csv``.
``kind`` is ``"file"``: a bundle carries regular files only (no links, no
devices, no directories of their own).

:func:`check_manifest` is what both sides hold a manifest to: the client
before it sends one, the server before it reads a byte of one. A path is
refused when it is absolute, climbs (``..``), has an empty, hidden
(``.git``), over-long or non-printable component, uses a backslash or a
drive letter, or is both a file and a directory; a bundle is refused past
its count and size limits.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._exceptions import DeployRefused

#: The kinds of entry a manifest may name: regular files, nothing else.
FILE = "file"

MAX_PATH = 1024  # characters of one path
MAX_COMPONENT = 255  # characters of one of its components
MAX_DEPTH = 32  # components of one path

_APP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")
_HEX = re.compile(r"[0-9a-f]{64}\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_EXTENSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z0-9_-]+)*\.(so|pyd)\Z")


@dataclass(frozen=True)
class Entry:
    """One file of a bundle."""

    path: str
    sha256: str
    size: int

    def as_json(self) -> list[Any]:
        """The manifest entry: ``[path, sha256, size, "file"]``."""
        return [self.path, self.sha256, self.size, FILE]


def sha256(data: bytes | memoryview) -> str:
    """The hex SHA-256 digest a manifest names a file's bytes by."""
    return hashlib.sha256(data).hexdigest()


def check_app_name(name: Any) -> str:
    """``name`` if it can name an app (and a directory): letters, digits, ``_.-``, 1-100."""
    if not isinstance(name, str) or not _APP.match(name) or name in (".", ".."):
        raise DeployRefused(f"app name {str(name)[:120]!r} is not 1-100 of A-Z a-z 0-9 _ . -")
    return name


def check_path(path: Any) -> str:
    """``path`` if a bundle may hold a file there, else :class:`~offload.DeployRefused` (why)."""
    if not isinstance(path, str) or not path:
        raise DeployRefused(f"file path {path!r} is not a non-empty string")
    shown = repr(path[:200])
    if len(path) > MAX_PATH:
        raise DeployRefused(f"file path {shown}... is over {MAX_PATH} characters")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise DeployRefused(f"file path {shown} is absolute")
    if "\\" in path:
        raise DeployRefused(f"file path {shown} holds a backslash")
    if any(unicodedata.category(c)[0] == "C" for c in path):
        raise DeployRefused(f"file path {shown} holds a control or unassigned character")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise DeployRefused(f"file path {shown} is over {MAX_DEPTH} directories deep")
    for part in parts:
        if part == "..":
            raise DeployRefused(f"file path {shown} climbs out of the bundle (..)")
        if part in ("", "."):
            raise DeployRefused(f"file path {shown} has an empty component")
        if part.startswith("."):
            raise DeployRefused(f"file path {shown} has a hidden component {part!r}")
        if len(part) > MAX_COMPONENT:
            raise DeployRefused(f"file path {shown} has a component over {MAX_COMPONENT} chars")
    return path


def check_manifest(files: Any, max_files: int, max_bytes: int) -> list[Entry]:
    """The entries of a manifest (``[[path, sha256, size, kind], ...]``) that passes every check."""
    if not isinstance(files, list) or not files:
        raise DeployRefused("the manifest lists no files")
    if len(files) > max_files:
        raise DeployRefused(f"the bundle has {len(files)} files; this server takes {max_files}")
    entries: list[Entry] = []
    seen: set[str] = set()
    folded: set[str] = set()
    total = 0
    for item in files:
        if not isinstance(item, list) or len(item) != 4:
            raise DeployRefused("a manifest entry is not [path, sha256, size, kind]")
        path, digest, size, kind = item
        path = check_path(path)
        if kind != FILE:
            raise DeployRefused(
                f"{path!r} is a {str(kind)[:20]!r}: a bundle holds regular files only "
                "(no symbolic or hard links, devices or directories)"
            )
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise DeployRefused(f"{path!r}: its hash is not 64 lowercase hex digits (SHA-256)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DeployRefused(f"{path!r}: its size {str(size)[:30]} is not a byte count")
        if size > max_bytes:
            raise DeployRefused(f"{path!r} is {size} bytes; this server takes {max_bytes} in all")
        total += size
        if total > max_bytes:
            raise DeployRefused(f"the bundle is over {max_bytes} bytes; this server takes no more")
        if path in seen:
            raise DeployRefused(f"{path!r} is listed twice")
        if path.casefold() in folded:  # one file on a case-insensitive disk
            raise DeployRefused(f"{path!r} differs from another file only in case")
        seen.add(path)
        folded.add(path.casefold())
        entries.append(Entry(path, digest, size))
    for entry in entries:  # a file where another needs a directory
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in seen:
                raise DeployRefused(f"{prefix!r} is a file and the directory of {entry.path!r}")
    return entries


def check_modules(names: Any) -> list[str]:
    """A list of dotted module names (``pkg.sub``), as ``serve`` is given."""
    if not isinstance(names, list) or len(names) > 1000:
        raise DeployRefused("serve must be a list of module names")
    for name in names:
        if not isinstance(name, str) or not all(_MODULE.match(p) for p in name.split(".")):
            raise DeployRefused(f"{str(name)[:120]!r} is not a module name")
    return names


def module_of(path: str) -> str | None:
    """The module a bundle file is imported as (``pkg/sub.py`` -> ``pkg.sub``), or None."""
    parts = path.split("/")
    name = parts[-1]
    if name.endswith(".py"):
        stem = name[:-3]
    else:
        found = _EXTENSION.match(name)
        if found is None:
            return None
        stem = found.group(1)
    dirs = parts[:-1]
    if not all(_MODULE.match(p) for p in dirs) or not _MODULE.match(stem):
        return None
    if stem == "__init__":
        return ".".join(dirs) if dirs else None
    return ".".join([*dirs, stem])


def modules(entries: Iterable[Entry]) -> list[str]:
    """Every module the bundle's files can be imported as, sorted."""
    return sorted({m for e in entries if (m := module_of(e.path)) is not None})


def top_level(entries: Iterable[Entry]) -> list[str]:
    """The top-level names the bundle adds to ``sys.path``: its modules' first components."""
    return sorted({m.split(".")[0] for m in modules(entries)})


def manifest_digest(entries: Sequence[Entry], serve: Sequence[str] | None) -> str:
    """A digest of the whole bundle: its files, where they go, and the modules served."""
    h = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        h.update(f"{entry.path}\0{entry.sha256}\0{entry.size}\n".encode())
    h.update(("serve:" + ",".join(serve or ())).encode())
    return h.hexdigest()[:32]
