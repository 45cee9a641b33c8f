"""Step strategies: each turns the state at an iterate into a trial step, nothing more.

The driver owns acceptance, the radius or damping, stopping and checkpoints
(STYLE.md habit 5, as scipy's ``_trustregion.py``); a strategy implements
``solve(state) -> Step`` and may keep factorisations in ``state.cache``, which lives
as long as the iterate (a rejected step is re-solved at the same point with a new
radius or damping and reuses them). What a strategy carries from one iterate to the
next (a phase, counters, a schedule, a random generator, a warm start) it returns from
``state_dict()`` (JSON values and numpy arrays) and takes back in ``load_state_dict``:
the driver stores it in every checkpoint, so a resumed run is the uninterrupted one.

=================  ============================================  ======================
method             step                                          globalisation
=================  ============================================  ======================
``newton``         exact Hessian; trust-region subproblem        trust region
                   nearly exact where it is positive definite
                   (N&W alg. 4.3), Steihaug-CG on it elsewhere
``newton-cg``      Steihaug-CG on exact Hessian-vector           trust region
                   products (N&W alg. 7.2)
``block-newton``   Steihaug-CG on exact Hessian-vector           trust region in the
                   products preconditioned by the row or layer   preconditioner's norm
                   blocks made positive definite (CGT alg.       (default) or damping
                   7.5.1); or the pure block step
``lm``             Gauss-Newton matrix (full or blocks)          damping (trainlm)
                   + mu I, Levenberg-Marquardt; damped exact
                   Hessian near a large-residual minimum
                   (Madsen-Nielsen-Tingleff hybrid)
=================  ============================================  ======================
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..curvature import HVP_KINDS as CURVATURE_KINDS
from ..memory import check_allocation
from .blocks import BlockDiagonal, BlockEigensystem, BlockGroup
from .globalization import Damping
from .subproblem import (damped_cg, lanczos_trust_region, solve_damped_dense, solve_damped_diagonal,
                         solve_trust_region_dense, solve_trust_region_diagonal,
                         solve_trust_region_exact, steihaug_cg)

__all__ = ["State", "Step", "StepStrategy", "ExactNewton", "NewtonCG", "BlockNewton",
           "positive_definite_eigenvalues",
           "LevenbergMarquardt", "STRATEGIES", "make_strategy"]

EPS = np.finfo(float).eps
#: Default cap on CG iterations per step, in multiples of ``t``. CG ends within ``t``
#: products in exact arithmetic, but needs more in floating point on ill-conditioned
#: curvature; a cap of ``t`` would leave those steps inexact (docs/training.md).
CG_ITER_FACTOR = 3
#: block-newton's default ``min_global_curvature_ratio`` (CG and Lanczos solvers): every
#: block's eigenvalues are also floored at this fraction of the largest over all blocks,
#: so that nearly flat blocks (the rows of saturated units) do not get a tiny metric
#: and move far inside the ``||p||_M`` trust region (docs/training.md).
GLOBAL_CURVATURE_FLOOR = 1e-3
#: Copies of the full ``t x t`` matrix the dense solvers (`solve_trust_region_exact`,
#: `solve_damped_dense`) hold at once: the curvature, its symmetrised copy, the identity,
#: the shifted matrix and its Cholesky factor. Checked against the memory limit
#: (`dist_hess.memory`) before the curvature is asked for.
DENSE_SOLVE_COPIES = 5
#: ``newton(reuse_curvature=True)`` keeps the Hessian it holds after an accepted step
#: with at least this reduction ratio (the radius rule's threshold below which it shrinks
#: the radius): the model built on it still predicted the decrease.
REUSE_RATIO = 0.25
#: Copies of the blocks a block eigendecomposition holds at once (the blocks, their
#: symmetrised copy, the eigenvectors, ``eigh``'s workspace).
EIGH_COPIES = 4
_LOW_MEMORY = ("method='block-newton' (row blocks, memory O(sum_k s_k d_k^2))",
               "method='newton-cg' (Hessian-vector products, memory O(t))")


@dataclass
class State:
    """What a strategy may read at the current iterate.

    ``radius`` is set under a trust region, ``damping`` under damping (the other is
    ``None``). ``ratio`` is the reduction ratio of the last trial step (``None`` at the
    first iterate and after a trial point where ``E`` was not finite). ``cache`` is
    private to the strategy and discarded when ``w`` changes.
    """

    w: np.ndarray
    value: float
    gradient: np.ndarray
    objective: object
    iteration: int = 0
    radius: float | None = None
    damping: float | None = None
    ratio: float | None = None
    cache: dict = field(default_factory=dict)

    @property
    def gradient_norm(self) -> float:
        return float(np.linalg.norm(self.gradient))

    def curvature(self, kind: str, structure: str):
        key = ("curvature", kind, structure)
        if key not in self.cache:
            self.cache[key] = self.objective.curvature(self.w, kind, structure)
        return self.cache[key]

    def hvp(self, v: np.ndarray, kind: str) -> np.ndarray:
        return self.objective.hvp(self.w, v, kind)


@dataclass(frozen=True)
class Step:
    """A trial step ``direction`` with ``model_decrease = -m(direction) >= 0`` (the
    predicted reduction), whether it ``hits_boundary`` of the trust region, ``info`` for
    the record (multiplier, CG iterations, shifts...), and ``norm``, its length in the
    trust region's norm when that is not the Euclidean one (a preconditioner's
    ``||p||_M``; the driver then updates the radius in that norm)."""

    direction: np.ndarray
    model_decrease: float
    hits_boundary: bool = False
    info: dict = field(default_factory=dict)
    norm: float | None = None


class StepStrategy(ABC):
    """Base class: ``solve(state) -> Step``; `globalizations` lists the rules it supports
    (the first is the default); `curvature_request` the ``(kind, structure)`` it will
    read at every iterate, or ``None``; `state_dict` / `load_state_dict` what it carries
    between iterates (default: nothing)."""

    name: ClassVar[str]
    globalizations: ClassVar[tuple]          # names, or rules with the strategy's defaults
    #: Whether the strategy reads `Objective.sampled_curvature` (then a Dask objective
    #: evaluates value and gradient by direct shard tasks as well).
    uses_sampled_curvature: ClassVar[bool] = False
    #: Whether the driver computes the gradient together with the value at a trial point
    #: (one pass over the data; for strategies whose trials are mostly accepted).
    trial_gradient: bool = False

    @property
    def curvature_request(self) -> tuple[str, str] | None:
        return None

    @abstractmethod
    def solve(self, state: State) -> Step: ...

    def config(self) -> dict:
        """JSON description (stored in checkpoints): the method and every option that
        changes its steps (a resume with another config is refused)."""
        return {"method": self.name}

    def state_dict(self) -> dict:
        """Everything the strategy carries from one iterate to the next: a JSON object
        whose top-level values may also be numpy arrays (stored as zarr arrays). The
        driver stores it in every checkpoint; ``{}`` for a strategy that keeps nothing."""
        return {}

    def load_state_dict(self, saved: dict) -> None:
        """Take back what `state_dict` returned, before the first `solve` of a resumed run."""
        if saved:
            raise ValueError(f"method {self.name!r} keeps no state between iterations, "
                             f"but the checkpoint holds {sorted(saved)}")


class Held:
    """What a strategy keeps from an earlier iterate while its steps succeed: at a new
    iterate reached by a step with ``ratio >= REUSE_RATIO`` the held value serves; a step
    from it that is rejected is re-solved with the value computed at the iterate
    (a lazy, Shamanskii-type Newton method: Doikov, Chayti & Jaggi 2023). The trust-region
    ratio still judges every step against the true ``E``."""

    def __init__(self):
        self.value = None

    def get(self, state: State, key, compute):
        """``(value, held)``: the value for ``state`` under cache ``key`` and whether it is
        the held one; ``compute()`` evaluates it at ``state``."""
        if key in state.cache:
            return state.cache[key], False
        mark = ("held", key)
        retry = state.cache.pop(mark, False)        # a step from the held value failed here
        if not retry and self.value is not None and state.ratio is not None \
                and state.ratio >= REUSE_RATIO:
            state.cache[mark] = True
            return self.value, True
        self.value = state.cache[key] = compute()
        return self.value, False


def _check_kind(kind: str, allowed=CURVATURE_KINDS) -> str:
    if kind not in allowed:
        raise ValueError(f"curvature kind {kind!r} is not available here; choose from {list(allowed)}")
    return kind


def _rounding_level(state: State) -> float:
    """Reductions of ``E`` below this cannot be told from round-off (cf. the driver's guard)."""
    return 100.0 * EPS * max(1.0, abs(state.value))


def _check_max_cg_iter(max_cg_iter) -> int | None:
    if max_cg_iter is not None and (isinstance(max_cg_iter, bool) or int(max_cg_iter) < 1):
        raise ValueError(f"max_cg_iter must be None or an integer >= 1, got {max_cg_iter!r}")
    return None if max_cg_iter is None else int(max_cg_iter)


def _check_forcing_exponent(forcing_exponent) -> float:
    try:
        value = float(forcing_exponent)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(forcing_exponent, bool) or not 0 <= value < math.inf:
        raise ValueError(f"forcing_exponent must be a finite number >= 0, got {forcing_exponent!r}")
    return value


def _cg_limits(state: State, forcing_exponent: float, max_cg_iter: int | None) -> tuple[float, int]:
    """CG's residual tolerance ``min(1/2, ||g||^forcing_exponent) ||g||`` (N&W eq. 7.3) and
    its cap on products (``max_cg_iter``, default ``CG_ITER_FACTOR * t``)."""
    g_norm = state.gradient_norm
    return (min(0.5, g_norm ** forcing_exponent) * g_norm,
            max_cg_iter or CG_ITER_FACTOR * state.w.shape[0])


def _check_dense_memory(state: State, method: str, structure: str, copies: int, ways) -> None:
    """Refuse, before the curvature is computed, a method whose ``t x t`` (``full``) or
    ``t_k x t_k`` (``layer``) matrices would exceed the memory limit (row blocks pass)."""
    if structure == "full":
        sizes = [state.w.shape[0]]
    elif structure == "layer":
        sizes = [sl.stop - sl.start for sl in state.objective.layer_slices]
    else:
        return
    largest = max(sizes)
    check_allocation(copies * 8 * sum(n * n for n in sizes),
                     f"method {method!r} at t = {state.w.shape[0]:,} ({structure} curvature, "
                     f"largest block {largest:,} x {largest:,}, {copies} copies)", ways)


def _no_structure(method: str, structure) -> None:
    if structure is not None:
        raise ValueError(f"method {method!r} takes no structure (got {structure!r})")


class ExactNewton(StepStrategy):
    """Full exact curvature ``B`` (``t x t``) and a trust region (`solve_trust_region_dense`).

    ``indefinite="cg"`` (default): where ``B`` is positive definite the subproblem is
    solved nearly exactly (N&W alg. 4.3; the Newton step from one Cholesky factorisation
    when it lies inside), elsewhere by Steihaug-CG on products with the formed ``B``
    (CG stops at residual ``min(1/2, ||g||^forcing_exponent) ||g||``, at most
    ``max_cg_iter`` products, default ``3t``; exponent 1, quadratic convergence (N&W
    thm. 7.2), also where the Hessian at the minimum is singular, e.g. along softmax's
    flat direction, and every late step goes through CG: with 0.5 the gradient norm fell
    only with order 1.5 there). ``indefinite="exact"``: nearly exactly
    everywhere (Moré-Sorensen with the hard case). The exact solution of an indefinite
    model goes along its most negative eigenvector whenever the radius binds; from
    random starts on small tanh networks that took 4 to 7 of the first 10 steps
    (Steihaug-CG: 0 to 4) and more starts ended above L-BFGS-B's loss
    (docs/training.md).

    ``reuse_curvature=True`` (``method="auto"``'s choice): after an accepted step with
    ratio ``>= REUSE_RATIO`` the next iterate's model uses the Hessian held from before
    (a lazy, Shamanskii-type Newton method; Doikov, Chayti & Jaggi 2023), and a step from
    a held Hessian that is rejected is re-solved with the Hessian evaluated at the
    iterate. The trust-region ratio still judges every step against the true ``E``; near
    a minimum the held steps converge linearly at a rate that falls with the distance
    to where the Hessian was evaluated. The held Hessian is the strategy's state
    (checkpointed).
    """

    name = "newton"
    globalizations = ("trust-region",)
    INDEFINITE = ("cg", "exact")

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 k_easy: float = 0.1, k_hard: float = 0.2, max_factorizations: int = 50,
                 indefinite: str = "cg", forcing_exponent: float = 1.0,
                 max_cg_iter: int | None = None, reuse_curvature: bool = False):
        if structure not in (None, "full"):
            raise ValueError(f"method 'newton' uses the full matrix, got structure {structure!r}")
        if indefinite not in self.INDEFINITE:
            raise ValueError(f"indefinite must be one of {list(self.INDEFINITE)}, got {indefinite!r}")
        self.kind = _check_kind(kind or "hessian")
        self.k_easy, self.k_hard = float(k_easy), float(k_hard)
        self.max_factorizations = int(max_factorizations)
        self.indefinite = indefinite
        self.forcing_exponent = _check_forcing_exponent(forcing_exponent)
        self.max_cg_iter = _check_max_cg_iter(max_cg_iter)
        self.reuse_curvature = bool(reuse_curvature)
        self._held = Held()

    @property
    def curvature_request(self):
        return (self.kind, "full")

    def solve(self, state):
        _check_dense_memory(state, self.name, "full", DENSE_SOLVE_COPIES, _LOW_MEMORY)
        held = False
        if self.reuse_curvature:
            B, held = self._held.get(state, "held_curvature", lambda: np.asarray(
                state.curvature(self.kind, "full"), dtype=float))
        else:
            B = np.asarray(state.curvature(self.kind, "full"), dtype=float)
        if self.indefinite == "exact":
            sol = solve_trust_region_exact(B, state.gradient, state.radius, k_easy=self.k_easy,
                                           k_hard=self.k_hard, max_iter=self.max_factorizations)
        else:
            tol, max_cg_iter = _cg_limits(state, self.forcing_exponent, self.max_cg_iter)
            sol = solve_trust_region_dense(B, state.gradient, state.radius, tol=tol,
                                           max_cg_iter=max_cg_iter,
                                           min_decrease=_rounding_level(state),
                                           k_easy=self.k_easy, k_hard=self.k_hard,
                                           max_iter=self.max_factorizations)
        return Step(sol.step, sol.model_decrease, sol.hits_boundary,
                    {"case": sol.case, "multiplier": sol.multiplier, "iterations": sol.iterations,
                     "held_curvature": held})

    def config(self):
        return {"method": self.name, "kind": self.kind, "k_easy": self.k_easy,
                "k_hard": self.k_hard, "max_factorizations": self.max_factorizations,
                "indefinite": self.indefinite, "forcing_exponent": self.forcing_exponent,
                "max_cg_iter": self.max_cg_iter, "reuse_curvature": self.reuse_curvature}

    def state_dict(self):
        """With ``reuse_curvature``: ``curvature``, the held ``B`` (``None`` before the
        first step)."""
        if not self.reuse_curvature:
            return {}
        return {"curvature": self._held.value}

    def load_state_dict(self, saved):
        if not self.reuse_curvature:
            return super().load_state_dict(saved)
        if not saved:
            return
        if set(saved) != {"curvature"}:
            raise ValueError(f"newton strategy state must hold the curvature, got {sorted(saved)}")
        held = saved["curvature"]
        self._held.value = None if held is None else np.array(held, dtype=float)


class NewtonCG(StepStrategy):
    """Steihaug-CG on exact curvature-vector products (N&W alg. 7.2).

    CG stops at residual ``min(1/2, ||g||^forcing_exponent) ||g||`` (N&W eq. 7.3 with
    exponent 1/2: superlinear; 1: quadratic) or after ``max_cg_iter`` products
    (default ``3t``, `CG_ITER_FACTOR`).
    """

    name = "newton-cg"
    globalizations = ("trust-region",)

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 max_cg_iter: int | None = None, forcing_exponent: float = 0.5):
        _no_structure(self.name, structure)
        self.kind = _check_kind(kind or "hessian")
        self.max_cg_iter = _check_max_cg_iter(max_cg_iter)
        self.forcing_exponent = _check_forcing_exponent(forcing_exponent)

    def solve(self, state):
        tol, max_iter = _cg_limits(state, self.forcing_exponent, self.max_cg_iter)
        sol = steihaug_cg(lambda v: state.hvp(v, self.kind), state.gradient, state.radius,
                          tol=tol, max_iter=max_iter, min_decrease=_rounding_level(state))
        return Step(sol.step, sol.model_decrease, sol.hits_boundary,
                    {"case": sol.case, "cg_iterations": sol.iterations})

    def config(self):
        return {"method": self.name, "kind": self.kind, "max_cg_iter": self.max_cg_iter,
                "forcing_exponent": self.forcing_exponent}


def _eigensystem(state: State, kind: str, structure: str, method: str) -> BlockEigensystem:
    key = ("eigensystem", kind, structure)
    if key not in state.cache:
        _check_dense_memory(state, method, structure, EIGH_COPIES,
                            ("structure='row'", "method='newton-cg' (Hessian-vector products)"))
        obj = state.objective
        blocks = BlockDiagonal.from_curvature(state.curvature(kind, structure), structure,
                                              obj.layer_slices, obj.n_params)
        state.cache[key] = blocks.eigh()
    return state.cache[key]


def positive_definite_eigenvalues(eigenvalue_blocks, *, modification: str = "shift",
                                  min_curvature_ratio: float = 1e-6,
                                  min_global_curvature_ratio: float = 0.0):
    """Make every block positive definite, block by block, in its eigenbasis.

    ``floor_b = max(min_curvature_ratio * max(max|lambda_b|, sqrt(eps) lambda_all),
    min_global_curvature_ratio * lambda_all)`` with ``lambda_all`` the largest
    ``|lambda|`` over all blocks (the second term keeps nearly flat blocks, e.g. the
    rows of saturated units, from getting a tiny metric);
    ``shift``: ``lambda_b + sigma_b`` with ``sigma_b = max(0, floor_b - min lambda_b)``
    (the block plus a multiple of the identity, just above its most negative
    eigenvalue); ``absolute``: ``max(|lambda_b|, floor_b)`` (saddle-free Newton).
    Returns the modified blocks and the shifts ``sigma_b`` (one array per group).
    """
    scales = [np.max(np.abs(lam), axis=1) for lam in eigenvalue_blocks]
    overall = max((float(np.max(s)) for s in scales), default=0.0) or 1.0
    out, shifts = [], []
    for lam, scale in zip(eigenvalue_blocks, scales):
        floor = np.maximum(min_curvature_ratio * np.maximum(scale, np.sqrt(np.finfo(float).eps) * overall),
                           min_global_curvature_ratio * overall)
        if modification == "shift":
            sigma = np.maximum(0.0, floor - lam[:, 0])        # eigh sorts ascending
            out.append(lam + sigma[:, None])
            shifts.append(sigma)
        elif modification == "absolute":
            mod = np.maximum(np.abs(lam), floor[:, None])
            out.append(mod)
            shifts.append(np.max(mod - lam, axis=1))
        else:
            raise ValueError(f"modification must be 'shift' or 'absolute', got {modification!r}")
    return out, shifts


class BlockNewton(StepStrategy):
    """Row or layer blocks of the exact curvature, each made positive definite.

    ``M = blockdiag(H_b + sigma_b I)`` (`positive_definite_eigenvalues`) is computed once
    per iterate, from one evaluation of the blocks. Two ways to use it (``solver``):

    - ``"cg"`` (default): ``M`` *preconditions* Steihaug-CG on exact curvature-vector
      products of the whole curvature ``B`` (block-Jacobi preconditioning; CGT alg.
      7.5.1, N&W alg. 7.2 preconditioned), the trust region being the ellipsoid
      ``||p||_M <= radius``; under damping, preconditioned CG on ``(B + mu M) p = -g``.
      The model is the exact ``m(p) = g'p + 1/2 p'Bp``, coupling between rows and
      layers included, so the method converges like Newton's (superlinearly with
      ``forcing_exponent`` 1/2, quadratically with 1) while each iteration costs one
      evaluation of the blocks and a few products (``max_cg_iter``, default ``3t``).
      CG stops at residual ``min(1/2, ||g||^forcing_exponent) ||g||``.
      ``min_global_curvature_ratio`` (default ``1e-3``) floors every block's eigenvalues at
      that fraction of the largest over all blocks as well (docs/training.md).
    - ``"lanczos"``: the same model and ellipsoid, solved by the generalised Lanczos
      method (GLTR, `lanczos_trust_region`), which goes on past the boundary and
      negative curvature towards the subproblem's solution on the Krylov space.
    - ``"block"``: the pure block step, ``M`` taken as the model (``m(p) = g'p +
      1/2 p'Mp``): under a trust region solved exactly in the blocks' eigenbasis (one
      multiplier for all blocks, `solve_trust_region_diagonal`), under damping
      ``p = -(M + mu I)^{-1} g``. No products, but it ignores the coupling between
      blocks and crawls when that coupling matters.
    """

    name = "block-newton"
    globalizations = ("trust-region", "damping")
    SOLVERS = ("cg", "lanczos", "block")

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 solver: str = "cg", modification: str | None = None,
                 min_curvature_ratio: float | None = None,
                 min_global_curvature_ratio: float | None = None, max_cg_iter: int | None = None,
                 forcing_exponent: float = 1.0, reuse_preconditioner: bool = False):
        self.kind = _check_kind(kind or "hessian")
        self.structure = structure or "row"
        if self.structure not in ("row", "layer", "full"):
            raise ValueError(f"block-newton structure must be 'row', 'layer' or 'full', "
                             f"got {self.structure!r}")
        if solver not in self.SOLVERS:
            raise ValueError(f"block-newton solver must be one of {list(self.SOLVERS)}, "
                             f"got {solver!r}")
        self.solver = solver
        cg = solver != "block"
        modification = modification or ("absolute" if cg else "shift")
        if modification not in ("shift", "absolute"):
            raise ValueError(f"modification must be 'shift' or 'absolute', got {modification!r}")
        self.modification = modification
        self.min_curvature_ratio = float(min_curvature_ratio if min_curvature_ratio is not None
                                         else (1e-3 if cg else 1e-6))
        self.min_global_curvature_ratio = float(
            min_global_curvature_ratio if min_global_curvature_ratio is not None
            else (GLOBAL_CURVATURE_FLOOR if cg else 0.0))
        if not 0.0 <= self.min_global_curvature_ratio <= 1.0:
            raise ValueError(f"min_global_curvature_ratio must lie in [0, 1], "
                             f"got {min_global_curvature_ratio!r}")
        self.max_cg_iter = _check_max_cg_iter(max_cg_iter)
        self.forcing_exponent = _check_forcing_exponent(forcing_exponent)
        self.reuse_preconditioner = bool(reuse_preconditioner)
        self._held = Held()

    @property
    def curvature_request(self):
        return (self.kind, self.structure)

    def _block_model(self, state) -> tuple[BlockEigensystem, float]:
        """``M`` at ``state`` in its eigenbasis, and the largest shift applied to a block."""
        eig = _eigensystem(state, self.kind, self.structure, self.name)
        values, shifts = positive_definite_eigenvalues(
            eig.eigenvalue_blocks, modification=self.modification,
            min_curvature_ratio=self.min_curvature_ratio,
            min_global_curvature_ratio=self.min_global_curvature_ratio)
        max_shift = max((float(np.max(s, initial=0.0)) for s in shifts), default=0.0)
        return eig.with_eigenvalues(values), max_shift

    def _blocks(self, state) -> tuple[BlockEigensystem, float]:
        """``M`` in its eigenbasis and its largest shift: evaluated at ``state``, or with
        ``reuse_preconditioner`` held from an earlier iterate (`Held`)."""
        if self.reuse_preconditioner:
            return self._held.get(state, "block_model", lambda: self._block_model(state))[0]
        if "block_model" not in state.cache:
            state.cache["block_model"] = self._block_model(state)
        return state.cache["block_model"]

    def solve(self, state):
        eig, max_shift = self._blocks(state)
        if self.solver == "block":
            gamma = eig.to_coefficients(state.gradient)
            if state.radius is not None:
                sol = solve_trust_region_diagonal(eig.eigenvalues, gamma, state.radius)
            else:
                sol = solve_damped_diagonal(eig.eigenvalues, gamma, state.damping)
            return Step(eig.from_coefficients(sol.step), sol.model_decrease, sol.hits_boundary,
                        {"case": sol.case, "multiplier": sol.multiplier, "max_shift": max_shift})
        tol, max_iter = _cg_limits(state, self.forcing_exponent, self.max_cg_iter)
        hvp = lambda v: state.hvp(v, self.kind)  # noqa: E731
        if state.radius is not None:
            if self.solver == "lanczos":
                sol = lanczos_trust_region(hvp, state.gradient, state.radius, tol=tol,
                                           max_iter=max_iter, preconditioner=eig)
            else:
                sol = steihaug_cg(hvp, state.gradient, state.radius, tol=tol, max_iter=max_iter,
                                  preconditioner=eig, min_decrease=_rounding_level(state))
        else:
            sol = damped_cg(hvp, state.gradient, state.damping, tol=tol, max_iter=max_iter,
                            preconditioner=eig)
        return Step(sol.step, sol.model_decrease, sol.hits_boundary,
                    {"case": sol.case, "cg_iterations": sol.iterations, "max_shift": max_shift},
                    norm=sol.norm)

    def config(self):
        return {"method": self.name, "kind": self.kind, "structure": self.structure,
                "solver": self.solver, "modification": self.modification,
                "min_curvature_ratio": self.min_curvature_ratio,
                "min_global_curvature_ratio": self.min_global_curvature_ratio, "max_cg_iter": self.max_cg_iter,
                "forcing_exponent": self.forcing_exponent,
                "reuse_preconditioner": self.reuse_preconditioner}

    def state_dict(self):
        """With ``reuse_preconditioner``: the held ``M`` (``None`` before the first step):
        ``groups`` (``[start, n_blocks, size]`` each), ``max_shift`` and per group ``k``
        the arrays ``eigenvalues_k``, ``eigenvectors_k``."""
        if not self.reuse_preconditioner:
            return {}
        if self._held.value is None:
            return {"groups": None}
        eig, max_shift = self._held.value
        out = {"groups": [[g.start, g.n_blocks, g.size] for g in eig.groups], "max_shift": max_shift}
        for k, (lam, q) in enumerate(zip(eig.eigenvalue_blocks, eig.eigenvectors)):
            out[f"eigenvalues_{k}"], out[f"eigenvectors_{k}"] = lam, q
        return out

    def load_state_dict(self, saved):
        if not self.reuse_preconditioner:
            return super().load_state_dict(saved)
        if not saved or saved.get("groups") is None:
            return
        try:
            groups = [BlockGroup(*map(int, g)) for g in saved["groups"]]
            eig = BlockEigensystem(groups, [saved[f"eigenvalues_{k}"] for k in range(len(groups))],
                                   [saved[f"eigenvectors_{k}"] for k in range(len(groups))],
                                   sum(g.n_blocks * g.size for g in groups))
            self._held.value = (eig, float(saved["max_shift"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"block-newton strategy state must hold groups, max_shift and "
                             f"their eigensystems, got {sorted(saved)}") from err


class LevenbergMarquardt(StepStrategy):
    """``p = -(G + mu s I)^{-1} g`` with ``G`` the generalised Gauss-Newton matrix (full,
    row or layer blocks), ``mu`` by the driver's trainlm schedule (x10 after a failed
    step, /10 after an accepted one) and ``s`` the largest diagonal entry of ``G`` at the
    first iterate (the strategy's state): the damping is relative to the curvature's
    scale, as in Madsen, Nielsen & Tingleff (2004, §3.2: ``mu_0 = tau max_i a_ii``),
    and the method's default rule starts at ``tau = 1``, their choice for a start far
    from the solution (``relative=False``: ``s = 1``, MATLAB trainlm's absolute ``mu``).
    With trainlm's absolute ``mu_0 = 1e-3`` the first steps are nearly undamped
    Gauss-Newton steps; along the nearly flat directions of ``G`` (the biases of
    saturated hidden units, which no L2 penalty holds) they are tens of units long,
    the units they saturate stay saturated, and the fits end in minima with dead
    units, above L-BFGS-B's from the same start (docs/training.md). Blocks are
    eigendecomposed once per iterate, so retries with a larger ``mu`` cost ``O(t)``; the
    full matrix is factorised by Cholesky for each ``mu`` (`solve_damped_dense`: an
    eigendecomposition costs about 27 factorisations, more than the retries of a
    typical iterate).

    Gauss-Newton converges only linearly when the residual curvature ``S = H - G`` is
    not small at the minimum, and not at all when ``G^{-1}S`` has spectral radius above
    one, which is common for real networks (docs/training.md). With ``hybrid=True``
    (default) the method is the hybrid of Madsen, Nielsen & Tingleff (2004, alg. 3.16)
    with the exact Hessian in place of their BFGS matrix: after ``switch_after``
    consecutive accepted steps with ``||g||_inf < switch_ratio * E`` (a minimum with a
    large residual is near) or with reduction ratio below ``poor_ratio`` (the
    Gauss-Newton model over-predicts the decrease: the residual curvature ``S`` matters
    where the step goes) it takes damped Newton steps ``-(H + mu I)^{-1} g`` (``H``
    shifted to be positive definite if it is not), which converge quadratically as
    ``mu`` falls, and goes back to Gauss-Newton when an accepted step fails to decrease
    ``||g||_inf``.
    ``hybrid=False`` is plain Levenberg-Marquardt. The phase, the count of qualifying
    steps and the last point seen are the strategy's state (`state_dict`), checkpointed
    with every iteration.
    """

    name = "lm"
    globalizations = (Damping(initial=1.0),)
    PHASES = ("gauss_newton", "hessian")

    def __init__(self, *, kind: str | None = None, structure: str | None = None,
                 hybrid: bool = True, switch_after: int = 3, switch_ratio: float = 0.02,
                 poor_ratio: float = 0.25, relative: bool = True):
        self.kind = _check_kind(kind or "gauss_newton", ("gauss_newton",))
        self.structure = structure or "full"
        if self.structure not in ("row", "layer", "full"):
            raise ValueError(f"lm structure must be 'full', 'row' or 'layer', got {self.structure!r}")
        if isinstance(switch_after, bool) or int(switch_after) < 1:
            raise ValueError(f"switch_after must be an integer >= 1, got {switch_after!r}")
        self.hybrid = bool(hybrid)
        self.switch_after, self.switch_ratio = int(switch_after), float(switch_ratio)
        self.poor_ratio = float(poor_ratio)
        self.relative = bool(relative)
        self._phase, self._count, self._last = "gauss_newton", 0, None
        self._scale: float | None = None

    def _damping(self, state) -> float:
        """``mu s``: the driver's ``mu`` times the scale ``s`` (set at the first iterate)."""
        if not self.relative:
            return state.damping
        if self._scale is None:
            self._scale = _largest_diagonal(state.curvature(self.kind, self.structure),
                                            self.structure) or 1.0
        return state.damping * self._scale

    @property
    def curvature_request(self):
        return (self.kind, self.structure)

    def _update_phase(self, state) -> None:
        """MNT alg. 3.16: count accepted Gauss-Newton steps that look like a large-residual
        minimum; leave the Newton phase when ``||g||_inf`` stops decreasing."""
        g_inf = float(np.max(np.abs(state.gradient), initial=0.0))
        point = (state.iteration, state.value, g_inf)
        last, self._last = self._last, point
        if last is None or state.value == last[1] and g_inf == last[2]:
            return                                  # first call, or a retry at the same point
        if self._phase == "gauss_newton":
            near = g_inf < self.switch_ratio * abs(state.value)
            poor = state.ratio is not None and state.ratio < self.poor_ratio
            self._count = self._count + 1 if near or poor else 0
            if self._count >= self.switch_after:
                self._phase, self._count = "hessian", 0
        elif g_inf >= last[2]:
            self._phase = "gauss_newton"

    def solve(self, state):
        if self.hybrid:
            self._update_phase(state)
        kind = self._phase if self.hybrid else self.kind
        info = {"phase": kind}
        if self.structure == "full":
            _check_dense_memory(state, self.name, "full", DENSE_SOLVE_COPIES,
                                ("structure='row' or 'layer' (lm on blocks)",) + _LOW_MEMORY)
            sol = solve_damped_dense(state.curvature(kind, "full"), state.gradient,
                                     self._damping(state), semidefinite=kind == "gauss_newton")
            return Step(sol.step, sol.model_decrease, False, {"case": sol.case, **info})
        eig = _eigensystem(state, kind, self.structure, self.name)
        if kind == "hessian":
            lam = eig.eigenvalues
            floor = np.sqrt(EPS) * max(float(np.max(np.abs(lam), initial=0.0)), np.finfo(float).tiny)
            lam = lam + max(0.0, floor - float(np.min(lam)))
        else:
            lam = np.maximum(eig.eigenvalues, 0.0)   # G is positive semi-definite; drop round-off
        sol = solve_damped_diagonal(lam, eig.to_coefficients(state.gradient), self._damping(state))
        return Step(eig.from_coefficients(sol.step), sol.model_decrease, False,
                    {"case": sol.case, **info})

    def config(self):
        return {"method": self.name, "kind": self.kind, "structure": self.structure,
                "hybrid": self.hybrid, "switch_after": self.switch_after,
                "switch_ratio": self.switch_ratio, "poor_ratio": self.poor_ratio,
                "relative": self.relative}

    def state_dict(self):
        """``phase``, ``count`` (qualifying Gauss-Newton steps in a row), ``last``
        (``[iteration, E, ||g||_inf]`` at the last point seen, or ``None``) and ``scale``
        (``s``, ``None`` before the first step)."""
        return {"phase": self._phase, "count": self._count,
                "last": None if self._last is None else list(self._last), "scale": self._scale}

    def load_state_dict(self, saved):
        if not saved:                        # a checkpoint written before strategies had state
            return
        if not {"phase", "count", "last"} <= set(saved) <= {"phase", "count", "last", "scale"} \
                or saved["phase"] not in self.PHASES:
            raise ValueError(f"lm strategy state must have a phase in {list(self.PHASES)}, "
                             f"a count, a last point and a scale, got {saved!r}")
        last, scale = saved["last"], saved.get("scale")
        self._phase, self._count = saved["phase"], int(saved["count"])
        self._last = None if last is None else (int(last[0]), float(last[1]), float(last[2]))
        self._scale = None if scale is None else float(scale)


def _largest_diagonal(curvature, structure: str) -> float:
    """The largest diagonal entry of a curvature in ``structure`` (full, row or layer blocks)."""
    if structure == "full":
        return float(np.max(np.diagonal(np.asarray(curvature)), initial=0.0))
    return max((float(np.max(np.diagonal(np.asarray(b), axis1=-2, axis2=-1), initial=0.0))
                for b in curvature), default=0.0)


STRATEGIES: dict[str, type[StepStrategy]] = {
    cls.name: cls for cls in (ExactNewton, NewtonCG, BlockNewton, LevenbergMarquardt)}


def make_strategy(method: str, *, kind=None, structure=None, options=None) -> StepStrategy:
    """The strategy registered under ``method`` with its options."""
    try:
        cls = STRATEGIES[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known methods: {list(STRATEGIES)}") from None
    try:
        return cls(kind=kind, structure=structure, **dict(options or {}))
    except TypeError as err:
        raise TypeError(f"bad options for method {method!r}: {err}") from err
