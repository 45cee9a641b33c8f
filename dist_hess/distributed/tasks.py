"""The functions that run on the workers: one shard's sums, and a combine step.

They are module-level so that Dask pickles them by reference; their arguments
are the weights payload (one key of each call's graph), one shard of ``X, Y`` and,
when multipliers go to a store, where to write them.
"""
from __future__ import annotations

import numpy as np

from ..engine import add_sums, shard_sums
from ..runtime import tune_worker_allocator
from .packing import pack_sums
from .tree import fold

__all__ = ["Payload", "StoreTarget", "shard_task", "combine", "multipliers_of"]


class Payload:
    """What every shard needs besides its rows: model, weights ``w (t,)``, request.

    A plain class (not a dataclass or tuple) so that Dask ships it as one opaque
    object instead of traversing its fields.
    """

    __slots__ = ("model", "weights", "request")

    def __init__(self, model, weights: np.ndarray, request):
        self.model, self.weights, self.request = model, weights, request

    def __reduce__(self):
        return Payload, (self.model, self.weights, self.request)


class StoreTarget:
    """Where a shard writes its multipliers: the store location and array paths."""

    __slots__ = ("path", "names")

    def __init__(self, path: str, names: tuple[str, ...]):
        self.path, self.names = path, tuple(names)

    def __reduce__(self):
        return StoreTarget, (self.path, self.names)


def shard_task(payload: Payload, X, Y, start: int, target: StoreTarget | None) -> dict:
    """Sums over one shard, curvature packed.

    Multipliers (per example) are written to ``target`` rows ``start:start+n_shard``
    when given, else kept under ``"multipliers"`` for the client to collect.
    """
    tune_worker_allocator()
    sums = shard_sums(payload.model, payload.weights, np.asarray(X), np.asarray(Y),
                      payload.request)
    if target is not None and "multipliers" in sums:
        from ..store import write_multipliers_block           # zarr: only for a store
        write_multipliers_block(target.path, target.names, start, sums.pop("multipliers"))
    return pack_sums(sums)


def combine(*parts: dict) -> dict:
    """One node of the reduction tree: the left fold of its children, in order."""
    return fold(add_sums, list(parts))


def multipliers_of(leaf: dict) -> list:
    return leaf["multipliers"]
