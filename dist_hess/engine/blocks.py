"""Assembly of curvature blocks from per-example ``Q`` (DESIGN §2).

For a layer ``k`` with parameter gradients ``G^k[n, j, c] = dP_j/dW_jc``:

* row block ``j``:  ``sum_n Q^k_n[j, j] G_nj G_nj' + sum_n delta_nj d2P_j/dW_j2``;
* layer block:      ``sum_n G_n' Q^k_n G_n`` (+ the same ``d2P`` term on the diagonal);
* cross-layer block (``l < k``), DESIGN §2 / docs/theory.md:
  ``H^{kl} = sum_n M^{kl}_n G^l_n`` with
  ``M^{kl}_n[(j, c), j'] = Q^{kl}_n[j, j'] G^k_n[j, c] + delta^k_nj (d2P_j/dW_jc du) (du^k/deps^l)_n[:, j']``.

Index letters: ``n`` example, ``j``/``J`` units, ``a``/``b``/``c`` row parameters.
All accumulators hold sums over examples; ``finish_*`` symmetrise once at the end.
"""
from __future__ import annotations

import numpy as np

from .forward import source_offsets

__all__ = ["accumulate_row", "accumulate_layer", "accumulate_cross", "eps_jacobians",
           "finish_row", "finish_square"]


def accumulate_row(model, cache, k, Q, delta, acc, second_order):
    """Add layer ``k``'s row blocks to ``acc`` (list of ``s_k`` ``(d, d)`` arrays, upper triangles)."""
    G = cache.param_grad(model, k)
    q = np.diagonal(Q, axis1=1, axis2=2) if Q.ndim == 3 else Q
    acc = G.row_gram(np.ascontiguousarray(q), acc)
    if second_order and delta is not None:
        ph = model.layers[k - 1].propagation.param_hess_sum(cache.Ws[k - 1], cache.u[k - 1], delta)
        if ph is not None:
            acc += np.triu(ph)
    return acc


def finish_row(acc, shape):
    """``(s, d, d)`` symmetric row blocks from an accumulator whose upper triangles are exact (in place)."""
    s, d = shape
    if acc is None:
        return np.zeros((s, d, d))
    lower = np.tril_indices(d, -1)
    for block in acc:
        block[lower] = block.T[lower]
    return acc


def accumulate_layer(model, cache, k, Q, delta, acc, second_order):
    """Add ``sum_n G_n' Q_n G_n`` (+ param Hessian) to the ``(t_k, t_k)`` accumulator (upper triangle)."""
    s, d = model.layer_shapes[k - 1]
    t = s * d
    if acc is None:
        acc = np.zeros((t, t))
    acc = cache.param_grad(model, k).layer_gram(Q, acc)
    if second_order and delta is not None:
        ph = model.layers[k - 1].propagation.param_hess_sum(cache.Ws[k - 1], cache.u[k - 1], delta)
        if ph is not None:
            for j in range(s):
                acc[j * d:(j + 1) * d, j * d:(j + 1) * d] += ph[j]
    return acc


def finish_square(U):
    """Symmetric matrix from an accumulator whose upper triangle is exact."""
    return np.triu(U) + np.triu(U, 1).T


def eps_jacobians(model, cache):
    """``D[(p, l)] = dx^p/deps^l`` ``(n, s_p, s_l)`` for ``1 <= l <= p`` (``None`` where zero)."""
    m = len(model.layers)
    D = {}
    for p in range(1, m + 1):
        h1 = cache.h1[p - 1]
        n, s = h1.shape
        Dpp = np.zeros((n, s, s))
        idx = np.arange(s)
        Dpp[:, idx, idx] = h1
        D[(p, p)] = Dpp
        for l in range(1, p):
            Du = input_eps_jacobian(model, D, p, l, n)
            if Du is not None:
                D[(p, l)] = h1[:, :, None] * cache.input_jac(model, p).apply_many(Du)
    return D


def input_eps_jacobian(model, D, k, l, n):
    """``du^k/deps^l`` ``(n, r_k, s_l)`` from the sources' ``D``, or ``None`` if zero."""
    parts, any_nonzero = [], False
    for p, sl in source_offsets(model, k):
        block = D.get((p, l)) if p >= l and p != 0 else None
        if block is None:
            block = np.zeros((n, sl.stop - sl.start, model.sizes[l]))
        else:
            any_nonzero = True
        parts.append(block)
    if not any_nonzero:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def accumulate_cross(model, cache, k, l, Qkl, delta_k, D, acc, second_order):
    """Add the ``(t_k, t_l)`` block ``d2E/dW^k dW^l`` for ``l < k`` to ``acc``."""
    sk, dk = model.layer_shapes[k - 1]
    sl_, dl = model.layer_shapes[l - 1]
    if acc is None:
        acc = np.zeros((sk * dk, sl_ * dl))
    Gk = cache.param_grad(model, k)
    Gl = cache.param_grad(model, l)
    n = cache.x[0].shape[0]
    prop = model.layers[k - 1].propagation
    mixed = None                           # delta^k d2P/dW du (du^k/deps^l), per unit (n, d_k, s_l)
    if second_order:
        Du = input_eps_jacobian(model, D, k, l, n)
        if Du is not None:
            mixed = prop.mixed_apply_op(cache.Ws[k - 1], cache.u[k - 1], delta_k, Du)
    if Qkl is None:
        Qkl = np.zeros((n, sk, sl_))
    if Gk.shared and Gl.shared and (mixed is None or mixed.shared):
        _cross_shared(Gk.phi, Gl.phi, Qkl, delta_k, None if mixed is None else mixed.F, acc)
        return acc
    for j in range(sk):
        L = Gk.unit(j)[:, :, None] * Qkl[:, j, None, :]                 # (n, d_k, s_l)
        if mixed is not None:
            L = L + mixed.unit(j)
        acc[j * dk:(j + 1) * dk, :] += Gl.right_contract(L).reshape(dk, sl_ * dl)
    return acc


def _cross_shared(phik, phil, Qkl, delta_k, Dphi, acc):
    """Cross block for two layers with shared features, as wide GEMMs over examples.

    ``H[(j, c), (J, b)] = sum_n Q[n, j, J] phik[n, c] phil[n, b]``        (per ``j``: ``phik' R_j``)
    ``                 + sum_n Dphi[n, c, J] delta[n, j] phil[n, b]``     (one GEMM for all units)
    """
    n, sk, sl_ = Qkl.shape
    dk, dl = phik.shape[1], phil.shape[1]
    for j in range(sk):
        R = (Qkl[:, j, :, None] * phil[:, None, :]).reshape(n, sl_ * dl)
        acc[j * dk:(j + 1) * dk, :] += phik.T @ R
    if Dphi is None:
        return
    rows = np.flatnonzero(np.any(Dphi != 0.0, axis=(0, 2)))   # feature columns that move with eps^l
    if rows.size == 0:
        return
    A = (delta_k[:, :, None] * phil[:, None, :]).reshape(n, sk * dl)
    out = Dphi[:, rows, :].reshape(n, rows.size * sl_).T @ A                # (rows*s_l, s_k*d_l)
    H4 = acc.reshape(sk, dk, sl_, dl)
    H4[:, rows, :, :] += out.reshape(rows.size, sl_, sk, dl).transpose(2, 0, 1, 3)
