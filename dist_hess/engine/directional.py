"""Directional derivatives of any order by univariate Taylor propagation (DESIGN §6).

Along ``w(t) = w + t v``, every layer's input ``u^k(t)``, pre-activation
``a^k(t) = P^k(u^k(t); W^k + t V^k)`` and output ``x^k(t) = h^k(a^k(t))`` is a
series in ``t`` truncated after ``t^p``; the loss turns the output series into
the series of ``sum_i g_i(t)``, whose coefficient ``q`` times ``q!`` is
``D^qE[v, ..., v]`` (without the penalty, which
:func:`dist_hess.engine.finalization.finalize` adds).  Cost: ``O(p)`` matrix products
and ``O(p^2)`` elementwise series products per layer.

Series here use the leading-axis layout of :mod:`dist_hess.taylor`
(``c[q]`` is an ``(n, width)`` block; a short series has zero trailing
coefficients): the input ``x^0`` is a constant (length 1), the first
pre-activation is linear in ``t`` (length 2), and only later layers carry all
``p + 1`` coefficients.  Each propagation's ``taylor_leading`` gives its
pre-activation series (dense: one matrix product per coefficient; the default
goes through its last-axis ``taylor``).

The same propagation seeded at one unit (``a^k_j(t) = a^k_j + t``, everything
else fixed) gives ``d^qE_i/d(a^k_ij)^q``: see :mod:`dist_hess.engine.row_tensors`.
"""
from __future__ import annotations

import math

import numpy as np

from ..taylor import compose_leading, to_last

__all__ = ["loss_series", "propagate_series", "example_loss_series", "pre_activation_series",
           "coefficients_to_derivatives"]


#: examples per block: the series of one block stay in cache and the allocator
#: reuses the same memory from block to block (see docs/higher_order.md).
BLOCK_BYTES = 2**20


def block_rows(model, P, n):
    """Examples per block so that one layer's series is about ``BLOCK_BYTES``."""
    width = max(model.sizes)
    return int(max(32, min(n, BLOCK_BYTES // (8 * P * width))))


def loss_series(model, Ws, Vs, X, Y, order, cache=None, block=None):
    """``sum_i`` Taylor coefficients of ``g_i(w + t v)``: ``(order + 1,)``.

    ``cache`` (a :class:`dist_hess.engine.forward.Cache` of the same ``Ws``, ``X``),
    when given, supplies the coefficients of order 0 (``a^k``, ``x^k``).  Examples
    are taken ``block`` at a time (default :func:`block_rows`).
    """
    P = order + 1
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    block = block or block_rows(model, P, n)
    total = np.zeros(P)
    for start in range(0, n, block):
        rows = slice(start, start + block)
        xs = [X[rows][None]] + [None] * len(model.layers)
        a0s = x0s = None
        if cache is not None:
            a0s = [a[rows] for a in cache.a]
            x0s = [x[rows] for x in cache.x]
        propagate_series(model, Ws, Vs, xs, P, a0s=a0s, x0s=x0s)
        total += example_loss_series(model, xs[-1], Y[rows], P).sum(axis=0)
    return total


def propagate_series(model, Ws, Vs, xs, P, first=1, a0s=None, x0s=None):
    """Fill ``xs[first..m]`` (leading-axis series of ``x^k``) from ``xs[0..first-1]``.

    ``Vs`` is the list of directions ``V^k`` (``None`` for the whole list or
    for one layer means the weights stay fixed).  ``a0s`` (``a^1..a^m``) and
    ``x0s`` (``x^0..x^m``): forward values to reuse as coefficients of order 0.
    Returns ``xs``.
    """
    for k in range(first, len(model.layers) + 1):
        layer = model.layers[k - 1]
        V = None if Vs is None else Vs[k - 1]
        u = gather_series(model, k, xs)
        a0 = None if a0s is None else a0s[k - 1]
        a = pre_activation_series(layer.propagation, Ws[k - 1], V, u, P, a0=a0)
        xs[k] = compose_leading(layer.activation, a, P, value=None if x0s is None else x0s[k])
    return xs


def gather_series(model, k, xs):
    """``u^k(t)``: the sources' series concatenated along the unit axis."""
    srcs = model.layers[k - 1].sources
    if len(srcs) == 1:
        return xs[srcs[0]]
    L = max(len(xs[p]) for p in srcs)
    N = xs[srcs[0]].shape[1]
    width = sum(xs[p].shape[2] for p in srcs)
    u = np.zeros((L, N, width))
    start = 0
    for p in srcs:
        x = xs[p]
        u[: len(x), :, start: start + x.shape[2]] = x
        start += x.shape[2]
    return u


def pre_activation_series(propagation, W, V, u, P, a0=None):
    """``a(t) = P(u(t); W + t V)`` for a leading-axis ``u`` ``(L, n, r)``: ``(L', n, s)``.

    ``a0``: ``P(u_0; W)`` when already known.
    """
    if V is not None and not np.any(V):
        V = None
    return propagation.taylor_leading(W, V, u, P, a0=a0)


def example_loss_series(model, out, Y, P):
    """Per-example series of ``g_i`` from the output series ``out`` (leading axis): ``(n, P)``.

    A loss with a ``taylor_leading(out, Y, P)`` method (leading-axis series in
    and out) is used directly; otherwise its ``taylor`` (last-axis layout).
    """
    leading = getattr(model.loss, "taylor_leading", None)
    if leading is not None:
        return to_last(leading(out, Y, P), P)
    return model.loss.taylor(to_last(out, P), Y)


def coefficients_to_derivatives(c):
    """``[q! c_q]`` along the last axis."""
    c = np.asarray(c, dtype=float)
    return c * np.array([math.factorial(q) for q in range(c.shape[-1])], dtype=float)
