"""``{"type": "weight_elimination", "lambda": L, "scale": c}``: ``phi(W) = sum m w^2 / (c^2 + w^2)``.

Weigend, Rumelhart & Huberman (1991): about ``w^2 / c^2`` for ``|w| << c`` (an L2
penalty) and about 1 for ``|w| >> c`` (a count of the weights in use), so it
drives small weights to zero and leaves large ones: the classic companion of
Hessian-based pruning.  Separable, entry by entry:

    phi'  = 2 c^2 w / (c^2 + w^2)^2
    phi'' = 2 c^2 (c^2 - 3 w^2) / (c^2 + w^2)^3      (negative for |w| > c / sqrt(3))

so the kind is not convex: ``gauss_newton`` adds ``max(phi'', 0)``, the projection
of the diagonal Hessian onto the positive semi-definite cone (docs/theory.md).
Along ``w + t v``, ``phi = 1 - c^2 / s(t)`` with ``s(t) = c^2 + (w + t v)^2`` a
quadratic in ``t``; ``1 / s = exp(-log s)`` in truncated Taylor arithmetic
(:mod:`dist_hess.taylor`) gives every coefficient, and with ``v = 1`` the
derivatives ``phi^(p)(w)`` of the (diagonal) row tensors.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..taylor import exp_leading, log_leading
from .base import Penalty
from .hessian import LayerHessian

__all__ = ["WeightElimination"]


class WeightElimination(Penalty):
    type = "weight_elimination"
    extra_keys = ("scale",)

    def __init__(self, scale=1.0):
        if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                or not np.isfinite(scale) or scale <= 0):
            raise ValueError(f"weight_elimination scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    def options(self):
        return {"scale": self.scale}

    def value(self, W, mask):
        w2 = W * W
        return float(np.sum(mask * w2 / (self.scale**2 + w2)))

    def gradient(self, W, mask):
        c2 = self.scale**2
        return mask * (2.0 * c2 * W / (c2 + W * W) ** 2)

    def second_derivative(self, W, mask):
        """``phi''`` entry by entry, ``(s, d)``."""
        c2 = self.scale**2
        w2 = W * W
        return mask * (2.0 * c2 * (c2 - 3.0 * w2) / (c2 + w2) ** 3)

    def hessian(self, W, mask):
        return LayerHessian(W.shape, diagonal=self.second_derivative(W, mask))

    def hvp(self, W, mask, V):
        return self.second_derivative(W, mask) * V

    def gauss_newton_hvp(self, W, mask, V):
        return np.maximum(self.second_derivative(W, mask), 0.0) * V

    def _series(self, W, V, P):
        """Leading-axis ``(P, s, d)`` coefficients of ``phi(w + t v)`` per entry (no mask)."""
        c2 = self.scale**2
        s = np.stack([c2 + W * W, 2.0 * W * V, V * V])[:P]
        inverse = exp_leading(-log_leading(s, P), P)               # 1 / s(t)
        out = np.zeros((P,) + W.shape)
        out[: len(inverse)] = -c2 * inverse
        out[0] = W * W / (c2 + W * W)
        return out

    def taylor(self, W, mask, V, order):
        series = self._series(W, V, order + 1)
        return np.einsum("pja,ja->p", series, mask.astype(float))

    def row_tensor(self, W, mask, rows, order):
        rows = np.asarray(rows, dtype=int)
        Wr, mr = W[rows], mask[rows]
        derivative = math.factorial(order) * self._series(Wr, np.ones_like(Wr), order + 1)[order]
        R, d = Wr.shape
        out = np.zeros((R,) + (d,) * order)
        idx = (np.arange(R)[:, None],) + (np.arange(d)[None, :],) * order
        out[idx] = mr * derivative
        return out
