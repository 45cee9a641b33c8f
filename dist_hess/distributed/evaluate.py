"""``dh.evaluate``: value, gradient, curvature and multipliers, data-parallel.

The computation is the one in docs/internals.md::

    finalize(model, w, reduce(add_sums, [shard_sums(model, w, X_i, Y_i, request) ...]))

with the shards mapped over Dask workers (or looped in-process for small
problems), curvature blocks packed to their upper triangle for transport, and
the reduction run along the fixed tree of :mod:`.tree` so that the result's bits
depend on the data and its chunking only.
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..curvature import STRUCTURES, check_curvature, check_hvp_kind
from ..engine import Request, add_sums, finalize, shard_sums
from ..engine.footprint import check_request
from ..memory import memory_limit as resolve_memory_limit
from ..model import check_direction, check_real
from .cluster import DEFAULT_CONNECT_TIMEOUT, gather_watching_workers, resolve_client
from .data import Shards, as_shards
from .packing import pack_sums, unpack_sums
from .tasks import Payload, StoreTarget, combine, multipliers_of, shard_task
from .tree import check_split_every, tree_groups, tree_reduce

__all__ = ["Evaluation", "evaluate", "curvature_specs"]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    ``blocks`` maps each requested ``(kind, structure)`` to its result (row: list
    over layers of ``(s_k, d_k, d_k)``; layer: list of ``(t_k, t_k)``; full:
    ``(t, t)``); ``curvature`` and ``curvatures`` are views of it.
    ``multipliers`` is a list over layers of ``(n, s_k)`` arrays (dask arrays
    reading the store when one was written), ``hvp`` one ``(t,)`` vector per
    requested product (a single vector when one was passed), ``directional`` the
    ``(order + 1,)`` directional derivatives ``[E, DE[v], ..., D^pE[v, ..., v]]`` when
    ``directional=(v, order)`` was asked for.
    """

    value: float
    gradient: np.ndarray
    n_examples: int
    blocks: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    multipliers: list | None = field(default=None, repr=False)
    hvp: Any = field(default=None, repr=False)
    directional: np.ndarray | None = field(default=None, repr=False)
    store: str | None = None

    @property
    def curvatures(self) -> dict[str, Any]:
        """``kind -> result`` (the first structure requested for that kind)."""
        out: dict[str, Any] = {}
        for (kind, _), result in self.blocks.items():
            out.setdefault(kind, result)
        return out

    @property
    def curvature(self):
        """The curvature result when exactly one was requested, ``None`` when none."""
        if not self.blocks:
            return None
        if len(self.blocks) > 1:
            asked = ", ".join(f"{k}:{s}" for k, s in self.blocks)
            raise AttributeError(f"several curvatures were requested ({asked}); use "
                                 f".curvatures[kind] or .curvature_of(kind, structure)")
        return next(iter(self.blocks.values()))

    def curvature_of(self, kind: str, structure: str = "row"):
        try:
            return self.blocks[(kind, structure)]
        except KeyError:
            raise KeyError(f"{kind}:{structure} was not requested "
                           f"(requested: {list(self.blocks) or 'none'})") from None


def curvature_specs(curvature, structure: str = "row") -> tuple[tuple[str, str], ...]:
    """Normalise ``curvature`` to ``((kind, structure), ...)``.

    Accepts ``None``, a kind (``"hessian"``), ``"kind:structure"``, a
    ``(kind, structure)`` pair, or a list of these; a bare kind takes ``structure``.
    """
    if curvature is None:
        return ()
    if isinstance(curvature, str) or (isinstance(curvature, tuple) and len(curvature) == 2
                                      and curvature[1] in STRUCTURES):
        curvature = [curvature]
    specs: list[tuple[str, str]] = []
    for item in curvature:
        if isinstance(item, str):
            kind, _, struct = item.partition(":")
            pair = (kind, struct or structure)
        else:
            pair = tuple(item)
        check_curvature(*pair)
        if pair not in specs:
            specs.append(pair)
    return tuple(specs)


def _hvp_pairs(hvp, n_params: int):
    """``(pairs, single)``: ``((kind, v), ...)`` and whether one bare vector was given."""
    if hvp is None:
        return (), False
    single = isinstance(hvp, np.ndarray) or (
        isinstance(hvp, (list, tuple)) and len(hvp) > 0 and np.isscalar(hvp[0]))
    items = [("hessian", hvp)] if single else list(hvp)
    pairs = []
    for kind, v in items:
        check_hvp_kind(kind)
        v = check_real(v, "hvp vector")
        if v.shape != (n_params,):
            raise ValueError(f"hvp vector must have shape ({n_params},), got {v.shape}")
        pairs.append((kind, v))
    return tuple(pairs), single


def _limit(value) -> float:
    """A memory limit for `Request.memory_limit`: bytes, or ``math.inf`` for none."""
    limit = resolve_memory_limit(value)
    return math.inf if limit is None else limit


def _directional_request(directional, n_params: int):
    """``(v, order)`` checked (`dist_hess.model.check_direction`), or ``None``."""
    if directional is None:
        return None
    try:
        v, order = directional
    except (TypeError, ValueError):
        raise TypeError(f"directional must be a pair (v, order), got {directional!r}") from None
    return check_direction(v, order, n_params)


# ---------------------------------------------------------------- runners
# Each returns (packed root sums, list over shards of multipliers or None).

def _run_in_process(shards: Shards, payload: Payload, target, split_every, progress):
    collected: list = []
    blocks = shards.numpy_blocks()
    if progress:
        from tqdm import tqdm
        blocks = tqdm(blocks, total=shards.n_shards, desc="shards", file=sys.stderr)

    def leaves():
        for start, X, Y in blocks:
            sums = shard_sums(payload.model, payload.weights, X, Y, payload.request)
            if "multipliers" in sums:
                block = sums.pop("multipliers")
                if target is None:
                    collected.append(block)
                else:
                    from ..store import write_multipliers_block   # zarr: only for a store
                    write_multipliers_block(target.path, target.names, start, block)
            yield pack_sums(sums)

    return tree_reduce(leaves(), add_sums, split_every), collected or None


def _graph(shards: Shards, payload: Payload, target, split_every, collect_multipliers):
    """Delayed root of the reduction tree, and one multipliers getter per shard.

    The payload is one key of the graph that every leaf depends on: a worker fetches
    it once from a peer, and a worker that dies holding it costs a recomputation
    from the graph, never a lost input (a scattered or broadcast payload has no
    recipe to rebuild it from, and its replication can wait forever on a dead worker).
    """
    from dask import delayed

    token = uuid.uuid4().hex[:12]
    payload_ref = delayed(payload, name=f"payload-{token}", traverse=False)
    leaves = [delayed(shard_task)(payload_ref, X, Y, start, target,
                                  dask_key_name=f"shard-{token}-{i}")
              for i, (start, X, Y) in enumerate(shards.dask_blocks())]
    level = leaves
    for depth, groups in enumerate(tree_groups(len(leaves), split_every), start=1):
        level = [level[g[0]] if len(g) == 1 else
                 delayed(combine)(*(level[j] for j in g),
                                  dask_key_name=f"combine-{token}-{depth}-{i}")
                 for i, g in enumerate(groups)]
    getters = []
    if collect_multipliers and len(leaves) > 1:
        getters = [delayed(multipliers_of)(leaf, dask_key_name=f"multipliers-{token}-{i}")
                   for i, leaf in enumerate(leaves)]
    return level[0], getters


def _split_root(results):
    root, *per_shard = results
    single = root.pop("multipliers", None)
    return root, (per_shard or ([single] if single is not None else None))


def _run_dask_local(shards, payload, target, split_every, progress, collect):
    import dask
    root, getters = _graph(shards, payload, target, split_every, collect)
    if progress:
        from dask.diagnostics import ProgressBar
        with ProgressBar(out=sys.stderr):
            results = dask.compute(root, *getters)
    else:
        results = dask.compute(root, *getters)
    return _split_root(list(results))


def _run_distributed(client, shards, payload, target, split_every, progress, collect):
    root, getters = _graph(shards, payload, target, split_every, collect)
    futures = client.compute([root, *getters])
    bar = _show_progress(client, futures) if progress else None
    results = gather_watching_workers(client, futures)
    if bar is not None:
        bar.join(timeout=2.0)             # let the text bar print its last line
    return _split_root(results)


def _show_progress(client, futures) -> threading.Thread | None:
    """A progress bar of ``futures``: a notebook widget, or a text bar in a thread (it
    blocks until the futures end, and the gather must not wait for it)."""
    from distributed import progress as progress_bar
    from distributed.utils import is_kernel

    if is_kernel():
        progress_bar(futures, scheduler=client.scheduler.address)
        return None
    bar = threading.Thread(target=progress_bar, args=(futures,),
                           kwargs={"scheduler": client.scheduler.address}, daemon=True)
    bar.start()
    return bar


def _multipliers_target(group, location: str, model, shards: Shards) -> StoreTarget:
    """Empty multipliers arrays in ``group``, chunked so that every shard writes whole chunks."""
    rows = shards.store_chunk_rows()
    if -(-shards.n_examples // rows) > 4 * shards.n_shards:     # many chunks per shard
        warnings.warn(f"multipliers are stored in zarr chunks of {rows} rows, the largest "
                      f"divisor of every shard boundary; rechunk X evenly "
                      f"(chunk_size=N) for faster writes", stacklevel=3)
    from ..store import create_multipliers
    names = create_multipliers(group, model.sizes[1:], n_examples=shards.n_examples,
                               chunk_rows=rows)
    return StoreTarget(location, tuple(names))


# ---------------------------------------------------------------- evaluate

def evaluate(model, w, X, Y, *, curvature=None, structure: str = "row",
             multipliers: bool = False, store=None, client=None,
             split_every: int | None = None, chunk_size: int | None = None,
             progress: bool = False, hvp=None, directional=None, security=None,
             connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
             memory_budget: int | None = None, memory_limit=None) -> Evaluation:
    """Exact value, gradient and curvature of ``E(W) = sum_i g_i + pen(W)`` over the data.

    Parameters
    ----------
    model, w : a ``dist_hess.Model`` and its weights ``(t,)``.
    X, Y : numpy arrays, dask arrays chunked along rows only, or zarr arrays.
    curvature : ``None``, a kind (``"hessian"``, ``"gauss_newton"``, ``"lagrangian"``),
        ``"kind:structure"``, or a list of these; a bare kind uses ``structure``
        (``"row"``, ``"layer"`` or ``"full"``).
    multipliers : also return the multipliers ``e^k`` (per example, ``(n, s_k)``).
    store : a path/URL; the results are written there as a zarr store
        (DESIGN.md §5), the multipliers by the workers themselves. A local store is
        written under a temporary name next to ``store`` and renamed into place at
        the end (`dist_hess.store.staged`): a failed call leaves a previous store
        there as it was, and a second writer of the same path gets a ``ValueError``.
    client : ``None`` (current client, else in-process when small, else an
        embedded ``LocalCluster``), a ``distributed.Client``, or a scheduler address.
    split_every : fan-in of the reduction tree (default 4).
    chunk_size : rows per shard (rechunks dask/zarr inputs).
    progress : show a progress bar.
    hvp : a vector ``v (t,)`` (Hessian-vector product) or a list of ``(kind, v)``.
    directional : ``(v, order)``: also ``[E, DE[v], ..., D^order E[v, ..., v]]`` by
        Taylor propagation on every shard (as ``Model.directional_derivatives``).
    security : ``distributed.Security`` for ``tls://`` scheduler addresses.
    connect_timeout : seconds to wait for a scheduler given by address.
    memory_budget : bytes of engine temporaries per batch of rows inside a shard (``None``:
        the engine's default, as in the model's methods and ``dh.fit``).
    memory_limit : bytes (or ``"16GiB"``, ``"25%"``, ``"none"``) the results may occupy;
        ``None``: the process's limit (`dist_hess.memory`: ``DIST_HESS_MEMORY_LIMIT``,
        default half the machine's memory). A request over it (the full matrix, layer
        blocks, multipliers gathered here without ``store``) is refused with
        ``MemoryLimitError`` before any work; the workers apply the same limit.

    The result is bitwise identical for the same data, chunking and
    ``split_every`` whatever the number of workers or the task completion order.
    """
    w = model.check_weights(w)
    specs = curvature_specs(curvature, structure)
    hvp_pairs, hvp_single = _hvp_pairs(hvp, model.n_params)
    direction = _directional_request(directional, model.n_params)
    split_every = check_split_every(split_every)
    shards = as_shards(X, Y, chunk_size)
    if shards.X.shape[1] != model.inputs:
        raise ValueError(f"X has {shards.X.shape[1]} columns but the model has "
                         f"{model.inputs} inputs")
    request = Request(value=True, gradient=True, curvature=specs,
                      multipliers=bool(multipliers), hvp=hvp_pairs, directional=direction,
                      memory_budget=memory_budget,
                      memory_limit=None if memory_limit is None else _limit(memory_limit))
    # Before any store, graph or worker: a refused request is never started. Multipliers
    # gathered here count all n rows; with a store the workers write them shard by shard.
    check_request(model, request, 0 if store is not None else shards.n_examples)
    if memory_limit is None:                        # the workers apply this process's limit
        request = replace(request, memory_limit=_limit(resolve_memory_limit()))
    payload = Payload(model, w, request)
    resolved = resolve_client(client, work=shards.n_examples * model.n_params,
                              security=security, connect_timeout=connect_timeout)

    if store is not None:     # zarr loads only when a store is written: an in-process fit needs none
        from ..store import begin_store, mark_complete, open_store, staged, write_results
    with staged(store) if store is not None else contextlib.nullcontext() as location:
        group, target = None, None
        if location is not None:                # a temporary directory, renamed at the end
            group = begin_store(location, model, w, n_examples=shards.n_examples)
            if multipliers:
                target = _multipliers_target(group, location, model, shards)
        collect = bool(multipliers) and target is None

        if resolved is not None:
            root, per_shard = _run_distributed(resolved, shards.as_dask(), payload, target,
                                               split_every, progress, collect)
        elif shards.lazy:
            root, per_shard = _run_dask_local(shards, payload, target, split_every, progress,
                                              collect)
        else:
            root, per_shard = _run_in_process(shards, payload, target, split_every, progress)

        sums = finalize(model, w, unpack_sums(root), request)
        blocks = {(kind, struct): sums[f"curvature/{kind}/{struct}"] for kind, struct in specs}
        products = [sums[f"hvp/{i}"] for i in range(len(hvp_pairs))]
        result = Evaluation(value=float(sums["value"]), gradient=np.asarray(sums["gradient"]),
                            n_examples=int(sums["n"]), blocks=blocks,
                            hvp=(products[0] if hvp_single else products) if hvp_pairs else None,
                            directional=(None if direction is None
                                         else np.asarray(sums["directional"])),
                            store=None if store is None else str(store))
        if group is not None:
            write_results(group, value=result.value, gradient=result.gradient, curvature=blocks)
            mark_complete(group)
    if multipliers:
        if target is not None:                  # read back from the store, now in place
            stored = open_store(store)
            result.multipliers = [stored.multipliers(k)
                                  for k in range(1, len(model.sizes))]
        else:
            result.multipliers = [np.concatenate(layer, axis=0) for layer in zip(*per_shard)]
    return result
