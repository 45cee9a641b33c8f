"""Process-level settings that matter for speed.

``tune_allocator()`` raises glibc's mmap and trim thresholds so that the
engine's large temporaries (per-chunk arrays of a few hundred KB to a few
hundred MB) are recycled from the heap instead of being mapped and unmapped,
and page-faulted in again, on every call. On the 2-core reference machine this
makes a P2 gradient 1.5x and a Hessian-vector product 1.6x faster. The price:
freed memory stays with the process (its peak RSS is kept). It is opt-in for
library users; the CLI and the benchmarks turn it on. A no-op where the C
library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Keep large allocations on the heap; returns True when glibc accepted the settings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
