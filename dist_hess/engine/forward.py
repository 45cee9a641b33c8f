"""Forward pass with the cache the backward passes need (seed §3.2, eq. (2)).

Per layer ``k``: ``u^k`` (sources concatenated), ``a^k``, ``x^k = h(a^k)``,
``h'^k``, ``h''^k``, and the propagation's Jacobian operators.  Index letters:
``n`` example, ``j`` unit, ``r`` layer input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Cache", "forward", "gather_sources", "source_offsets", "carried_sources"]


@dataclass
class Cache:
    Ws: list                      # W^k, index k-1
    x: list                       # x^0 .. x^m
    u: list = field(default_factory=list)     # u^k, index k-1
    a: list = field(default_factory=list)
    h1: list = field(default_factory=list)
    h2: list = field(default_factory=list)
    _jac: dict = field(default_factory=dict)
    _grad: dict = field(default_factory=dict)

    def input_jac(self, model, k):
        """Operator for ``dP^k/du`` (computed once per cache)."""
        if k not in self._jac:
            layer = model.layers[k - 1]
            self._jac[k] = layer.propagation.input_jac_op(self.Ws[k - 1], self.u[k - 1])
        return self._jac[k]

    def param_grad(self, model, k):
        if k not in self._grad:
            layer = model.layers[k - 1]
            self._grad[k] = layer.propagation.param_grad_op(self.Ws[k - 1], self.u[k - 1])
        return self._grad[k]


def source_offsets(model, k):
    """``[(source p, slice of u^k)]`` for layer ``k``."""
    out, start = [], 0
    for p in model.layers[k - 1].sources:
        out.append((p, slice(start, start + model.sizes[p])))
        start += model.sizes[p]
    return out


def carried_sources(model, k):
    """``(span, [(p, slice)])``: the sources of layer ``k`` the backward passes carry (all
    but the input layer 0, which nothing differentiates), and the columns ``span`` of
    ``u^k`` that hold them; each ``slice`` is source ``p``'s columns within ``u^k[:, span]``.
    ``span`` is ``None`` when every source is the input."""
    carried = [(p, sl) for p, sl in source_offsets(model, k) if p != 0]
    if not carried:
        return None, []
    lo = min(sl.start for _, sl in carried)
    hi = max(sl.stop for _, sl in carried)
    return slice(lo, hi), [(p, slice(sl.start - lo, sl.stop - lo)) for p, sl in carried]


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
