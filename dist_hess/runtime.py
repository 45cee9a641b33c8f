"""Process-level settings that matter for speed.

``limit_blas_threads(n, t)`` runs a block of work with one BLAS thread when the
problem is small (`is_small_problem`: ``n * t <= SMALL_WORK`` and ``t <= SMALL_PARAMS``;
`dist_hess.fit` wraps every in-process fit in it). The matrix products of such a
problem take micro- to milliseconds, where a second BLAS thread buys little and a
busy machine makes waiting threads expensive: on the shared 2-core reference
machine 30 `newton` iterations on the 64-16-10 digits network took 40 s with one
OpenBLAS thread and 250 s with two. It also makes an in-process fit use the thread
count of a Dask worker (`dist_hess.distributed.cluster.BLAS_ENV`: one thread), so a
fit gives the same bits in this process and in a worker task (multi-start,
`dist_hess.train.starts`). Larger problems keep the process' setting.

``tune_allocator()`` raises glibc's mmap and trim thresholds so that the
engine's large temporaries (per-chunk arrays of a few hundred KB to a few
hundred MB) are recycled from the heap instead of being mapped and unmapped,
and page-faulted in again, on every call. On the 2-core reference machine this
makes a P2 gradient 1.5x and a Hessian-vector product 1.6x faster. The price:
freed memory stays with the process (its peak RSS is kept). It is opt-in for
library users; the CLI and the benchmarks turn it on. A no-op where the C
library is not glibc.

``tune_worker_allocator()`` is what every dist_hess task on a Dask worker calls
first: once per process, glibc's thresholds at the largest values its own adaptive
rule would reach (mmap 32 MB, trim 64 MB). A nanny starts its worker processes with
``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``), and setting
any threshold turns glibc's adaptation off, so every temporary over 128 KB is mapped,
page-faulted and unmapped again: on the 2-core reference machine a value+gradient on
5,556 rows of the 784-128-10 network took 68-72 ms in a nanny's worker and 47-52 ms
in a plain process (or in a worker after this call). ``DIST_HESS_TUNE_ALLOCATOR=0`` in
the workers' environment leaves their allocator as the nanny set it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os

from threadpoolctl import ThreadpoolController

__all__ = ["SMALL_WORK", "SMALL_PARAMS", "is_small_problem", "limit_blas_threads",
           "tune_allocator", "tune_worker_allocator"]

#: ``n * t`` (examples times parameters) up to which a problem is small ...
SMALL_WORK = 20_000_000
#: ... when it also has at most this many parameters (a full ``t x t`` matrix of 32 MB).
SMALL_PARAMS = 2000

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def is_small_problem(n: int, t: int) -> bool:
    """``n * t <= SMALL_WORK`` and ``t <= SMALL_PARAMS`` (see the module docstring)."""
    return int(n) * int(t) <= SMALL_WORK and int(t) <= SMALL_PARAMS


@contextlib.contextmanager
def limit_blas_threads(n: int, t: int):
    """One BLAS thread inside the block when ``is_small_problem(n, t)``; else no change."""
    if not is_small_problem(n, t):
        yield
        return
    with _controller().limit(limits=1, user_api="blas"):
        yield


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """The BLAS libraries of this process, found once: looking them up takes ~7 ms, as
    long as a whole small fit (``threadpool_limits`` looks them up on every call)."""
    return ThreadpoolController()


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Keep large allocations on the heap; returns True when glibc accepted the settings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


_worker_tuned = False


def tune_worker_allocator() -> None:
    """Once per process: `tune_allocator` at glibc's adaptive maxima (32 MB mmap, 64 MB
    trim), unless ``DIST_HESS_TUNE_ALLOCATOR=0`` (see the module docstring)."""
    global _worker_tuned
    if _worker_tuned:
        return
    _worker_tuned = True
    if os.environ.get("DIST_HESS_TUNE_ALLOCATOR", "1") != "0":
        tune_allocator(mmap_threshold=32 << 20, trim_threshold=64 << 20)
