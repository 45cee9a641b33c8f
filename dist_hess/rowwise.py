"""Sums and maxima along one axis of an ``(n, c)`` array, for the engine's shapes.

numpy reduces along an axis with one inner loop per output element or per row:
``A.sum(axis=1)`` and ``A.max(axis=1)`` cost about 30 ns per row whatever the width
up to ~100 columns, ``A.sum(axis=0)`` one short loop per row.  For the few columns of
a layer's units or a network output, over thousands of examples, that is several
times the arithmetic.  Here the sums are one BLAS matrix-vector product with a vector
of ones (the summation order is BLAS's, so the last bits can differ from numpy's
pairwise sums), and the row maximum (exact in any order) reduces the transposed copy
along its long axis.
"""
from __future__ import annotations

import numpy as np

__all__ = ["row_sums", "column_sums", "row_max"]


def row_sums(A) -> np.ndarray:
    """``sum_c A[n, c]``: ``(n, c) -> (n,)``."""
    return A @ np.ones(A.shape[1])


def column_sums(A) -> np.ndarray:
    """``sum_n A[n, c]``: ``(n, c) -> (c,)``."""
    return np.ones(A.shape[0]) @ A


def row_max(A) -> np.ndarray:
    """``max_c A[n, c]``: ``(n, c) -> (n,)``; the transposed copy's columns for up to 64 columns."""
    if A.shape[1] > 64:
        return A.max(axis=1)
    return np.ascontiguousarray(A.T).max(axis=0)
