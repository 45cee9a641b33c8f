"""One layer's penalty Hessian, dense or structured (:class:`LayerHessian`).

A penalty term has no cross-layer second derivatives (DESIGN §1), so its Hessian
is block diagonal over layers; a layer's block is a symmetric ``(t_k, t_k)``
matrix over the layer's flat, row-major parameters (``t_k = s d``).  Penalties
return it in whichever form is cheap:

* structured: ``diag(diagonal) + U core U'`` with ``diagonal`` ``(s, d)``,
  ``factors`` ``U`` ``(s, d, q)`` (column ``i`` of ``U`` reshaped to the layer's
  matrix) and ``core`` ``(q, q)``; L2 and weight elimination are diagonal
  (``q = 0``), the norm penalty is diagonal plus rank one;
* dense: a ``(t_k, t_k)`` array (a user penalty may return the plain array:
  :func:`as_layer_hessian`).

Every curvature structure is read from it without forming more than it needs:
row blocks (``(s, d, d)``, the diagonal sub-blocks), the dense layer block, and
products with a direction ``V`` ``(s, d)``.  Index letters: ``j`` row (unit),
``a, b`` row entries, ``q, r`` low-rank factors.
"""
from __future__ import annotations

import numpy as np

from ..memory import check_allocation

__all__ = ["LayerHessian", "as_layer_hessian"]

#: Bytes of ``U C U'`` rows formed at once when a low-rank part is added to a dense block.
LOW_RANK_CHUNK_BYTES = 1 << 23


class LayerHessian:
    """``diag(diagonal) + U core U'`` (structured) or ``dense``, over a layer of ``shape = (s, d)``."""

    def __init__(self, shape, *, diagonal=None, factors=None, core=None, dense=None):
        self.shape = (int(shape[0]), int(shape[1]))
        s, d = self.shape
        if dense is not None:
            if diagonal is not None or factors is not None:
                raise ValueError("a LayerHessian is either dense or structured, not both")
            dense = np.asarray(dense, dtype=float)
            if dense.shape != (s * d, s * d):
                raise ValueError(f"a dense layer Hessian must have shape {(s * d, s * d)}, "
                                 f"got {dense.shape}")
        else:
            diagonal = np.zeros(self.shape) if diagonal is None else np.asarray(diagonal, dtype=float)
            if diagonal.shape != self.shape:
                raise ValueError(f"the diagonal must have the layer's shape {self.shape}, "
                                 f"got {diagonal.shape}")
            if factors is not None:
                factors = np.asarray(factors, dtype=float)
                core = np.asarray(core, dtype=float)
                q = factors.shape[-1]
                if factors.shape != self.shape + (q,) or core.shape != (q, q):
                    raise ValueError(f"factors must be (s, d, q) = {self.shape + ('q',)} and core "
                                     f"(q, q), got {factors.shape} and {core.shape}")
        self.diagonal, self.factors, self.core, self.dense = diagonal, factors, core, dense

    @property
    def is_diagonal(self) -> bool:
        return self.dense is None and self.factors is None

    def add_rows(self, out, scale=1.0):
        """``out += scale * (row blocks)`` in place; ``out`` ``(s, d, d)``."""
        s, d = self.shape
        if self.dense is not None:
            out += scale * np.einsum("jajb->jab", self.dense.reshape(s, d, s, d))
            return out
        idx = np.arange(d)
        out[:, idx, idx] += scale * self.diagonal
        if self.factors is not None:
            out += scale * np.einsum("jaq,qr,jbr->jab", self.factors, self.core, self.factors)
        return out

    def add_dense(self, out, scale=1.0):
        """``out += scale * H`` in place; ``out`` ``(t_k, t_k)`` (a view into a larger matrix is fine)."""
        if self.dense is not None:
            out += scale * self.dense
            return out
        idx = np.arange(out.shape[0])
        out[idx, idx] += scale * self.diagonal.ravel()
        if self.factors is not None:                  # row chunks: no (t_k, t_k) temporary
            U = self.factors.reshape(-1, self.factors.shape[-1])
            UC = scale * (U @ self.core)
            step = max(1, LOW_RANK_CHUNK_BYTES // (8 * max(U.shape[0], 1)))
            for i in range(0, U.shape[0], step):
                out[i:i + step] += UC[i:i + step] @ U.T
        return out

    def diagonal_entries(self) -> np.ndarray:
        """The matrix's diagonal, ``(s, d)`` (row-major like the layer)."""
        if self.dense is not None:
            return np.diagonal(self.dense).reshape(self.shape).copy()
        if self.factors is None:
            return self.diagonal.copy()
        return self.diagonal + np.einsum("jaq,qr,jar->ja", self.factors, self.core, self.factors)

    def to_dense(self) -> np.ndarray:
        t = self.shape[0] * self.shape[1]
        return self.add_dense(np.zeros((t, t)))

    def matvec(self, V) -> np.ndarray:
        """``H V``: ``V`` and the result ``(s, d)``."""
        V = np.asarray(V, dtype=float)
        if self.dense is not None:
            return (self.dense @ V.ravel()).reshape(self.shape)
        out = self.diagonal * V
        if self.factors is not None:
            coefficients = self.core @ np.einsum("jaq,ja->q", self.factors, V)
            out = out + self.factors @ coefficients
        return out

    def psd_part(self) -> "LayerHessian":
        """The projection onto the positive semi-definite cone (negative eigenvalues set to 0).

        A diagonal matrix's eigenvalues are its entries: ``max(diagonal, 0)``, still
        diagonal. Otherwise a dense eigendecomposition (``O(t_k^3)``).
        """
        if self.is_diagonal:
            return LayerHessian(self.shape, diagonal=np.maximum(self.diagonal, 0.0))
        t = self.shape[0] * self.shape[1]
        check_allocation(3 * 8 * t * t, f"the positive semi-definite part of a {t:,} x {t:,} "
                         "layer Hessian of a penalty (an eigendecomposition)",
                         ["declare the penalty convex or give it a structured gauss_newton"])
        lam, Q = np.linalg.eigh(self.to_dense())
        return LayerHessian(self.shape, dense=(Q * np.maximum(lam, 0.0)) @ Q.T)


def as_layer_hessian(H, shape) -> LayerHessian:
    """``H`` as a :class:`LayerHessian` of a layer of ``shape``: itself, or a dense ``(t_k, t_k)`` array."""
    if isinstance(H, LayerHessian):
        if H.shape != tuple(shape):
            raise ValueError(f"a layer Hessian of shape {H.shape} for a layer of shape {tuple(shape)}")
        return H
    return LayerHessian(shape, dense=H)
