"""DCOF's matrix service as an app of its own: what ``offload deploy`` ships (:mod:`bench.dcof`).

The kernel is :func:`bench.compiled.matrix_multiply_kernel`, word for word (a
test checks), compiled once per process with numba.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from offload import offload


def matrix_multiply_kernel(a: Any, b: Any) -> Any:
    """The integer product of two matrices: each entry a row-by-column sum (schoolbook order).

    The same algorithm as the pure-Python ``examples.workloads.matrix_multiply``.
    """
    n, m, p = a.shape[0], a.shape[1], b.shape[1]
    out = np.zeros((n, p), dtype=a.dtype)
    for i in range(n):
        for j in range(p):
            total = 0
            for k in range(m):
                total += a[i, k] * b[k, j]
            out[i, j] = total
    return out


_matmul = numba.njit(cache=True)(matrix_multiply_kernel)


@offload(mode="remote")
def matrix_multiply(a: Any, b: Any) -> Any:
    """Product of two int32 matrices, by the kernel compiled once (numba cache on disk)."""
    return _matmul(a, b)
