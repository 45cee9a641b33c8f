"""``quadratic``: the homogeneous quadratic form of seed §4.2.

``a_j = sum_{a <= b} w_{j,ab} z_a z_b`` over ``z = [1, u]`` (``u`` the sources
concatenated); row ``j`` is the upper triangle ``a <= b`` in row-major order, so
``d = (r+1)(r+2)/2``.  With ``S_j = U_j + U_j'`` (``U_j`` the upper-triangular
matrix holding row ``j``): ``dP_j/dz = S_j z`` and ``d2P_j/dz2 = S_j``.
"""
from __future__ import annotations

import numpy as np

from ..taylor import series_mul
from .features import FeatureLayer

__all__ = ["Quadratic"]


class Quadratic(FeatureLayer):
    type = "quadratic"

    def __init__(self, units, n_inputs):
        super().__init__(units, n_inputs)
        self.iu = np.triu_indices(n_inputs + 1)

    @property
    def n_row_params(self):
        m = self.n_inputs + 1
        return m * (m + 1) // 2

    def init(self, rng):
        return rng.normal(scale=0.5 / (self.n_inputs + 1), size=(self.units, self.n_row_params))

    def _z(self, u):
        return np.concatenate([np.ones((u.shape[0], 1)), u], axis=1)

    def _sym(self, W):                       # (s, r+1, r+1): S_j = U_j + U_j'
        m = self.n_inputs + 1
        U = np.zeros((W.shape[0], m, m))
        U[:, self.iu[0], self.iu[1]] = W
        return U + U.transpose(0, 2, 1)

    def features(self, u):
        z = self._z(u)
        return z[:, self.iu[0]] * z[:, self.iu[1]]

    def features_jvp(self, u, D):
        z = self._z(u)
        dz = np.concatenate([np.zeros((D.shape[0], 1, D.shape[2])), D], axis=1)
        a, b = self.iu
        return dz[:, a, :] * z[:, b, None] + z[:, a, None] * dz[:, b, :]

    def features_vjp(self, u, B):
        z = self._z(u)
        m = self.n_inputs + 1
        U = np.zeros((B.shape[0], m, m))
        U[:, self.iu[0], self.iu[1]] = B
        return np.einsum("nab,nb->na", U + U.transpose(0, 2, 1), z)[:, 1:]

    def features_series(self, u_series):
        one = np.zeros((u_series.shape[0], 1, u_series.shape[2]))
        one[:, 0, 0] = 1.0
        z = np.concatenate([one, u_series], axis=1)
        return series_mul(z[:, self.iu[0]], z[:, self.iu[1]])

    def input_jac(self, W, u):
        return np.einsum("jab,nb->nja", self._sym(W), self._z(u))[:, :, 1:]

    def input_hess(self, W, u):
        S = self._sym(W)[:, 1:, 1:]
        return np.broadcast_to(S, (u.shape[0],) + S.shape)

    def input_hess_sum(self, W, u, delta):
        return np.einsum("nj,jab->nab", delta, self._sym(W)[:, 1:, 1:])

    def input_hess_vp(self, W, u, delta, du):
        return np.einsum("nj,jab,nb->na", delta, self._sym(W)[:, 1:, 1:], du)

    def column_labels(self, inputs):
        """The monomials ``z_a z_b`` of ``z = [1, u]``: ``x2`` (``1 * x2``), ``x1^2``, ``x0*x2``, ``1``."""
        z = ["1"] + list(inputs)
        out = []
        for i, j in zip(*self.iu):
            if i == 0:
                out.append(z[j])
            elif i == j:
                out.append(f"{z[i]}^2")
            else:
                out.append(f"{z[i]}*{z[j]}")
        return out

    def input_columns(self, r):
        """The monomials containing ``u_r`` (``z_{r+1}``)."""
        a, b = self.iu
        return [int(c) for c in np.flatnonzero((a == r + 1) | (b == r + 1))]
