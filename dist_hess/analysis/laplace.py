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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..activations import _logistic
from .covariance import covariance as compute_covariance, noise_variance
from .per_example import output_jacobian
from .source import resolve

__all__ = ["LaplacePrediction", "laplace_predict"]


@dataclass
class LaplacePrediction:
    """``mean`` ``(n, c)``: the network output at ``w`` (logits for classification);
    ``covariance`` ``(n, c, c)`` and ``variance`` ``(n, c)``: of the output under the
    posterior (epistemic); ``noise_variance`` ``s2`` (squared loss, else ``None``);
    ``predictive_variance`` ``(n, c)``: ``variance + s2`` (regression);
    ``probabilities`` ``(n, c)`` (classification, probit approximation)."""

    mean: np.ndarray
    covariance: np.ndarray
    variance: np.ndarray
    noise_variance: float | None = None
    predictive_variance: np.ndarray | None = None
    probabilities: np.ndarray | None = None


def laplace_predict(source, X_new, *, structure: str = "full", kind: str = "gauss_newton",
                    data=None, client=None, rcond: float = 1e-10) -> LaplacePrediction:
    """Predictive mean and variance at new inputs ``X_new`` ``(n_new, inputs)``.

    ``source``: a store path, an open store, or ``(model, w, X, Y)``;
    ``structure``: ``full`` | ``layer`` | ``row`` (block-diagonal ``Sigma``);
    ``kind``: the curvature (``gauss_newton``, positive semi-definite, or ``hessian``).
    """
    fitted = resolve(source, data=data, client=client)
    model = fitted.model
    cov = compute_covariance(fitted, method="inverse", structure=structure, kind=kind,
                             rcond=rcond, warn=True)
    s2 = noise_variance(fitted) if model.loss.name == "squared" else None
    scale = 1.0 if s2 is None else s2
    X_new = model.check_inputs(X_new)
    f = model.predict(fitted.w, X_new, output="raw")
    J = output_jacobian(model, fitted.w, X_new)                  # (n, c, t)
    n, c, _ = J.shape
    C = np.zeros((n, c, c))
    for index, Hinv in cov.blocks:
        Jb = J[:, :, index]                                      # (n, c, b)
        C += scale * np.einsum("nab,ncb->nac", Jb @ Hinv, Jb)
    var = np.maximum(np.diagonal(C, axis1=1, axis2=2), 0.0).copy()
    out = LaplacePrediction(mean=f, covariance=C, variance=var, noise_variance=s2)
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

