"""An app with a numba-compiled offloaded function (``--app tests.apps_numba``; needs numba)."""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from offload import offload


@offload
@njit(cache=False)
def dot(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@offload
def compiled() -> tuple[int, int]:
    """(this worker's pid, how many signatures ``dot`` has compiled in it)."""
    return os.getpid(), len(dot.__wrapped__.signatures)
