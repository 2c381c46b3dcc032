"""DCOF's sort service as an app of its own: what ``offload deploy`` ships (:mod:`bench.dcof`).

The kernel is :func:`bench.compiled.bubble_sort_kernel`, word for word (a
test checks), compiled once per process with numba; the edge server holds
this app after a deployment, or receives it anew before every call in the
traditional scenario.
"""

from __future__ import annotations

from typing import Any

import numba

from offload import offload


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


_sort = numba.njit(cache=True)(bubble_sort_kernel)


@offload(mode="remote")
def bubble_sort(values: Any) -> Any:
    """Bubble sort of an int32 array, by the kernel compiled once (numba cache on disk)."""
    return _sort(values)
