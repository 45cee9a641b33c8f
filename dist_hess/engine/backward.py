"""Backward passes: multipliers (first order) and per-example curvature (second order).

First order (seed eqs. (7)-(8)): ``dE/dx^m = g'``; absorbing layer ``k`` gives
``delta^k = h'^k * dE/dx^k`` and adds ``J^k' delta^k`` to its sources.  The
paper's multipliers are ``e^k = -dE/dx^k``.

Second order (DESIGN §2): the pass carries, per example, the joint Hessian ``B``
of ``E`` over the *frontier*: outputs of layers not yet absorbed but read by one
that was.  Absorbing layer ``k`` (``x^k = h(P(u) + eps^k)``, ``eps^k = 0`` a
perturbation of its pre-activation):

* ``Q^k = diag(h') B_kk diag(h') + diag(h'' * dE/dx^k)`` (``= d2E/d(eps^k)^2``),
* cross blocks ``C_v = B_vk diag(h')`` (``= d2E/dv deps^k``),
* sources: ``B_uu += J' Q^k J + sum_j delta_j d2P_j/du2``, ``B_vu += C_v J``.

With ``keep_eps`` the perturbations stay as variables, so at the end ``B``
holds ``Q^{kl} = d2E/deps^k deps^l`` for every pair of layers (needed by the full
Hessian).  ``second_order=False`` drops every ``h''`` and ``d2P`` term: the
result is then the generalised Gauss-Newton matrix in ``eps`` coordinates.
The input layer 0 is never carried (nothing differentiates w.r.t. the data).
"""
from __future__ import annotations

import numpy as np

from .forward import carried_sources, source_offsets

__all__ = ["first_order", "second_order", "BlockStore", "diag_only_layers"]


def first_order(model, cache, gout):
    """``dE/dx^k`` and ``delta^k = dE/da^k`` per layer (lists indexed ``k``; entry 0 unused)."""
    m = len(model.layers)
    n = gout.shape[0]
    gx = [None] * (m + 1)
    gx[m] = gout
    deltas = [None] * (m + 1)
    for k in range(m, 0, -1):
        if gx[k] is None:                      # an output nothing reads: no influence on E
            gx[k] = np.zeros((n, model.sizes[k]))
        deltas[k] = gx[k] if model.layers[k - 1].activation.linear else cache.h1[k - 1] * gx[k]
        span, targets = carried_sources(model, k)
        if targets:
            du = cache.input_jac(model, k).transpose_apply(deltas[k], span)
            for p, sl in targets:
                gx[p] = du[:, sl] if gx[p] is None else gx[p] + du[:, sl]
    return gx, deltas


def diag_only_layers(model):
    """Layers whose ``Q`` the second-order pass may carry as a diagonal (row blocks only).

    A layer that reads just the input and is read by at most one layer: no
    cross block with it is ever used, so the backward pass carries ``diag(B_kk)``.
    """
    m = len(model.layers)
    readers = {k: sum(k in layer.sources for layer in model.layers) for k in range(1, m + 1)}
    return [k for k, layer in enumerate(model.layers, start=1)
            if all(p == 0 for p in layer.sources) and readers[k] <= 1]


class BlockStore:
    """Symmetric per-example blocks ``B[(a, b)]`` ``(n, size_a, size_b)``, stored once per pair."""

    def __init__(self):
        self.blocks = {}

    def add(self, a, b, M):
        if (b, a) in self.blocks and a != b:
            a, b, M = b, a, np.swapaxes(M, 1, 2)
        if (a, b) in self.blocks:
            self.blocks[(a, b)] = self.blocks[(a, b)] + M
        else:
            self.blocks[(a, b)] = M

    def get(self, a, b):
        if (a, b) in self.blocks:
            return self.blocks[(a, b)]
        if (b, a) in self.blocks:
            return np.swapaxes(self.blocks[(b, a)], 1, 2)
        return None

    def pop_variable(self, a):
        """Remove every block touching ``a``; return its diagonal block and ``{v: B[v, a]}``."""
        diag = self.blocks.pop((a, a), None)
        cross = {}
        for key in [key for key in self.blocks if a in key]:
            M = self.blocks.pop(key)
            if key[1] == a:
                cross[key[0]] = M
            else:
                cross[key[1]] = np.swapaxes(M, 1, 2)
        return diag, cross


def second_order(model, cache, gx, deltas, gout_hess, *, second_order=True, keep_eps=False,
                 on_layer=None, diag_only=()):
    """Backward second-order adjoint pass.

    ``gout_hess``: ``(n, c, c)`` loss Hessian.  ``on_layer(k, Q^k)`` is called as
    each layer is absorbed (``Q^k`` ``(n, s_k, s_k)``, or its diagonal ``(n, s_k)``
    for layers in ``diag_only``: layers reading only the input whose ``Q`` is
    wanted for row blocks only; for them only ``diag(B_kk)`` is carried and no
    cross block at all).  Returns the :class:`BlockStore` (holding every
    ``Q^{kl}`` under keys ``("e", k)`` when ``keep_eps``).
    """
    m = len(model.layers)
    n = gout_hess.shape[0]
    diag_only = set(diag_only)
    if keep_eps and diag_only:
        raise ValueError("keep_eps needs full blocks for every layer")
    B = BlockStore()
    diagonals = {}
    if m in diag_only:
        diagonals[m] = np.array(np.diagonal(gout_hess, axis1=1, axis2=2))
    else:
        B.add(("x", m), ("x", m), np.array(gout_hess, dtype=float))
    for k in range(m, 0, -1):
        s = model.sizes[k]
        h1 = cache.h1[k - 1]
        if k in diag_only:   # only valid for a layer that reads the input and has one reader
            q = h1 * h1 * diagonals.pop(k, np.zeros((n, s)))
            if second_order:
                q = q + cache.h2[k - 1] * gx[k]
            if on_layer is not None:
                on_layer(k, q)
            continue
        Bkk, cross = B.pop_variable(("x", k))
        if Bkk is None:
            Bkk = np.zeros((n, s, s))
        Q = h1[:, :, None] * Bkk * h1[:, None, :]
        if second_order:
            idx = np.arange(s)
            Q[:, idx, idx] += cache.h2[k - 1] * gx[k]
        cross = {v: C * h1[:, None, :] for v, C in cross.items()}
        if on_layer is not None:
            on_layer(k, Q)
        ek = ("e", k)
        if keep_eps:
            B.add(ek, ek, Q)
            for v, C in cross.items():
                B.add(v, ek, C)
        targets = [(p, sl) for p, sl in source_offsets(model, k) if p != 0]
        if not targets:
            continue
        J = cache.input_jac(model, k)
        prop = model.layers[k - 1].propagation
        extra = None
        if second_order:
            extra = prop.input_hess_sum(cache.Ws[k - 1], cache.u[k - 1], deltas[k])
        full_targets = [(p, sl) for p, sl in targets if p not in diag_only]
        diag_targets = [(p, sl) for p, sl in targets if p in diag_only]
        if diag_targets:
            Duu = J.sandwich_diag(Q)
            if extra is not None:
                Duu = Duu + np.diagonal(extra, axis1=1, axis2=2)
            for p, slp in diag_targets:
                diagonals[p] = Duu[:, slp] + diagonals.get(p, 0.0)
        if not full_targets:
            continue
        Buu = J.sandwich(Q)
        if extra is not None:
            Buu = Buu + extra
        for i, (p, slp) in enumerate(full_targets):
            for q, slq in full_targets[i:]:
                B.add(("x", p), ("x", q), Buu[:, slp, slq])
        for v, C in cross.items():
            CJ = J.right(C)
            for p, slp in full_targets:
                block = CJ[:, :, slp]
                if v == ("x", p):      # x^p is both a frontier variable and a source of k
                    block = block + np.swapaxes(block, 1, 2)
                B.add(v, ("x", p), block)
        if keep_eps:
            QJ = J.right(Q)
            for p, slp in full_targets:
                B.add(ek, ("x", p), QJ[:, :, slp])
    return B
