"""lz4 compression of payload frames, applied only where it pays.

Following dask/distributed's approach: small frames are never compressed (the
header overhead and the call cost outweigh any gain); a large frame is judged
by compressing a small sample first, so incompressible data (random numbers,
already-compressed media) costs one sample compression and no more. A frame
is kept compressed only if it shrank below ``MAX_RATIO`` of its size.
"""

from __future__ import annotations

import lz4.block

from .._exceptions import PayloadTooLarge, SerializationError
from .protocol import LZ4, RAW

MIN_SIZE = 4096
SAMPLE_SIZE = 16384
MAX_RATIO = 0.9


def maybe_compress(frame: memoryview) -> tuple[int, memoryview | bytes]:
    """Return ``(codec, data)``: lz4-compressed data if that pays, else the frame itself."""
    n = frame.nbytes
    if n < MIN_SIZE:
        return RAW, frame
    if n > SAMPLE_SIZE * 4:
        start = (n - SAMPLE_SIZE) // 2
        sample = frame[start : start + SAMPLE_SIZE]
        if len(lz4.block.compress(sample, store_size=False)) > MAX_RATIO * SAMPLE_SIZE:
            return RAW, frame
    if n > 0x7FFFFFFF:  # lz4 block format limit
        return RAW, frame
    packed = lz4.block.compress(frame)
    if len(packed) > MAX_RATIO * n:
        return RAW, frame
    return LZ4, packed


def declared_size(codec: int, frame: memoryview) -> int:
    """The size ``frame`` will have once decompressed, as it declares (before any work)."""
    if codec == RAW:
        return frame.nbytes
    if codec != LZ4:
        raise SerializationError(f"unknown codec {codec}")
    if frame.nbytes < 4:
        raise SerializationError("lz4 frame shorter than its size prefix")
    return int.from_bytes(frame[:4], "little")


def decompress(codec: int, frame: memoryview, limit: int) -> memoryview | bytes:
    """Undo :func:`maybe_compress` for one frame, refusing to inflate past ``limit`` bytes.

    The size the frame declares is checked first: nothing is allocated for a
    frame that claims more than ``limit`` (an lz4 bomb).
    """
    size = declared_size(codec, frame)
    if codec == RAW:
        return frame
    if size > limit:
        raise PayloadTooLarge(f"lz4 frame claims {size} bytes, over the limit of {limit}")
    try:
        return lz4.block.decompress(frame)
    except (lz4.block.LZ4BlockError, ValueError) as exc:
        raise SerializationError(f"corrupt lz4 frame: {exc}") from exc
