"""Checkpoint files: a job's latest checkpoint on disk, so it outlives this process.

``checkpoint_dir`` makes the router write every job's latest state here
(:func:`write_checkpoint`, atomically); :meth:`offload.Client.resume_from`
reads one back (:func:`read_checkpoint`), loading it as the function's
results are, with the restricted unpickler.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO, Any

from . import _exceptions as errors
from .api import OffloadedFunction
from .jobhost import JobName
from .runtime import serialize
from .runtime.files import atomic_write

_FILE_MAGIC = b"OFCK"


def checkpoint_path(directory: str | os.PathLike[str], job: JobName) -> Path:
    """Where :func:`write_checkpoint` keeps ``job``'s latest checkpoint."""
    name = job.fn.wire_name.replace(":", "-").replace("<", "").replace(">", "")
    return Path(directory) / f"{name}-{job.key}.ckpt"


def write_checkpoint(
    directory: str | os.PathLike[str], job: JobName, state: Any, count: int
) -> None:
    """Write a job's checkpoint atomically: magic, count, codecs, each frame's length and bytes."""
    codecs, frames = serialize.dumps(state)

    def write(out: IO[bytes]) -> None:
        out.write(_FILE_MAGIC + struct.pack("!QI", count, len(codecs)) + codecs)
        for frame in frames:
            view = memoryview(frame).cast("B")
            out.write(struct.pack("!Q", view.nbytes))
            out.write(view)

    atomic_write(checkpoint_path(directory, job), write)


def read_checkpoint(
    path: str | os.PathLike[str], fn: OffloadedFunction[..., Any]
) -> tuple[Any, int]:
    """(state, count) from a file :func:`write_checkpoint` wrote, loaded as ``fn``'s results are."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != _FILE_MAGIC:
        raise errors.SerializationError(f"{path} is not an offload checkpoint")
    count, n = struct.unpack_from("!QI", data, 4)
    offset = 16
    codecs = bytes(data[offset : offset + n])
    offset += n
    frames = []
    for _ in range(n):
        (length,) = struct.unpack_from("!Q", data, offset)
        frames.append(data[offset + 8 : offset + 8 + length])
        offset += 8 + length
    return serialize.loads(codecs, frames, fn.allowlist, 2**40), count
