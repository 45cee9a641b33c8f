"""``{"type": "norm", "lambda": L, "epsilon": e}``: ``phi(W) = sqrt(||W||^2 + e^2) - e``.

``||W||^2 = sum m w^2`` over the layer's penalised entries (mask ``m``): the
seed's §3 example ``lambda sum_k ||W^k||`` when ``e = 0`` (a group lasso with one
group per layer: Yuan & Lin 2006), smooth for ``e > 0``.  With ``r = sqrt(||W||^2 + e^2)``:

    phi'  = m w / r
    phi'' = diag(m) / r - (m w)(m w)' / r^3        (diagonal plus rank one)

``phi''`` couples every pair of entries of the layer (all rows), and is positive
semi-definite (its eigenvalues are ``1/r`` and ``e^2 / r^3``): the kind is convex.
Along ``W + t V``, ``r(t)^2 = r^2 + 2 t <m W, V> + t^2 <m V, V>`` exactly, and
``sqrt`` of that series is ``exp(log(.) / 2)`` in truncated Taylor arithmetic
(:mod:`dist_hess.taylor`).  Row tensors of any order: with ``q = r^2``,
``y = m w_j``, ``g(q) = sqrt(q)``, Faa di Bruno over ``q`` (whose derivatives in
``w_j`` are ``2 y`` and ``2 diag(m_j)``, nothing beyond) gives

    d^p phi / dw_j^p = sum over partial pairings pi of the p indices of
                       g^(p - |pi|)(q) prod_{pairs} 2 diag(m_j) prod_{singletons} 2 y.

At ``e = 0`` and ``W = 0`` ``phi`` is not differentiable: a ``ValueError``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..taylor import exp_leading, log_leading
from .base import Penalty
from .hessian import LayerHessian

__all__ = ["Norm"]

_LETTERS = "abcdefghijklmnopqstuvwxyz"        # no 'r': the row axis


class Norm(Penalty):
    type = "norm"
    extra_keys = ("epsilon",)
    convex = True

    def __init__(self, epsilon=0.0):
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
                or not np.isfinite(epsilon) or epsilon < 0):
            raise ValueError(f"norm penalty epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)

    def options(self):
        return {"epsilon": self.epsilon}

    def _radius(self, W, mask):
        """``(||W||^2, r)``; a ``ValueError`` where ``phi`` is not differentiable."""
        squares = float(np.sum(mask * W * W))
        r = float(np.sqrt(squares + self.epsilon**2))
        if r == 0.0:
            raise ValueError("the norm penalty with epsilon = 0 (lambda ||W^k||) is not "
                             "differentiable where every penalised weight of the layer is 0; "
                             "use epsilon > 0 or start elsewhere")
        return squares, r

    def value(self, W, mask):
        squares, r = self._radius(W, mask)
        return squares / (r + self.epsilon)          # r - e without the cancellation

    def gradient(self, W, mask):
        _, r = self._radius(W, mask)
        return mask * W / r

    def hessian(self, W, mask):
        _, r = self._radius(W, mask)
        y = mask * W
        return LayerHessian(W.shape, diagonal=mask / r, factors=y[..., None],
                            core=np.array([[-1.0 / r**3]]))

    def hvp(self, W, mask, V):
        _, r = self._radius(W, mask)
        y = mask * W
        return mask * V / r - y * (float(np.sum(y * V)) / r**3)

    def taylor(self, W, mask, V, order):
        squares, r = self._radius(W, mask)
        P = order + 1
        q = np.array([r * r, 2.0 * float(np.sum(mask * W * V)), float(np.sum(mask * V * V))])
        series = exp_leading(0.5 * log_leading(q[:P], P), P)
        out = np.zeros(P)
        out[: len(series)] = series
        out[0] = squares / (r + self.epsilon)
        return out

    def row_tensor(self, W, mask, rows, order):
        _, r = self._radius(W, mask)
        rows = np.asarray(rows, dtype=int)
        y = (mask * W)[rows]                                     # (R, d)
        M = np.zeros(y.shape + (y.shape[1],))                    # (R, d, d): diag(m_j)
        idx = np.arange(y.shape[1])
        M[:, idx, idx] = mask[rows]
        out = np.zeros(y.shape[:1] + (y.shape[1],) * order)
        letters = _LETTERS[:order]
        for pairs, singles in _partial_pairings(order):
            operands, terms = [], []
            for a, b in pairs:
                operands.append(2.0 * M)
                terms.append("r" + letters[a] + letters[b])
            for a in singles:
                operands.append(2.0 * y)
                terms.append("r" + letters[a])
            coefficient = _sqrt_derivative(r * r, order - len(pairs))
            out += coefficient * np.einsum(",".join(terms) + "->r" + letters, *operands)
        return out


def _sqrt_derivative(q, k):
    """``d^k sqrt(q) / dq^k = (1/2)(-1/2)...(1/2 - k + 1) q^(1/2 - k)``."""
    c = 1.0
    for i in range(k):
        c *= 0.5 - i
    return c * q ** (0.5 - k)


def _partial_pairings(p):
    """Every partial pairing of ``range(p)``: ``(pairs, singletons)``."""
    def recurse(items):
        if not items:
            yield [], []
            return
        first, rest = items[0], items[1:]
        for pairs, singles in recurse(rest):
            yield pairs, [first] + singles
        for i, other in enumerate(rest):
            for pairs, singles in recurse(rest[:i] + rest[i + 1:]):
                yield [(first, other)] + pairs, singles
    return list(recurse(list(range(p))))
