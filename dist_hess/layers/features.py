"""Layers linear in their weights: ``a_j = W_j . phi(u)`` (dense, quadratic).

Every unit sees the same features ``phi(u)`` ``(n, d)``, so ``dP_j/dW_j = phi``
for all ``j`` (a :class:`SharedParamGrad`), ``d2P/dW2 = 0``, and the mixed
derivative is ``d2P_j/dW_jc du_r = dphi_c/du_r`` for every unit (a
:class:`SharedMixed`).  A subclass gives ``phi`` (``features``), its directional
derivative and its transpose (``features_jvp``, ``features_vjp``), its Taylor
series (``features_series``) and its second-order contractions in ``u``.
"""
from __future__ import annotations

import numpy as np

from .base import Propagation
from .jacobians import SharedMixed, SharedParamGrad

__all__ = ["FeatureLayer"]


class FeatureLayer(Propagation):
    """``a_j = W_j . phi(u)``: linear in the weights, one feature vector for every unit."""

    linear_in_weights = True

    def features(self, u):                    # (n, r) -> (n, d)
        raise NotImplementedError

    def features_jvp(self, u, D):             # dphi/du . D: (n, r, q) -> (n, d, q)
        raise NotImplementedError

    def features_vjp(self, u, B):             # B (n, d) -> (n, r): sum_c B_c dphi_c/du
        raise NotImplementedError

    def features_series(self, u_series):      # (n, r, p+1) -> (n, d, p+1)
        raise NotImplementedError

    # -- protocol ----------------------------------------------------------
    def value(self, W, u):
        return self.features(u) @ W.T

    def param_grad(self, W, u):
        return SharedParamGrad(self.features(u), self.units)

    def param_hess_sum(self, W, u, delta):
        return None

    def param_hess_vp(self, W, u, delta, V):
        return None

    def mixed_apply(self, W, u, delta, D):
        return delta[:, :, None, None] * self.features_jvp(u, D)[:, None, :, :]

    def mixed_apply_op(self, W, u, delta, D):
        return SharedMixed(self.features_jvp(u, D), delta)

    def mixed_apply_sum(self, W, u, delta, du):
        return delta.T @ self.features_jvp(u, du[:, :, None])[:, :, 0]

    def mixed_transpose_apply(self, W, u, delta, V):
        return self.features_vjp(u, delta @ V)

    def taylor(self, W, V, u_series):
        """``a(t) = phi(u(t)) (W + t V)'``: coefficient ``p`` is ``phi_p W' + phi_{p-1} V'``."""
        phi = self.features_series(u_series)                    # (n, d, p+1)
        a = np.einsum("ncp,jc->njp", phi, W)
        a[..., 1:] += np.einsum("ncp,jc->njp", phi[..., :-1], V)
        return a
