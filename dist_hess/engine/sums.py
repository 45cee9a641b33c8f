"""Per-shard sums: the loop every caller (model methods, Dask tasks) runs on one shard.

A shard returns **sums over its examples, without the penalty**, and its
example count (STYLE habit 4); :func:`add_sums` combines two shards and
:func:`dist_hess.engine.finalization.finalize` adds the penalty (and applies the
mask) exactly once after the reduction.  See docs/internals.md for the dict layout.

Inside a shard the examples go through the forward cache and the backward
passes in batches of rows sized by the request's memory budget
(:mod:`.budget`); each batch adds into one accumulator.
"""
from __future__ import annotations

import numpy as np

from .backward import diag_only_layers, first_order, second_order
from .blocks import (accumulate_cross, accumulate_layer, accumulate_row, eps_jacobians,
                     finish_row, finish_square)
from .budget import batch_rows
from .directional import coefficients_to_derivatives, loss_series
from .footprint import check_request
from .forward import forward
from .hvp import curvature_vector_product
from .request import Request

__all__ = ["shard_sums", "add_sums", "zero_sums"]


def shard_sums(model, w, X, Y, req: Request, *, checked=False) -> dict:
    """Sums over the examples of one shard (numpy in, numpy out)."""
    if not checked:
        w = model.check_weights(w)
        if len(X):          # an empty block of non-empty data (the whole was checked) adds nothing
            X, Y = model.check_data(X, Y)
    check_request(model, req, len(X))           # results over the memory limit: refused
    mask = model.mask
    if mask is not None:               # pruned weights and directions are zero
        w, req = w * mask, req.projected(mask)
    Ws = model.unpack(w)
    n = X.shape[0]
    acc = _Accumulator(model, req, n)
    step = batch_rows(model, req, max(n, 1))
    for start in range(0, n, step):
        _batch(model, Ws, X[start:start + step], Y[start:start + step], req, acc)
    return acc.result()


class _Accumulator:
    def __init__(self, model, req, n):
        self.model, self.req, self.n = model, req, n
        self.value = 0.0
        self.gradient = np.zeros(model.n_params) if req.gradient else None
        #: views of ``gradient``, one ``(s_k, d_k)`` matrix per layer
        self.layer_gradients = model.unpack(self.gradient) if req.gradient else None
        self.multipliers = [[] for _ in model.layers] if req.multipliers else None
        self.row = {}       # kind -> list over layers of row accumulators
        self.layer = {}     # kind -> list over layers of (t_k, t_k) upper accumulators
        self.cross = {}     # kind -> {(k, l): (t_k, t_l)}
        self.hvp = [np.zeros(model.n_params) for _ in req.hvp]
        self.directional = None if req.directional is None else np.zeros(req.directional[1] + 1)

    def result(self):
        model, req = self.model, self.req
        out = {"n": self.n}
        if req.value:
            out["value"] = self.value
        if req.gradient:
            out["gradient"] = self.gradient
        if req.multipliers:
            out["multipliers"] = [np.concatenate(parts, axis=0) if parts else np.zeros((0, s))
                                  for parts, s in zip(self.multipliers, model.sizes[1:])]
        for kind, structure in req.curvature:
            out[f"curvature/{kind}/{structure}"] = self._curvature(kind, structure)
        for i in range(len(req.hvp)):
            out[f"hvp/{i}"] = self.hvp[i]
        if req.directional is not None:
            out["directional"] = coefficients_to_derivatives(self.directional)
        return out

    def _layer_blocks(self, kind):
        model = self.model
        if kind == "lagrangian":   # block diagonal within the layer: its row blocks
            blocks = []
            for k, shape in enumerate(model.layer_shapes):
                rows = finish_row(self.row.get(kind, [None] * len(model.layers))[k], shape)
                s, d = shape
                H = np.zeros((s * d, s * d))
                for j in range(s):
                    H[j * d:(j + 1) * d, j * d:(j + 1) * d] = rows[j]
                blocks.append(H)
            return blocks
        accs = self.layer.get(kind, [None] * len(model.layers))
        return [np.zeros((s * d, s * d)) if a is None else finish_square(a)
                for a, (s, d) in zip(accs, model.layer_shapes)]

    def _curvature(self, kind, structure):
        model = self.model
        if structure == "row":
            accs = self.row.get(kind, [None] * len(model.layers))
            return [finish_row(a, shape) for a, shape in zip(accs, model.layer_shapes)]
        blocks = self._layer_blocks(kind)
        if structure == "layer":
            return blocks
        t = model.n_params
        H = np.zeros((t, t))
        sl = model.layer_slices
        for k, blk in enumerate(blocks):
            H[sl[k], sl[k]] = blk
        for (k, l), C in self.cross.get(kind, {}).items():
            H[sl[k - 1], sl[l - 1]] = C
            H[sl[l - 1], sl[k - 1]] = C.T
        return H


def _batch(model, Ws, X, Y, req, acc):
    """Add one batch of rows to ``acc``: forward cache, backward passes, blocks."""
    m = len(model.layers)
    cache = forward(model, Ws, X, order=req.order)
    out = cache.x[-1]
    if req.directional is not None:
        v, order = req.directional
        acc.directional += loss_series(model, Ws, model.unpack(v), X, Y, order, cache=cache)
    if req.order == 0:
        if req.value:
            acc.value += float(model.loss.value(out, Y).sum())
        return
    if req.value:
        values, gout = model.loss.value_and_grad(out, Y)
        acc.value += float(values.sum())
    else:
        gout = model.loss.grad(out, Y)
    gx, deltas = first_order(model, cache, gout)
    if req.gradient:
        for k in range(1, m + 1):
            acc.layer_gradients[k - 1] += cache.param_grad(model, k).gradient_sum(deltas[k])
    if req.multipliers:
        for k in range(1, m + 1):
            acc.multipliers[k - 1].append(-gx[k])
    if not (req.curvature or req.hvp):
        return
    loss_hvp = model.loss.hvp_operator(out, Y) if req.hvp else None
    for i, (kind, v) in enumerate(req.hvp):
        acc.hvp[i] += curvature_vector_product(model, cache, gx, deltas, loss_hvp, model.unpack(v),
                                               second_order=(kind == "hessian"))
    if not req.curvature:
        return
    gout_hess = model.loss.hess(out, Y)   # (n, c, c), c = output units
    kinds = {}
    for kind, structure in req.curvature:
        kinds.setdefault(kind, set()).add(structure)
    for kind, structures in kinds.items():
        if kind == "lagrangian":
            rows = acc.row.setdefault(kind, [None] * m)
            for k in range(1, m + 1):
                q = cache.h2[k - 1] * gx[k]
                rows[k - 1] = accumulate_row(model, cache, k, q, deltas[k], rows[k - 1], True)
            continue
        _second_order_blocks(model, cache, gx, deltas, gout_hess, kind, structures, acc)


def _second_order_blocks(model, cache, gx, deltas, gout_hess, kind, structures, acc):
    m = len(model.layers)
    second = kind == "hessian"
    want_row = "row" in structures
    want_layer = bool(structures & {"layer", "full"})
    want_full = "full" in structures
    rows = acc.row.setdefault(kind, [None] * m) if want_row else None
    layers = acc.layer.setdefault(kind, [None] * m) if want_layer else None

    def on_layer(k, Q):
        if want_row:
            rows[k - 1] = accumulate_row(model, cache, k, Q, deltas[k], rows[k - 1], second)
        if want_layer:
            layers[k - 1] = accumulate_layer(model, cache, k, Q, deltas[k], layers[k - 1], second)

    diag_only = () if want_layer else diag_only_layers(model)
    B = second_order(model, cache, gx, deltas, gout_hess, second_order=second,
                     keep_eps=want_full, on_layer=on_layer, diag_only=diag_only)
    if not want_full:
        return
    D = eps_jacobians(model, cache) if second else None
    cross = acc.cross.setdefault(kind, {})
    for k in range(2, m + 1):
        for l in range(1, k):
            Qkl = B.get(("e", k), ("e", l))
            cross[(k, l)] = accumulate_cross(model, cache, k, l, Qkl, deltas[k], D,
                                             cross.get((k, l)), second)


def add_sums(a: dict, b: dict) -> dict:
    """Key-by-key sum of two shard results (multipliers are per example and not added)."""
    out = {}
    for key in a:
        if key == "multipliers":
            continue
        x, y = a[key], b[key]
        if isinstance(x, list):
            out[key] = [xi + yi for xi, yi in zip(x, y)]
        else:
            out[key] = x + y
    return out


def zero_sums(model, req: Request) -> dict:
    return shard_sums(model, np.zeros(model.n_params), np.zeros((0, model.inputs)),
                      np.zeros((0, model.sizes[-1])), req, checked=True)
