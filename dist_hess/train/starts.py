"""Multi-start training: ``fit(..., starts=k | [w0, ...])`` (DESIGN.md §3).

A network's objective has many local minima and which one a fit reaches depends on
its start (docs/training.md). A multi-start fit runs one ordinary fit from each start
and returns the best: the lowest value among the converged starts (among all starts
when none converged), with ``start`` its index, ``starts`` every start's result in
order and ``minima`` the distinct minima found (`dist_hess.train.result.FitResult`);
its ``seconds`` is the wall time of the whole call.

``starts=k`` means the starts ``model.init(seed=s)``, ``s = 0..k-1``; ``starts=[w0,
...]`` gives them. Each start's result is the single fit from it, because it is run
by the same code (``settings.run``, `dist_hess.train.driver.FitSettings`) on the same
kind of objective:

- in this process (a `LocalObjective`): one start after the other;
- on Dask, when the data fit one worker (`fits_one_worker`): one task per start, run in
  parallel on the workers; each task is the in-process fit on the whole data,
  assembled on a worker from the shards persisted there (the data never pass through
  the client). Such a result equals the in-process ``fit(w0=that start)`` bit for bit:
  the same code on the same data with one BLAS thread in both places
  (`dist_hess.runtime.limit_blas_threads`; Dask workers run one thread);
- on Dask otherwise: data-parallel, one start after the other, each on all workers,
  as ``fit(w0=that start, client=...)``.

Distinct minima (`group_minima`): the final values of the converged starts, sorted,
split wherever two neighbours differ by more than ``MINIMA_RTOL * max(1, |E|)``; minima
that differ only by a permutation of hidden units have exactly the same value and are
one. For each, `smallest_eigenvalue` of the exact Hessian at its lowest start
(positive at a strict minimum, about zero along a flat direction, negative at a saddle).

With ``checkpoint=DIR`` each start checkpoints to ``DIR/start_<i>`` (a zarr group, as a
single fit's ``checkpoint``); worker tasks write there too, so ``DIR`` must be on a
file system the workers share. Rerunning the same call resumes every start.
"""
from __future__ import annotations

import math
import numbers
import os
import time
from dataclasses import replace

import numpy as np
from scipy.linalg import eigh
from scipy.sparse.linalg import LinearOperator, eigsh

from ..runtime import limit_blas_threads, tune_worker_allocator
from .objective import DaskObjective, LocalObjective, make_objective
from .result import FitResult, Minimum

__all__ = ["MINIMA_RTOL", "DENSE_EIGENVALUE_MAX", "WORKER_DATA_FRACTION", "start_points",
           "group_minima", "smallest_eigenvalue", "fits_one_worker", "best_start", "fit_starts"]

#: Relative tolerance (of ``max(1, |E|)``) within which two final values are one minimum.
MINIMA_RTOL = 1e-6
#: Up to this many parameters the smallest Hessian eigenvalue comes from the full
#: matrix; above, from Lanczos on Hessian-vector products.
DENSE_EIGENVALUE_MAX = 2000
#: The data fit one worker when ``X`` and ``Y`` take at most this fraction of the
#: smallest worker memory limit (room for the shards, the whole copy and the fit).
WORKER_DATA_FRACTION = 0.1


def start_points(model, starts, w0=None) -> list[np.ndarray]:
    """The starting weights of ``starts``: ``k`` (``model.init(seed=s)``, ``s < k``) or a
    sequence of ``(t,)`` vectors (or a ``(k, t)`` array)."""
    if w0 is not None:
        raise ValueError("give w0 (one start) or starts (several), not both")
    t = int(model.n_params)
    if isinstance(starts, numbers.Integral) and not isinstance(starts, bool):
        if starts < 1:
            raise ValueError(f"starts must be a positive number of starts or a list of "
                             f"weight vectors, got {starts!r}")
        if not hasattr(model, "init"):
            raise TypeError("the model has no init(); pass starts=[w0, ...]")
        return [np.asarray(model.init(seed=s), dtype=float) for s in range(int(starts))]
    if isinstance(starts, (str, bytes, bool)) or not hasattr(starts, "__len__"):
        raise TypeError(f"starts must be an int or a sequence of weight vectors, "
                        f"got {type(starts).__name__}")
    points = [np.array(w, dtype=float) for w in starts]
    if not points:
        raise ValueError("starts is empty")
    for i, w in enumerate(points):
        if w.shape != (t,):
            raise ValueError(f"starts[{i}] must have shape ({t},), got {w.shape}")
    return points


def group_minima(values, rtol: float = MINIMA_RTOL) -> list[tuple[int, ...]]:
    """Indices into ``values`` grouped into distinct minima, lowest first (each group
    ordered by value): sorted values split where neighbours differ by more than
    ``rtol * max(1, |E|)``."""
    values = np.asarray(values, dtype=float)
    order = [int(i) for i in np.argsort(values, kind="stable")]
    groups: list[list[int]] = []
    for i in order:
        if groups and values[i] - values[groups[-1][-1]] <= rtol * max(1.0, abs(values[i])):
            groups[-1].append(i)
        else:
            groups.append([i])
    return [tuple(g) for g in groups]


def smallest_eigenvalue(objective, w) -> float:
    """The smallest eigenvalue of the exact Hessian of the objective at ``w``: from the
    full matrix for ``t <= DENSE_EIGENVALUE_MAX``, else by Lanczos (ARPACK) on exact
    Hessian-vector products."""
    w = np.asarray(w, dtype=float)
    t = objective.n_params
    if t <= DENSE_EIGENVALUE_MAX:
        H = np.asarray(objective.curvature(w, "hessian", "full"), dtype=float)
        return float(eigh(0.5 * (H + H.T), eigvals_only=True, subset_by_index=[0, 0])[0])
    op = LinearOperator((t, t), dtype=float,
                        matvec=lambda v: objective.hvp(w, np.asarray(v, dtype=float).ravel(), "hessian"))
    v0 = np.random.default_rng(0).standard_normal(t)
    return float(eigsh(op, k=1, which="SA", tol=1e-6, v0=v0, return_eigenvectors=False)[0])


def fits_one_worker(objective: DaskObjective) -> bool:
    """Whether the objective's data take at most `WORKER_DATA_FRACTION` of the smallest
    worker memory limit (workers without a limit hold anything)."""
    nbytes = int(objective.X.nbytes) + int(objective.Y.nbytes)
    workers = objective.client.scheduler_info().get("workers", {})
    limits = [int(info.get("memory_limit") or 0) for info in workers.values()]
    limits = [m for m in limits if m > 0]
    return not limits or nbytes <= WORKER_DATA_FRACTION * min(limits)


def best_start(results: list[FitResult]) -> int:
    """Index of the lowest value among the converged results (among all if none converged);
    the first of equal values."""
    pool = [i for i, r in enumerate(results) if r.converged] or list(range(len(results)))
    return min(pool, key=lambda i: (results[i].value if math.isfinite(results[i].value) else math.inf, i))


def _start_checkpoint(checkpoint, i: int):
    return None if checkpoint is None else os.path.join(checkpoint, f"start_{i}")


def _check_checkpoint_dir(checkpoint) -> str | None:
    if checkpoint is None:
        return None
    path = os.path.abspath(os.fspath(checkpoint))
    if os.path.exists(os.path.join(path, "zarr.json")):
        raise ValueError(f"checkpoint {str(checkpoint)!r} is a zarr group (a single fit's "
                         f"checkpoint?); with starts it is a directory of one checkpoint per "
                         f"start: use a new path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"checkpoint {str(checkpoint)!r} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    return path


def _report(i: int, k: int, result: FitResult) -> None:
    print(f"start {i + 1}/{k}: {result.status}, value {result.value:.10g}, gradient norm "
          f"{result.gradient_norm:.3e}, {result.n_iter} iterations, {result.seconds:.2f} s",
          flush=True)


def _fit_task(settings, model, X, Y, w0, checkpoint, memory_budget) -> FitResult:
    """One start on a worker: the in-process fit (`FitSettings.run` on a `LocalObjective`)."""
    tune_worker_allocator()
    return settings.run(LocalObjective(model, X, Y, memory_budget=memory_budget), w0,
                        checkpoint=checkpoint)


def _eigenvalue_task(model, X, Y, w, memory_budget) -> float:
    objective = LocalObjective(model, X, Y, memory_budget=memory_budget)
    with limit_blas_threads(objective.n_examples, objective.n_params):
        return smallest_eigenvalue(objective, w)


def _on_workers(settings, objective: DaskObjective, points, checkpoint, verbose):
    """One task per start; returns the results and a function ``w -> smallest eigenvalue``
    that also runs on a worker."""
    from distributed import as_completed

    client, model = objective.client, objective.model
    budget = objective.evaluate_options.get("memory_budget")
    X, Y = client.compute([objective.X, objective.Y])        # the whole data, on a worker
    futures = {client.submit(_fit_task, settings, model, X, Y, w0, _start_checkpoint(checkpoint, i),
                             budget, pure=False): i for i, w0 in enumerate(points)}
    results: list[FitResult | None] = [None] * len(points)
    for future in as_completed(futures, loop=client.loop):
        i = futures[future]
        results[i] = future.result()
        if verbose:
            _report(i, len(points), results[i])

    def eigenvalue(w):
        return client.submit(_eigenvalue_task, model, X, Y, w, budget, pure=False).result()
    return results, eigenvalue


def fit_starts(settings, model, X, Y, points, *, client=None, memory_budget: int | None = None,
               checkpoint=None, verbose: bool = False) -> FitResult:
    """Fit from every start in ``points`` (see the module docstring); ``settings`` is a
    `dist_hess.train.driver.FitSettings`."""
    began = time.perf_counter()
    checkpoint = _check_checkpoint_dir(checkpoint)
    objective = make_objective(model, X, Y, client=client, memory_budget=memory_budget,
                               direct=settings.direct)
    try:
        if isinstance(objective, DaskObjective) and len(points) > 1 and fits_one_worker(objective):
            results, eigenvalue = _on_workers(settings, objective, points, checkpoint, verbose)
        else:
            results = []
            for i, w0 in enumerate(points):
                results.append(settings.run(objective, w0, checkpoint=_start_checkpoint(checkpoint, i)))
                if verbose:
                    _report(i, len(points), results[-1])

            def eigenvalue(w):
                with settings.threads(objective):
                    return smallest_eigenvalue(objective, w)
        converged = [i for i, r in enumerate(results) if r.converged]
        minima = []
        for group in group_minima([results[i].value for i in converged]):
            members = tuple(converged[j] for j in group)
            lowest = results[members[0]]
            minima.append(Minimum(value=lowest.value, starts=members,
                                  min_eigenvalue=eigenvalue(lowest.w)))
    finally:
        objective.close()
    best = best_start(results)
    return replace(results[best], start=best, starts=results, minima=minima,
                   seconds=time.perf_counter() - began)
