"""``rbf``: ``a_j = (u - mu_j)' M_j (u - mu_j)`` (seed §4.3), one source.

Row ``j`` is ``[mu_j (r values), theta_j]`` with the width parameters ``theta_j``
of the metric:

* ``isotropic``: one ``beta``, ``M = exp(beta) I``;
* ``diagonal``: ``r`` values ``beta``, ``M = diag(exp(beta))``;
* ``full``: the ``r(r+1)/2`` entries of a lower-triangular ``L`` (row-major),
  ``M = L L'``.

With ``d = u - mu``, ``M_p = dM/dtheta_p`` and ``M_pq = d2M/dtheta_p dtheta_q``:
``dP/dmu = -2 M d``, ``dP/dtheta_p = d' M_p d``, ``dP/du = 2 M d``;
``d2P/dmu2 = 2 M``, ``d2P/dmu dtheta_p = -2 M_p d``, ``d2P/dtheta_p dtheta_q = d' M_pq d``;
``d2P/du2 = 2 M``, ``d2P/dmu du = -2 M``, ``d2P/dtheta_p du = 2 M_p d``.
A metric supplies ``M``, ``d' M_p d``, ``M_p d`` and ``d' M_pq d``.
"""
from __future__ import annotations

import numpy as np

from ..taylor import series_exp, series_mul
from .base import Propagation

__all__ = ["RBF"]


class _Isotropic:
    def __init__(self, r):
        self.r, self.n_params = r, 1

    def matrix(self, theta):                       # (s, r, r)
        return np.exp(theta[:, 0])[:, None, None] * np.eye(self.r)

    def first(self, theta, d):                     # (n, s, k): d' M_p d
        return (np.exp(theta[:, 0]) * np.einsum("njr,njr->nj", d, d))[:, :, None]

    def mp_d(self, theta, d):                      # (n, s, k, r): M_p d
        return (np.exp(theta[:, 0])[None, :, None] * d)[:, :, None, :]

    def second(self, theta, d):                    # (n, s, k, k): d' M_pq d
        return self.first(theta, d)[..., None]

    def init(self, s):
        return np.zeros((s, 1))

    def quadratic_series(self, theta, dtheta, d_series):
        m = series_exp(_line(theta[:, 0], dtheta[:, 0], d_series.shape[-1]))      # (s, p+1)
        sq = series_mul(d_series, d_series).sum(axis=2)                            # (n, s, p+1)
        return series_mul(m[None], sq)


class _Diagonal:
    def __init__(self, r):
        self.r, self.n_params = r, r

    def matrix(self, theta):
        M = np.zeros((theta.shape[0], self.r, self.r))
        idx = np.arange(self.r)
        M[:, idx, idx] = np.exp(theta)
        return M

    def first(self, theta, d):
        return np.exp(theta)[None] * d * d

    def mp_d(self, theta, d):
        out = np.zeros(d.shape[:2] + (self.r, self.r))
        idx = np.arange(self.r)
        out[:, :, idx, idx] = np.exp(theta)[None] * d
        return out

    def second(self, theta, d):
        out = np.zeros(d.shape[:2] + (self.r, self.r))
        idx = np.arange(self.r)
        out[:, :, idx, idx] = self.first(theta, d)
        return out

    def init(self, s):
        return np.zeros((s, self.r))

    def quadratic_series(self, theta, dtheta, d_series):
        m = series_exp(_line(theta, dtheta, d_series.shape[-1]))                  # (s, r, p+1)
        return series_mul(m[None], series_mul(d_series, d_series)).sum(axis=2)


class _Full:
    def __init__(self, r):
        self.r = r
        self.rows, self.cols = np.tril_indices(r)      # row-major lower triangle
        self.n_params = len(self.rows)

    def lower(self, theta):                            # (s, r, r)
        L = np.zeros((theta.shape[0], self.r, self.r))
        L[:, self.rows, self.cols] = theta
        return L

    def matrix(self, theta):
        L = self.lower(theta)
        return L @ L.transpose(0, 2, 1)

    def first(self, theta, d):                         # 2 v_q d_p, v = L' d
        v = np.einsum("jpq,njp->njq", self.lower(theta), d)
        return 2.0 * d[:, :, self.rows] * v[:, :, self.cols]

    def mp_d(self, theta, d):                          # [c == p] v_q + L_cq d_p
        L = self.lower(theta)
        v = np.einsum("jpq,njp->njq", L, d)
        out = np.einsum("jcq,njp->njpqc", L, d)[:, :, self.rows, self.cols, :]   # (n, s, k, r)
        k = np.arange(self.n_params)
        out[:, :, k, self.rows] += v[:, :, self.cols]
        return out

    def second(self, theta, d):                        # 2 d_p d_p' [q == q']
        same_col = (self.cols[:, None] == self.cols[None, :]).astype(float)
        return 2.0 * d[:, :, self.rows, None] * d[:, :, None, self.rows] * same_col

    def init(self, s):
        return np.tile(np.eye(self.r)[self.rows, self.cols], (s, 1))

    def quadratic_series(self, theta, dtheta, d_series):
        P = d_series.shape[-1]
        Ls = np.zeros(theta.shape[:1] + (self.r, self.r, P))
        Ls[:, self.rows, self.cols, 0] = theta
        if P > 1:
            Ls[:, self.rows, self.cols, 1] = dtheta
        # v_q(t) = sum_p L_pq(t) d_p(t)
        v = series_mul(Ls[None], d_series[:, :, :, None, :]).sum(axis=2)        # (n, s, r, P)
        return series_mul(v, v).sum(axis=2)


def _line(x0, x1, P):
    """Series of ``x0 + t x1`` truncated to ``P`` coefficients."""
    out = np.zeros(np.shape(x0) + (P,))
    out[..., 0] = x0
    if P > 1:
        out[..., 1] = x1
    return out


METRICS = {"isotropic": _Isotropic, "diagonal": _Diagonal, "full": _Full}


class RBF(Propagation):
    type = "rbf"
    extra_keys = ("metric",)
    single_source = True

    def __init__(self, units, n_inputs, metric="isotropic"):
        super().__init__(units, n_inputs)
        if metric not in METRICS:
            raise ValueError(f"unknown rbf metric {metric!r}; known metrics: {sorted(METRICS)}")
        self.metric_name = metric
        self.metric = METRICS[metric](self.n_inputs)

    @property
    def n_row_params(self):
        return self.n_inputs + self.metric.n_params

    def options(self):
        return {"metric": self.metric_name}

    def init(self, rng):
        mu = rng.normal(size=(self.units, self.n_inputs))
        return np.concatenate([mu, self.metric.init(self.units)], axis=1)

    def column_labels(self, inputs):
        """``mu(x)`` per input, then ``beta`` | ``beta(x)`` per input | ``L[a,b]`` (row-major lower)."""
        mu = [f"mu({x})" for x in inputs]
        if self.metric_name == "isotropic":
            return mu + ["beta"]
        if self.metric_name == "diagonal":
            return mu + [f"beta({x})" for x in inputs]
        r = len(inputs)
        return mu + [f"L[{a},{b}]" for a in range(r) for b in range(a + 1)]

    def _split(self, W, u):
        r = self.n_inputs
        mu, theta = W[:, :r], W[:, r:]
        d = u[:, None, :] - mu[None, :, :]                 # (n, s, r)
        return mu, theta, d

    def value(self, W, u):
        _, theta, d = self._split(W, u)
        return np.einsum("njr,jrk,njk->nj", d, self.metric.matrix(theta), d)

    def param_grad(self, W, u):
        _, theta, d = self._split(W, u)
        Md = np.einsum("jrk,njk->njr", self.metric.matrix(theta), d)
        return np.concatenate([-2.0 * Md, self.metric.first(theta, d)], axis=2)

    def input_jac(self, W, u):
        _, theta, d = self._split(W, u)
        return 2.0 * np.einsum("jrk,njk->njr", self.metric.matrix(theta), d)

    def param_hess(self, W, u):
        _, theta, d = self._split(W, u)
        n, s, r = d.shape
        k = self.metric.n_params
        H = np.empty((n, s, r + k, r + k))
        H[:, :, :r, :r] = 2.0 * self.metric.matrix(theta)[None]
        cross = -2.0 * self.metric.mp_d(theta, d)            # (n, s, k, r)
        H[:, :, r:, :r] = cross
        H[:, :, :r, r:] = cross.transpose(0, 1, 3, 2)
        H[:, :, r:, r:] = self.metric.second(theta, d)
        return H

    def input_hess(self, W, u):
        _, theta, _ = self._split(W, u)
        M2 = 2.0 * self.metric.matrix(theta)
        return np.broadcast_to(M2, (u.shape[0],) + M2.shape)

    def input_hess_sum(self, W, u, delta):
        _, theta, _ = self._split(W, u)
        return 2.0 * np.einsum("nj,jab->nab", delta, self.metric.matrix(theta))

    def mixed_hess(self, W, u):
        _, theta, d = self._split(W, u)
        n, s, r = d.shape
        M = self.metric.matrix(theta)
        return np.concatenate([np.broadcast_to(-2.0 * M, (n, s, r, r)),
                               2.0 * self.metric.mp_d(theta, d)], axis=2)

    def taylor(self, W, V, u_series):
        r = self.n_inputs
        P = u_series.shape[-1]
        d = u_series[:, None, :, :] - _line(W[:, :r], V[:, :r], P)[None]        # (n, s, r, P)
        return self.metric.quadratic_series(W[:, r:], V[:, r:], d)
