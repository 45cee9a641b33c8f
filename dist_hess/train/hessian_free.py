"""Hessian-free Newton steps with curvature from a rotating shard subsample.

One iteration at ``w`` (Martens 2010; Byrd, Chin, Neveitt & Nocedal 2011):

1. **Sample.** ``S``: the next shards of a seeded rotation (`ShardSchedule`), first
   ``sample_fraction`` of them but at least ``min_rows_per_parameter * d_max`` rows
   (``d_max`` the longest row of weights, 785 for 784 inputs): a row block is a Gram
   matrix ``sum_i q_i z_i z_i'`` of ``d_max`` columns, and from ``n_S`` rows its
   spectrum is off by the Marchenko-Pastur factors ``(1 +- sqrt(d_max / n_S))^2``
   (0.47 to 1.73 at ten rows per column; 0.03 to 3.4 at 1.4);
   ``B_S = (n / n_S) sum_{i in S} B_i + pen''`` (`dist_hess.distributed.sampled_curvature`),
   its operators built once where the shards are. Value and gradient, and so the
   reduction ratio, always come from all rows.
2. **Precondition.** ``c = (diag(G_S) + mu)^alpha`` with ``G_S`` the Gauss-Newton
   matrix of the sample (``alpha = 3/4``, Martens 2010 §4.7); the diagonal is recomputed
   every ``precondition_every`` iterates (it costs about one product), not every one.
3. **Solve.** ``(B_S + mu I) p = -g`` by `hf_cg`: warm-started from
   ``cg_decay * p_prev`` (the previous run's last iterate), stopped by Martens' relative
   progress test, by the residual ``||r|| <= eta ||g||`` (``eta = min(1/2,
   (||g|| / ||g_0||)^(1/2))``, N&W eq. 7.3 made scale-free by the first gradient),
   at negative curvature, or after ``cap`` products: ``cap = cg_cap_growth`` times the
   iterate the previous backtracking chose (at most ``max_cg_iter``), so CG does not
   compute iterates far beyond where the last model stopped being trusted.
4. **Backtrack** along the saved CG iterates (Martens 2010 §4.6): ``E`` on all rows at
   the last one, then at earlier ones while ``E`` keeps falling; the step is the best.
5. **Damping** (Nielsen 1999; Madsen, Nielsen & Tingleff 2004, eq. 2.21) from the ratio
   ``rho`` of the actual to the predicted reduction ``-m(p)``, ``m(p) = g'p + 1/2 p'B_S p``,
   of the chosen step (``damping_ratio="chosen"``, as Martens 2010 §4.1; ``"last"``: of the
   last CG iterate): ``rho > 0``: ``mu <- mu max(1/3, 1 - (2 rho - 1)^3)``, ``nu <- 2``;
   else ``mu <- nu mu``, ``nu <- 2 nu``. When CG met negative curvature ``d'(B_S + mu I)d
   <= 0``, ``mu`` is raised to at least ``mu - 2 d'(B_S + mu I)d / d'd`` (it fell short of
   making the system positive definite). ``mu = mu_rel * scale`` with ``scale`` the mean
   of the first sample's ``diag(B_S)`` (the average curvature), so the first damping
   ``initial_damping * scale`` does not depend on the units of ``E`` or ``w``.

Which curvature (``kind="auto"``): the Gauss-Newton matrix (positive semi-definite:
CG never meets negative curvature) while the sample is a part of the data, the exact
Hessian once it is all of it: the last iterations are damped exact Newton steps on the
exact objective, converging quadratically as ``mu -> 0``. When CG meets negative
curvature of ``H + mu I`` on its first direction, the iteration falls back to
Gauss-Newton for that solve.

When the sample grows (by ``sample_growth``, up to all shards): when ``||g||`` has
fallen by ``growth_gradient_drop`` since the last growth, or when the ratio the damping
follows stayed below 1/4 for ``growth_patience`` iterates in a row (the sample's model
is poor: more damping would only shorten the steps).

The driver's globalisation only accepts or rejects (`Monotone`); everything the
strategy adapts lives in `state_dict` (JSON with arrays), so a resumed run continues
bitwise.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from .driver import reduction_ratio
from .hf_cg import hf_cg
from .strategies import STRATEGIES, State, Step, StepStrategy
from .subsample import ShardSchedule

__all__ = ["HessianFree"]

KINDS = ("auto", "gauss_newton", "hessian")


def _fingerprint(w: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(w, dtype=float).tobytes()).hexdigest()


def _positive(name, value):
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


class HessianFree(StepStrategy):
    """Subsampled Hessian-free Newton (see the module docstring for the algorithm).

    ``last_info`` is the ``info`` of the last step (CG products and why CG stopped, the
    curvature kind, the sample's shards and rows, the damping, the chosen and the last
    CG iterate, the ratio of the last one).
    """

    name = "hessian-free"
    globalizations = ("monotone",)
    uses_sampled_curvature = True

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 sample_fraction: float = 0.1, sample_growth: float = 2.0, seed: int = 0,
                 growth_gradient_drop: float = 0.1, growth_patience: int = 2,
                 max_cg_iter: int = 250, cg_decay: float = 0.95, precondition_every: int = 5,
                 preconditioner_exponent: float = 0.75, initial_damping: float = 1.0,
                 backtrack: bool = True, min_rows_per_parameter: float = 10.0,
                 damping_ratio: str = "chosen", cg_cap_growth: float = 2.0):
        if structure is not None:
            raise ValueError(f"method 'hessian-free' takes no structure (got {structure!r})")
        self.kind = kind or "auto"
        if self.kind not in KINDS:
            raise ValueError(f"hessian-free kind must be one of {list(KINDS)}, got {kind!r}")
        if not 0 < float(sample_fraction) <= 1:
            raise ValueError(f"sample_fraction must lie in (0, 1], got {sample_fraction!r}")
        self.sample_fraction = float(sample_fraction)
        if not float(sample_growth) > 1:
            raise ValueError(f"sample_growth must be > 1, got {sample_growth!r}")
        self.sample_growth = float(sample_growth)
        self.seed = int(seed)
        if not 0 < float(growth_gradient_drop) < 1:
            raise ValueError(f"growth_gradient_drop must lie in (0, 1), got {growth_gradient_drop!r}")
        self.growth_gradient_drop = float(growth_gradient_drop)
        self.growth_patience = int(growth_patience)
        if isinstance(max_cg_iter, bool) or int(max_cg_iter) < 1:
            raise ValueError(f"max_cg_iter must be an integer >= 1, got {max_cg_iter!r}")
        self.max_cg_iter = int(max_cg_iter)
        if not 0 <= float(cg_decay) <= 1:
            raise ValueError(f"cg_decay must lie in [0, 1], got {cg_decay!r}")
        self.cg_decay = float(cg_decay)
        if isinstance(precondition_every, bool) or int(precondition_every) < 1:
            raise ValueError(f"precondition_every must be an integer >= 1, got {precondition_every!r}")
        self.precondition_every = int(precondition_every)
        self.preconditioner_exponent = float(preconditioner_exponent)
        self.initial_damping = _positive("initial_damping", initial_damping)
        self.backtrack = bool(backtrack)
        if not float(min_rows_per_parameter) >= 0:
            raise ValueError(f"min_rows_per_parameter must be >= 0, got {min_rows_per_parameter!r}")
        self.min_rows_per_parameter = float(min_rows_per_parameter)
        if damping_ratio not in ("chosen", "last"):
            raise ValueError(f"damping_ratio must be 'chosen' or 'last', got {damping_ratio!r}")
        self.damping_ratio = damping_ratio
        if not (float(cg_cap_growth) == 0 or float(cg_cap_growth) >= 1):
            raise ValueError(f"cg_cap_growth must be 0 (no cap) or >= 1, got {cg_cap_growth!r}")
        self.cg_cap_growth = float(cg_cap_growth)
        self._reset()

    # ---------------------------------------------------------------- state
    def _reset(self):
        self._schedule: ShardSchedule | None = None
        self._mu_rel = self.initial_damping
        self._nu = 2.0
        self._scale = None             # mean of the first sample's diag(B_S)
        self._diagonal = None          # diag(G_S) of the last refresh
        self._diagonal_age = 0         # iterates since that refresh
        self._p_prev = None            # last CG iterate of the last solve
        self._g0 = None                # ||g|| at the first iterate
        self._g_growth = None          # ||g|| at the last growth
        self._poor = 0                 # consecutive iterates with rho_last < 1/4
        self._last_w = None            # fingerprint of the iterate of the last solve
        self._shards = None            # the sample of the last solve
        self._cg_cap = None            # products allowed in the next CG run
        self._pending_schedule = None  # a loaded schedule's state, applied once it exists

    def state_dict(self) -> dict:
        arrays = {"diagonal": self._diagonal, "p_prev": self._p_prev}
        return {
            **{k: np.asarray(v, dtype=float) for k, v in arrays.items() if v is not None},
            "schedule": None if self._schedule is None else self._schedule.state_dict(),
            "mu_rel": self._mu_rel, "nu": self._nu, "scale": self._scale,
            "diagonal_age": self._diagonal_age, "g0": self._g0, "g_growth": self._g_growth,
            "poor": self._poor, "last_w": self._last_w, "cg_cap": self._cg_cap,
            "shards": None if self._shards is None else [int(i) for i in self._shards],
        }

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        if not state:
            return
        self._mu_rel, self._nu, self._scale = state["mu_rel"], state["nu"], state["scale"]
        self._diagonal_age, self._g0, self._g_growth = (state["diagonal_age"], state["g0"],
                                                        state["g_growth"])
        self._poor, self._last_w, self._cg_cap = state["poor"], state["last_w"], state["cg_cap"]
        self._shards = None if state["shards"] is None else tuple(state["shards"])
        self._pending_schedule = state["schedule"]
        self._diagonal = None if "diagonal" not in state else np.asarray(state["diagonal"], dtype=float)
        self._p_prev = None if "p_prev" not in state else np.asarray(state["p_prev"], dtype=float)

    def config(self) -> dict:
        return {"method": self.name, "kind": self.kind, "sample_fraction": self.sample_fraction,
                "sample_growth": self.sample_growth, "seed": self.seed,
                "growth_gradient_drop": self.growth_gradient_drop,
                "growth_patience": self.growth_patience, "max_cg_iter": self.max_cg_iter,
                "cg_decay": self.cg_decay, "precondition_every": self.precondition_every,
                "preconditioner_exponent": self.preconditioner_exponent,
                "initial_damping": self.initial_damping, "backtrack": self.backtrack,
                "min_rows_per_parameter": self.min_rows_per_parameter,
                "damping_ratio": self.damping_ratio, "cg_cap_growth": self.cg_cap_growth}

    # ---------------------------------------------------------------- the step
    def _first_size(self, objective) -> int:
        """Shards in the first sample: ``sample_fraction`` of them, and at least enough for
        ``min_rows_per_parameter * d_max`` rows (``d_max``: the longest row of weights)."""
        b = objective.shard_boundaries
        n_shards, n = len(b) - 1, b[-1]
        d_max = max(d for _, d in objective.model.layer_shapes)
        rows = max(self.sample_fraction * n, self.min_rows_per_parameter * d_max)
        return min(n_shards, max(1, math.ceil(rows / (n / n_shards) - 1e-9)))

    def _schedule_for(self, objective) -> ShardSchedule:
        if self._schedule is None:
            n_shards = len(objective.shard_boundaries) - 1
            self._schedule = ShardSchedule(n_shards, size=self._first_size(objective),
                                           seed=self.seed)
            if self._pending_schedule is not None:
                self._schedule.load_state_dict(self._pending_schedule)
                self._pending_schedule = None
        return self._schedule

    def _sample(self, state: State):
        """The sample's curvature at this iterate (kept in ``state.cache`` for retries)."""
        if "sample" not in state.cache:
            schedule = self._schedule_for(state.objective)
            key = _fingerprint(state.w)
            if key != self._last_w or self._shards is None:       # a new iterate
                self._new_iterate(state, schedule)
                self._shards = schedule.draw()
                self._last_w = key
            state.cache["sample"] = state.objective.sampled_curvature(state.w, self._shards)
        return state.cache["sample"]

    def _new_iterate(self, state: State, schedule: ShardSchedule) -> None:
        g_norm = state.gradient_norm
        if self._g0 is None:
            self._g0 = self._g_growth = g_norm
        self._diagonal_age += 1
        if not schedule.complete and (g_norm <= self.growth_gradient_drop * self._g_growth
                                      or self._poor >= self.growth_patience):
            schedule.grow(self.sample_growth)
            self._g_growth, self._poor = g_norm, 0
            self._diagonal_age = self.precondition_every        # refresh on the new sample

    def _kind(self, sample) -> str:
        if self.kind != "auto":
            return self.kind
        return "hessian" if sample.complete else "gauss_newton"

    def _preconditioner(self, sample) -> np.ndarray:
        if self._diagonal is None or self._diagonal_age >= self.precondition_every:
            self._diagonal = sample.diagonal("gauss_newton")
            self._diagonal_age = 0
            if self._scale is None:
                self._scale = float(np.mean(self._diagonal)) or 1.0
        return self._diagonal

    def solve(self, state: State) -> Step:
        sample = self._sample(state)
        diagonal = self._preconditioner(sample)
        mu = self._mu_rel * self._scale
        g = state.gradient
        g_norm = state.gradient_norm
        eta = min(0.5, math.sqrt(g_norm / self._g0)) if self._g0 > 0 else 0.5
        c = (np.maximum(diagonal, 0.0) + mu) ** self.preconditioner_exponent
        x0 = None if self._p_prev is None else self.cg_decay * self._p_prev
        kind = self._kind(sample)
        cap = min(self.max_cg_iter, self._cg_cap or self.max_cg_iter)
        result = hf_cg(lambda v: sample.product(v, kind), g, mu, max_iter=cap,
                       tol=eta * g_norm, preconditioner=c, x0=x0)
        if kind == "hessian" and result.last.iteration == 0 and not result.warm_started:
            kind = "gauss_newton"                       # negative curvature at once
            result = hf_cg(lambda v: sample.product(v, kind), g, mu, max_iter=cap,
                           tol=eta * g_norm, preconditioner=c, x0=x0)
        chosen, ratio_chosen, ratio_last, values = self._backtrack(state, result.iterates)
        self._update_damping(ratio_last if self.damping_ratio == "last" else ratio_chosen)
        if result.case == "negative_curvature":      # mu too small for B + mu I > 0
            needed = mu - 2.0 * result.info["rayleigh"]
            self._mu_rel = max(self._mu_rel, needed / self._scale)
        if self.cg_cap_growth:
            self._cg_cap = max(2, int(self.cg_cap_growth * max(chosen.iteration, 1)))
        self._p_prev = result.last.x
        info = {"case": result.case, "cg_iterations": result.products, "kind": kind,
                "sample_shards": len(sample.shards), "sample_rows": sample.n_sample,
                "damping": mu, "picked": chosen.iteration, "last": result.last.iteration,
                "warm_start": result.warm_started, "ratio_last": ratio_last,
                "backtrack_values": values}
        self.last_info = info
        return Step(chosen.x, max(-chosen.model, 0.0), False, info)

    def _backtrack(self, state: State, iterates):
        """The best saved iterate by ``E`` on all rows (last first, then back while ``E``
        falls): ``(iterate, its ratio, the last iterate's ratio, values computed)``."""
        objective = state.objective

        def ratio(value, iterate):
            return float(reduction_ratio(state.value - value, -iterate.model, state.value))

        last = iterates[-1]
        best, best_value = last, _trial_value(objective, state.w + last.x)
        ratio_last, values = ratio(best_value, last), 1
        if self.backtrack:
            for it in reversed(iterates[:-1]):
                value = _trial_value(objective, state.w + it.x)
                values += 1
                if not value < best_value:
                    break
                best, best_value = it, value
        if best is not last:                 # the objective keeps the last points it saw
            _trial_value(objective, state.w + best.x)
        return best, ratio(best_value, best), ratio_last, values

    def _update_damping(self, ratio: float) -> None:
        if ratio > 0:
            self._mu_rel *= max(1.0 / 3.0, 1.0 - (2.0 * min(ratio, 1.0) - 1.0) ** 3)
            self._nu = 2.0
        else:
            self._mu_rel *= self._nu
            self._nu *= 2.0
        self._mu_rel = min(max(self._mu_rel, 1e-12), 1e12)
        self._poor = self._poor + 1 if ratio < 0.25 else 0


def _trial_value(objective, w) -> float:
    try:
        value = objective.value(w)
    except (FloatingPointError, OverflowError):
        return math.inf
    return value if math.isfinite(value) else math.inf


STRATEGIES[HessianFree.name] = HessianFree
