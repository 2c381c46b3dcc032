"""DCOF's three services compiled with numba, at the paper's sizes, in two offloadable forms.

The kernels are plain Python functions (``*_kernel``); :mod:`examples.workloads`
keeps the pure-Python versions for small sizes. Two ways to reach a server:

* **Replicated** (DCOF-style): ``bubble_sort``, ``matrix_multiply`` and
  ``power`` are ``@offload`` functions whose bodies call the kernels compiled
  once with ``numba.njit(cache=True)``. The edge server serves this module
  (``--app bench.compiled``), so it loads the same machine code from the
  on-disk cache and a call carries only its arguments and result.
* **Migrated** (traditional offloading, DCOF's equations 1 and 2):
  ``*_migrated`` are ``@offload(ship_code="always")`` functions. Every call
  ships the function by value with cloudpickle (the kernel's bytecode travels
  with it), and on the server the call first compiles the kernel anew with
  ``numba.njit(cache=False)`` on a fresh dispatcher: the analog of installing
  and reconfiguring a migrated binary, paid on every call, as in the paper.

Inputs mirror the paper's Java ``int`` values: ``int32`` arrays. Matrix
entries stay below :data:`ENTRY_MAX` so a 450x450 product fits in ``int32``;
``power`` works modulo the prime :data:`MODULUS` (``2**31 - 1``), so every
product of two residues fits in ``int64``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from offload import offload

#: Mersenne prime: residues below 2**31, their products below 2**62 (exact in int64).
MODULUS = 2**31 - 1
#: Matrix entries lie in [0, ENTRY_MAX): 450 * 999**2 < 2**31, so int32 products are exact.
ENTRY_MAX = 1000


def bubble_sort_kernel(values: Any) -> Any:
    """Sort a copy of ``values`` with bubble sort (quadratic on purpose: it is the workload)."""
    items = values.copy()
    n = items.shape[0]
    for end in range(n - 1, 0, -1):
        swapped = False
        for i in range(end):
            if items[i] > items[i + 1]:
                items[i], items[i + 1] = items[i + 1], items[i]
                swapped = True
        if not swapped:
            break
    return items


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


def power_kernel(base: int, exponent: int, modulus: int) -> int:
    """``base ** exponent % modulus`` by ``exponent`` repeated multiplications, as in DCOF."""
    result = 1
    b = base % modulus
    for _ in range(exponent):
        result = result * b % modulus
    return result


_sort = numba.njit(cache=True)(bubble_sort_kernel)
_matmul = numba.njit(cache=True)(matrix_multiply_kernel)
_power = numba.njit(cache=True)(power_kernel)


def _power_size(base: int, exponent: int, modulus: int = MODULUS) -> int:
    return exponent


# -- replicated code: the server holds these (DCOF) -------------------------------------------


@offload(mode="remote")
def bubble_sort(values: Any) -> Any:
    """Bubble sort of an int32 array, by the kernel compiled once (numba cache on disk)."""
    return _sort(values)


@offload(mode="remote")
def matrix_multiply(a: Any, b: Any) -> Any:
    """Product of two int32 matrices, by the kernel compiled once (numba cache on disk)."""
    return _matmul(a, b)


@offload(mode="remote", size=_power_size)
def power(base: int, exponent: int, modulus: int = MODULUS) -> int:
    """``base ** exponent % modulus`` by repeated products, by the kernel compiled once."""
    return int(_power(base, exponent, modulus))


# -- migrated code: shipped by value and compiled anew on every call (traditional) ------------


@offload(mode="remote", ship_code="always")
def bubble_sort_migrated(values: Any) -> Any:
    """:func:`bubble_sort`, but the kernel travels with the call and is compiled on arrival."""
    import numba

    return numba.njit(cache=False)(bubble_sort_kernel)(values)


@offload(mode="remote", ship_code="always")
def matrix_multiply_migrated(a: Any, b: Any) -> Any:
    """:func:`matrix_multiply`, but the kernel travels with the call and is compiled on arrival."""
    import numba

    return numba.njit(cache=False)(matrix_multiply_kernel)(a, b)


@offload(mode="remote", ship_code="always", size=_power_size)
def power_migrated(base: int, exponent: int, modulus: int = MODULUS) -> int:
    """:func:`power`, but the kernel travels with the call and is compiled on arrival."""
    import numba

    return int(numba.njit(cache=False)(power_kernel)(base, exponent, modulus))


#: service name -> (replicated, migrated) offloaded functions.
SERVICES: dict[str, tuple[Any, Any]] = {
    "bubble_sort": (bubble_sort, bubble_sort_migrated),
    "matrix_multiply": (matrix_multiply, matrix_multiply_migrated),
    "power": (power, power_migrated),
}


def arguments(service: str, intensity: int, seed: int) -> tuple[Any, ...]:
    """The arguments of one call at ``intensity`` (list length, matrix side or exponent)."""
    rng = np.random.default_rng(seed)
    if service == "bubble_sort":
        return (rng.integers(0, 2**31 - 1, intensity, dtype=np.int32),)
    if service == "matrix_multiply":
        shape = (intensity, intensity)
        return tuple(rng.integers(0, ENTRY_MAX, shape, dtype=np.int32) for _ in "ab")
    return (2, intensity, MODULUS)


def warm() -> None:
    """Load (or compile once, into the on-disk cache) every kernel for the types used here."""
    for service in SERVICES:
        SERVICES[service][0].__wrapped__(*arguments(service, 8, 0))
