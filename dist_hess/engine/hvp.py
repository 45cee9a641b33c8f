"""Curvature-vector products by forward-over-reverse (Pearlmutter's R-operator).

Forward tangent along ``V`` (one ``(s_k, d_k)`` matrix per layer):
``Ra^k = G^k . V^k + J^k Ru^k``, ``Rx^k = h'^k Ra^k``.
Reverse: ``R(dE/dx^m) = g'' Rx^m``; absorbing layer ``k``,

* ``R delta = h' R(dE/dx) + h'' Ra (dE/dx)``,
* ``R grad_W = sum_n R delta G + delta (d2P/dW2 V + d2P/dW du Ru)``,
* ``R dE/du = J' R delta + delta (d2P/du2 Ru + d2P/du dW V)``.

``second_order=False`` drops the ``h''`` and ``d2P`` terms: the Gauss-Newton product.
"""
from __future__ import annotations

import numpy as np

from .forward import carried_sources

__all__ = ["curvature_vector_product"]


def curvature_vector_product(model, cache, gx, deltas, loss_hvp, Vs, second_order=True):
    """``loss_hvp(V)``: ``g'' V`` per example ``(n, c)``.  Returns the flat product ``(t,)``.

    Tangents are carried only for the columns of ``u^k`` that move (its sources other
    than the input, :func:`carried_sources`), and so are the propagation's own
    second-order contractions (its ``*_columns`` methods: a dense layer multiplies
    no zeros; the generic ones pad ``Ru`` with the input's zero columns).
    """
    m = len(model.layers)
    n = cache.x[0].shape[0]
    Rx = [None]                      # None: a zero tangent (the data do not move)
    Ra, Ru_all = [], []              # Ru: the tangent of u^k[:, span], or None
    for k, layer in enumerate(model.layers, start=1):
        span, carried = carried_sources(model, k)
        ra = cache.param_grad(model, k).jvp(Vs[k - 1])
        Ru = None
        if carried:
            Ru = _tangent_span(Rx, carried, span, n)
            ra += cache.input_jac(model, k).apply(Ru, span)
        Ra.append(ra)
        Ru_all.append(Ru)
        Rx.append(ra if layer.activation.linear else cache.h1[k - 1] * ra)
    Rgx = [None] * (m + 1)
    Rgx[m] = loss_hvp(Rx[m])
    product = np.empty(model.n_params)
    for k in range(m, 0, -1):
        layer = model.layers[k - 1]
        prop = layer.propagation
        W, u, Ru = cache.Ws[k - 1], cache.u[k - 1], Ru_all[k - 1]
        span, carried = carried_sources(model, k)
        rg = Rgx[k] if Rgx[k] is not None else np.zeros((n, model.sizes[k]))
        if layer.activation.linear:          # h' = 1, h'' = 0
            rdelta = rg
        else:
            rdelta = cache.h1[k - 1] * rg
            if second_order:
                curv = cache.h2[k - 1] * Ra[k - 1]
                curv *= gx[k]
                rdelta += curv
        rgrad = cache.param_grad(model, k).gradient_sum(rdelta)
        delta = deltas[k]
        if second_order:
            for term in (prop.param_hess_vp(W, u, delta, Vs[k - 1]),
                         None if Ru is None else prop.mixed_apply_sum_columns(W, u, delta, Ru, span)):
                if term is not None:
                    rgrad += term
        product[model.layer_slices[k - 1]] = rgrad.ravel()
        if not carried:
            continue
        rdu = cache.input_jac(model, k).transpose_apply(rdelta, span)
        if second_order:
            for term in (prop.mixed_transpose_apply_columns(W, u, delta, Vs[k - 1], span),
                         prop.input_hess_vp_columns(W, u, delta, Ru, span)):
                if term is not None:
                    rdu += term
        for p, sl in carried:
            Rgx[p] = rdu[:, sl] if Rgx[p] is None else Rgx[p] + rdu[:, sl]
    return product


def _tangent_span(Rx, carried, span, n):
    """The tangent of ``u[:, span]``: the carried sources' tangents side by side (zero in
    any input columns between them)."""
    if len(carried) == 1 and carried[0][1].stop - carried[0][1].start == span.stop - span.start:
        return Rx[carried[0][0]]
    Ru = np.zeros((n, span.stop - span.start))
    for p, sl in carried:
        Ru[:, sl] = Rx[p]
    return Ru

