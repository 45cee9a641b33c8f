"""``{"type": "l2", "lambda": L}``: ``phi(W) = 1/2 sum m w^2`` (DESIGN §1).

``phi' = m w``, ``phi'' = diag(m)`` (``m`` the layer's mask of penalised entries):
quadratic, so its Taylor coefficients stop at ``t^2`` and its row tensors at
order 2.  The Gaussian prior ``N(0, (lambda I)^-1)`` on the penalised weights.
"""
from __future__ import annotations

import numpy as np

from .base import Penalty
from .hessian import LayerHessian

__all__ = ["L2"]


class L2(Penalty):
    type = "l2"
    convex = True

    def value(self, W, mask):
        return 0.5 * float(np.sum(mask * W * W))

    def gradient(self, W, mask):
        return mask * W

    def hessian(self, W, mask):
        return LayerHessian(W.shape, diagonal=mask.astype(float))

    def hvp(self, W, mask, V):
        return mask * V

    def taylor(self, W, mask, V, order):
        """``phi(W + t V) = phi(W) + t <m W, V> + t^2 <m V, V> / 2``."""
        terms = [self.value(W, mask), float(np.sum(mask * W * V)), 0.5 * float(np.sum(mask * V * V))]
        return np.array(terms + [0.0] * (order - 2))[: order + 1]

    def row_tensor(self, W, mask, rows, order):
        if order <= 2:
            return super().row_tensor(W, mask, rows, order)
        return None
