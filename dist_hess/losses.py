"""Losses ``g(x^m_i, y_i)`` summed over examples (DESIGN §1).

A loss knows, per example, its value ``g``, gradient ``g'`` and Hessian ``g''``
with respect to the network output ``x^m`` (seed eq. (7): ``e^m = -g'``), and how
to validate and canonicalise targets.  Index letters: ``n`` example, ``c``
output unit.

Built-ins, all numerically stable for huge logits:

* ``squared``: ``g = 1/2 ||y - x||^2``, ``g' = x - y``, ``g'' = I``.
* ``softmax_cross_entropy``: ``g = logsumexp(x) - x_y``, ``g' = p - onehot(y)``,
  ``g'' = diag(p) - p p'`` with ``p = softmax(x)``.
* ``binary_cross_entropy``: ``g = softplus(x) - y x`` per output,
  ``g' = sigma(x) - y``, ``g'' = diag(sigma (1 - sigma))``.

Adding one: subclass :class:`Loss`, implement ``value``, ``grad``, ``hess``
(and ``prepare_targets`` if targets need checking), then ``register_loss``.
"""
from __future__ import annotations

import math

import numpy as np

from .activations import _logistic, _softplus, get_activation
from .rowwise import row_max, row_sums
from .taylor import (compose_leading, exp_leading, log_leading, mul_leading, series_compose,
                     series_exp, series_log, series_mul)

__all__ = ["Loss", "get_loss", "register_loss", "LOSSES"]


class Loss:
    name: str = ""

    def prepare_targets(self, Y, n_outputs: int) -> np.ndarray:
        """Validate ``Y`` and return it as a float array ``(n, n_outputs)``."""
        Y = np.asarray(Y, dtype=float)
        if Y.ndim == 1 and n_outputs == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[1] != n_outputs:
            raise ValueError(
                f"targets for loss {self.name!r} must have shape (n, {n_outputs})"
                + (" or (n,)" if n_outputs == 1 else "") + f", got {Y.shape}")
        _check_finite(Y, "Y")
        return Y

    def mean(self, out) -> np.ndarray:
        """The prediction the loss's model makes from the network output (inverse link):
        identity unless overridden (``(n, c) -> (n, c)``)."""
        return out

    def value(self, out, Y) -> np.ndarray:   # (n,)
        raise NotImplementedError

    def grad(self, out, Y) -> np.ndarray:    # (n, c)
        raise NotImplementedError

    def value_and_grad(self, out, Y):
        """``(g (n,), g' (n, c))`` together (override to share work)."""
        return self.value(out, Y), self.grad(out, Y)

    def hess(self, out, Y) -> np.ndarray:    # (n, c, c)
        raise NotImplementedError

    def hvp(self, out, Y, V) -> np.ndarray:
        """``g'' V`` per example: ``(n, c)`` (default: from :meth:`hess`)."""
        return np.einsum("nab,nb->na", self.hess(out, Y), V)

    def hvp_operator(self, out, Y):
        """``V -> g'' V`` at fixed ``out``: a loss whose ``g''`` needs work of its own
        (softmax probabilities) does it once here for every product (default: :meth:`hvp`)."""
        return lambda V: self.hvp(out, Y, V)

    def taylor(self, out_series, Y) -> np.ndarray:
        """Taylor coefficients of ``g(x(t))`` given those of ``x(t)``: ``(n, c, p+1) -> (n, p+1)``."""
        raise NotImplementedError(f"loss {self.name!r} has no Taylor propagation")

    def __repr__(self):
        return f"<loss {self.name}>"


def _check_finite(A, name):
    """Raise ValueError naming the first NaN or inf of the float array ``A``.  ``sum A^2``
    (one BLAS pass, no temporary) is finite unless some entry is not, or it overflows;
    only then are the entries looked at one by one."""
    if A.size == 0 or math.isfinite(np.vdot(A, A).real):
        return
    if not np.isfinite(A).all():
        bad = np.argwhere(~np.isfinite(A))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}: "
                         f"{A[tuple(bad)]})")


class Squared(Loss):
    name = "squared"

    def value(self, out, Y):
        r = out - Y
        return 0.5 * row_sums(r * r)

    def grad(self, out, Y):
        return out - Y

    def value_and_grad(self, out, Y):
        r = out - Y
        return 0.5 * row_sums(r * r), r

    def hess(self, out, Y):
        n, c = out.shape
        return np.broadcast_to(np.eye(c), (n, c, c))

    def hvp(self, out, Y, V):
        return V

    def taylor(self, out_series, Y):
        r = out_series.copy()
        r[..., 0] -= Y
        return 0.5 * series_mul(r, r).sum(axis=1)

    def taylor_leading(self, out, Y, P):
        r = out.copy()
        r[0] -= Y
        return 0.5 * mul_leading(r, r, P).sum(axis=2)


class SoftmaxCrossEntropy(Loss):
    name = "softmax_cross_entropy"

    def prepare_targets(self, Y, n_outputs):
        Y = np.asarray(Y)
        if n_outputs < 2:
            raise ValueError("softmax_cross_entropy needs an output layer with at least 2 units, "
                             f"got {n_outputs}")
        if Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and n_outputs != 1):
            labels = Y.reshape(-1)
            if labels.dtype.kind == "f":
                _check_finite(labels, "Y")
                if np.any(labels != np.round(labels)):
                    bad = labels[labels != np.round(labels)][0]
                    raise ValueError(f"class labels must be integers, got {bad}")
            elif labels.dtype.kind not in "iub":
                raise TypeError(f"class labels must be integers, got dtype {labels.dtype}")
            labels = labels.astype(np.int64)
            out_of_range = (labels < 0) | (labels >= n_outputs)
            if np.any(out_of_range):
                bad = labels[out_of_range][0]
                raise ValueError(f"class label {bad} out of range: labels must lie in "
                                 f"0..{n_outputs - 1} for an output layer of {n_outputs} units")
            onehot = np.zeros((labels.shape[0], n_outputs))
            onehot[np.arange(labels.shape[0]), labels] = 1.0
            return onehot
        Y = np.asarray(Y, dtype=float)
        if Y.ndim != 2 or Y.shape[1] != n_outputs:
            raise ValueError(f"targets for softmax_cross_entropy must be integer labels (n,) or "
                             f"one-hot (n, {n_outputs}), got shape {Y.shape}")
        _check_finite(Y, "Y")
        if np.any(Y < 0) or np.any(np.abs(Y.sum(axis=1) - 1.0) > 1e-8):
            raise ValueError("one-hot targets for softmax_cross_entropy must be non-negative rows "
                             "summing to 1")
        return Y

    @staticmethod
    def _shifted_exp(out):
        """``s = x - max_c x_c``, ``e = exp(s)`` ``(n, c)`` and ``sum_c e_c`` ``(n,)``."""
        shifted = out - row_max(out)[:, None]
        e = np.exp(shifted)
        return shifted, e, row_sums(e)

    @classmethod
    def _probabilities(cls, out):
        _, e, total = cls._shifted_exp(out)
        e /= total[:, None]
        return e

    def mean(self, out):
        """Class probabilities ``softmax(out)``."""
        return self._probabilities(out)

    @staticmethod
    def _values(Y, shifted, total):
        # sum_c y_c (logsumexp(x) - x_c) = (sum_c y_c) log sum_c e_c - sum_c y_c s_c
        return np.log(total) * row_sums(Y) - row_sums(Y * shifted)

    def value(self, out, Y):
        shifted, _, total = self._shifted_exp(out)
        return self._values(Y, shifted, total)

    def grad(self, out, Y):
        p = self._probabilities(out)
        p -= Y
        return p

    def value_and_grad(self, out, Y):
        shifted, e, total = self._shifted_exp(out)
        values = self._values(Y, shifted, total)
        e /= total[:, None]
        e -= Y
        return values, e

    def hess(self, out, Y):
        p = self._probabilities(out)
        H = -p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        H[:, idx, idx] += p
        return H

    def hvp(self, out, Y, V):
        return self.hvp_operator(out, Y)(V)

    def hvp_operator(self, out, Y):
        """``V -> p * (V - (p . V))`` with ``p = softmax(out)`` computed once."""
        p = self._probabilities(out)
        return lambda V: p * (V - row_sums(p * V)[:, None])

    def taylor(self, out_series, Y):
        x = out_series.copy()
        shift = x[..., 0].max(axis=1)
        x[..., 0] -= shift[:, None]
        lse = series_log(series_exp(x).sum(axis=1))
        lse[..., 0] += shift
        return lse - np.einsum("nc,ncp->np", Y, out_series)

    def taylor_leading(self, out, Y, P):
        x = out.copy()
        shift = x[0].max(axis=1)
        x[0] -= shift[:, None]
        lse = log_leading(exp_leading(x, P).sum(axis=2), P)
        lse[0] += shift
        lse[: len(out)] -= np.einsum("nc,lnc->ln", Y, out)
        return lse


class BinaryCrossEntropy(Loss):
    name = "binary_cross_entropy"

    def prepare_targets(self, Y, n_outputs):
        Y = super().prepare_targets(Y, n_outputs)
        bad = (Y != 0) & (Y != 1)
        if np.any(bad):
            raise ValueError(f"binary_cross_entropy targets must be 0 or 1, got {Y[bad][0]}")
        return Y

    def mean(self, out):
        """Probabilities ``logistic(out)``."""
        return _logistic(out)

    def value(self, out, Y):
        return row_sums(_softplus(out) - Y * out)

    def grad(self, out, Y):
        return _logistic(out) - Y

    def hess(self, out, Y):
        p = _logistic(out)
        n, c = out.shape
        H = np.zeros((n, c, c))
        idx = np.arange(c)
        H[:, idx, idx] = p * (1.0 - p)
        return H

    def hvp(self, out, Y, V):
        return self.hvp_operator(out, Y)(V)

    def hvp_operator(self, out, Y):
        """``V -> sigma (1 - sigma) V`` with the weights computed once."""
        p = _logistic(out)
        q = p * (1.0 - p)
        return lambda V: q * V

    def taylor(self, out_series, Y):
        sp = series_compose(get_activation("softplus"), out_series)
        return (sp - Y[..., None] * out_series).sum(axis=1)

    def taylor_leading(self, out, Y, P):
        sp = compose_leading(get_activation("softplus"), out, P)
        sp[: len(out)] -= Y * out
        return sp.sum(axis=2)


LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss) -> Loss:
    if not isinstance(loss, Loss):
        raise TypeError(f"expected a Loss instance, got {type(loss).__name__}")
    LOSSES[loss.name] = loss
    return loss


def get_loss(name) -> Loss:
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}") from None


for _cls in (Squared, SoftmaxCrossEntropy, BinaryCrossEntropy):
    register_loss(_cls())
