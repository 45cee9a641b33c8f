"""Per-shard sums: the one entry point every caller (model methods, Dask tasks) uses.

A shard returns **sums over its examples, without the penalty**, and its
example count (STYLE habit 4); :func:`add_sums` combines two shards and
:func:`finalize` adds the penalty exactly once after the reduction.  See
docs/internals.md for the dict layout.

Inside a shard the examples are processed in chunks whose size comes from a
memory budget (bytes of per-example temporaries, default 256 MiB), so no
``n x d^2`` array or all per-example Hessians ever exist at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backward import first_order, second_order
from .blocks import (accumulate_cross, accumulate_layer, accumulate_row, eps_jacobians,
                     finish_row, finish_square)
from .directional import coefficients_to_derivatives, loss_series
from .forward import forward
from .hvp import curvature_vector_product
from ..layers.jacobians import SharedParamGrad

__all__ = ["Request", "shard_sums", "add_sums", "finalize", "zero_sums", "DEFAULT_MEMORY_BUDGET",
           "chunk_size"]

DEFAULT_MEMORY_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class Request:
    """What a shard computes.  ``curvature``: tuple of ``(kind, structure)``;
    ``hvp``: tuple of ``(kind, v)``; ``directional``: ``(v, order)`` or ``None``."""
    value: bool = True
    gradient: bool = True
    curvature: tuple = ()
    multipliers: bool = False
    hvp: tuple = ()
    directional: tuple | None = None
    memory_budget: int | None = None
    chunk_size: int | None = None

    @property
    def order(self):
        if self.curvature or self.hvp:
            return 2
        if self.gradient or self.multipliers:
            return 1
        return 0


def _bytes_per_example(model, req):
    sizes = model.sizes
    S = sum(sizes[1:])
    r = [layer.propagation.n_inputs for layer in model.layers]
    s = [layer.units for layer in model.layers]
    d = [layer.propagation.n_row_params for layer in model.layers]
    words = sum(r) + 6 * S + 4 * sizes[-1] ** 2
    structures = {st for _, st in req.curvature}
    unit_layers = [k for k, layer in enumerate(model.layers)
                   if not hasattr(layer.propagation, "features")]
    if req.curvature:
        # frontier blocks (the input layer is never carried; diagonal-only layers carry a diagonal)
        diag = set(diag_only_layers(model)) if structures == {"row"} else set()
        for k, layer in enumerate(model.layers, start=1):
            si, ri = s[k - 1], r[k - 1]
            words += 3 * (si if k in diag else si * si)
            carried = [p for p in layer.sources if p != 0]
            if any(p not in diag for p in carried):
                words += 3 * ri * ri
            elif carried:
                words += 3 * ri
    if req.curvature or req.hvp:
        words += sum(2 * si * di + si * di * di + si * di * ri + si * ri * ri
                     for k, (si, di, ri) in enumerate(zip(s, d, r)) if k in unit_layers)
    if "row" in structures:
        words += 2 * max(d)
    if "layer" in structures or "full" in structures:
        words += 2 * max(si * di for si, di in zip(s, d))
    if "full" in structures:
        words += 4 * S * S + 3 * max(d) * max(s)
        words += max([s[k] * d[k] * max(s) for k in unit_layers], default=0)
    if req.directional is not None:
        p = req.directional[1] + 1
        words += 4 * p * (sum(r) + 3 * S + sum(si * ri for si, ri in zip(s, r) if True) // max(len(s), 1))
    return 8 * max(words, 1)


def diag_only_layers(model):
    """Layers whose ``Q`` row blocks need only as a diagonal.

    A layer that reads just the input and is read by at most one layer: no
    cross block with it is ever used, so the backward pass carries ``diag(B_kk)``.
    """
    m = len(model.layers)
    readers = {k: sum(k in layer.sources for layer in model.layers) for k in range(1, m + 1)}
    return [k for k, layer in enumerate(model.layers, start=1)
            if all(p == 0 for p in layer.sources) and readers[k] <= 1]


def chunk_size(model, req, n):
    if req.chunk_size:
        return max(1, min(int(req.chunk_size), n))
    budget = req.memory_budget or DEFAULT_MEMORY_BUDGET
    return int(max(1, min(n, budget // _bytes_per_example(model, req))))


def shard_sums(model, w, X, Y, req: Request, *, checked=False) -> dict:
    """Sums over the examples of one shard (numpy in, numpy out)."""
    if not checked:
        w = model.check_weights(w)
        X, Y = model.check_data(X, Y)
    mask = getattr(model, "mask", None)
    if mask is not None:               # pruned weights and directions are zero
        w, req = w * mask, _project_request(req, mask)
    Ws = model.unpack(w)
    n = X.shape[0]
    acc = _Accumulator(model, req, n)
    step = chunk_size(model, req, max(n, 1))
    for start in range(0, n, step):
        _chunk(model, Ws, X[start:start + step], Y[start:start + step], req, acc)
    return acc.result()


class _Accumulator:
    def __init__(self, model, req, n):
        self.model, self.req, self.n = model, req, n
        self.value = 0.0
        self.gradient = [np.zeros(shape) for shape in model.layer_shapes] if req.gradient else None
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
            out["gradient"] = np.concatenate([g.ravel() for g in self.gradient])
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


def _chunk(model, Ws, X, Y, req, acc):
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
            acc.gradient[k - 1] += cache.param_grad(model, k).gradient_sum(deltas[k])
    if req.multipliers:
        for k in range(1, m + 1):
            acc.multipliers[k - 1].append(-gx[k])
    if not (req.curvature or req.hvp):
        return
    for i, (kind, v) in enumerate(req.hvp):
        acc.hvp[i] += curvature_vector_product(model, cache, gx, deltas,
                                               lambda V: model.loss.hvp(out, Y, V), model.unpack(v),
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


def _project_request(req, mask):
    from dataclasses import replace
    directional = req.directional
    if directional is not None:
        directional = (directional[0] * mask, directional[1])
    return replace(req, hvp=tuple((kind, v * mask) for kind, v in req.hvp),
                   directional=directional)


def _restrict(model, out, req, mask):
    """Masked derivatives: ``P grad``, ``P B P + (I - P)``, ``P B P v + (I - P) v``."""
    p = mask.astype(float)
    if "gradient" in out:
        out["gradient"] = out["gradient"] * p
    for key, val in list(out.items()):
        if key.startswith("curvature/"):
            out[key] = _restrict_curvature(model, val, mask, key.rsplit("/", 1)[1])
    for i, (_, v) in enumerate(req.hvp if req is not None else ()):
        out[f"hvp/{i}"] = p * out[f"hvp/{i}"] + (1.0 - p) * v
    return out


def _restrict_curvature(model, blocks, mask, structure):
    p = mask.astype(float)
    if structure == "full":
        out = np.asarray(blocks) * np.outer(p, p)
        idx = np.flatnonzero(~mask)
        out[idx, idx] = 1.0
        return out
    result = []
    for blk, sl, (s, d) in zip(blocks, model.layer_slices, model.layer_shapes):
        if structure == "row":
            pr = p[sl].reshape(s, d)
            out = blk * pr[:, :, None] * pr[:, None, :]
            j, c = np.nonzero(pr == 0)
            out[j, c, c] = 1.0
        else:
            out = blk * np.outer(p[sl], p[sl])
            idx = np.flatnonzero(p[sl] == 0)
            out[idx, idx] = 1.0
        result.append(out)
    return result


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


def finalize(model, w, sums: dict, req: Request | None = None) -> dict:
    """Add the penalty (value, gradient, curvature, hvp, directional) once.

    ``req`` (the :class:`Request` the shards ran) is needed when it asked for
    hvp or directional derivatives: their penalty terms depend on ``v``.
    """
    mask = getattr(model, "mask", None)
    if mask is None:
        return _finalize_penalty(model, w, sums, req)
    projected = None if req is None else _project_request(req, mask)
    out = _finalize_penalty(model, w * mask, sums, projected)
    return _restrict(model, out, req, mask)


def _finalize_penalty(model, w, sums, req):
    out = dict(sums)
    pen = model.penalty
    if pen is None or pen.lam == 0.0:
        return out
    mask = model.penalty_mask
    diag = pen.hessian_diagonal(mask)
    if "value" in out:
        out["value"] = out["value"] + pen.value(w, mask)
    if "gradient" in out:
        out["gradient"] = out["gradient"] + pen.gradient(w, mask)
    for key, val in sums.items():
        if key.startswith("curvature/"):
            structure = key.rsplit("/", 1)[1]
            out[key] = _add_diagonal(model, val, diag, structure)
    needs_req = any(key.startswith("hvp/") for key in sums) or "directional" in sums
    if needs_req and req is None:
        raise ValueError("finalize needs the Request for hvp or directional sums")
    for i, (_, v) in enumerate(req.hvp if needs_req else ()):
        out[f"hvp/{i}"] = out[f"hvp/{i}"] + diag * v
    if "directional" in sums:
        v, order = req.directional
        terms = [pen.value(w, mask), float(np.sum(diag * w * v)), float(np.sum(diag * v * v))]
        out["directional"] = out["directional"].copy()
        for p in range(min(order, 2) + 1):
            out["directional"][p] += terms[p]
    return out


def _add_diagonal(model, val, diag, structure):
    if structure == "full":
        out = val.copy()
        idx = np.arange(model.n_params)
        out[idx, idx] += diag
        return out
    result = []
    for k, blk in enumerate(val):
        dk = diag[model.layer_slices[k]]
        blk = blk.copy()
        if structure == "row":
            s, d = model.layer_shapes[k]
            idx = np.arange(d)
            blk[:, idx, idx] += dk.reshape(s, d)
        else:
            idx = np.arange(blk.shape[0])
            blk[idx, idx] += dk
        result.append(blk)
    return result
