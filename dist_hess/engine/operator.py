"""The curvature of one shard at fixed weights, as an operator: products and a diagonal.

For the examples ``i`` of a shard and weights ``w``,

    B = sum_i B_i,   B_i = J_i' g_i'' J_i               (kind ``gauss_newton``)
                     B_i = d^2 g(x^m_i(w), y_i) / dw^2   (kind ``hessian``)

without the penalty (shards return sums, STYLE habit 4; `dist_hess.engine.finalize`
adds ``pen''`` once). A `ShardCurvature` runs the forward pass and the first-order
backward pass once (`forward`, `first_order`) and keeps them, so each product ``B v``
afterwards costs one tangent pass and one reverse pass (`curvature_vector_product`,
Pearlmutter's R-operator) and no forward pass: the operator a conjugate-gradient solve
multiplies by dozens of times at the same ``w`` (Martens 2010, §4.2).

``diagonal(kind)`` is ``diag(B)``: for row ``j`` of layer ``k`` it is the diagonal of
the row block (DESIGN.md §2), ``sum_i Q^k_i[j, j] G_ij^2 + sum_i delta_ij
diag(d^2P_j/dW_j^2)``, from one second-order backward pass carrying only ``diag(Q^k)``
where the layer allows it (`diag_only_layers`), so it costs about one gradient, not the
``sum_k s_k d_k^2`` of the row blocks.

Rows are processed in batches sized by the engine's memory budget (`batch_rows`); the
forward caches of all batches are kept (about ``sum_k (r_k + 6 s_k)`` floats per
example).
"""
from __future__ import annotations

import numpy as np

from .backward import diag_only_layers, first_order, second_order
from .budget import batch_rows
from .forward import forward
from .hvp import curvature_vector_product
from .request import Request

__all__ = ["ShardCurvature", "PRODUCT_KINDS"]

PRODUCT_KINDS = ("hessian", "gauss_newton")


class _Chunk:
    __slots__ = ("cache", "Y", "out", "gx", "deltas", "loss_hvp")

    def __init__(self, cache, Y, out, gx, deltas, loss_hvp):
        self.cache, self.Y, self.out, self.gx, self.deltas = cache, Y, out, gx, deltas
        self.loss_hvp = loss_hvp    # V -> g'' V at out


class ShardCurvature:
    """``B v`` and ``diag(B)`` over the rows ``X (n, s_0)``, ``Y`` of one shard at ``w``.

    ``value`` and ``gradient`` are the shard's sums ``sum_i g_i`` and ``sum_i dg_i/dw``
    at ``w`` (no penalty), from the same passes. A pruned model (``model.mask``) gets the
    projected weights and directions, as in `dist_hess.engine.shard_sums`.
    """

    def __init__(self, model, w, X, Y, *, memory_budget: int | None = None):
        w = model.check_weights(w)
        X, Y = model.check_data(X, Y)
        self.model = model
        self.mask = getattr(model, "mask", None)
        self.n = int(X.shape[0])
        self._Ws = model.unpack(w if self.mask is None else w * self.mask)
        request = Request(curvature=(("hessian", "row"),), hvp=(("hessian", None),),
                          memory_budget=memory_budget)
        step = batch_rows(model, request, max(self.n, 1))
        self._chunks = []
        self.value = 0.0
        gradient = [np.zeros(shape) for shape in model.layer_shapes]
        m = len(model.layers)
        for start in range(0, self.n, step):
            Xc, Yc = X[start:start + step], Y[start:start + step]
            cache = forward(model, self._Ws, Xc, order=2)
            out = cache.x[-1]
            values, gout = model.loss.value_and_grad(out, Yc)
            self.value += float(values.sum())
            gx, deltas = first_order(model, cache, gout)
            for k in range(1, m + 1):
                gradient[k - 1] += cache.param_grad(model, k).gradient_sum(deltas[k])
            self._chunks.append(_Chunk(cache, Yc, out, gx, deltas,
                                       model.loss.hvp_operator(out, Yc)))
        self.gradient = np.concatenate([g.ravel() for g in gradient])

    def product(self, v: np.ndarray, kind: str = "gauss_newton") -> np.ndarray:
        """``sum_i B_i v`` ``(t,)`` for ``kind`` ``hessian`` or ``gauss_newton``."""
        _check_kind(kind)
        model = self.model
        v = np.asarray(v, dtype=float)
        if self.mask is not None:
            v = v * self.mask
        Vs = model.unpack(v)
        total = np.zeros(model.n_params)
        for c in self._chunks:
            total += curvature_vector_product(model, c.cache, c.gx, c.deltas, c.loss_hvp, Vs,
                                              second_order=kind == "hessian")
        return total

    def diagonal(self, kind: str = "gauss_newton") -> np.ndarray:
        """``diag(sum_i B_i)`` ``(t,)``: the diagonals of all row blocks, layer by layer."""
        _check_kind(kind)
        model = self.model
        second = kind == "hessian"
        diag = [np.zeros(shape) for shape in model.layer_shapes]
        diag_only = diag_only_layers(model)
        for c in self._chunks:
            def on_layer(k, Q, c=c):
                q = Q if Q.ndim == 2 else np.diagonal(Q, axis1=1, axis2=2)
                diag[k - 1] += c.cache.param_grad(model, k).row_diagonal(np.ascontiguousarray(q))
                if second:
                    prop = model.layers[k - 1].propagation
                    ph = prop.param_hess_sum(c.cache.Ws[k - 1], c.cache.u[k - 1], c.deltas[k])
                    if ph is not None:
                        diag[k - 1] += np.diagonal(ph, axis1=1, axis2=2)

            second_order(model, c.cache, c.gx, c.deltas, model.loss.hess(c.out, c.Y),
                         second_order=second, on_layer=on_layer, diag_only=diag_only)
        return np.concatenate([d.ravel() for d in diag])


def _check_kind(kind: str) -> None:
    if kind not in PRODUCT_KINDS:
        raise ValueError(f"curvature kind must be one of {list(PRODUCT_KINDS)}, got {kind!r}")
