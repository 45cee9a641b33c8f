"""Exact derivative tensors of any order for one row of weights (DESIGN §6).

For a layer linear in its weights, ``a^k_ij = W^k_j . z_i`` with the row's
features ``z_i = dP_j/dW_j`` (dense: ``z = [1, u]``; quadratic: the products
``z_a z_b``), the ``p``-th derivative of ``E`` with respect to row ``j`` is

    ``T^(p)_j = sum_i c^(p)_ij z_i^{(x) p}``,   ``c^(p)_ij = d^p E_i / d(a^k_ij)^p``

(+ the penalty's ``d^p pen / dW_j^p``: for L2 ``lambda mask w_j`` at ``p = 1``,
``lambda diag(mask)`` at ``p = 2``, nothing beyond; the norm and weight-elimination
penalties have terms of every order, :meth:`dist_hess.penalties.Penalty.row_tensor`).
``c^(p)_ij`` is *total*: the unit's pre-activation is perturbed,
``a^k_ij(t) = a^k_ij + t``, and the series is propagated through every later layer
that reads layer ``k`` (skip connections included) into the loss, all weights fixed
(:mod:`dist_hess.engine.directional`). For ``p = 2`` this is the exact Hessian row block
of DESIGN §2.

The paper's eq. (12) keeps only the Lagrangian part of the coefficient,
``-e^k_ij h^(p)(a^k_ij)`` with ``e^k_ij = -dE_i/dx^k_ij`` (seed §3, eq. (12)):
``part="lagrangian"``.  For ``p = 1`` both parts agree (the gradient); for
``p = 2`` the Lagrangian part is the ``kind="lagrangian"`` row block (eq. (10)).

Index letters: ``n`` example, ``r`` row of the request, ``a, b`` row entries,
``q`` Taylor order.

Packed symmetric form: the entries ``T[a_1, ..., a_p]`` with
``a_1 <= a_2 <= ... <= a_p`` in lexicographic order (the order of
``itertools.combinations_with_replacement(range(d), p)``), see
:func:`packed_indices`; :func:`unpack_symmetric` rebuilds the dense tensor.
"""
from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from ..layers import LAYERS
from ..memory import check_allocation
from .directional import example_loss_series, propagate_series
from .forward import forward, gather_sources
from ..taylor import compose_leading

__all__ = ["row_tensor", "unit_derivatives", "packed_indices", "pack_symmetric", "unpack_symmetric"]

PARTS = ("exact", "lagrangian")
DEFAULT_MEMORY_BUDGET = 64 * 2**20


# --------------------------------------------------------------------------- packed layout

def packed_indices(d, p):
    """``(K, p)`` index tuples ``a_1 <= ... <= a_p`` in lexicographic order, ``K = C(d+p-1, p)``."""
    if p == 0:
        return np.zeros((1, 0), dtype=np.intp)
    return np.array(list(itertools.combinations_with_replacement(range(d), p)), dtype=np.intp)


def pack_symmetric(T, p):
    """Packed form ``(..., K)`` of a symmetric tensor whose last ``p`` axes have equal size ``d``."""
    T = np.asarray(T)
    idx = packed_indices(T.shape[-1], p)
    return T[(Ellipsis,) + tuple(idx.T)]


def unpack_symmetric(packed, d, p):
    """Dense ``(..., d, ..., d)`` tensor from its packed form ``(..., K)``."""
    packed = np.asarray(packed)
    idx = packed_indices(d, p)
    out = np.empty(packed.shape[:-1] + (d,) * p)
    for perm in set(itertools.permutations(range(p))):
        out[(Ellipsis,) + tuple(idx[:, list(perm)].T)] = packed
    return out


# --------------------------------------------------------------------------- unit coefficients

def _check_layer(model, layer):
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 1 <= layer <= len(model.layers):
        raise ValueError(f"layer must be an integer in 1..{len(model.layers)} (1-based, layer 0 is "
                         f"the input), got {layer!r}")
    return int(layer)


def _check_rows(model, layer, row):
    units = model.layers[layer - 1].units
    if row is None:
        return np.arange(units), False
    if isinstance(row, bool) or not isinstance(row, numbers.Integral) or not 0 <= row < units:
        raise ValueError(f"row must be an integer in 0..{units - 1} (layer {layer} has {units} units) "
                         f"or None for every row, got {row!r}")
    return np.array([int(row)]), True


def _check_order(order):
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    return int(order)


def _unit_block(model, Ws, cache, Yb, layer, rows, order, seed):
    """``(nb, R, order+1)`` Taylor coefficients of ``E_i`` when unit ``rows[r]`` of ``layer`` moves."""
    P = order + 1
    m = len(model.layers)
    R = len(rows)
    nb = cache.x[0].shape[0]
    N = nb * R
    xs = [None] * (m + 1)
    for p in range(layer):
        xs[p] = np.repeat(cache.x[p], R, axis=0)[None]
    base = cache.a[layer - 1] if seed == "a" else cache.x[layer]
    series = np.zeros((2, N, base.shape[1]))
    series[0] = np.repeat(base, R, axis=0)
    series[1].reshape(nb, R, -1)[:, np.arange(R), rows] = 1.0      # one unit per copy of each example
    if seed == "a":
        xs[layer] = compose_leading(model.layers[layer - 1].activation, series, P)
    else:
        xs[layer] = series[:P]
    a0s = [None] * layer + [np.repeat(a, R, axis=0) for a in cache.a[layer:]]
    x0s = [None] * (layer + 1) + [np.repeat(x, R, axis=0) for x in cache.x[layer + 1:]]
    propagate_series(model, Ws, None, xs, P, first=layer + 1, a0s=a0s, x0s=x0s)
    g = example_loss_series(model, xs[-1], np.repeat(Yb, R, axis=0), P)
    return g.reshape(nb, R, P)


def _blocks(n, per_example, budget):
    step = int(max(1, min(n, budget // max(8 * per_example, 1))))
    return [slice(s, s + step) for s in range(0, max(n, 1), step)] if n else []


def unit_derivatives(model, w, X, Y, layer, rows=None, order=2, *, seed="a", memory_budget=None):
    """``D[i, r, q] = d^q E_i / d(s_{i, rows[r]})^q`` for ``q = 0..order`` (no penalty).

    ``s`` is the pre-activation ``a^k`` (``seed="a"``, the row tensors'
    coefficients ``c^(q)``) or the output ``x^k`` (``seed="x"``; ``q = 1`` gives
    ``-e^k``, the paper's multipliers) of layer ``k = layer`` (1-based); every
    later layer is recomputed, everything else held fixed.  ``rows``: unit
    indices (default all).  Returns ``(n, len(rows), order + 1)``.
    """
    if seed not in ("a", "x"):
        raise ValueError(f"seed must be 'a' (pre-activation) or 'x' (output), got {seed!r}")
    layer = _check_layer(model, layer)
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise ValueError(f"order must be an integer >= 0, got {order!r}")
    rows = np.arange(model.layers[layer - 1].units) if rows is None else np.atleast_1d(np.asarray(rows))
    w = model.check_weights(w)
    X, Y = model.check_data(X, Y)
    Ws = model.unpack(w)
    out = np.empty((X.shape[0], len(rows), order + 1))
    per_example = 4 * (order + 1) * len(rows) * sum(model.sizes)
    for sl in _blocks(X.shape[0], per_example, memory_budget or DEFAULT_MEMORY_BUDGET):
        cache = forward(model, Ws, X[sl], order=0)
        out[sl] = _unit_block(model, Ws, cache, Y[sl], layer, rows, order, seed)
    factorials = np.array([math.factorial(q) for q in range(order + 1)], dtype=float)
    return out * factorials


# --------------------------------------------------------------------------- row tensors

def _contract_dense(c, Z, p):
    """``sum_n c[n, r] Z[n]^{(x) p}``: ``(R, d**p)`` (flattened), one matrix product."""
    n, R = c.shape
    M = np.ones((n, 1))
    for _ in range(p - 1):                    # M = Z^{(x) (p-1)}, (n, d**(p-1))
        M = (M[:, :, None] * Z[:, None, :]).reshape(n, -1)
    CM = (c[:, :, None] * M[:, None, :]).reshape(n, -1)
    return (CM.T @ Z).reshape(R, -1)


def _contract_packed(c, Z, p, group):
    """``sum_n c[n, r] prod_q Z[n, a_q]`` over ``a_1 <= ... <= a_p`` (packed order): ``(R, K)``.

    The packed tuples are grouped by their prefix ``a_1..a_{p-1}`` (lexicographic),
    each followed by ``a_p = a_{p-1} .. d-1``: one matrix product per ``group`` prefixes.
    """
    n, R = c.shape
    d = Z.shape[1]
    prefixes = packed_indices(d, p - 1)
    parts = []
    for start in range(0, len(prefixes), group):
        sub = prefixes[start:start + group]
        prod = np.ones((n, len(sub)))
        for q in range(p - 1):
            prod *= Z[:, sub[:, q]]
        G = ((c[:, :, None] * prod[:, None, :]).reshape(n, -1).T @ Z).reshape(R, len(sub), d)
        last = sub[:, -1] if p > 1 else np.zeros(1, dtype=np.intp)
        keep = np.arange(d)[None, :] >= last[:, None]           # a_p >= a_{p-1}
        parts.append(G[:, keep])
    return np.concatenate(parts, axis=1)


def row_tensor(model, w, X, Y, layer, row=None, order=2, *, packed=False, part="exact",
               penalty=True, memory_budget=None):
    """The ``order``-th derivative tensor of ``E`` with respect to row ``row`` of layer ``layer``.

    ``T = sum_i c^(p)_ij z_i^{(x) p}`` (module docstring) with ``c^(p)_ij`` exact
    (``part="exact"``) or its Lagrangian part ``-e^k_ij h^(p)(a^k_ij)``, the paper's
    eq. (12) (``part="lagrangian"``); ``penalty=True`` adds the penalty's ``p``-th
    derivative with respect to the row (every kind, every order), so that ``p = 2``
    equals the row block of ``model.curvature(w, X, Y, "hessian" | "lagrangian", "row")``.
    Shards add up: sum the tensors of ``penalty=False`` calls, then add the penalty once.

    ``layer``: 1-based layer index; ``row``: unit index, or ``None`` for every
    row (a leading axis of size ``s_k``).  Returns the dense ``(d,) * p`` tensor
    (``d`` = the row's parameters) or, with ``packed=True``, the ``K`` entries
    ``a_1 <= ... <= a_p`` in :func:`packed_indices` order.  Only propagations
    linear in their weights (``linear_in_weights``: dense, quadratic) are
    supported: for the others the tensor also involves ``d^qP/dW^q``, ``q >= 2``.
    """
    layer = _check_layer(model, layer)
    p = _check_order(order)
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    prop = model.layers[layer - 1].propagation
    if not prop.linear_in_weights:
        linear = ", ".join(sorted(name for name, cls in LAYERS.items() if cls.linear_in_weights))
        raise NotImplementedError(
            f"row tensors need a propagation linear in its weights ({linear}); layer {layer} "
            f"is {prop.type!r}, whose p-th derivative also involves d^qP/dW^q for q >= 2")
    rows, single = _check_rows(model, layer, row)
    w = model.check_weights(w)
    X, Y = model.check_data(X, Y)
    Ws = model.unpack(w)
    d = prop.n_row_params
    R = len(rows)
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    size = math.comb(d + p - 1, p) if packed else d ** p
    check_allocation(2 * 8 * R * size, f"the order-{p} row tensor of layer {layer} ({R:,} rows "
                     f"x {size:,} entries, 2 copies)",
                     ("packed=True (only the entries a_1 <= ... <= a_p)" if not packed else
                      "a lower order", "one row at a time (row=j)"))
    per_example = 4 * (p + 1) * R * sum(model.sizes) + 2 * d
    if packed:
        group = max(1, budget // (8 * (2 * R + 1) * max(X.shape[0], 1)))
    else:
        group, per_example = None, per_example + (R + 1) * d ** (p - 1)
    total = np.zeros((R, size))
    for sl in _blocks(X.shape[0], per_example, budget):
        cache = forward(model, Ws, X[sl], order=0)
        if part == "exact":
            c = _unit_block(model, Ws, cache, Y[sl], layer, rows, p, "a")[:, :, p] * math.factorial(p)
        else:
            dEdx = _unit_block(model, Ws, cache, Y[sl], layer, rows, 1, "x")[:, :, 1]
            hp = model.layers[layer - 1].activation.derivatives(cache.a[layer - 1][:, rows], p)[p]
            c = hp * dEdx
        Z = prop.features(gather_sources(model, layer, cache.x))
        total += _contract_packed(c, Z, p, group) if packed else _contract_dense(c, Z, p)
    if penalty and model.penalty is not None:
        extra = model.penalty.row_tensor(model, w, layer, rows, p)
        if extra is not None:
            total += pack_symmetric(extra, p) if packed else extra.reshape(R, -1)
    if not packed:
        total = total.reshape((R,) + (d,) * p)
    return total[0] if single else total
