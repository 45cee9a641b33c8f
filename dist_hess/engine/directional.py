"""Directional derivatives of any order by univariate Taylor propagation (DESIGN §6).

Along ``w(t) = w + t v``, every layer's input, pre-activation and output is a
truncated series in ``t``; the loss turns the output series into the series of
``sum_i g_i(t)``, whose ``p``-th coefficient times ``p!`` is ``D^pE[v, ..., v]``
(without the penalty, which :func:`dist_hess.engine.sums.finalize` adds).
Cost: ``O(p^2)`` series products per layer, i.e. ``O(p^2)`` forward passes.
"""
from __future__ import annotations

import math

import numpy as np

from .forward import gather_sources
from .taylor import series_compose

__all__ = ["loss_series"]


def loss_series(model, Ws, Vs, X, Y, order):
    """``sum_i`` Taylor coefficients of ``g_i(w + t v)``: ``(order + 1,)``."""
    P = order + 1
    x0 = np.zeros(X.shape + (P,))
    x0[..., 0] = X
    xs = [x0]
    for k, layer in enumerate(model.layers, start=1):
        u = gather_sources(model, k, xs)
        a = layer.propagation.taylor(Ws[k - 1], Vs[k - 1], u)
        xs.append(series_compose(layer.activation, a))
    return model.loss.taylor(xs[-1], Y).sum(axis=0)


def coefficients_to_derivatives(c):
    return np.array([math.factorial(p) * c[p] for p in range(len(c))])
