"""``dense``: ``a_j = W_j . z`` with ``z = [1, u]`` (``z = u`` without bias) (seed §4.1).

Row ``j`` of ``W`` is ``[bias, weights from the sources in order]``; ``dP_j/dW_j = z``
for every unit and ``dP/du = W[:, 1:]`` for every example, so every contraction
is a BLAS-3 product over examples.
"""
from __future__ import annotations

import numpy as np

from ..rowwise import column_sums
from .features import FeatureLayer
from .jacobians import SharedJacobian, SharedParamGrad

__all__ = ["Dense"]


class Dense(FeatureLayer):
    type = "dense"
    extra_keys = ("bias",)

    def __init__(self, units, n_inputs, bias=True):
        super().__init__(units, n_inputs)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"dense 'bias' must be true or false, got {bias!r}")
        self.bias = bool(bias)
        self.offset = int(self.bias)

    @property
    def n_row_params(self):
        return self.n_inputs + self.offset

    def options(self):
        return {"bias": self.bias}

    def penalty_mask(self):
        mask = np.ones(self.n_row_params, dtype=bool)
        mask[: self.offset] = False
        return mask

    def init(self, rng):
        W = rng.normal(scale=1.0 / np.sqrt(max(self.n_inputs, 1)), size=(self.units, self.n_row_params))
        W[:, : self.offset] = 0.0
        return W

    def features(self, u):
        if not self.bias:
            return u
        return np.concatenate([np.ones((u.shape[0], 1)), u], axis=1)

    def features_jvp(self, u, D):
        if not self.bias:
            return D
        return np.concatenate([np.zeros((D.shape[0], 1, D.shape[2])), D], axis=1)

    def features_vjp(self, u, B):
        return B[:, self.offset:]

    def features_series(self, u_series):
        if not self.bias:
            return u_series
        one = np.zeros((u_series.shape[0], 1, u_series.shape[2]))
        one[:, 0, 0] = 1.0
        return np.concatenate([one, u_series], axis=1)

    def column_labels(self, inputs):
        """``<- bias``, then ``<- x`` for each input ``x``."""
        return (["<- bias"] if self.bias else []) + [f"<- {x}" for x in inputs]

    def input_columns(self, r):
        return [self.offset + r]

    def value(self, W, u):
        a = u @ transposed(W[:, self.offset:])
        if self.bias:
            a += W[:, 0]
        return a

    def param_grad(self, W, u):
        return DenseParamGrad(u, self.units, self.bias)

    def input_jac(self, W, u):
        return SharedJacobian(W[:, self.offset:])

    def mixed_apply_sum(self, W, u, delta, du):
        out = np.empty((self.units, self.n_row_params))
        out[:, : self.offset] = 0.0
        np.matmul(delta.T, du, out=out[:, self.offset:])
        return out

    def mixed_transpose_apply(self, W, u, delta, V):
        return delta @ V[:, self.offset:]

    def mixed_apply_sum_columns(self, W, u, delta, du, columns):
        """``delta' du`` into the weight columns of ``columns`` (no product with zeros)."""
        out = np.zeros((self.units, self.n_row_params))
        np.matmul(delta.T, du, out=out[:, self.offset:][:, columns])
        return out

    def mixed_transpose_apply_columns(self, W, u, delta, V, columns):
        return SharedJacobian(V[:, self.offset:]).transpose_apply(delta, columns)   # delta V

    def input_hess_vp_columns(self, W, u, delta, du, columns):
        return None                        # linear in u

    def taylor_leading(self, W, V, u, P, a0=None):
        """``a_q = u_q W' + u_{q-1} V'`` (+ bias ``W_0`` at ``q = 0``, ``V_0`` at ``q = 1``):
        one matrix product per coefficient, in the leading-axis layout."""
        off = self.offset
        Lu, N, r = u.shape
        L = Lu if V is None else min(Lu + 1, P)
        a = np.empty((L, N, W.shape[0]))
        if a0 is None:
            np.matmul(u.reshape(Lu * N, r), W[:, off:].T, out=a[:Lu].reshape(Lu * N, -1))
            if off:
                a[0] += W[:, 0]
        else:
            a[0] = a0
            if Lu > 1:
                np.matmul(u[1:].reshape((Lu - 1) * N, r), W[:, off:].T,
                          out=a[1:Lu].reshape((Lu - 1) * N, -1))
        if V is None or L == 1:
            return a
        if Lu < L:
            a[Lu] = 0.0
        a[1:L] += (u[: L - 1].reshape((L - 1) * N, r) @ V[:, off:].T).reshape(L - 1, N, -1)
        if off:
            a[1] += V[:, 0]
        return a


def transposed(M):
    """``M'`` as a C-contiguous copy (``(s, r)`` weights: small).  OpenBLAS multiplies
    ``u @ M'`` up to 2x faster with it than with the transposed strided view for the
    narrow products of small layers (``(1797, 32) @ (32, 10)``: 20 us against 41 us)."""
    return np.ascontiguousarray(M.T)


class DenseParamGrad(SharedParamGrad):
    """``phi = [1, u]`` built only when a contraction needs it as one matrix."""

    def __init__(self, u, s, bias):
        self.u, self.s, self.bias = u, s, bias
        self._phi = None if bias else u

    @property
    def phi(self):
        if self._phi is None:
            self._phi = np.concatenate([np.ones((self.u.shape[0], 1)), self.u], axis=1)
        return self._phi

    def gradient_sum(self, delta):
        """``[sum_n delta_n, delta' u]`` written into one ``(s, d)`` array (no ``[1, u]``)."""
        if not self.bias:
            return delta.T @ self.u
        out = np.empty((self.s, self.u.shape[1] + 1))
        out[:, 0] = column_sums(delta)
        np.matmul(delta.T, self.u, out=out[:, 1:])
        return out

    def jvp(self, V):
        if not self.bias:
            return self.u @ transposed(V)
        out = self.u @ transposed(V[:, 1:])
        out += V[:, 0]
        return out
