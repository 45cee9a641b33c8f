"""Penalties ``pen(W)`` (DESIGN §1): ``{"type": "l2", "lambda": L}`` is
``L/2 * sum w^2`` over every penalised parameter (all but the bias column of
dense layers).  Its gradient is ``L * mask * w`` and its Hessian ``L * diag(mask)``,
so the penalty adds to diagonal blocks only.  Shards never add it: it is added
once, after the reduction (:func:`dist_hess.engine.finalization.finalize`)."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Penalty", "parse_penalty"]


class Penalty:
    def __init__(self, lam: float):
        self.lam = float(lam)

    def to_dict(self):
        return {"type": "l2", "lambda": self.lam}

    def value(self, w, mask):
        return 0.5 * self.lam * float(np.sum(mask * w * w))

    def gradient(self, w, mask):
        return self.lam * mask * w

    def hessian_diagonal(self, mask):
        return self.lam * mask.astype(float)


def parse_penalty(spec):
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise TypeError(f"penalty must be a dict like {{'type': 'l2', 'lambda': 0.01}} or null, got {spec!r}")
    kind = spec.get("type")
    if kind != "l2":
        raise ValueError(f"unknown penalty type {kind!r}; known: ['l2']")
    unknown = set(spec) - {"type", "lambda"}
    if unknown:
        raise ValueError(f"unknown penalty keys {sorted(unknown)}; allowed: ['lambda', 'type']")
    lam = spec.get("lambda")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not np.isfinite(lam) or lam < 0:
        raise ValueError(f"penalty lambda must be a finite number >= 0, got {lam!r}")
    return Penalty(lam)
