"""Forward pass with the cache the backward passes need (seed §3.2, eq. (2)).

Per layer ``k``: ``u^k`` (sources concatenated), ``a^k``, ``x^k = h(a^k)``,
``h'^k``, ``h''^k``, and the propagation's Jacobian operators.  Index letters:
``n`` example, ``j`` unit, ``r`` layer input.
"""
from __future__ import annotations

import numpy as np

from .per_model import per_model

__all__ = ["Cache", "forward", "gather_sources", "source_offsets", "carried_sources"]


class Cache:
    """The forward cache of one batch of rows: lists indexed ``k - 1`` (``x`` by ``k``)."""

    __slots__ = ("Ws", "x", "u", "a", "h1", "h2", "_jac", "_grad")

    def __init__(self, Ws, x):
        self.Ws = Ws            # W^k
        self.x = x              # x^0 .. x^m
        self.u, self.a, self.h1, self.h2 = [], [], [], []
        self._jac = [None] * len(Ws)
        self._grad = [None] * len(Ws)

    def input_jac(self, model, k):
        """Operator for ``dP^k/du`` (computed once per cache)."""
        J = self._jac[k - 1]
        if J is None:
            prop = model.layers[k - 1].propagation
            J = self._jac[k - 1] = prop.input_jac_op(self.Ws[k - 1], self.u[k - 1])
        return J

    def param_grad(self, model, k):
        """Operator for ``dP^k/dW`` (computed once per cache)."""
        G = self._grad[k - 1]
        if G is None:
            prop = model.layers[k - 1].propagation
            G = self._grad[k - 1] = prop.param_grad_op(self.Ws[k - 1], self.u[k - 1])
        return G


def _layout(model):
    """Per layer ``(source_offsets, carried_sources)``, computed once per model."""
    return per_model(model, "layout", lambda: [_layer_layout(model, layer) for layer in model.layers])


def _layer_layout(model, layer):
    offsets, start = [], 0
    for p in layer.sources:
        offsets.append((p, slice(start, start + model.sizes[p])))
        start += model.sizes[p]
    carried = [(p, sl) for p, sl in offsets if p != 0]
    if carried:
        lo = min(sl.start for _, sl in carried)
        hi = max(sl.stop for _, sl in carried)
        span = (slice(lo, hi), [(p, slice(sl.start - lo, sl.stop - lo)) for p, sl in carried])
    else:
        span = (None, [])
    return offsets, span


def source_offsets(model, k):
    """``[(source p, slice of u^k)]`` for layer ``k``."""
    return _layout(model)[k - 1][0]


def carried_sources(model, k):
    """``(span, [(p, slice)])``: the sources of layer ``k`` the backward passes carry (all
    but the input layer 0, which nothing differentiates), and the columns ``span`` of
    ``u^k`` that hold them; each ``slice`` is source ``p``'s columns within ``u^k[:, span]``.
    ``span`` is ``None`` when every source is the input."""
    return _layout(model)[k - 1][1]


def gather_sources(model, k, values):
    srcs = model.layers[k - 1].sources
    if len(srcs) == 1:
        return values[srcs[0]]
    return np.concatenate([values[p] for p in srcs], axis=1)


def forward(model, Ws, X, order=2) -> Cache:
    """Propagate ``X`` (seed eq. (1)); keep ``h'`` and ``h''`` when ``order`` >= 1, 2."""
    cache = Cache(Ws=Ws, x=[X])
    for k, layer in enumerate(model.layers, start=1):
        u = gather_sources(model, k, cache.x)
        a = layer.propagation.value(Ws[k - 1], u)
        derivs = layer.activation.derivatives(a, order)
        cache.u.append(u)
        cache.a.append(a)
        cache.x.append(derivs[0])
        cache.h1.append(derivs[1] if order >= 1 else None)
        cache.h2.append(derivs[2] if order >= 2 else None)
    return cache
