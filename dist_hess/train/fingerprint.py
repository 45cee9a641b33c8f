"""Fingerprints of a fit's data and options, stored in its checkpoint to refuse a resume
that would not be the same run.

**Data.** For ``X`` and ``Y`` as the engine sees them (``model.check_data``: float64,
targets prepared), the shape, the dtype given, and a 64-bit hash that does not depend on
how the rows are split into shards::

    hash(A) = sum_i mix(sum_c k_c a_ic + mix(i + 1))   mod 2^64

with ``a_ic`` the ``c``-th 64-bit word of row ``i``, ``k_c`` odd constants and ``mix`` the
splitmix64 finaliser (Steele, Lea & Flood 2014). Each shard adds its rows' terms where it
lives (`shard_hashes`: in this process, or in one task per block on the Dask workers
that hold it) and the sums are added; so a numpy, dask or zarr input, chunked in any
way, in process or on a cluster, has the same fingerprint when its values are the
same (``-0.0`` counts as ``0.0``). Any change of a value, or of the order of the rows, changes the hash (up to
collisions of probability about ``2^-64``). The dtype is recorded for the message only:
integer data equal to float data are the same data.

**Options.** Everything that changes the trajectory: the strategy's config (method,
kind, structure and every option, `StepStrategy.config`), the globalisation and its
parameters (`Globalization.to_dict`), ``gtol``, ``ftol``, and the evaluation options
(``memory_budget`` as the engine applies it: the batches change the rounding).
``max_iter`` and ``max_time`` are not in it: a resumed run may go further.
"""
from __future__ import annotations

import numpy as np

__all__ = ["shard_hashes", "combine_hashes", "describe", "data_fingerprint",
           "options_fingerprint", "data_differences", "option_differences"]

_MASK = (1 << 64) - 1
_ROWS = 65536                      # rows hashed at once (bounds the (rows, words) temporary)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _words(a: np.ndarray) -> np.ndarray:
    """The rows of ``a`` as 64-bit words ``(n, W)`` (bytes zero-padded to a multiple of 8)."""
    n = a.shape[0]
    raw = np.ascontiguousarray(a).reshape(n, -1).view(np.uint8).reshape(n, -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), dtype=np.uint8)], axis=1)
    return raw.view(np.uint64)


def _array_hash(a: np.ndarray, start: int) -> int:
    """``sum_i mix(sum_c k_c a_ic + mix(i + 1)) mod 2^64`` over the rows of ``a``, which are
    rows ``start, start + 1, ...`` of the whole array."""
    total = 0
    with np.errstate(over="ignore"):
        for lo in range(0, a.shape[0], _ROWS):
            words = _words(a[lo:lo + _ROWS])
            keys = _mix(np.arange(1, words.shape[1] + 1, dtype=np.uint64)) | np.uint64(1)
            rows = np.arange(start + lo + 1, start + lo + 1 + words.shape[0], dtype=np.uint64)
            h = _mix((words * keys).sum(axis=1, dtype=np.uint64) + _mix(rows))
            total = (total + int(h.sum(dtype=np.uint64))) & _MASK
    return total


def shard_hashes(model, X, Y, start: int) -> tuple[int, int]:
    """The hash terms of one shard (rows ``start, ...``) of ``X`` and ``Y``, after
    ``model.check_data`` when the model has it (what the engine computes on)."""
    if hasattr(model, "check_data"):
        X, Y = model.check_data(X, Y)
    # + 0.0 turns -0.0 into 0.0: equal numbers, equal bytes
    return (_array_hash(np.asarray(X, dtype=float) + 0.0, start),
            _array_hash(np.asarray(Y, dtype=float) + 0.0, start))


def combine_hashes(terms) -> int:
    """The sum mod ``2^64`` of the shards' terms."""
    total = 0
    for term in terms:
        total = (total + int(term)) & _MASK
    return total


def describe(shape, dtype, digest: int) -> dict:
    """One array's fingerprint (JSON)."""
    return {"shape": [int(n) for n in shape], "dtype": str(dtype), "hash": f"{digest:016x}"}


def data_fingerprint(model, X, Y) -> dict | None:
    """The fingerprint of in-memory ``X, Y`` (hashed here, in blocks of rows); ``None``
    when there are no data (a stand-in objective)."""
    if X is None:
        return None
    X, Y = np.asarray(X), np.asarray(Y)
    terms = [shard_hashes(model, X[lo:lo + _ROWS], Y[lo:lo + _ROWS], lo)
             for lo in range(0, X.shape[0], _ROWS)]
    return {"X": describe(X.shape, X.dtype, combine_hashes(t[0] for t in terms)),
            "Y": describe(Y.shape, Y.dtype, combine_hashes(t[1] for t in terms))}


def options_fingerprint(strategy, rule, *, gtol: float, ftol: float, evaluation: dict) -> dict:
    """The options that change a fit's trajectory (module docstring), as JSON."""
    return {"strategy": strategy.config(), "globalization": rule.to_dict(),
            "gtol": float(gtol), "ftol": float(ftol), "evaluation": dict(evaluation)}


def _array_text(name: str, fp: dict) -> str:
    return f"{name} of shape {tuple(fp['shape'])} ({fp['dtype']}, hash {fp['hash']})"


def data_differences(stored: dict | None, given: dict | None) -> str | None:
    """``None`` when the data are the same, else a sentence for the error message."""
    if stored == given:
        return None
    if stored is None or given is None:
        return ("no data" if stored is None else "data") + "; these are " + \
            ("no data" if given is None else "data")
    differ = [name for name in ("X", "Y")
              if (stored[name]["shape"], stored[name]["hash"]) !=
              (given[name]["shape"], given[name]["hash"])]
    if not differ:
        return None
    return (", ".join(_array_text(name, stored[name]) for name in differ) + "; these data have "
            + ", ".join(_array_text(name, given[name]) for name in differ))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def option_differences(stored: dict, given: dict) -> list[str]:
    """``"name: A in the checkpoint, B now"`` for every option that differs."""
    old, new = _flatten(stored), _flatten(given)
    return [f"{key}: {old.get(key, 'unset')!r} in the checkpoint, {new.get(key, 'unset')!r} now"
            for key in sorted(set(old) | set(new)) if old.get(key, "unset") != new.get(key, "unset")]
