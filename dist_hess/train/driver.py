"""The one optimisation loop: acceptance, radius or damping, stopping, history, checkpoints.

Each iteration asks the step strategy for a trial step ``p`` with predicted reduction
``pred = -m(p)``, evaluates ``E(w + p)``, and computes

    rho = (ared + delta) / (pred + delta),   ared = E(w) - E(w + p),
    delta = 10 eps max(1, |E(w)|)

(the round-off guard of Conn, Gould & Toint §17.4.2: when both reductions are at the
level of the rounding error of ``E``, ``rho -> 1`` instead of noise). The globalisation
rule (a `Globalization`: `TrustRegion`, N&W alg. 4.1; or `Damping`, trainlm) accepts or
rejects and updates its knob, the radius or the damping; the driver treats both alike.
The radius is measured in the norm the strategy reports with its step (``Step.norm``:
``||p||_M`` for a preconditioned solver, else the Euclidean norm); the history records
Euclidean step lengths. A rejected step is re-solved at the same point; every trial is
one iteration. A trial point where ``E`` overflows or is not finite is rejected
(``rho = -inf``). Steps are projected by the objective (`Objective.project`: pruned
weights stay at zero).

Stopping, checked after every iteration in this order: gradient norm ``<= gtol``
(after an accepted step), relative decrease ``ared / max(|E(w)|, |E(w+p)|, 1) <= ftol``
(after an accepted step), the rule stalls (radius below float spacing of ``w``,
damping above its maximum), ``max_iter`` iterations in all (resumed runs included),
``max_time`` seconds in this call, the callback returns true.

A checkpoint, written after every iteration, holds the weights, the rule's knob, the
strategy's `StepStrategy.state_dict` and the history; a resumed run continues as the
uninterrupted one would, bitwise.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np

from ..model import check_real
from ..runtime import limit_blas_threads
from . import auto
from .checkpoint import CheckpointWriter, model_fingerprint, read_checkpoint
from .fingerprint import data_differences, option_differences, options_fingerprint
from .globalization import Globalization, TrialStep, parse_globalization
from .objective import LocalObjective, Objective, make_objective
from .result import FitResult, IterationRecord, Status
from .starts import fit_starts, start_points
from .strategies import STRATEGIES, State, StepStrategy, make_strategy

__all__ = ["fit", "FitSettings", "minimize", "reduction_ratio"]

EPS = np.finfo(float).eps


def reduction_ratio(actual: float, predicted: float, value: float) -> float:
    """``(ared + delta) / (pred + delta)``, ``delta = 10 eps max(1, |E|)``; ``-inf`` if not finite."""
    if not math.isfinite(actual):
        return -math.inf
    delta = 10.0 * EPS * max(1.0, abs(value))
    return (actual + delta) / (max(predicted, 0.0) + delta)


def _trial_value(objective: Objective, w: np.ndarray, with_gradient: bool = False) -> float:
    """``E(w)``, ``nan`` where it overflows; ``with_gradient``: the gradient too, in the
    same pass (kept by the objective for the step's acceptance)."""
    try:
        value = objective.value_and_gradient(w)[0] if with_gradient else objective.value(w)
    except (FloatingPointError, OverflowError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _initial_weights(objective: Objective, w0) -> np.ndarray:
    if w0 is None:
        if not hasattr(objective.model, "init"):
            raise TypeError("the model has no init(); pass w0")
        w0 = objective.model.init(seed=0)
    w = check_real(w0, "w0").copy()
    n_params = objective.n_params
    if w.shape != (n_params,):
        raise ValueError(f"w0 must have shape ({n_params},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w0 has non-finite entries")
    return objective.project(w)                 # pruned weights start (and stay) at zero


@dataclass(frozen=True)
class FitSettings:
    """What `fit` runs, apart from the model, the data, the start and where: the method
    (a named one: `fit` resolves ``"auto"`` first) and its options and the stopping
    limits. ``run`` is one fit; a multi-start fit (`dist_hess.train.starts`) calls it for
    every start, in this process or in a worker task, so every start is the single fit
    from it."""

    method: str
    kind: str | None = None
    structure: str | None = None
    globalization: object = None
    options: dict | None = None
    max_iter: int = 500
    gtol: float = 1e-6
    ftol: float = 1e-14
    max_time: float | None = None
    relative_gtol: bool = False

    def strategy(self) -> StepStrategy:
        """A fresh step strategy of the method."""
        return make_strategy(self.method, kind=self.kind, structure=self.structure,
                             options=self.options)

    def check(self) -> None:
        """Raise the errors a bad method, option or limit would raise, before any work."""
        _check_limits(self.max_iter, self.gtol, self.ftol, self.max_time)
        parse_globalization(self.globalization, self.strategy().globalizations)

    @property
    def direct(self) -> bool:
        """Whether a Dask objective for this method computes value and gradient by
        direct shard tasks (``DaskObjective(direct=)``: the sampled-curvature methods)."""
        return STRATEGIES[self.method].uses_sampled_curvature

    @staticmethod
    def threads(objective: Objective):
        """The BLAS thread setting of a fit on ``objective``: one thread for a small problem
        in this process (`dist_hess.runtime.limit_blas_threads`), else unchanged."""
        if isinstance(objective, LocalObjective):
            return limit_blas_threads(objective.n_examples or 0, objective.n_params)
        return contextlib.nullcontext()

    def run(self, objective: Objective, w0, *, checkpoint=None, callback=None,
            verbose: bool = False) -> FitResult:
        """One fit from ``w0`` on ``objective`` (a fresh strategy and rule)."""
        strategy = self.strategy()
        rule = parse_globalization(self.globalization, strategy.globalizations)
        with self.threads(objective):
            return minimize(objective, strategy, rule, w0=w0, max_iter=self.max_iter,
                            gtol=self.gtol, ftol=self.ftol, max_time=self.max_time,
                            checkpoint=checkpoint, callback=callback, verbose=verbose,
                            relative_gtol=self.relative_gtol)


def fit(model, X, Y, *, w0=None, method: str = "auto", starts=None, client=None,
        max_iter: int = 500, gtol: float = 1e-6, ftol: float = 1e-14,
        max_time: float | None = None, checkpoint=None, callback=None, verbose: bool = False,
        kind: str | None = None, structure: str | None = None, globalization=None,
        options: dict | None = None, memory_budget: int | None = None,
        relative_gtol: bool | None = None) -> FitResult:
    """Minimise ``E(w) = sum_i g(x^m_i, y_i) + pen(w)`` with a Newton-type method.

    Parameters
    ----------
    model, X, Y
        A `dist_hess.Model` and its data (numpy, or dask arrays chunked along examples).
        A dask array or a ``client`` runs every evaluation on Dask (`DaskObjective`,
        data persisted on the workers once); otherwise in this process.
    w0
        Starting weights ``(t,)``; default ``model.init(seed=0)``. Ignored when resuming.
    starts
        Multi-start (`dist_hess.train.starts`): ``k`` fits from ``model.init(seed=s)``,
        ``s = 0..k-1``, or one from each weight vector of a list (not with ``w0``); in
        parallel on the workers when a cluster is used. Returns the best result (lowest
        value among converged starts) with ``.start`` its index, ``.starts`` every
        start's result in order (each equal to ``fit(w0=that start)``) and ``.minima``
        the distinct minima found. ``checkpoint`` is then a directory of one checkpoint
        per start; ``verbose`` prints one line per finished start; ``callback`` is not
        available; ``max_time`` holds for each start.
    method
        ``auto`` (default: the library picks from ``t`` and ``n`` by the rule of
        `dist_hess.train.auto`; ``result.method`` names the method used), ``newton``
        (exact Hessian; trust-region subproblem nearly exact where it is positive
        definite, Steihaug-CG elsewhere), ``newton-cg`` (Steihaug-CG on
        exact HVPs), ``block-newton`` (row/layer blocks made positive definite; trust
        region or damping), ``lm`` (Levenberg-Marquardt on the Gauss-Newton matrix, full
        or blocks), ``hessian-free`` (damped Newton-CG with curvature from a rotating
        shard subsample, `dist_hess.train.hessian_free`). See `dist_hess.train.strategies`.
    max_iter
        Limit on iterations, counting every trial step and the iterations of a run
        resumed from ``checkpoint`` (default 500).
    gtol, ftol
        Stop when ``||grad E|| <= gtol`` (``relative_gtol``: ``<= gtol * max(1, |E|)``), or
        when an accepted step decreases ``E`` by at most ``ftol * max(|E|, 1)`` (both
        count as converged; ``ftol=0`` disables).
    relative_gtol
        Whether ``gtol`` is relative to ``max(1, |E|)``; default ``None``: relative for
        ``method="auto"``, absolute for a named method.
    max_time
        Seconds of wall time for this call (checked after each iteration).
    checkpoint
        Path of a zarr v3 group: the state is written after every iteration, and a
        call with an existing checkpoint resumes from it (same method and model, else
        ``ValueError``).
    callback
        ``callback(w, record) -> bool | None`` after every iteration with the current
        weights and the `IterationRecord`; a true return stops (status ``callback``).
    verbose
        Print one line per iteration.
    kind, structure
        Curvature used by the method: ``kind`` ``hessian`` (default) or ``gauss_newton``
        (``lm``: always ``gauss_newton``); ``structure`` for ``block-newton`` ``row``
        (default) | ``layer`` | ``full``, for ``lm`` ``full`` (default) | ``row`` | ``layer``.
    globalization
        ``"trust-region"`` | ``"damping"`` | a `TrustRegion` / `Damping` (a
        `Globalization`) with its parameters; default the method's own (``lm``: damping,
        others: trust region).
    options
        Extra keyword options of the step strategy (e.g. ``{"max_cg_iter": 50}``).
    memory_budget
        Bytes of engine temporaries per batch of rows (``None``: the engine's default),
        passed to every evaluation as in ``model.value(..., memory_budget=)`` and
        ``dh.evaluate(memory_budget=)``.
    """
    if relative_gtol is None:
        relative_gtol = method == auto.AUTO
    if method == auto.AUTO:
        choice = auto.choose(model.n_params, _rows(X), distributed=client is not None)
        method, options = choice.method, {**choice.options, **dict(options or {})}
    settings = FitSettings(method, kind=kind, structure=structure, globalization=globalization,
                           options=options, max_iter=max_iter, gtol=gtol, ftol=ftol,
                           max_time=max_time, relative_gtol=bool(relative_gtol))
    settings.check()
    if starts is not None:
        if callback is not None:
            raise ValueError("callback is called after every iteration of one fit; with starts "
                             "use verbose=True or read result.starts")
        return fit_starts(settings, model, X, Y, start_points(model, starts, w0), client=client,
                          memory_budget=memory_budget, checkpoint=checkpoint, verbose=verbose)
    objective = make_objective(model, X, Y, client=client, memory_budget=memory_budget,
                               direct=settings.direct)
    try:
        return settings.run(objective, w0, checkpoint=checkpoint, callback=callback,
                            verbose=verbose)
    finally:
        objective.close()


def _rows(X) -> int | None:
    shape = getattr(X, "shape", None)
    return None if not shape else int(shape[0])


def _check_limits(max_iter, gtol, ftol, max_time):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not gtol >= 0 or not ftol >= 0:
        raise ValueError(f"gtol and ftol must be >= 0, got {gtol!r}, {ftol!r}")
    if max_time is not None and not max_time >= 0:
        raise ValueError(f"max_time must be None or >= 0, got {max_time!r}")


def minimize(objective: Objective, strategy: StepStrategy, rule: Globalization, *,
             w0=None, max_iter: int = 500, gtol: float = 1e-6, ftol: float = 1e-14,
             max_time: float | None = None, checkpoint=None, callback=None,
             verbose: bool = False, relative_gtol: bool = False) -> FitResult:
    """The driver loop on an `Objective` (see the module docstring); `fit` builds its arguments."""
    _check_limits(max_iter, gtol, ftol, max_time)

    def small_gradient(s: State) -> bool:
        return s.gradient_norm <= (gtol * max(1.0, abs(s.value)) if relative_gtol else gtol)

    start = time.perf_counter()
    fingerprint = model_fingerprint(objective.model)
    data = options = None
    if checkpoint is not None:                  # what a resume must match
        data = objective.data_fingerprint()
        options = options_fingerprint(strategy, rule, gtol=gtol, ftol=ftol,
                                      evaluation=objective.evaluation_options())

    resumed = read_checkpoint(checkpoint) if checkpoint is not None else None
    if resumed is not None:
        _check_resume(resumed, strategy, rule, fingerprint, checkpoint, data, options)
        w, iteration, history = resumed.w, resumed.iteration, list(resumed.history)
        knob = getattr(resumed, rule.knob)
        strategy.load_state_dict(resumed.strategy_state)
    else:
        w, iteration, history = _initial_weights(objective, w0), 0, []
        knob = rule.start()
    writer = None
    if checkpoint is not None:
        writer = CheckpointWriter(checkpoint, method=strategy.name, strategy=strategy.config(),
                                  globalization=rule.name, model=fingerprint,
                                  data=data, options=options,
                                  resume_slot=None if resumed is None else resumed.slot)

    def save(status) -> None:
        """Checkpoint the current iteration, weights, knob and strategy state."""
        if writer is not None:
            writer.write(iteration=iteration, w=state.w, **rule.knob_fields(knob),
                         strategy_state=strategy.state_dict(), status=status, history=history)

    objective.prefetch(strategy.curvature_request)
    value = objective.value(w)
    if not math.isfinite(value):
        raise ValueError(f"the objective is not finite at the starting point ({value})")
    state = State(w, value, objective.gradient(w), objective, iteration,
                  ratio=history[-1].ratio if history else None, **rule.knob_fields(knob))

    status, detail = None, ""
    if small_gradient(state):
        status = Status.GTOL
    elif iteration >= max_iter:
        status = Status.MAX_ITER
    if resumed is None:
        save(status)
    if verbose:
        _print_header(state, strategy, rule)

    while status is None:
        t0 = time.perf_counter()
        step = strategy.solve(state)
        # eigendecompositions and the hard case (p + tau z) may touch pruned entries
        p = objective.project(np.asarray(step.direction, dtype=float))
        p_norm = float(np.linalg.norm(p))
        trial = state.w + p
        if p_norm == 0.0 or np.array_equal(trial, state.w):
            status, detail = Status.STALLED, "the step is too small to change the weights"
            save(status)
            break
        trial_value = _trial_value(objective, trial, getattr(strategy, "trial_gradient", False))
        actual = state.value - trial_value
        ratio = float(reduction_ratio(actual, step.model_decrease, state.value))
        accepted = bool(rule.accept(ratio))
        trial_step = TrialStep(length=p_norm, norm=p_norm if step.norm is None else float(step.norm),
                               hits_boundary=step.hits_boundary)
        used_knob, knob = knob, rule.update(knob, ratio, trial_step)
        iteration += 1
        finite_ratio = ratio if math.isfinite(ratio) else None
        if accepted:
            relative_decrease = actual / max(abs(state.value), abs(trial_value), 1.0)
            state = State(trial, trial_value, objective.gradient(trial), objective, iteration,
                          ratio=finite_ratio, **rule.knob_fields(knob))
        else:                                   # same point, same cache: re-solved with the new knob
            state = replace(state, iteration=iteration, ratio=finite_ratio,
                            **rule.knob_fields(knob))
        record = IterationRecord(iteration=iteration, value=state.value,
                                 gradient_norm=state.gradient_norm, step_norm=p_norm,
                                 ratio=finite_ratio, accepted=accepted,
                                 **rule.knob_fields(used_knob), seconds=time.perf_counter() - t0)
        history.append(record)

        if accepted and small_gradient(state):
            status = Status.GTOL
        elif accepted and relative_decrease <= ftol:
            status, detail = Status.FTOL, f"relative decrease {relative_decrease:.3g} <= ftol {ftol:g}"
        elif (reason := rule.stalled(knob, state.w, trial_step)) is not None:
            status, detail = Status.STALLED, reason
        elif iteration >= max_iter:
            status = Status.MAX_ITER
        elif max_time is not None and time.perf_counter() - start >= max_time:
            status = Status.MAX_TIME
        if callback is not None and callback(state.w, record) and status is None:
            status = Status.CALLBACK
        save(status)
        if verbose:
            _print_record(record, rule)

    message = _message(status, detail, state, gtol, max_iter, max_time, relative_gtol)
    if verbose:
        print(f"{strategy.name}: {status}: {message}", flush=True)
    return FitResult(w=state.w.copy(), value=state.value, gradient=state.gradient.copy(),
                     gradient_norm=state.gradient_norm, n_iter=iteration, status=status,
                     message=message, method=strategy.name, history=history,
                     seconds=time.perf_counter() - start)


def _check_resume(resumed, strategy, rule, fingerprint, path, data, options) -> None:
    """Refuse a resume that would not continue the same run, saying what differs."""
    if resumed.method != strategy.name:
        raise ValueError(f"checkpoint {str(path)!r} was written by method {resumed.method!r}, "
                         f"not {strategy.name!r}; resume with the same method or use a new path")
    if resumed.model != fingerprint:
        raise ValueError(f"checkpoint {str(path)!r} was written for another model "
                         f"(stored {resumed.model}, given {fingerprint}); use a new path")
    if resumed.globalization != rule.name:
        raise ValueError(f"checkpoint {str(path)!r} was written with globalization "
                         f"{resumed.globalization!r}, not {rule.name!r}")
    if resumed.w.shape != (fingerprint["n_params"],):
        raise ValueError(f"checkpoint {str(path)!r} holds weights of shape {resumed.w.shape}")
    if resumed.options is None:
        warnings.warn(f"checkpoint {str(path)!r} records no fingerprint of its data and options "
                      f"(written by an older dist_hess): resuming without checking them",
                      stacklevel=4)
        return
    if (differ := data_differences(resumed.data, data)) is not None:
        raise ValueError(f"checkpoint {str(path)!r} was written for data {differ}; resume "
                         f"with the same data or use a new checkpoint path")
    if differ := option_differences(resumed.options, options):
        raise ValueError(f"checkpoint {str(path)!r} was written with other options "
                         f"({'; '.join(differ)}); resume with the same options or use a new "
                         f"checkpoint path (max_iter and max_time may change)")


def _message(status, detail, state, gtol, max_iter, max_time, relative_gtol=False) -> str:
    g = state.gradient_norm
    if status is Status.GTOL:
        if relative_gtol:
            return f"gradient norm {g:.3g} <= gtol {gtol:g} * max(1, |E|)"
        return f"gradient norm {g:.3g} <= gtol {gtol:g}"
    if status is Status.MAX_ITER:
        return f"reached max_iter={max_iter} with gradient norm {g:.3g}"
    if status is Status.MAX_TIME:
        return f"reached max_time={max_time:g} s with gradient norm {g:.3g}"
    if status is Status.CALLBACK:
        return f"stopped by the callback with gradient norm {g:.3g}"
    return f"{detail} (gradient norm {g:.3g})"


def _print_header(state, strategy, rule) -> None:
    print(f"{strategy.name} ({rule.name}): start value {state.value:.10g}, "
          f"gradient norm {state.gradient_norm:.3e}", flush=True)
    print(f"{'iter':>5} {'value':>18} {'|grad|':>10} {'|step|':>10} {'ratio':>9} "
          f"{rule.knob:>10} {'ok':>3} {'s':>7}", flush=True)


def _print_record(r: IterationRecord, rule: Globalization) -> None:
    knob = getattr(r, rule.knob)
    knob = "-" if knob is None else f"{knob:10.3e}"
    ratio = "-inf" if r.ratio is None else f"{r.ratio:9.3f}"
    print(f"{r.iteration:5d} {r.value:18.10g} {r.gradient_norm:10.3e} {r.step_norm:10.3e} "
          f"{ratio:>9} {knob:>10} {'y' if r.accepted else 'n':>3} {r.seconds:7.3f}", flush=True)
