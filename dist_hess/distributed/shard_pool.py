"""Shards held on the workers as futures, and tasks sent straight to them.

A `ShardPool` is the data of one fit on a Dask cluster: ``X, Y`` loaded onto the
workers once (`dist_hess.distributed.data.persist_data`), one future per shard and
array, in shard order. Its calls submit **one task per worker**, on the futures of
the shards that worker holds (``client.submit``; no collection graph is built), so a
call costs one round trip to the scheduler plus the work:

- `value_gradient(w)`: ``sum_i g_i`` and ``sum_i dg_i/dw`` over all shards;
- `value(w)`: the value alone (a forward pass, no backward);
- `curvature(w, shards)`: a `dist_hess.engine.operator.ShardCurvature` built on each
  named shard and left on the worker that holds it; its products and diagonals then
  cost one round trip each, with no forward pass.

The model and the arguments travel inside the tasks, except an array (the weights of
`value_gradient` and `value`, a product's vector) whose copies to all the call's tasks
would exceed `SHIP_BYTES`: that array is one key of its own per call, which the tasks
depend on and the workers fetch from each other (`ShardPool._shipped`). Inside the
task is the faster way while the copies are few (one scheduler message per worker
instead of a key, its task and a transfer between workers: 12.6 vs 18.7 ms for an
empty call on two workers, 0.8 MB); as a key the client sends it once, whatever the
number of workers. `curvature` puts the weights inside each shard's task. Either way a
task lost with its worker is rerun elsewhere from its recipe. A sum over shards follows
the fixed tree of `dist_hess.distributed.tree` in shard order: a worker's task folds the
nodes of that tree whose shards it all holds and returns those (one per worker when
each holds an aligned run), the client folds the rest, so the sums do not depend on
which worker held which shard: the same bits on any number of workers. Which worker
holds a shard is read once from the scheduler and is only a hint: a task whose shards
moved still runs, wherever they are. Results are
gathered as `dh.evaluate` gathers them (`gather_watching_workers`): a cluster left with
no worker ends the call with an error.
"""
from __future__ import annotations

import numpy as np

from ..engine import Request, shard_sums
from ..engine.operator import ShardCurvature
from ..runtime import tune_worker_allocator
from .cluster import gather_watching_workers
from .data import as_shards, persist_data
from .tree import complete_tree, subtree_sums

__all__ = ["ShardPool", "RemoteCurvature"]

#: An array goes to the workers as one key per call, not inside each task, when its copies
#: to all of the call's tasks would take more than this many bytes (`ShardPool._shipped`).
SHIP_BYTES = 4 * 1024 * 1024


# ---------------------------------------------------------------- worker-side functions

def _held(a):
    """The array itself: the task that makes a large argument one key (`ShardPool._shipped`)."""
    return a


def _value_gradients(model, w, memory_budget, xs, ys):
    tune_worker_allocator()
    request = Request(value=True, gradient=True, memory_budget=memory_budget)
    out = []
    for X, Y in zip(xs, ys):
        sums = shard_sums(model, w, np.asarray(X), np.asarray(Y), request)
        out.append((float(sums["value"]), sums["gradient"]))
    return out


def _values(model, w, memory_budget, xs, ys):
    tune_worker_allocator()
    request = Request(value=True, gradient=False, memory_budget=memory_budget)
    return [float(shard_sums(model, w, np.asarray(X), np.asarray(Y), request)["value"])
            for X, Y in zip(xs, ys)]


def _build(model, w, X, Y, memory_budget):
    tune_worker_allocator()
    return ShardCurvature(model, w, np.asarray(X), np.asarray(Y), memory_budget=memory_budget)


def _summed(fn, n_leaves, positions, *args):
    """``fn(*args)`` (one result per shard) folded into the nodes of the reduction tree
    that these shards, at ``positions`` of the call's shard list, cover."""
    return subtree_sums(dict(zip(positions, fn(*args))), n_leaves)


def _products(v, kind, ops):
    return [op.product(v, kind) for op in ops]


def _diagonals(kind, ops):
    return [op.diagonal(kind) for op in ops]


# ---------------------------------------------------------------- client side

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
        self.boundaries = as_shards(Xd, Yd).boundaries
        by_key = {f.key: f for f in futures_of(Xd) + futures_of(Yd)}
        self._x = [by_key[k] for k in _row_keys(Xd)]
        self._y = [by_key[k] for k in _row_keys(Yd)]
        client.gather(client.map(len, self._x, pure=False))     # wait: placed and ready
        who = client.who_has(self._x)
        self._where = [next(iter(who.get(f.key, ())), None) for f in self._x]

    @property
    def n_shards(self) -> int:
        return len(self._x)

    @property
    def n_examples(self) -> int:
        return int(self.boundaries[-1])

    def rows(self, shards) -> int:
        b = self.boundaries
        return int(sum(b[i + 1] - b[i] for i in shards))

    def groups(self, shards) -> list[tuple[str | None, list[int]]]:
        """``shards`` grouped by the worker that held them when the pool was made."""
        out: dict = {}
        for i in shards:
            out.setdefault(self._where[i], []).append(i)
        return list(out.items())

    def submit_per_worker(self, fn, args, shards, per_shard, *, summed: bool = False):
        """One task ``fn(*args, [per_shard(i) for i in its shards])`` per worker; the results
        as one list in the order of ``shards``, or with ``summed`` their sum along the
        fixed tree over that order: each worker folds the nodes of the tree its shards
        cover (`dist_hess.distributed.tree.subtree_sums`) and sends those, the client
        folds the rest (at ``n = 10,000`` on two workers: one gradient per worker instead
        of four), bitwise the sum of the list."""
        client = self.client
        shards = list(shards)
        groups = self.groups(shards)
        args = self._shipped(args, copies=len(groups))
        position = {i: k for k, i in enumerate(shards)}
        tasks = []
        for worker, group in groups:
            hint = _placement(worker)
            columns = [list(c) for c in zip(*(per_shard(i) for i in group))]
            if summed:
                future = client.submit(_summed, fn, len(shards), [position[i] for i in group],
                                       *args, *columns, pure=False, **hint)
            else:
                future = client.submit(fn, *args, *columns, pure=False, **hint)
            tasks.append((group, future))
        results = gather_watching_workers(client, [f for _, f in tasks])
        if summed:
            return complete_tree({k: v for nodes in results for k, v in nodes.items()},
                                 len(shards))
        by_shard = {i: r for (group, _), rs in zip(tasks, results) for i, r in zip(group, rs)}
        return [by_shard[i] for i in shards]

    def _shipped(self, args, copies: int = 1) -> tuple:
        """``args`` with every array whose ``copies`` would take over :data:`SHIP_BYTES`
        made one key of its own (a future in its place), as `dh.evaluate` sends its
        payload: the per-worker tasks depend on it, a worker fetches it once from a peer,
        and a worker that dies holding it costs a recomputation from the key's task, never
        a lost input (a scattered array has no recipe, and ``scatter(broadcast=True)`` can
        retry a replication to a dead worker forever: issue 13). Smaller arrays stay inside
        the tasks, which are recomputable the same way. Either way the messages that carry
        them are not kept by distributed's debugging logs
        (`dist_hess.distributed.cluster.limit_message_logs`): that was the growth of the
        client process, 1.2-2.1 MB per value+gradient call at ``t = 101,770``."""
        return tuple(self.client.submit(_held, a, pure=False)
                     if isinstance(a, np.ndarray) and copies * a.nbytes > SHIP_BYTES else a
                     for a in args)

    def value_gradient(self, model, w) -> tuple[float, np.ndarray]:
        """``(sum_i g_i, sum_i dg_i/dw)`` over all rows (no penalty)."""
        value, gradient = self.submit_per_worker(
            _value_gradients, (model, np.asarray(w, dtype=float), self.memory_budget),
            range(self.n_shards), lambda i: (self._x[i], self._y[i]), summed=True)
        return float(value), gradient

    def value(self, model, w) -> float:
        """``sum_i g_i`` over all rows (no penalty): one forward pass per shard."""
        return float(self.submit_per_worker(
            _values, (model, np.asarray(w, dtype=float), self.memory_budget),
            range(self.n_shards), lambda i: (self._x[i], self._y[i]), summed=True))

    def curvature(self, model, w, shards) -> "RemoteCurvature":
        """`ShardCurvature` operators at ``w`` on ``shards`` (indices), left on the workers."""
        w = np.asarray(w, dtype=float)
        ops = {}
        for worker, group in self.groups(shards):
            hint = _placement(worker)
            for i in group:
                ops[i] = self.client.submit(_build, model, w, self._x[i], self._y[i],
                                            self.memory_budget, pure=False, **hint)
        return RemoteCurvature(self, tuple(shards), ops)

    def close(self) -> None:
        self._x = self._y = []
        self.X = self.Y = None


def _placement(worker) -> dict:
    """``client.submit`` keywords that prefer ``worker`` (``None``: no preference)."""
    return {} if worker is None else {"workers": [worker], "allow_other_workers": True}


def _row_keys(a):
    keys = a.__dask_keys__()
    return [k[0] if isinstance(k, list) else k for k in keys]


class RemoteCurvature:
    """The shard operators of one sample on the workers: per-shard products and diagonals."""

    def __init__(self, pool: ShardPool, shards, ops: dict):
        self.pool, self.shards, self.ops = pool, shards, ops

    def shard_products(self, v, kind) -> list[np.ndarray]:
        """Each shard's product, in the order of ``shards`` (what `product_sum` sums)."""
        return self.pool.submit_per_worker(_products, (np.asarray(v, dtype=float), kind),
                                           self.shards, lambda i: (self.ops[i],))

    def product_sum(self, v, kind) -> np.ndarray:
        """The tree sum of `shard_products`, folded on the workers as far as they can."""
        return self.pool.submit_per_worker(_products, (np.asarray(v, dtype=float), kind),
                                           self.shards, lambda i: (self.ops[i],), summed=True)

    def diagonal_sum(self, kind) -> np.ndarray:
        """The tree sum of the shards' diagonals, folded on the workers as far as they can."""
        return self.pool.submit_per_worker(_diagonals, (kind,), self.shards,
                                           lambda i: (self.ops[i],), summed=True)

    def release(self) -> None:
        for op in self.ops.values():
            op.release()
        self.ops = {}
