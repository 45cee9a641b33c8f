"""Packed transport of symmetric curvature blocks.

Every curvature block the engine returns is symmetric (a second derivative),
so a shard only has to send its upper triangle: ``d (d + 1) / 2`` numbers
instead of ``d**2``. The packed layout is row-major over the upper triangle
(row ``i`` contributes ``a[i, i:]``), the same order as ``np.triu_indices``.

Packed sums add exactly like unpacked ones (element by element), so the
reduction tree combines packed dicts with the engine's own ``add_sums`` and the
client unpacks once.

Index letters: ``d`` the side of a block, ``p = d (d + 1) / 2`` its packed length.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["pack_symmetric", "unpack_symmetric", "packed_side", "pack_sums", "unpack_sums"]

_CURVATURE_PREFIX = "curvature/"


def packed_side(p: int) -> int:
    """Side ``d`` of a symmetric block whose upper triangle has ``p`` entries."""
    d = (math.isqrt(8 * p + 1) - 1) // 2
    if d * (d + 1) // 2 != p:
        raise ValueError(f"{p} is not a triangular number: not a packed symmetric block")
    return d


def pack_symmetric(a: np.ndarray) -> np.ndarray:
    """Upper triangles of the last two axes: ``(..., d, d) -> (..., p)``.

    Rows are copied one at a time, so no ``(p,)`` index arrays are built
    (those would cost 16 bytes per entry for a full Hessian).
    """
    a = np.asarray(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected square blocks (..., d, d), got shape {a.shape}")
    d = a.shape[-1]
    out = np.empty(a.shape[:-2] + (d * (d + 1) // 2,), dtype=a.dtype)
    start = 0
    for i in range(d):
        out[..., start:start + d - i] = a[..., i, i:]
        start += d - i
    return out


def unpack_symmetric(p: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_symmetric`: ``(..., p) -> (..., d, d)``, mirrored."""
    p = np.asarray(p)
    d = packed_side(p.shape[-1])
    out = np.empty(p.shape[:-1] + (d, d), dtype=p.dtype)
    start = 0
    for i in range(d):
        row = p[..., start:start + d - i]
        out[..., i, i:] = row
        out[..., i:, i] = row
        start += d - i
    return out


def _map_blocks(value, fn):
    # A curvature entry is one array (full) or a list over layers (row, layer).
    if isinstance(value, (list, tuple)):
        return [fn(block) for block in value]
    return fn(value)


def pack_sums(sums: dict) -> dict:
    """Copy of an engine sums dict with every curvature entry packed
    (``"multipliers"``, per example, is passed through untouched)."""
    return {key: (_map_blocks(value, pack_symmetric) if key.startswith(_CURVATURE_PREFIX) else value)
            for key, value in sums.items()}


def unpack_sums(packed: dict) -> dict:
    """Inverse of :func:`pack_sums` (the engine's sums layout, without multipliers)."""
    return {key: (_map_blocks(value, unpack_symmetric) if key.startswith(_CURVATURE_PREFIX) else value)
            for key, value in packed.items()}
