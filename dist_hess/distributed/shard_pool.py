"""Shards held on the workers as futures, and tasks sent straight to them.

A `ShardPool` is the data of one fit on a Dask cluster: ``X, Y`` loaded onto the
workers once (`dist_hess.distributed.data.persist_data`), one future per shard and
array, in shard order. Its calls submit one small task per shard directly on those
futures (``client.submit``; no collection graph is built), so a call costs one round
trip to the scheduler plus the work:

- `value_gradient(w)`: ``sum_i g_i`` and ``sum_i dg_i/dw`` over all shards;
- `value(w)`: the value alone (a forward pass, no backward);
- `curvature(w, shards)`: a `dist_hess.engine.operator.ShardCurvature` built on each
  named shard and left on the worker that holds it; its ``product(v)`` and
  ``diagonal()`` then cost one round trip each, with no forward pass.

The weights and each product's vector reach the tasks as one key computed from a
task that returns them (like ``evaluate``'s payload key): every worker fetches it once
from a peer, and a worker that dies holding it costs a recomputation, not a lost input.
Shard results come back to the client one per shard and are added there along the
fixed tree of `dist_hess.distributed.tree`, so sums do not depend on where a task ran:
the same bits on any number of workers.
"""
from __future__ import annotations

import uuid

import numpy as np

from ..engine import Request, shard_sums
from ..engine.operator import ShardCurvature
from .data import as_shards, persist_data
from .tree import DEFAULT_SPLIT_EVERY, tree_reduce

__all__ = ["ShardPool", "RemoteCurvature"]


# ---------------------------------------------------------------- worker-side functions

def _identity(x):
    return x


def _value_gradient(model, w, X, Y, memory_budget):
    sums = shard_sums(model, w, np.asarray(X), np.asarray(Y),
                      Request(value=True, gradient=True, memory_budget=memory_budget))
    return float(sums["value"]), sums["gradient"]


def _value(model, w, X, Y, memory_budget):
    sums = shard_sums(model, w, np.asarray(X), np.asarray(Y),
                      Request(value=True, gradient=False, memory_budget=memory_budget))
    return float(sums["value"])


def _build(model, w, X, Y, memory_budget):
    return ShardCurvature(model, w, np.asarray(X), np.asarray(Y), memory_budget=memory_budget)


def _product(op: ShardCurvature, v, kind):
    return op.product(v, kind)


def _diagonal(op: ShardCurvature, kind):
    return op.diagonal(kind)


# ---------------------------------------------------------------- client side

def _sum(parts, split_every=DEFAULT_SPLIT_EVERY):
    return tree_reduce(iter(parts), np.add, split_every)


class ShardPool:
    """``X, Y`` on the cluster of ``client``, one future per shard (see the module docstring).

    ``X, Y``: numpy arrays (loaded once by `persist_data`) or dask arrays chunked along
    rows (persisted; their chunks are the shards).
    """

    def __init__(self, client, X, Y, *, chunk_size: int | None = None,
                 memory_budget: int | None = None):
        from distributed import futures_of

        self.client = client
        self.memory_budget = memory_budget
        Xd, Yd = persist_data(X, Y, client, chunk_size=chunk_size)
        self.X, self.Y = Xd, Yd                      # kept: they own the futures
        shards = as_shards(Xd, Yd)
        self.boundaries = shards.boundaries
        by_key = {f.key: f for f in futures_of(Xd) + futures_of(Yd)}
        self._x = [by_key[k] for k in _row_keys(Xd)]
        self._y = [by_key[k] for k in _row_keys(Yd)]
        self._model = {}

    @property
    def n_shards(self) -> int:
        return len(self._x)

    @property
    def n_examples(self) -> int:
        return int(self.boundaries[-1])

    def rows(self, shards) -> int:
        b = self.boundaries
        return int(sum(b[i + 1] - b[i] for i in shards))

    def _key(self, obj, prefix):
        """A future computed by a task that returns ``obj``: one graph key, recomputable."""
        return self.client.submit(_identity, obj, key=f"{prefix}-{uuid.uuid4().hex[:12]}")

    def model_future(self, model):
        key = id(model)
        if key not in self._model:
            self._model = {key: (model, self._key(model, "model"))}
        return self._model[key][1]

    def value_gradient(self, model, w) -> tuple[float, np.ndarray]:
        """``(sum_i g_i, sum_i dg_i/dw)`` over all rows (no penalty)."""
        mf, wf = self.model_future(model), self._key(np.asarray(w, dtype=float), "weights")
        futures = [self.client.submit(_value_gradient, mf, wf, x, y, self.memory_budget,
                                      pure=False) for x, y in zip(self._x, self._y)]
        parts = self.client.gather(futures)
        return (float(tree_reduce(iter(p[0] for p in parts), lambda a, b: a + b, DEFAULT_SPLIT_EVERY)),
                _sum([p[1] for p in parts]))

    def value(self, model, w) -> float:
        """``sum_i g_i`` over all rows (no penalty): one forward pass per shard."""
        mf, wf = self.model_future(model), self._key(np.asarray(w, dtype=float), "weights")
        futures = [self.client.submit(_value, mf, wf, x, y, self.memory_budget, pure=False)
                   for x, y in zip(self._x, self._y)]
        return float(tree_reduce(iter(self.client.gather(futures)), lambda a, b: a + b,
                                 DEFAULT_SPLIT_EVERY))

    def curvature(self, model, w, shards) -> "RemoteCurvature":
        """`ShardCurvature` operators at ``w`` on ``shards`` (indices), left on the workers."""
        mf, wf = self.model_future(model), self._key(np.asarray(w, dtype=float), "weights")
        ops = [self.client.submit(_build, mf, wf, self._x[i], self._y[i], self.memory_budget,
                                  pure=False) for i in shards]
        return RemoteCurvature(self, ops)

    def close(self) -> None:
        self._x = self._y = []
        self._model = {}
        self.X = self.Y = None


def _row_keys(a):
    keys = a.__dask_keys__()
    return [k[0] if isinstance(k, list) else k for k in keys]


class RemoteCurvature:
    """The shard operators of one sample on the workers: per-shard products and diagonals."""

    def __init__(self, pool: ShardPool, ops):
        self.pool, self.ops = pool, list(ops)

    def shard_products(self, v, kind) -> list[np.ndarray]:
        client = self.pool.client
        vf = self.pool._key(np.asarray(v, dtype=float), "vector")
        return client.gather([client.submit(_product, op, vf, kind, pure=False)
                              for op in self.ops])

    def shard_diagonals(self, kind) -> list[np.ndarray]:
        client = self.pool.client
        return client.gather([client.submit(_diagonal, op, kind, pure=False) for op in self.ops])

    def release(self) -> None:
        for op in self.ops:
            op.release()
        self.ops = []
