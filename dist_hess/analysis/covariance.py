"""Covariance of the estimates: inverse Hessian or sandwich, full or block diagonal.

With ``H`` the curvature of ``E`` at the fit (restricted to the free
parameters) and ``g_i`` the per-example gradients (no penalty):

    hessian:   Sigma = s2 H^+                       (s2 = RSS / (n c - p) for squared loss, else 1)
    sandwich:  Sigma = H^+ (sum_i g_i g_i') H^+     (White 1982; Huber 1967)

``structure`` ``full`` inverts ``H`` whole: the covariance of the fit.  ``layer``
and ``row`` invert its diagonal blocks (one per layer, one per unit) and take
the covariance between blocks as zero: an **approximation**, labelled so in
every output and never a default (the row-block standard errors of a 10-16-1
network are a median 2.8 times too small, docs/analysis.md).

Memory: the full covariance takes ``8 c t^2`` bytes, ``c = 6`` (``H``, its
eigenvectors, ``H^+`` and temporaries) or ``c = 9`` for the sandwich (the meat
and its products too); it is computed when that fits ``memory_budget``
(default :data:`COVARIANCE_BUDGET`, 2 GiB: ``t`` up to 6,688, 5,461 for the
sandwich, or the memory limit of `dist_hess.memory` when that is lower) and
refused up front otherwise (`dist_hess.memory.MemoryLimitError`), naming the
alternatives: exact standard errors of selected parameters by conjugate gradients
(:mod:`.selected`), or the block approximations. Whatever the budget, every
pseudo-inverse (block by block) is checked against the memory limit
(`check_inverse_memory`) before the curvature is read.

``H^+`` is the pseudo-inverse on the positive part of the spectrum: every
eigenvalue ``lambda <= rcond * max|lambda|`` (null directions from hidden-unit
symmetries and dead units, and negative curvature away from a minimum) is
dropped.  A parameter is **not identifiable** when the null space reaches it:
``P_qq = sum over dropped eigenvectors v of v_q^2 > 1e-6`` (then ``e_q`` is not
in the range of ``H``, and no unbiased linear estimate of ``w_q`` exists).
Those parameters are named in a :class:`NonIdentifiableWarning` and flagged in
the results (no z and no p-value: :mod:`.wald`); the numbers the covariance holds
for them come from the pseudo-inverse.  The sandwich uses the same ``H^+``, so
the same identifiable subspace; its variances are those of the symmetric
product ``H^+ M H^+``, rounding below zero clipped to zero.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..memory import MemoryLimitError, check_allocation, format_bytes, memory_limit
from .groups import parameter_name

__all__ = ["NonIdentifiableWarning", "NotAMinimumWarning", "Block", "Covariance",
           "pseudo_inverse", "check_inverse_memory", "block_indices", "hessian_blocks",
           "covariance", "RCOND",
           "LOADING_TOL", "COVARIANCE_BUDGET", "full_covariance_bytes", "check_rcond", "check_fraction",
           "check_memory_budget", "full_fits", "covariance_label"]

RCOND = 1e-10
LOADING_TOL = 1e-6
#: Copies of a block that `pseudo_inverse` holds at once (the block, its symmetrised
#: copy, the eigenvectors, ``eigh``'s workspace, the kept eigenvectors, the inverse).
PSEUDO_INVERSE_COPIES = 6
#: bytes the full covariance may take by default (``memory_budget=None``).
COVARIANCE_BUDGET = 2 * 2**30
_WORDS_PER_ENTRY = {"hessian": 6, "inverse": 6, "sandwich": 9}


def check_fraction(value, what: str, *, zero: bool) -> float:
    """``value`` as a float in ``[0, 1)`` (``zero=True``) or ``(0, 1)``; else a ``TypeError`` /
    ``ValueError`` naming ``what`` (NaN and booleans are refused)."""
    interval = "[0, 1)" if zero else "(0, 1)"
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number in {interval}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number in {interval}, got {value!r}") from None
    if not (0.0 <= number if zero else 0.0 < number) or not number < 1.0:
        raise ValueError(f"{what} must be a number in {interval}, got {value!r}")
    return number


def check_rcond(rcond) -> float:
    """``rcond`` (eigenvalues ``<= rcond * max|eigenvalue|`` count as zero) in ``[0, 1)``."""
    return check_fraction(rcond, "rcond", zero=True)


def check_memory_budget(memory_budget) -> int:
    """``memory_budget`` in bytes (``None``: :data:`COVARIANCE_BUDGET`, or the memory limit
    of `dist_hess.memory` when that is lower)."""
    if memory_budget is None:
        limit = memory_limit()
        return COVARIANCE_BUDGET if limit is None else min(COVARIANCE_BUDGET, limit)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)) \
            or memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive number of bytes or None, "
                         f"got {memory_budget!r}")
    return int(memory_budget)


def full_covariance_bytes(t: int, method: str = "hessian") -> int:
    """Bytes the full ``t x t`` covariance takes: ``8 c t^2`` (module docstring)."""
    return 8 * _WORDS_PER_ENTRY[method] * int(t) ** 2


def full_fits(t: int, method: str = "hessian", memory_budget=None) -> bool:
    """Whether the full covariance of ``t`` parameters fits ``memory_budget``."""
    return full_covariance_bytes(t, method) <= check_memory_budget(memory_budget)


def refuse_full(t: int, method: str, memory_budget) -> MemoryLimitError:
    """The error for a full covariance over budget: its size and the alternatives."""
    need, budget = full_covariance_bytes(t, method), check_memory_budget(memory_budget)
    source = " (the memory limit, dist_hess.memory)" if budget == memory_limit() \
        and budget < COVARIANCE_BUDGET else ""
    return MemoryLimitError(
        f"the full {t} x {t} covariance needs {format_bytes(need)}, over the memory budget of "
        f"{format_bytes(budget)}{source}: select parameters (parameters=[...], on the command line "
        f"--parameters, by index, name or 'layer:K': exact standard errors by conjugate "
        f"gradients on Hessian-vector products, no full matrix), raise memory_budget "
        f"(--memory-budget), or ask for the row-block approximation (structure='row')")


def covariance_label(method: str, structure: str, solver: str = "eigh") -> str:
    """What a table's standard errors are, in words (every output prints it)."""
    what = {"hessian": "inverse Hessian", "sandwich": "sandwich H^-1 (sum g_i g_i') H^-1",
            "inverse": "inverse Hessian"}[method]
    if structure != "full":
        return (f"{what}, {structure} blocks: APPROXIMATION (covariance between {structure} "
                f"blocks set to zero; not the standard errors of the fit)")
    if solver == "cg":
        return f"{what}, exact (conjugate gradients on exact Hessian-vector products)"
    return f"{what}, exact (full matrix)"


class NonIdentifiableWarning(UserWarning):
    """The Hessian is singular or nearly so: some parameters are not identifiable."""


class NotAMinimumWarning(UserWarning):
    """The Hessian has negative eigenvalues: the weights are not at a local minimum."""


@dataclass
class Block:
    """The pseudo-inverse of one diagonal block ``H[index][:, index]``.

    ``loading[i]`` is the squared norm of the projection of ``e_index[i]`` on the
    dropped eigenvectors (0: identifiable, 1: a null direction by itself).
    """

    index: np.ndarray
    inverse: np.ndarray
    loading: np.ndarray
    eigenvalues: np.ndarray
    n_null: int
    n_negative: int
    null_vectors: np.ndarray


def pseudo_inverse(H, rcond: float = RCOND):
    """``(H^+, loading, eigenvalues, n_null, n_negative, null eigenvectors)`` of symmetric ``H``.

    ``H^+`` inverts the eigenvalues ``> rcond * max|lambda|`` only; the null
    space is spanned by the eigenvectors with ``|lambda| <= rcond * max|lambda|``
    and ``loading`` is the squared norm of each ``e_q`` projected on it.
    """
    H = np.asarray(H, dtype=float)
    check_inverse_memory([H.shape[0]])
    if H.size == 0:
        e = np.zeros(0)
        return np.zeros((0, 0)), e, e, 0, 0, np.zeros((0, 0))
    H = 0.5 * (H + H.T)
    lam, V = np.linalg.eigh(H)
    scale = float(np.max(np.abs(lam)))
    tol = rcond * scale
    keep = lam > tol if scale > 0 else np.zeros(lam.shape, dtype=bool)
    null = np.abs(lam) <= tol
    Vk = V[:, keep]
    inverse = (Vk / lam[keep]) @ Vk.T
    V0 = V[:, null]
    loading = np.einsum("qi,qi->q", V0, V0)
    n_negative = int(np.sum(lam < -tol))
    return inverse, loading, lam, int(null.sum()), n_negative, V0


def check_inverse_memory(sizes) -> None:
    """Refuse pseudo-inverses of blocks of ``sizes`` that would exceed the memory limit
    (`dist_hess.memory`), before the curvature is read or computed."""
    largest = max(sizes, default=0)
    check_allocation(PSEUDO_INVERSE_COPIES * 8 * sum(int(n) ** 2 for n in sizes),
                     f"the pseudo-inverse of the curvature (largest block {largest:,} x "
                     f"{largest:,}, {PSEUDO_INVERSE_COPIES} copies)",
                     ("structure='row' or 'layer' (block-diagonal approximations, labelled "
                      "as such)",))


def block_indices(model, free, structure: str) -> list[np.ndarray]:
    """Flat indices of the free parameters in each diagonal block of ``structure``."""
    free = np.asarray(free, dtype=bool)
    if structure == "full":
        return [np.flatnonzero(free)]
    out = []
    for sl, (s, d) in zip(model.layer_slices, model.layer_shapes):
        if structure == "layer":
            idx = np.arange(sl.start, sl.stop)
            out.append(idx[free[idx]])
        elif structure == "row":
            for j in range(s):
                idx = np.arange(sl.start + j * d, sl.start + (j + 1) * d)
                out.append(idx[free[idx]])
        else:
            raise ValueError(f"unknown structure {structure!r}; expected full, layer or row")
    return [b for b in out if b.size]


def hessian_blocks(model, curvature, structure: str, blocks: list[np.ndarray]) -> list[np.ndarray]:
    """The sub-matrices ``H[b][:, b]`` of curvature given in the engine's ``structure`` layout."""
    if structure == "full":
        H = np.asarray(curvature)
        return [H[np.ix_(b, b)] for b in blocks]
    starts = [sl.start for sl in model.layer_slices]
    out = []
    for b in blocks:
        k = int(np.searchsorted(starts, b[0], side="right")) - 1
        sl, d = model.layer_slices[k], model.layer_shapes[k][1]
        local = b - sl.start
        if structure == "layer":
            out.append(np.asarray(curvature[k])[np.ix_(local, local)])
        else:
            j = int(local[0] // d)
            out.append(np.asarray(curvature[k][j])[np.ix_(local - j * d, local - j * d)])
    return out


@dataclass
class Covariance:
    """A block-diagonal covariance over the ``t`` flat parameters.

    ``blocks`` hold ``(index, matrix)``; entries outside every block (other
    blocks, pruned parameters) are zero.  ``non_identifiable`` lists flat indices.
    """

    t: int
    blocks: list
    non_identifiable: np.ndarray
    n_negative: int
    method: str
    structure: str
    scale: float = 1.0
    inverses: list = None        # the blocks' pseudo-inverses H_b^+ (:class:`Block`)
    kind: str = "hessian"
    solver: str = "eigh"
    #: relative CG residuals ``||H x_q - e_q|| / ||e_q||`` per parameter (``nan``: not by CG)
    residual: np.ndarray | None = None
    #: passes over the data the CG solves took (0 for the eigendecomposition)
    passes: int = 0
    #: the CG preconditioner's blocks, ``"layer"`` or ``"row"`` (``None``: not by CG)
    preconditioner: str | None = None

    @property
    def index(self) -> np.ndarray:
        """Flat indices of the parameters the covariance covers, in order."""
        if not self.blocks:
            return np.zeros(0, dtype=int)
        return np.sort(np.concatenate([b for b, _ in self.blocks])).astype(int)

    @property
    def approximation(self) -> bool:
        """Block structures drop the covariance between blocks: not the fit's covariance."""
        return self.structure != "full"

    @property
    def label(self) -> str:
        return covariance_label(self.method, self.structure, self.solver)

    def diagonal(self) -> np.ndarray:
        """Variances ``(t,)``; ``nan`` for parameters in no block (pruned, not selected)."""
        out = np.full(self.t, np.nan)
        for index, matrix in self.blocks:
            out[index] = np.diagonal(matrix)
        return out

    def submatrix(self, index) -> np.ndarray:
        """``Sigma[index][:, index]`` (zero between blocks and for pruned parameters)."""
        return _submatrix(self.blocks, index)

    def inverse_submatrix(self, index) -> np.ndarray:
        """``H^+[index][:, index]`` from the blocks' pseudo-inverses (no noise variance)."""
        return _submatrix([(blk.index, blk.inverse) for blk in self.inverses], index)

    def dense(self) -> np.ndarray:
        return self.submatrix(np.arange(self.t))


def _submatrix(blocks, index) -> np.ndarray:
    index = np.asarray(index, dtype=int)
    out = np.zeros((index.size, index.size))
    for b_index, matrix in blocks:
        pos = {int(q): i for i, q in enumerate(b_index)}
        sel = [(a, pos[int(q)]) for a, q in enumerate(index) if int(q) in pos]
        if not sel:
            continue
        rows, local = np.array([s[0] for s in sel]), np.array([s[1] for s in sel])
        out[np.ix_(rows, rows)] = matrix[np.ix_(local, local)]
    return out


def _name(model, q) -> str:
    return parameter_name(model, q)


def warn_singular(model, non_identifiable, n_null, n_negative, what="Hessian", stacklevel=3):
    """Issue the warnings for dropped directions, naming the parameters they reach."""
    if n_negative:
        warnings.warn(f"the {what} has {n_negative} negative eigenvalue(s): the weights are not "
                      f"at a local minimum of E; those directions are dropped from the "
                      f"pseudo-inverse", NotAMinimumWarning, stacklevel=stacklevel)
    if len(non_identifiable):
        names = [_name(model, q) for q in non_identifiable]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        warnings.warn(f"the {what} is singular or nearly so ({n_null} null direction(s)); "
                      f"not identifiable: {shown}. Their standard errors come from a "
                      f"pseudo-inverse", NonIdentifiableWarning, stacklevel=stacklevel)


def check_covariance_options(method: str, structure: str, kind: str) -> None:
    """``ValueError`` naming a bad ``covariance`` / ``structure`` / ``kind``."""
    if method not in ("hessian", "sandwich", "inverse"):
        raise ValueError(f"covariance must be 'hessian' or 'sandwich', got {method!r}")
    if structure not in ("full", "layer", "row"):
        raise ValueError(f"structure must be 'full', 'layer' or 'row', got {structure!r}")
    if kind not in ("hessian", "gauss_newton"):
        raise ValueError(f"kind must be 'hessian' or 'gauss_newton', got {kind!r}")


def covariance(fitted, *, method: str = "hessian", structure: str = "full",
               kind: str = "hessian", rcond: float = RCOND, warn: bool = True,
               memory_budget: int | None = None) -> Covariance:
    """The covariance of the free parameters of ``fitted`` (a :class:`~.source.Fitted`).

    ``structure="full"`` is refused (``ValueError``) before anything is computed when
    it does not fit ``memory_budget`` (module docstring).
    """
    check_covariance_options(method, structure, kind)
    rcond = check_rcond(rcond)
    model = fitted.model
    if structure == "full" and not full_fits(fitted.n_free, method, memory_budget):
        raise refuse_full(fitted.n_free, method, memory_budget)
    blocks = block_indices(model, fitted.free, structure)
    check_inverse_memory([b.size for b in blocks])
    H_blocks = hessian_blocks(model, fitted.curvature(kind, structure), structure, blocks)
    inverses = [Block(b, *_unpack(pseudo_inverse(H, rcond))) for b, H in zip(blocks, H_blocks)]
    scale = 1.0
    if method == "inverse":                 # H^+ itself (OBS, Laplace)
        matrices = [blk.inverse for blk in inverses]
    elif method == "hessian":
        scale = noise_variance(fitted) if model.loss.name == "squared" else 1.0
        matrices = [scale * blk.inverse for blk in inverses]
    else:
        meat = fitted.meat(blocks)
        matrices = [_sandwich(blk.inverse, M) for blk, M in zip(inverses, meat)]
    non_id = np.concatenate([blk.index[blk.loading > LOADING_TOL] for blk in inverses]) \
        if inverses else np.zeros(0, dtype=int)
    n_null = sum(blk.n_null for blk in inverses)
    n_negative = sum(blk.n_negative for blk in inverses)
    if warn:
        warn_singular(model, np.sort(non_id), n_null, n_negative)
    return Covariance(t=model.n_params, blocks=list(zip(blocks, matrices)),
                      non_identifiable=np.sort(non_id).astype(int), n_negative=n_negative,
                      method=method, structure=structure, scale=scale, inverses=inverses,
                      kind=kind)


def _sandwich(bread, meat) -> np.ndarray:
    """``A M A`` made exactly symmetric, its diagonal at least 0 (``A``, ``M`` symmetric PSD:
    a negative variance is rounding)."""
    S = bread @ meat @ bread
    S = 0.5 * (S + S.T)
    d = np.arange(S.shape[0])
    S[d, d] = np.maximum(S[d, d], 0.0)
    return S


def _unpack(result):
    inverse, loading, lam, n_null, n_negative, V0 = result
    return inverse, loading, lam, n_null, n_negative, V0


def residual_df(fitted) -> int:
    return int(fitted.n_examples * fitted.model.sizes[-1] - fitted.n_free)


def noise_variance(fitted) -> float:
    """``s2 = RSS / (n c - p)``, ``RSS = 2 sum_i g_i`` (squared loss), ``p`` the free parameters."""
    df = residual_df(fitted)
    if df <= 0:
        raise ValueError(f"cannot estimate the noise variance: n*c = "
                         f"{fitted.n_examples * fitted.model.sizes[-1]} observations for "
                         f"{fitted.n_free} free parameters leave no residual degrees of freedom")
    return 2.0 * fitted.loss_sum() / df
