"""Laplace approximation of the predictive distribution (MacKay 1992).

Around the fit ``w`` the posterior is ``N(w, Sigma)`` with ``Sigma = s2 G^+`` for
squared loss and ``Sigma = G^+`` for the cross-entropy losses, ``G`` the
generalised Gauss-Newton matrix of ``E`` (penalty included: an L2 penalty is a
Gaussian prior), full or block diagonal (``row``/``layer`` blocks).  With
``J_n = d x^m(x_n) / dW`` the exact output Jacobian at a new input
(:func:`~.per_example.output_jacobian`), the network output is
``N(f_n, J_n Sigma J_n')`` (linearised network), and

* regression (squared loss): the prediction is ``N(f_n, J_n Sigma J_n' + s2 I)``,
  ``s2 = RSS / (n c - p)``;
* binary cross-entropy: ``P(y = 1) ~= logistic(f / sqrt(1 + pi v / 8))``, the probit
  approximation (MacKay 1992), ``v`` the output variance;
* softmax: ``P(y = o) ~= softmax_o(f_o / sqrt(1 + pi v_o / 8))`` (the
  multi-class probit approximation, Lu, Ie & Sha 2020; the same as above per
  logit, ignoring correlations between logits).

The predictive interval of level ``L`` for regression is
``f_n +- z_{(1+L)/2} sqrt(J_n Sigma J_n' + s2)`` (:meth:`LaplacePrediction.interval`).

Which ``G``: ``kind=None`` (the default, also of ``dist-hess predict --interval``) takes
the Gauss-Newton matrix when the source holds it or has the data to compute it, and
otherwise a stored exact Hessian (the Laplace approximation's own matrix, positive
definite at a minimum) -- `default_kind`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..activations import _logistic
from .covariance import check_covariance_options, noise_variance
from .covariance import covariance as compute_covariance
from .per_example import output_jacobian
from .source import resolve

__all__ = ["LaplacePrediction", "laplace_predict", "default_kind"]

#: Bytes of output Jacobian ``(rows, c, t)`` formed at once; rows beyond go in chunks.
JACOBIAN_BYTES = 1 << 28


@dataclass
class LaplacePrediction:
    """``mean`` ``(n, c)``: the network output at ``w`` (logits for classification);
    ``covariance`` ``(n, c, c)`` and ``variance`` ``(n, c)``: of the output under the
    posterior (epistemic); ``noise_variance`` ``s2`` (squared loss, else ``None``);
    ``predictive_variance`` ``(n, c)``: ``variance + s2`` (regression);
    ``probabilities`` ``(n, c)`` (classification, probit approximation); ``kind`` and
    ``structure``: the curvature ``Sigma`` came from."""

    mean: np.ndarray
    covariance: np.ndarray
    variance: np.ndarray
    noise_variance: float | None = None
    predictive_variance: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    kind: str = "gauss_newton"
    structure: str = "full"

    @property
    def standard_error(self) -> np.ndarray:
        """``sqrt(J Sigma J')`` per output, ``(n, c)``: the standard error of the fitted mean."""
        return np.sqrt(self.variance)

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``, each ``(n, c)``: the regression predictive interval
        ``mean +- z sqrt(predictive_variance)``, ``z`` the ``(1 + level)/2`` normal quantile."""
        if self.predictive_variance is None:
            raise ValueError("predictive intervals are for regression (squared loss); a "
                             "classifier's Laplace prediction is its probabilities")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        half = special.ndtri(0.5 + level / 2.0) * np.sqrt(self.predictive_variance)
        return self.mean - half, self.mean + half


def default_kind(fitted, structure: str = "full") -> str:
    """The curvature `laplace_predict` uses when ``kind=None`` (module docstring):
    ``gauss_newton`` when stored in ``structure`` or larger or computable from the data,
    else ``hessian`` when that is stored, else ``gauss_newton`` (whose absence then
    raises ``LookupError`` naming what to store)."""
    if fitted.has_data or structure in fitted.available("gauss_newton"):
        return "gauss_newton"
    return "hessian" if structure in fitted.available("hessian") else "gauss_newton"


def laplace_predict(source, X_new, *, structure: str = "full", kind: str | None = None,
                    data=None, client=None, rcond: float = 1e-10) -> LaplacePrediction:
    """Predictive mean and variance at new inputs ``X_new`` ``(n_new, inputs)``.

    ``source``: a store path, an open store, or ``(model, w, X, Y)``;
    ``structure``: ``full`` | ``layer`` | ``row`` (block-diagonal ``Sigma``);
    ``kind``: the curvature (``gauss_newton``, positive semi-definite, or ``hessian``);
    ``None``: `default_kind`. Output Jacobians are formed for at most
    :data:`JACOBIAN_BYTES` at a time (rows in chunks).
    """
    if kind not in (None, "gauss_newton", "hessian"):
        raise ValueError(f"kind must be None, 'gauss_newton' or 'hessian', got {kind!r}")
    check_covariance_options("inverse", structure, kind or "hessian")
    fitted = resolve(source, data=data, client=client)
    model = fitted.model
    kind = default_kind(fitted, structure) if kind is None else kind
    cov = compute_covariance(fitted, method="inverse", structure=structure, kind=kind,
                             rcond=rcond, warn=True)
    s2 = noise_variance(fitted) if model.loss.name == "squared" else None
    scale = 1.0 if s2 is None else s2
    X_new = model.check_inputs(X_new)
    f = model.predict(fitted.w, X_new, output="raw")
    n, c = f.shape
    C = np.zeros((n, c, c))
    rows = max(1, JACOBIAN_BYTES // (8 * c * model.n_params))
    for start in range(0, n, rows):
        J = output_jacobian(model, fitted.w, X_new[start:start + rows])     # (rows, c, t)
        for index, Hinv in cov.blocks:
            Jb = J[:, :, index]                                              # (rows, c, b)
            C[start:start + rows] += scale * np.einsum("nab,ncb->nac", Jb @ Hinv, Jb)
    var = np.maximum(np.diagonal(C, axis1=1, axis2=2), 0.0).copy()
    out = LaplacePrediction(mean=f, covariance=C, variance=var, noise_variance=s2, kind=kind,
                            structure=structure)
    loss = model.loss.name
    if loss == "squared":
        out.predictive_variance = var + s2
    elif loss == "binary_cross_entropy":
        out.probabilities = _logistic(f / np.sqrt(1.0 + math.pi * var / 8.0))
    elif loss == "softmax_cross_entropy":
        a = f / np.sqrt(1.0 + math.pi * var / 8.0)
        a = a - a.max(axis=1, keepdims=True)
        e = np.exp(np.maximum(a, -700.0))
        out.probabilities = e / e.sum(axis=1, keepdims=True)
    return out

