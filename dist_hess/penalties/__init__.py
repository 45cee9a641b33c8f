"""Penalties ``pen(W)`` (DESIGN §1) and their registry.

JSON ``"penalty"`` (none by default):

* ``{"type": "l2", "lambda": L}``: ``L/2 sum w^2`` (:mod:`.l2`);
* ``{"type": "norm", "lambda": L, "epsilon": e}``: ``L sum_k (sqrt(||W^k||^2 + e^2) - e)``,
  the seed's ``lambda sum_k ||W^k||`` at ``e = 0`` (the default) (:mod:`.norm`);
* ``{"type": "weight_elimination", "lambda": L, "scale": c}``: ``L sum w^2 / (c^2 + w^2)``,
  ``c = 1`` by default (:mod:`.weight_elimination`);
* any of them with ``"lambda"`` a list (one value per layer it applies to) and
  ``"layers": [k, ...]`` (1-based; all layers by default);
* a list of such objects: their sum.

Every kind sums over the *penalised* parameters of a layer: all but the bias column of
dense layers (``Propagation.penalty_mask``).  Shards never add the penalty: it is
added once, after the reduction (:func:`dist_hess.engine.finalization.finalize`,
through :class:`.terms.PenaltySum`).  A new kind is one :class:`Penalty` subclass
plus :func:`register_penalty` (docs/extending.md).
"""
from __future__ import annotations

import numbers

import numpy as np

from .base import Penalty
from .hessian import LayerHessian, as_layer_hessian
from .l2 import L2
from .norm import Norm
from .terms import PenaltySum, PenaltyTerm
from .weight_elimination import WeightElimination

__all__ = ["Penalty", "LayerHessian", "as_layer_hessian", "PenaltySum", "PenaltyTerm",
           "L2", "Norm", "WeightElimination", "PENALTIES", "register_penalty",
           "get_penalty_type", "parse_penalty"]

PENALTIES: dict[str, type] = {}

#: Keys every penalty object takes; a kind adds its ``extra_keys``.
COMMON_KEYS = ("type", "lambda", "layers")


def register_penalty(cls):
    """Register a :class:`Penalty` subclass under ``cls.type`` (the JSON ``type``)."""
    if not (isinstance(cls, type) and issubclass(cls, Penalty)):
        raise TypeError(f"expected a Penalty subclass, got {cls!r}")
    if not cls.type or cls.type in COMMON_KEYS:
        raise ValueError(f"a penalty class needs a non-empty .type, got {cls.type!r}")
    PENALTIES[cls.type] = cls
    return cls


def get_penalty_type(name):
    try:
        return PENALTIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown penalty type {name!r}; known types: {sorted(PENALTIES)}") from None


for _cls in (L2, Norm, WeightElimination):
    register_penalty(_cls)


def parse_penalty(spec, n_layers: int) -> PenaltySum | None:
    """The JSON ``"penalty"`` of a model with ``n_layers`` layers: ``None`` or a :class:`PenaltySum`."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("penalty is an empty list; write null (or leave it out) for none")
        return PenaltySum([_parse_term(item, n_layers, f"penalty[{i}]")
                           for i, item in enumerate(spec)], listed=True)
    return PenaltySum([_parse_term(spec, n_layers, "penalty")])


def _parse_term(spec, n_layers, where) -> PenaltyTerm:
    if not isinstance(spec, dict):
        raise TypeError(f"{where} must be a dict like {{'type': 'l2', 'lambda': 0.01}}, a list "
                        f"of them, or null; got {spec!r}")
    if "type" not in spec:
        raise ValueError(f"{where}: missing 'type' (one of {', '.join(sorted(PENALTIES))})")
    cls = get_penalty_type(spec["type"])
    allowed = set(COMMON_KEYS) | set(cls.extra_keys)
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where} ({spec['type']}): unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(allowed)}")
    layers_given = "layers" in spec
    layers = _parse_layers(spec["layers"], n_layers, where) if layers_given \
        else tuple(range(1, n_layers + 1))
    if "lambda" not in spec:
        raise ValueError(f"{where} ({spec['type']}): missing 'lambda'")
    lam = spec["lambda"]
    listed = isinstance(lam, (list, tuple))
    if listed:
        if len(lam) != len(layers):
            applies = (f"the {len(layers)} layers in 'layers'" if layers_given
                       else f"the model's {n_layers} layers")
            raise ValueError(f"{where} ({spec['type']}): 'lambda' lists {len(lam)} values, "
                             f"expected one per layer it applies to ({applies}), got {list(lam)!r}")
        lams = tuple(_parse_lambda(x, where) for x in lam)
    else:
        lams = (_parse_lambda(lam, where),) * len(layers)
    options = {key: spec[key] for key in cls.extra_keys if key in spec}
    try:
        kind = cls(**options)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return PenaltyTerm(kind, lams, layers, listed, layers_given, frozenset(options))


def _parse_lambda(value, where) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"{where}: penalty lambda must be a finite number >= 0, got {value!r}")
    return float(value)


def _parse_layers(layers, n_layers, where) -> tuple:
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"{where}: 'layers' must be a non-empty list of layer numbers "
                         f"1..{n_layers}, got {layers!r}")
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n_layers:
            raise ValueError(f"{where}: layer {k!r} in 'layers' is out of range: the model's "
                             f"layers are 1..{n_layers} (0 is the input, which has no weights)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{where}: 'layers' {list(layers)} lists a layer twice")
    return tuple(int(k) for k in layers)
