"""The objective ``E(w)`` the optimiser sees: value, gradient, curvature blocks, HVPs at ``w``.

Two implementations of one small interface, `Objective`:

- `LocalObjective(model, X, Y)`: calls the model's contract methods in this process
  (``model.value/gradient/curvature/hvp``, DESIGN.md §3).

Both take ``memory_budget`` (bytes of engine temporaries per batch of rows; ``None``:
the engine's default) and pass it on: to the model's methods, or to ``evaluate``.
- `DaskObjective(model, X, Y, client=...)`: persists ``X, Y`` on the workers once, then
  every evaluation is one `dist_hess.distributed.evaluate` call (value, gradient and,
  when asked, curvature in the same pass over the data).

Both remember the results at the last two points (the current iterate and the trial
point), so the driver and the step strategies can ask for what they need without
paying for it twice.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

import numpy as np

from ..engine import finalize
from ..engine.budget import DEFAULT_MEMORY_BUDGET
from .fingerprint import combine_hashes, data_fingerprint, describe, shard_hashes

__all__ = ["Objective", "LocalObjective", "DaskObjective", "make_objective"]


class _PointCache:
    """Results keyed by the exact bytes of ``w``; keeps the last ``size`` points."""

    def __init__(self, size: int = 2):
        self._points: OrderedDict[bytes, dict] = OrderedDict()
        self._size = size

    def at(self, w: np.ndarray) -> dict:
        key = np.ascontiguousarray(w, dtype=float).tobytes()
        entry = self._points.get(key)
        if entry is None:
            entry = self._points[key] = {}
            while len(self._points) > self._size:
                self._points.popitem(last=False)
        else:
            self._points.move_to_end(key)
        return entry


class Objective(ABC):
    """``E(w) = sum_i g_i + pen(w)`` and its derivatives at a point ``w (t,)``.

    ``n_params`` is ``t``; ``layer_slices`` the slices of the flat vector per layer
    (DESIGN.md §1 parameter layout).
    """

    model: object

    @property
    def n_params(self) -> int:
        return int(self.model.n_params)

    @property
    def layer_slices(self) -> list[slice]:
        return list(self.model.layer_slices)

    @abstractmethod
    def value(self, w: np.ndarray) -> float: ...

    @abstractmethod
    def gradient(self, w: np.ndarray) -> np.ndarray: ...

    def value_and_gradient(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        """``(E(w), grad E(w))``, in one pass over the data where the objective can."""
        return self.value(w), self.gradient(w)

    @abstractmethod
    def curvature(self, w: np.ndarray, kind: str, structure: str):
        """``kind`` (hessian | gauss_newton | ...) in ``structure`` (row | layer | full)."""

    @abstractmethod
    def hvp(self, w: np.ndarray, v: np.ndarray, kind: str) -> np.ndarray:
        """``B v`` for ``B`` the curvature ``kind`` (hessian | gauss_newton) at ``w``."""

    def project(self, v: np.ndarray) -> np.ndarray:
        """``v`` (weights or a step) with the entries the model holds at zero (pruned
        weights: `dist_hess.Model.project`) set to zero; ``v`` itself for a model
        without ``project`` (the stand-ins of the tests)."""
        project = getattr(self.model, "project", None)
        return v if project is None else np.asarray(project(v), dtype=float)

    def prefetch(self, request: tuple[str, str] | None) -> None:
        """Say which curvature the step strategy will want at every accepted point.

        An objective that pays one pass over the data per call may compute it with
        the value; the default ignores the hint.
        """

    @property
    def n_examples(self) -> int | None:
        return None

    def data_fingerprint(self) -> dict | None:
        """Shape, dtype and hash of ``X`` and ``Y`` (`dist_hess.train.fingerprint`), or
        ``None`` for an objective without data; stored in checkpoints."""
        return None

    def evaluation_options(self) -> dict:
        """The evaluation options that change the numbers (stored in checkpoints)."""
        return {}

    @property
    def shard_boundaries(self) -> tuple[int, ...]:
        """Row offsets of the shards (``b_i : b_{i+1}`` is shard ``i``), from ``n`` only."""
        raise NotImplementedError(f"{type(self).__name__} has no shards")

    def sampled_curvature(self, w: np.ndarray, shards):
        """``B_S`` at ``w`` on the shards ``shards`` (indices): a
        `dist_hess.distributed.sampled_curvature.SampledCurvature`."""
        raise NotImplementedError(f"{type(self).__name__} cannot subsample its curvature")

    def close(self) -> None:
        """Release what the objective holds (cluster data); it is unusable afterwards."""


class LocalObjective(Objective):
    """The model's own methods, in this process, on numpy ``X, Y``.

    A `dist_hess.Model` checks the data once here (``model.check_data``: shapes,
    finiteness, no empty or complex data), before any evaluation or checkpoint.

    ``chunk_size``: rows per shard for `sampled_curvature` (default: the same shards as
    on a cluster, `dist_hess.distributed.data.default_chunk_rows`).
    """

    def __init__(self, model, X, Y, *, memory_budget: int | None = None,
                 chunk_size: int | None = None):
        self.model = model
        # shapes and dtypes as given: the fingerprint is the same in process and on Dask
        self._given = [(np.shape(a), getattr(a, "dtype", None)) for a in (X, Y)]
        if X is not None and hasattr(model, "check_data"):
            X, Y = model.check_data(X, Y)
        self.X, self.Y = X, Y
        # passed on only when set: models that are not a dist_hess.Model need not take it
        self._options = {} if memory_budget is None else {"memory_budget": memory_budget}
        self._cache = _PointCache()
        self._chunk_size = chunk_size                 # rows per shard of `sampled_curvature`
        self._boundaries = None

    @property
    def n_examples(self) -> int | None:
        return None if self.X is None else int(np.shape(self.X)[0])

    def value(self, w):
        entry = self._cache.at(w)
        if "value" not in entry:
            entry["value"] = float(self.model.value(w, self.X, self.Y, **self._options))
        return entry["value"]

    def gradient(self, w):
        entry = self._cache.at(w)
        if "gradient" not in entry:
            entry["gradient"] = np.asarray(self.model.gradient(w, self.X, self.Y, **self._options),
                                           dtype=float)
        return entry["gradient"]

    def value_and_gradient(self, w):
        entry = self._cache.at(w)
        if "value" not in entry or "gradient" not in entry:
            if not hasattr(self.model, "value_and_gradient"):       # a duck-typed model
                return self.value(w), self.gradient(w)
            value, gradient = self.model.value_and_gradient(w, self.X, self.Y, **self._options)
            entry["value"] = float(value)
            entry["gradient"] = np.asarray(gradient, dtype=float)
        return entry["value"], entry["gradient"]

    def curvature(self, w, kind, structure):
        entry = self._cache.at(w)
        key = ("curvature", kind, structure)
        if key not in entry:
            entry[key] = self.model.curvature(w, self.X, self.Y, kind=kind, structure=structure,
                                              **self._options)
        return entry[key]

    def hvp(self, w, v, kind):
        return np.asarray(self.model.hvp(w, self.X, self.Y, v, kind=kind, **self._options),
                          dtype=float)

    def data_fingerprint(self):
        fingerprint = data_fingerprint(self.model, self.X, self.Y)
        if fingerprint is not None:            # the shapes and dtypes given, not those checked
            for name, (shape, dtype) in zip(("X", "Y"), self._given):
                fingerprint[name].update(shape=[int(n) for n in shape],
                                         dtype=str(dtype or fingerprint[name]["dtype"]))
        return fingerprint

    def evaluation_options(self):
        return {"memory_budget": self._options.get("memory_budget") or DEFAULT_MEMORY_BUDGET}

    @property
    def shard_boundaries(self):
        if self._boundaries is None:
            # Imported here: dist_hess.distributed loads zarr, which a fit without
            # subsampled curvature does not need.
            from dist_hess.distributed.data import as_shards
            self._boundaries = as_shards(self.X, self.Y, self._chunk_size).boundaries
        return self._boundaries

    def sampled_curvature(self, w, shards):
        from dist_hess.distributed.sampled_curvature import LocalSampledCurvature
        return LocalSampledCurvature(self.model, w, self.X, self.Y, self.shard_boundaries, shards,
                                     memory_budget=self._options.get("memory_budget"))


class DaskObjective(Objective):
    """Evaluations on a Dask cluster, the data persisted on the workers once.

    ``X, Y`` (numpy or dask arrays chunked along examples) are loaded onto the workers
    by `dist_hess.distributed.persist_data` when the objective is made; every
    evaluation is then one call::

        dist_hess.distributed.evaluate(model, w, X, Y, curvature=kind,
                                       structure=structure, client=client)

    reading ``.value``, ``.gradient`` and ``.curvature`` from its result (and ``.hvp``
    for curvature-vector products, asked with ``hvp=[(kind, v)]``). With `prefetch`
    set, value, gradient and that curvature come from one call: one pass over the
    data per trial point.

    With ``direct=True`` value and gradient come instead from tasks sent straight to the
    persisted shards (`dist_hess.distributed.shard_pool.ShardPool`): a value alone is one
    forward pass, and no collection graph is built per call. `sampled_curvature` always
    uses that pool.
    """

    def __init__(self, model, X, Y, *, client=None, memory_budget: int | None = None,
                 direct: bool = False, **evaluate_options):
        from dist_hess.distributed import persist_data
        from dist_hess.distributed.cluster import resolve_client

        self.model = model
        # The client that holds the data runs every evaluation: the one given (a Client or
        # an address), else the current client, else the embedded local cluster.
        self.client = resolve_client(client)
        # e.g. split_every; memory_budget as every other evaluation takes it
        self.evaluate_options = dict(evaluate_options, memory_budget=memory_budget)
        self.X, self.Y = persist_data(X, Y, self.client)
        self._cache = _PointCache()
        self._prefetch: tuple[str, str] | None = None
        self._pool = None                             # ShardPool, made on first use
        self.direct = bool(direct)

    @property
    def n_examples(self) -> int | None:
        return int(self.X.shape[0])

    def prefetch(self, request):
        self._prefetch = None if request is None else (str(request[0]), str(request[1]))

    def _evaluate(self, w, *, kind=None, structure="row", hvp=None):
        from dist_hess.distributed import evaluate

        result = evaluate(self.model, w, self.X, self.Y, curvature=kind, structure=structure,
                          client=self.client, hvp=hvp, **self.evaluate_options)
        entry = self._cache.at(w)
        entry["value"] = float(result.value)
        entry["gradient"] = np.asarray(result.gradient, dtype=float)
        if kind is not None:
            entry[("curvature", kind, structure)] = result.curvature
        return result

    def _point(self, w) -> dict:
        entry = self._cache.at(w)
        if "value" not in entry:
            kind, structure = self._prefetch or (None, "row")
            self._evaluate(w, kind=kind, structure=structure)
        return entry

    def value(self, w):
        if self.direct:
            entry = self._cache.at(w)
            if "value" not in entry:
                entry["value"] = self._finish(w, value=self._shard_pool().value(self.model, w))["value"]
            return entry["value"]
        return self._point(w)["value"]

    def gradient(self, w):
        if self.direct:
            entry = self._cache.at(w)
            if "gradient" not in entry:
                value, gradient = self._shard_pool().value_gradient(self.model, w)
                entry.update(self._finish(w, value=value, gradient=gradient))
            return entry["gradient"]
        return self._point(w)["gradient"]

    def value_and_gradient(self, w):
        gradient = self.gradient(w)             # the value comes with it, in either mode
        return self._cache.at(w)["value"], gradient

    def _finish(self, w, **sums) -> dict:
        """The shards' sums with the penalty (and a mask) applied once."""
        out = finalize(self.model, np.asarray(w, dtype=float), dict(sums))
        return {k: float(v) if k == "value" else np.asarray(v, dtype=float) for k, v in out.items()}

    def curvature(self, w, kind, structure):
        key = ("curvature", kind, structure)
        entry = self._cache.at(w)
        if key not in entry:
            self._evaluate(w, kind=kind, structure=structure)
        return self._cache.at(w)[key]

    def hvp(self, w, v, kind):
        result = self._evaluate(w, hvp=[(kind, np.asarray(v, dtype=float))])
        return np.asarray(result.hvp[0], dtype=float)

    def data_fingerprint(self):
        """Hashed on the workers, one task per block of the persisted data."""
        from dask import delayed

        starts = np.concatenate([[0], np.cumsum(self.X.chunks[0])[:-1]]).astype(int)
        tasks = [delayed(shard_hashes)(self.model, x, y, int(start))
                 for start, x, y in zip(starts, self.X.to_delayed().ravel(),
                                        self.Y.to_delayed().ravel())]
        terms = self.client.gather(self.client.compute(tasks))
        return {name: describe(a.shape, a.dtype, combine_hashes(t[i] for t in terms))
                for i, (name, a) in enumerate((("X", self.X), ("Y", self.Y)))}

    def evaluation_options(self):
        options = {k: v for k, v in self.evaluate_options.items() if v is not None}
        options["memory_budget"] = options.get("memory_budget") or DEFAULT_MEMORY_BUDGET
        return options

    @property
    def shard_boundaries(self):
        return self._shard_pool().boundaries

    def _shard_pool(self):
        if self._pool is None:
            from dist_hess.distributed.shard_pool import ShardPool
            self._pool = ShardPool(self.client, self.X, self.Y,
                                   memory_budget=self.evaluate_options.get("memory_budget"))
        return self._pool

    def sampled_curvature(self, w, shards):
        from dist_hess.distributed.sampled_curvature import PooledSampledCurvature
        return PooledSampledCurvature(self.model, w, self._shard_pool(), shards)

    def close(self):
        if self._pool is not None:
            self._pool.close()
        self.X = self.Y = self._pool = None


def make_objective(model, X, Y, *, client=None, memory_budget: int | None = None,
                   direct: bool = False) -> Objective:
    """Where the evaluations run (DESIGN.md §3, ``client=None`` is the embedded default).

    `DaskObjective` when ``X`` or ``Y`` is a dask array or a client is given; with
    ``client=None`` and in-memory data, whatever
    `dist_hess.distributed.cluster.resolve_client` decides for the work ``n * t`` (a
    current client, or the embedded local cluster from
    `dist_hess.distributed.cluster.IN_PROCESS_WORK` on); otherwise `LocalObjective` in
    this process. Data that are neither numpy nor dask (e.g. zarr arrays) are read into
    memory for the local case. ``direct``: a `DaskObjective` computes value and gradient
    by tasks sent straight to the persisted shards (`ShardPool`: a forward pass alone for
    a value, no collection graph), for strategies that use `sampled_curvature`.
    """
    # Imported here, not at the top: the dist_hess.distributed package loads zarr (store.py),
    # which `import dist_hess.train` does not need.
    from dist_hess.distributed.cluster import resolve_client
    from dist_hess.distributed.data import is_dask_array

    if client is None and not (is_dask_array(X) or is_dask_array(Y)):
        if X is not None and hasattr(model, "check_data"):        # a dist_hess.Model
            client = resolve_client(None, work=int(np.shape(X)[0]) * int(model.n_params))
        if client is None:
            return LocalObjective(model, _in_memory(X), _in_memory(Y), memory_budget=memory_budget)
    return DaskObjective(model, X, Y, client=client, memory_budget=memory_budget, direct=direct)


def _in_memory(a):
    return a if a is None or isinstance(a, np.ndarray) else np.asarray(a)
