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

from .forward import source_offsets

__all__ = ["curvature_vector_product"]


def curvature_vector_product(model, cache, gx, deltas, loss_hvp, Vs, second_order=True):
    """``loss_hvp(V)``: ``g'' V`` per example ``(n, c)``.  Returns the flat product ``(t,)``."""
    m = len(model.layers)
    n = cache.x[0].shape[0]
    Rx = [None]                      # None: a zero tangent (the data do not move)
    Ra, Ru_all = [], []
    for k, layer in enumerate(model.layers, start=1):
        parts = [Rx[p] if Rx[p] is not None else np.zeros((n, model.sizes[p]))
                 for p in layer.sources]
        Ru = None if all(Rx[p] is None for p in layer.sources) else (
            parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
        ra = cache.param_grad(model, k).jvp(Vs[k - 1])
        if Ru is not None:
            ra = ra + cache.input_jac(model, k).apply(Ru)
        Ra.append(ra)
        Ru_all.append(Ru)
        Rx.append(cache.h1[k - 1] * ra)
    Rgx = [None] * (m + 1)
    Rgx[m] = loss_hvp(Rx[m])
    out = [None] * m
    for k in range(m, 0, -1):
        prop = model.layers[k - 1].propagation
        W, u, Ru = cache.Ws[k - 1], cache.u[k - 1], Ru_all[k - 1]
        rg = Rgx[k] if Rgx[k] is not None else np.zeros((n, model.sizes[k]))
        rdelta = cache.h1[k - 1] * rg
        if second_order:
            rdelta = rdelta + cache.h2[k - 1] * Ra[k - 1] * gx[k]
        rgrad = cache.param_grad(model, k).gradient_sum(rdelta)
        delta = deltas[k]
        if second_order:
            for term in (prop.param_hess_vp(W, u, delta, Vs[k - 1]),
                         _mixed_sum(prop, W, u, delta, Ru)):
                if term is not None:
                    rgrad = rgrad + term
        out[k - 1] = rgrad
        targets = [(p, sl) for p, sl in source_offsets(model, k) if p != 0]
        if not targets:
            continue
        rdu = cache.input_jac(model, k).transpose_apply(rdelta)
        if second_order:
            terms = [prop.mixed_transpose_apply(W, u, delta, Vs[k - 1])]
            if Ru is not None:
                terms.append(prop.input_hess_vp(W, u, delta, Ru))
            for term in terms:
                if term is not None:
                    rdu = rdu + term
        for p, sl in targets:
            Rgx[p] = rdu[:, sl] if Rgx[p] is None else Rgx[p] + rdu[:, sl]
    return np.concatenate([o.ravel() for o in out])


def _mixed_sum(prop, W, u, delta, Ru):
    if Ru is None:
        return None
    return prop.mixed_apply_sum(W, u, delta, Ru)
