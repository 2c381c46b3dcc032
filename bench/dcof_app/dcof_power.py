"""DCOF's power service as an app of its own: what ``offload deploy`` ships (:mod:`bench.dcof`).

The kernel is :func:`bench.compiled.power_kernel`, word for word (a test
checks), compiled once per process with numba.
"""

from __future__ import annotations

import numba

from offload import offload

#: Mersenne prime: residues below 2**31, their products below 2**62 (exact in int64).
MODULUS = 2**31 - 1


def power_kernel(base: int, exponent: int, modulus: int) -> int:
    """``base ** exponent % modulus`` by ``exponent`` repeated multiplications, as in DCOF."""
    result = 1
    b = base % modulus
    for _ in range(exponent):
        result = result * b % modulus
    return result


_power = numba.njit(cache=True)(power_kernel)


def _power_size(base: int, exponent: int, modulus: int = MODULUS) -> int:
    return exponent


@offload(mode="remote", size=_power_size)
def power(base: int, exponent: int, modulus: int = MODULUS) -> int:
    """``base ** exponent % modulus`` by repeated products, by the kernel compiled once."""
    return int(_power(base, exponent, modulus))
