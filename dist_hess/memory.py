"""The memory limit: large results and working sets are refused before they are allocated.

Every computation whose result or working set grows faster than the data (a ``t x t``
curvature matrix, layer blocks, multipliers gathered to the client, a factorisation
or eigendecomposition of the full matrix) asks `check_allocation` first, with the
number of bytes it is about to hold at once, what it is, and what the user can do
instead. Over the limit it raises `MemoryLimitError` (a ``ValueError`` and a
``MemoryError``) naming the size, the limit and the alternatives; nothing has been
allocated yet.

The limit (one per process):

1. `set_memory_limit` (Python), if it was called with a value;
2. else the environment variable ``DIST_HESS_MEMORY_LIMIT`` (``dist-hess ...
   --memory-limit`` sets it for the run and its local workers);
3. else `DEFAULT_FRACTION` (one half) of this machine's memory (`machine_memory`:
   physical memory, or the container's cgroup limit when that is lower).

A value is a number of bytes (``8000000000``), a size with a unit (``16GiB``, ``500MB``,
``1.5 TiB``), a percentage of the machine's memory (``25%``), or ``none`` (no limit).

This is not the engine's ``memory_budget`` (`dist_hess.engine.budget`, default
256 MiB), which does not refuse anything: it sizes the batches of rows a shard is cut
into so that per-example temporaries stay small, and only changes speed. The memory
limit bounds what *results* (and the dense linear algebra on them) may occupy, and
refuses work that would not fit (docs/internals.md, "Memory").

A leaf module (standard library and numpy-free): everything may import it.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence

__all__ = ["ENV", "DEFAULT_FRACTION", "MemoryLimitError", "memory_limit", "set_memory_limit",
           "parse_size", "format_bytes", "machine_memory", "check_allocation", "fits"]

#: The environment variable holding the limit (read at every check).
ENV = "DIST_HESS_MEMORY_LIMIT"
#: Fraction of the machine's memory used as the limit when none is set.
DEFAULT_FRACTION = 0.5

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_NO_LIMIT = ("none", "inf", "off", "unlimited")
_UNSET = object()
_override = _UNSET          # set_memory_limit's value: _UNSET, None (no limit) or bytes


class MemoryLimitError(ValueError, MemoryError):
    """An allocation was refused before it was made: it would exceed the memory limit."""


@functools.lru_cache(maxsize=1)
def machine_memory() -> int:
    """Bytes of memory of this machine: the physical memory, or the cgroup (container)
    limit when that is lower."""
    try:
        import psutil                      # a dependency of distributed
        total = int(psutil.virtual_memory().total)
    except ImportError:                    # pragma: no cover -- distributed requires psutil
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def parse_size(value, *, what: str = "memory limit") -> int | None:
    """Bytes from ``value`` (see the module docstring); ``None`` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a size, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0:                  # NaN too
            raise ValueError(f"{what} must be a positive number of bytes, got {value!r}")
        return None if math.isinf(value) else int(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a number of bytes or a string such as '16GiB', "
                        f"got {type(value).__name__}")
    text = value.strip().lower()
    if text in _NO_LIMIT:
        return None
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = math.nan
        if not 0 < percent <= 100:
            raise ValueError(f"{what} {value!r}: a percentage must lie in (0, 100]")
        return int(percent / 100 * machine_memory())
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)", text)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{what} {value!r} is not a size: use bytes (8000000000), a unit "
                         f"(16GiB, 500MB), a percentage of the machine's memory (25%) or 'none'")
    size = float(match.group(1)) * _UNITS[match.group(2)]
    if not size >= 1:
        raise ValueError(f"{what} {value!r} must be at least one byte")
    return int(size)


def set_memory_limit(value=_UNSET) -> None:
    """Set this process's limit (a size as `parse_size` reads it, or ``None``: no limit);
    without an argument, go back to ``DIST_HESS_MEMORY_LIMIT`` or the default."""
    global _override
    _override = _UNSET if value is _UNSET else parse_size(value)


def memory_limit(value=_UNSET) -> int | None:
    """The limit in bytes (``None``: no limit): ``value`` if given, else the process's
    (module docstring)."""
    if value is not _UNSET:
        return parse_size(value)
    if _override is not _UNSET:
        return _override
    text = os.environ.get(ENV, "").strip()
    if text:
        return parse_size(text, what=ENV)
    return int(DEFAULT_FRACTION * machine_memory())


def _limit_source() -> str:
    if _override is not _UNSET:
        return "set by dist_hess.memory.set_memory_limit"
    if os.environ.get(ENV, "").strip():
        return f"{ENV}={os.environ[ENV].strip()}"
    return (f"{DEFAULT_FRACTION:.0%} of this machine's {format_bytes(machine_memory())}; "
            f"raise it with {ENV}=64GiB, or {ENV}=none")


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit that keeps it at least 1 (``77.2 GiB``)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def fits(nbytes: int, limit=_UNSET) -> bool:
    """Whether ``nbytes`` fits the limit (`memory_limit`)."""
    bound = memory_limit(limit)
    return bound is None or nbytes <= bound


def check_allocation(nbytes: int, what: str, alternatives: Sequence[str] = (), *,
                     limit=_UNSET) -> None:
    """Refuse, before it is made, an allocation of ``nbytes`` over the memory limit.

    ``what`` names the object (``"the full 101770 x 101770 hessian (2 copies)"``);
    ``alternatives`` are the ways out, each a short phrase. ``limit`` overrides the
    process's limit (a size, or ``None`` for none). Raises `MemoryLimitError`.
    """
    bound = memory_limit(limit)
    if bound is None or nbytes <= bound:
        return
    source = "the memory_limit argument" if limit is not _UNSET else _limit_source()
    ways = "; ".join(alternatives)
    raise MemoryLimitError(
        f"{what} would take {format_bytes(nbytes)}, over the memory limit of "
        f"{format_bytes(bound)} ({source}); refused before allocating."
        + (f" Instead: {ways}." if ways else ""))
