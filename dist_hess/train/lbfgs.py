"""L-BFGS steps on the exact gradient, handing over to exact Newton steps at the end.

``method="lbfgs"``: the limited-memory BFGS direction (Nocedal 1980; N&W alg. 7.4, the
two-loop recursion) from the last ``memory`` pairs ``s_k = w_{k+1} - w_k``,
``y_k = grad E(w_{k+1}) - grad E(w_k)``, with ``H_0 = gamma I``,
``gamma = s'y / y'y`` of the newest pair (N&W eq. 7.20), and a backtracking
Armijo line search:

- the trial step is ``p = alpha d`` with ``alpha = 1`` (the first iterate:
  ``alpha = min(1, 1 / ||g||)``, a step of length at most one); the predicted reduction
  the driver divides by is the linear one, ``-g'p``, so the driver's ratio test with
  ``eta = c1 = 1e-4`` (`Monotone`) is Armijo's sufficient-decrease condition
  ``E(w + p) <= E(w) + c1 g'p`` (N&W eq. 3.4);
- a rejected trial is re-tried at the same point with ``alpha`` from the minimiser
  of the quadratic through ``E(w)``, ``g'd`` and ``E(w + alpha d)``, kept in
  ``[alpha / 10, alpha / 2]`` (N&W §3.5);
- a pair enters the memory only when ``s'y > 1e-10 ||s|| ||y||`` (the curvature
  condition a Wolfe search would guarantee; skipping the others keeps ``H`` positive
  definite, N&W §7.2); a direction that is not a descent direction (possible only by
  round-off) clears the memory.

The value and the gradient at a trial point come from one pass over the data
(`trial_gradient`): most trials are accepted, and on a cluster a second pass costs a
round trip as well. On the teacher problem of ``benchmarks/bench_train_scale.py`` this
reaches scipy's L-BFGS-B's loss after 1,500 evaluations in about 1,300 (memory 10;
docs/training.md); scipy took 153 evaluations for 150 iterations there, so the
difference is the path the two searches take, not evaluations per iteration.

**Newton at the end.** L-BFGS converges linearly near a minimum and its last digits
are slow; once ``||g|| <= newton_gtol * max(1, |E|)`` (default ``1e-4``, a hundred
times the ``auto`` stopping rule) the strategy hands over to damped exact Newton-CG
steps (`dist_hess.train.hessian_free.HessianFree` on all rows, exact Hessian-vector
products from a kept forward pass, CG warm-started), which converge quadratically
there; it hands over as well when the line search fails (``alpha`` below
``MIN_ALPHA``), where L-BFGS stalls. ``newton_gtol=0`` never hands over. A Newton step
whose CG met negative curvature (the Hessian is not positive definite here, so this is
not yet the region where Newton converges quadratically) hands back to L-BFGS, with its
memory, and the threshold falls tenfold: on the teacher problem the first hand-over at
``||g|| = 0.016`` met an indefinite Hessian, and its Newton steps lowered ``E`` ten
times more slowly per second than the L-BFGS steps before them.

Dot products are numpy's pairwise sums (`dist_hess.train.hf_cg.dot`), not BLAS, so
the steps do not depend on the BLAS thread count; with the fixed reduction tree of the
shard sums a run gives the same bits on any number of workers. The memory, the line
search's state and the Newton phase are in `state_dict`: a resumed run is the
uninterrupted one, bitwise.
"""
from __future__ import annotations

import math

import numpy as np

from .globalization import Monotone
from .hessian_free import HessianFree, _fingerprint
from .hf_cg import dot
from .strategies import STRATEGIES, State, Step, StepStrategy

__all__ = ["LBFGS", "ARMIJO"]

#: Armijo's constant ``c1`` (N&W §3.1): the driver's acceptance threshold for L-BFGS.
ARMIJO = 1e-4
#: A pair is kept only when ``s'y > CURVATURE_GUARD ||s|| ||y||``.
CURVATURE_GUARD = 1e-10
#: Below this step length the line search has failed: the Newton phase takes over.
MIN_ALPHA = 1e-10
#: The Newton phase's options (`HessianFree`): every row, exact Hessian products.
NEWTON_OPTIONS = {"sample_fraction": 1.0, "min_rows_per_parameter": 0.0}


class LBFGS(StepStrategy):
    """L-BFGS with a backtracking Armijo search, exact Newton at the end (module docstring).

    ``kind`` is the Newton phase's curvature (default: the exact Hessian); ``newton_options``
    go to its `HessianFree` (on all rows unless given otherwise). ``last_info`` is the
    ``info`` of the last step (phase, pairs held, step length; the Newton phase's CG).
    """

    name = "lbfgs"
    globalizations = (Monotone(eta=ARMIJO),)
    uses_sampled_curvature = True            # the Newton phase, and direct shard tasks

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 memory: int = 10, newton_gtol: float = 1e-4, newton_options: dict | None = None):
        if structure is not None:
            raise ValueError(f"method 'lbfgs' takes no structure (got {structure!r})")
        if isinstance(memory, bool) or not isinstance(memory, (int, np.integer)) or memory < 1:
            raise ValueError(f"memory must be an integer >= 1, got {memory!r}")
        self.memory = int(memory)
        newton_gtol = float(newton_gtol)
        if not (newton_gtol >= 0 and math.isfinite(newton_gtol)):
            raise ValueError(f"newton_gtol must be a number >= 0, got {newton_gtol!r}")
        self.newton_gtol = newton_gtol
        self.newton_options = dict(NEWTON_OPTIONS, **(newton_options or {}))
        self._newton = HessianFree(kind=kind, **self.newton_options)
        self.last_info: dict = {}
        self._reset()

    def _reset(self):
        self._s: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._w = None             # the iterate of the last solve, its gradient ...
        self._g = None
        self._key = None           # ... and its fingerprint
        self._d = None             # the search direction there
        self._alpha = None         # the step length of the last trial along it
        self._gd = None            # g'd
        self._phase = "lbfgs"
        self._threshold = self.newton_gtol     # the hand-over level, lowered by hand-backs

    # ---------------------------------------------------------------- driver hooks
    @property
    def trial_gradient(self) -> bool:
        """In the L-BFGS phase the driver computes the gradient with the value at a trial."""
        return self._phase == "lbfgs"

    def config(self) -> dict:
        return {"method": self.name, "memory": self.memory, "newton_gtol": self.newton_gtol,
                "newton": {k: v for k, v in self._newton.config().items() if k != "method"}}

    def state_dict(self) -> dict:
        out = {"phase": self._phase, "key": self._key, "alpha": self._alpha, "gd": self._gd,
               "pairs": len(self._s), "threshold": self._threshold}
        if self._s:
            out["s"], out["y"] = np.stack(self._s), np.stack(self._y)
        for name in ("w", "g", "d"):
            value = getattr(self, "_" + name)
            if value is not None:
                out[name] = np.asarray(value, dtype=float)
        for k, v in self._newton.state_dict().items():
            out["newton_" + k] = v
        return out

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        if not state:
            return
        self._phase, self._key = state["phase"], state["key"]
        self._alpha, self._gd = state["alpha"], state["gd"]
        self._threshold = state["threshold"]
        if state["pairs"]:
            s, y = np.asarray(state["s"], dtype=float), np.asarray(state["y"], dtype=float)
            self._s, self._y = [row.copy() for row in s], [row.copy() for row in y]
        for name in ("w", "g", "d"):
            if name in state:
                setattr(self, "_" + name, np.asarray(state[name], dtype=float))
        newton = {k[len("newton_"):]: v for k, v in state.items() if k.startswith("newton_")}
        self._newton.load_state_dict(newton)

    # ---------------------------------------------------------------- the step
    def solve(self, state: State) -> Step:
        if self._phase == "newton":
            return self._newton_step(state)
        key = _fingerprint(state.w)
        if key == self._key and self._d is not None:          # the last trial was rejected
            return self._backtrack(state)
        self._new_iterate(state, key)
        if self._handover(state):
            self._phase = "newton"
            return self._newton_step(state)
        d = self._direction(state.gradient)
        gd = dot(state.gradient, d)
        if not gd < 0:                                        # round-off: start afresh
            self._s, self._y = [], []
            d = -state.gradient
            gd = dot(state.gradient, d)
        alpha = 1.0
        if not self._s:                                       # no pair yet: length <= 1
            alpha = min(1.0, 1.0 / math.sqrt(-gd)) if gd < 0 else 1.0
        self._d, self._gd = d, gd
        return self._step(alpha, backtracked=False)

    def _new_iterate(self, state: State, key: str) -> None:
        """The pair of the accepted step that led here, if it keeps ``H`` positive definite."""
        if self._w is not None:
            s = state.w - self._w
            y = state.gradient - self._g
            sy = dot(s, y)
            if sy > CURVATURE_GUARD * math.sqrt(dot(s, s) * dot(y, y)):
                self._s.append(s)
                self._y.append(y)
                if len(self._s) > self.memory:
                    del self._s[0], self._y[0]
        self._w, self._g, self._key = state.w.copy(), state.gradient.copy(), key

    def _handover(self, state: State) -> bool:
        return state.gradient_norm <= self._threshold * max(1.0, abs(state.value))

    def _direction(self, g: np.ndarray) -> np.ndarray:
        """``-H g`` by the two-loop recursion (N&W alg. 7.4)."""
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(self._s), reversed(self._y)):
            rho = 1.0 / dot(y, s)
            a = rho * dot(s, q)
            q -= a * y
            alphas.append((rho, a))
        if self._s:
            s, y = self._s[-1], self._y[-1]
            q *= dot(s, y) / dot(y, y)
        for (s, y), (rho, a) in zip(zip(self._s, self._y), reversed(alphas)):
            b = rho * dot(y, q)
            q += (a - b) * s
        return -q

    def _backtrack(self, state: State) -> Step:
        """The minimiser of the quadratic through ``E(w)``, ``g'd``, ``E(w + alpha d)``."""
        alpha, gd = self._alpha, self._gd
        trial = state.objective.value(state.w + alpha * self._d)     # kept by the objective
        curvature = trial - state.value - gd * alpha
        new = -gd * alpha * alpha / (2.0 * curvature) if curvature > 0 and math.isfinite(trial) \
            else 0.1 * alpha
        alpha = min(max(new, 0.1 * alpha), 0.5 * alpha)
        if alpha < MIN_ALPHA and self.newton_gtol > 0:          # the line search failed
            self._phase = "newton"
            return self._newton_step(state)
        return self._step(alpha, backtracked=True)

    def _step(self, alpha: float, *, backtracked: bool) -> Step:
        self._alpha = alpha
        info = {"phase": "lbfgs", "pairs": len(self._s), "alpha": alpha, "backtracked": backtracked}
        self.last_info = info
        return Step(alpha * self._d, -alpha * self._gd, False, info)

    def _newton_step(self, state: State) -> Step:
        step = self._newton.solve(state)
        info = dict(step.info, phase="newton")
        if info["case"] == "negative_curvature" or info["kind"] != "hessian":
            # not yet where Newton converges quadratically: back to L-BFGS (this step
            # is still taken), which hands over again at a tenth of the gradient
            self._phase, self._threshold = "lbfgs", self._threshold / 10.0
            self._w = self._d = None          # no secant pair across the Newton steps
            info["handed_back"] = True
        self.last_info = info
        return Step(step.direction, step.model_decrease, step.hits_boundary, info, step.norm)


STRATEGIES[LBFGS.name] = LBFGS
