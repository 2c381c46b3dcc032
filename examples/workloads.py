"""DCOF's three services (Shiraz et al. 2014): bubble sort, integer matrix product, power compute.

These are the replicated code: the app imports this module, and the edge
server is started with ``--app examples.workloads``, so calls ship only their
arguments and results. The paper ran bubble sort on 11,000-40,000 integers,
matrices of 160x160 to 450x450 and exponents of 10^6 to 2x10^8; these are the
plain-Python versions, fast enough for the demo at smaller sizes. The work of
``power`` grows with its exponent, not with the bytes of its arguments, so it
tells the profiler its size itself (``size=``).
"""

from __future__ import annotations

from offload import offload

#: A prime modulus keeps b**e bounded when computed as e repeated multiplications.
MODULUS = 2**61 - 1


@offload
def bubble_sort(values: list[int]) -> list[int]:
    """Sort a copy of ``values`` with bubble sort (quadratic on purpose: it is the workload)."""
    items = list(values)
    n = len(items)
    for end in range(n - 1, 0, -1):
        swapped = False
        for i in range(end):
            if items[i] > items[i + 1]:
                items[i], items[i + 1] = items[i + 1], items[i]
                swapped = True
        if not swapped:
            break
    return items


@offload
def matrix_multiply(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    """The integer product of two matrices given as lists of rows, by the schoolbook method."""
    columns = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in columns] for row in a]


@offload(size=lambda base, exponent, modulus=MODULUS: exponent)
def power(base: int, exponent: int, modulus: int = MODULUS) -> int:
    """``base ** exponent % modulus`` by ``exponent`` repeated multiplications, as in DCOF."""
    result = 1
    for _ in range(exponent):
        result = result * base % modulus
    return result
