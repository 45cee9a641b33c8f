"""Exact standard errors of selected parameters, without the full matrix: conjugate gradients.

For the free parameters ``f`` and a selected parameter ``q`` (DESIGN §3,
``wald_table(..., parameters=...)``) let ``x_q`` solve

    H_ff x_q = e_q                                    (H the exact curvature of E)

by preconditioned conjugate gradients (Nocedal & Wright alg. 5.3) on exact
curvature-vector products (``dh.evaluate(..., hvp=...)``: one pass over the
data per iteration for every right-hand side at once, on the cluster when one
is used, the data persisted on the workers).  Then, for the selected set ``S``
with ``X = [x_q, q in S]``:

    hessian:   Sigma_SS = s2 X_S                (s2 = RSS / (n c - p), squared loss; else 1)
    sandwich:  Sigma_SS = (G X)' (G X)          (G the per-example gradients, summed by chunks)

which are the entries of the full covariance (:mod:`.covariance`) with nothing of
size ``t x t`` formed.  When ``e_q`` lies in the range of ``H`` (``q`` identifiable)
``e_q' x`` is the same for every solution ``x`` of a singular consistent system,
so the Hessian covariance equals the pseudo-inverse's; the sandwich is exact when
``H`` is non-singular (any solution is then ``H^-1 e_q``).

Preconditioner: the exact layer blocks of ``H`` when they fit the memory budget,
else its row blocks (block Jacobi), each inverted on its eigenvalues' absolute
values floored at ``1e-10`` times the largest, so it is positive definite.  (On
the diabetes 10-16-1 fit, about 43 iterations per solve with layer blocks, 320 with
row blocks, 1,540 with none: benchmarks/bench_cg_preconditioner.py.)  CG from ``x = 0`` approaches ``e_q' H^-1 e_q`` from below
(``e_q' x_k = x_k' H x_k``) and stops at relative residual ``tol``; the
*reported* residual ``||H x_q - e_q|| / ||e_q||`` is recomputed from a final
product, not the recurrence.

Not identifiable (flagged, no z, no p), consistent with the full matrix's rule
(loading ``> 1e-6``, i.e. a null-space component of ``e_q`` above ``1e-3``):
``H_qq = 0``; CG meets curvature ``p' H p <= 0`` (a null or negative direction:
not a minimum, or singular there); or the final residual stays above ``1e-3``.
A residual between ``tol`` and ``1e-3`` gives numbers with a
:class:`CGConvergenceWarning` naming the parameters.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..distributed import evaluate, persist_data
from ..distributed.cluster import resolve_client
from .covariance import (Covariance, block_indices, check_fraction, check_memory_budget,
                         hessian_blocks, noise_variance, warn_singular)
from .groups import parameter_name

__all__ = ["CGConvergenceWarning", "CurvatureProducts", "BlockPreconditioner",
           "preconditioner_structure",
           "conjugate_gradients", "selected_covariance", "check_cg_options", "CG_TOL",
           "CG_MAX_ITER"]

CG_TOL = 1e-10
CG_MAX_ITER = 1000
#: a residual above this is a right-hand side outside the range of H (see the docstring)
STAGNATION = 1e-3
_PRECONDITIONER_FLOOR = 1e-10


class CGConvergenceWarning(UserWarning):
    """Conjugate gradients stopped above the tolerance for some parameters."""


def check_cg_options(tol, max_iter) -> tuple[float, int]:
    """``(tol, max_iter)`` checked: ``0 < tol < 1`` and an integer ``max_iter >= 1``."""
    tol_value = check_fraction(tol, "cg_tol (a relative residual)", zero=False)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"cg_max_iter must be an integer >= 1, got {max_iter!r}")
    return tol_value, int(max_iter)


class CurvatureProducts:
    """``V (t, k) -> H V``, restricted to the free parameters, one data pass per call.

    Runs where ``dh.evaluate`` would (the fit's client, the current client, or the
    embedded cluster for large work; in-process otherwise); on a cluster the data
    are persisted on the workers once.  ``passes`` counts the calls.
    """

    def __init__(self, fitted, kind: str = "hessian"):
        if not fitted.has_data:
            raise LookupError(f"standard errors by conjugate gradients need Hessian-vector "
                              f"products, so the data: pass data=(X, Y) ({fitted.where()} "
                              f"holds no data)")
        self.model, self.w, self.free, self.kind = fitted.model, fitted.w, fitted.free, kind
        self.client = resolve_client(fitted.client, work=fitted.n_examples * self.model.n_params)
        X, Y = fitted.X, fitted.Y
        if self.client is not None:
            X, Y = persist_data(X, Y, self.client)
        self.X, self.Y = X, Y
        self.passes = 0

    def __call__(self, V: np.ndarray) -> np.ndarray:
        V = np.where(self.free[:, None], V, 0.0)
        result = evaluate(self.model, self.w, self.X, self.Y, client=self.client,
                          hvp=[(self.kind, V[:, i]) for i in range(V.shape[1])])
        self.passes += 1
        return np.where(self.free[:, None], np.column_stack(result.hvp), 0.0)


def preconditioner_structure(model, free, memory_budget=None) -> str:
    """``"layer"`` when the layer blocks (3 copies: blocks, eigenvectors, inverses) fit
    ``memory_budget``, else ``"row"``."""
    words = sum(int(np.sum(free[sl])) ** 2 for sl in model.layer_slices)
    return "layer" if 8 * 3 * words <= check_memory_budget(memory_budget) else "row"


class BlockPreconditioner:
    """Block-Jacobi ``M^-1`` from the exact layer or row blocks of the curvature, positive
    definite (each block inverted on ``max(|lambda|, 1e-10 max|lambda|)``).

    ``zero_diagonal`` marks free parameters with ``H_qq = 0`` (not identifiable:
    a positive semi-definite ``H`` has then ``H e_q = 0``).
    """

    def __init__(self, fitted, kind: str = "hessian", structure: str = "row"):
        model, free = fitted.model, fitted.free
        self.structure = structure
        self.blocks = block_indices(model, free, structure)
        H = hessian_blocks(model, fitted.curvature(kind, structure), structure, self.blocks)
        eig = [np.linalg.eigh(0.5 * (B + B.T)) for B in H]
        top = max((float(np.max(np.abs(lam))) for lam, _ in eig if lam.size), default=0.0)
        floor = _PRECONDITIONER_FLOOR * top if top > 0 else 1.0
        self.inverses = [(V / np.maximum(np.abs(lam), floor)) @ V.T for lam, V in eig]
        self.zero_diagonal = np.zeros(model.n_params, dtype=bool)
        for b, B in zip(self.blocks, H):
            self.zero_diagonal[b] = np.diagonal(B) == 0.0

    def solve(self, R: np.ndarray) -> np.ndarray:
        Z = np.zeros_like(R)
        for b, inverse in zip(self.blocks, self.inverses):
            Z[b] = inverse @ R[b]
        return Z


def conjugate_gradients(products, preconditioner, B: np.ndarray, *, tol: float = CG_TOL,
                        max_iter: int = CG_MAX_ITER):
    """Solve ``H X = B`` column by column with preconditioned CG, the columns in lockstep.

    ``products(V)`` gives ``H V`` for a block of columns (one data pass); columns that
    have converged (relative residual ``<= tol``) or met curvature ``p'Hp <= 0`` stop
    and cost nothing more. Returns ``(X, iterations, nonpositive)`` per column
    (Nocedal & Wright alg. 5.3).
    """
    t, k = B.shape
    X = np.zeros((t, k))
    R = B.copy()
    Z = preconditioner.solve(R)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    norm_b = np.linalg.norm(B, axis=0)
    iterations = np.zeros(k, dtype=int)
    nonpositive = np.zeros(k, dtype=bool)
    active = np.linalg.norm(R, axis=0) > tol * norm_b
    for _ in range(max_iter):
        cols = np.flatnonzero(active)
        if cols.size == 0:
            break
        HP = products(P[:, cols])
        pHp = np.einsum("ij,ij->j", P[:, cols], HP)
        bad = ~(pHp > 0)
        nonpositive[cols[bad]] = True
        active[cols[bad]] = False
        good = ~bad
        cols, HP, pHp = cols[good], HP[:, good], pHp[good]
        alpha = rz[cols] / pHp
        X[:, cols] += alpha * P[:, cols]
        R[:, cols] -= alpha * HP
        iterations[cols] += 1
        done = np.linalg.norm(R[:, cols], axis=0) <= tol * norm_b[cols]
        active[cols[done]] = False
        cols = cols[~done]
        if cols.size == 0:
            continue
        Zc = preconditioner.solve(R[:, cols])
        rz_new = np.einsum("ij,ij->j", R[:, cols], Zc)
        beta = rz_new / rz[cols]
        rz[cols] = rz_new
        P[:, cols] = Zc + beta * P[:, cols]
    return X, iterations, nonpositive


def selected_covariance(fitted, index, *, method: str = "hessian", kind: str = "hessian",
                        tol: float = CG_TOL, max_iter: int = CG_MAX_ITER,
                        memory_budget: int | None = None, warn: bool = True) -> Covariance:
    """The covariance of the free parameters ``index`` by CG (module docstring).

    One :class:`~.covariance.Covariance` block over ``index`` (its ``solver`` is
    ``"cg"``, ``residual[q]`` the final relative residual of ``q``); right-hand
    sides go in batches so that the CG vectors (6 of length ``t`` per parameter)
    fit ``memory_budget``.
    """
    if method not in ("hessian", "sandwich"):
        raise ValueError(f"covariance must be 'hessian' or 'sandwich', got {method!r}")
    tol, max_iter = check_cg_options(tol, max_iter)
    model, t = fitted.model, fitted.model.n_params
    index = np.asarray(index, dtype=int)
    products = CurvatureProducts(fitted, kind)
    preconditioner = BlockPreconditioner(
        fitted, kind, preconditioner_structure(model, fitted.free, memory_budget))
    batch = max(1, check_memory_budget(memory_budget) // (8 * 6 * t))
    k = index.size
    solutions = np.zeros((t, k))
    residual = np.full(k, np.nan)
    nonpositive = np.zeros(k, dtype=bool)
    for start in range(0, k, batch):
        cols = slice(start, min(k, start + batch))
        B = np.zeros((t, cols.stop - start))
        B[index[cols], np.arange(cols.stop - start)] = 1.0
        Xb, _, bad = conjugate_gradients(products, preconditioner, B, tol=tol, max_iter=max_iter)
        residual[cols] = np.linalg.norm(products(Xb) - B, axis=0)    # ||e_q|| = 1
        solutions[:, cols] = Xb
        nonpositive[cols] = bad
    non_id = (nonpositive | preconditioner.zero_diagonal[index] | ~(residual <= STAGNATION))
    inverse = solutions[index]
    inverse = 0.5 * (inverse + inverse.T)
    scale = 1.0
    if method == "hessian":
        scale = noise_variance(fitted) if model.loss.name == "squared" else 1.0
        matrix = scale * inverse
    else:
        matrix = fitted.meat_products(solutions)
        matrix = 0.5 * (matrix + matrix.T)
    full_residual = np.full(t, np.nan)
    full_residual[index] = residual
    if warn:
        warn_singular(model, index[non_id], int(non_id.sum()), 0)
        slow = (residual > tol) & ~non_id
        if np.any(slow):
            names = [f"{parameter_name(model, q)} ({r:.1e})" for q, r in zip(index[slow],
                                                                             residual[slow])]
            warnings.warn(f"conjugate gradients stopped above the tolerance {tol:g} after "
                          f"{max_iter} iterations for {len(names)} parameter(s): "
                          f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}; raise "
                          f"cg_max_iter", CGConvergenceWarning, stacklevel=3)
    return Covariance(t=t, blocks=[(index, matrix)], non_identifiable=np.sort(index[non_id]),
                      n_negative=int(nonpositive.sum()), method=method, structure="full",
                      scale=scale, kind=kind, solver="cg", residual=full_residual,
                      passes=products.passes, preconditioner=preconditioner.structure)
