"""Quadratic models and their minimisers: the pieces a step strategy is made of.

Every solver minimises the local model

    m(p) = g'p + 1/2 p'Bp          (g: ``gradient``, B: curvature, p: step)

and returns a `SubproblemSolution` carrying ``model_decrease = -m(p) >= 0``, the
"predicted reduction" the driver compares with the actual one.

- `solve_trust_region_exact`: min m(p) s.t. ||p|| <= radius with a dense B, by
  Newton's method on the secular equation with Cholesky factorisations, safeguards and
  the hard case (Nocedal & Wright alg. 4.3; Moré & Sorensen 1983; Conn, Gould & Toint
  2000, alg. 7.3.6 and §7.3.8 for the bounds on the multiplier).
- `solve_trust_region_dense`: the step of method ``newton``: for a positive-definite
  dense B the nearly exact solution (the Newton step when it lies inside, from the one
  Cholesky factorisation that shows B is positive definite); for an indefinite B,
  Steihaug-CG on products with B.
- `solve_trust_region_diagonal`: the same problem when B is diagonal (B given in an
  eigenbasis), exactly, hard case included (N&W §4.3, eqs. 4.38-4.45).
- `solve_damped_diagonal`: p = -(B + mu I)^{-1} g in an eigenbasis (Levenberg).
- `solve_damped_dense`: the same step for a dense B by one Cholesky factorisation
  (about 1/27 of an eigendecomposition), B first lifted to be positive definite.
- `steihaug_cg`: truncated conjugate gradients on Hessian-vector products
  (N&W alg. 7.2, Steihaug 1983), optionally preconditioned by a positive-definite
  ``M`` with the trust region in the norm ``||p||_M = sqrt(p'Mp)`` (Conn, Gould &
  Toint 2000, alg. 7.5.1; N&W §7.2 "preconditioning").
- `lanczos_trust_region`: the same subproblem solved on Krylov spaces by the
  (preconditioned) Lanczos process, past the boundary and negative curvature (GLTR;
  Gould, Lucidi, Roma & Toint 1999).
- `damped_cg`: preconditioned CG on ``(B + mu M) p = -g`` (Levenberg-Marquardt in the
  metric of ``M``), truncated at negative curvature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.linalg import cho_solve, eigh, eigh_tridiagonal, get_lapack_funcs, solve_triangular

__all__ = ["SubproblemSolution", "Preconditioner", "solve_trust_region_exact", "solve_trust_region_dense",
           "solve_trust_region_diagonal", "solve_damped_diagonal", "solve_damped_dense", "steihaug_cg", "damped_cg",
           "lanczos_trust_region", "boundary_roots"]

EPS = np.finfo(float).eps
#: `solve_trust_region_dense`: a CG step with ``||Bp + g||`` below this times ``||g||`` is on
#: the indefinite model's stationary point to rounding (a saddle of the model).
_SADDLE_RESIDUAL = 1e-10
#: Safeguard for the multiplier when Newton's update leaves its bracket (CGT eq. 7.3.14).
_BRACKET_FRACTION = 0.01


@dataclass(frozen=True)
class SubproblemSolution:
    """``step`` p; ``model_decrease`` -m(p); ``hits_boundary`` whether ||p|| = radius;
    ``multiplier`` the shift lambda with (B + lambda I) p = -g (None if not applicable);
    ``iterations`` factorisations or CG iterations used; ``case`` one of ``interior``,
    ``boundary``, ``hard``, ``negative_curvature``, ``damped``; ``norm`` the step's
    length in the norm of the trust region (``||p||_M`` for a preconditioned solver;
    ``None``: the Euclidean norm)."""

    step: np.ndarray
    model_decrease: float
    hits_boundary: bool
    multiplier: float | None = None
    iterations: int = 0
    case: str = "interior"
    norm: float | None = None


class Preconditioner(Protocol):
    """A symmetric positive-definite ``M``: ``matvec(v) = M v``, ``solve(r) = M^{-1} r``."""

    def matvec(self, v: np.ndarray) -> np.ndarray: ...

    def solve(self, r: np.ndarray) -> np.ndarray: ...


def boundary_roots(z: np.ndarray, d: np.ndarray, radius: float) -> tuple[float, float]:
    """The two roots ``tau_minus <= 0 <= tau_plus`` of ``||z + tau d|| = radius``.

    Requires ``||z|| <= radius`` and ``d != 0``; computed without cancellation.
    """
    return _quadratic_roots(float(d @ d), float(z @ d), float(z @ z) - radius * radius)


def _quadratic_roots(a: float, b: float, c: float) -> tuple[float, float]:
    """Roots of ``a tau^2 + 2 b tau + c`` for ``a > 0 >= c``: ``||z + tau d||^2 = radius^2``
    in any inner product, with ``a = <d, d>``, ``b = <z, d>``, ``c = <z, z> - radius^2``."""
    c = min(c, 0.0)
    root = np.sqrt(max(b * b - a * c, 0.0))
    q = -(b + np.copysign(root, b))        # |q| = |b| + root, no cancellation
    if q == 0.0:                           # z = 0 and radius = 0
        return 0.0, 0.0
    t1, t2 = q / a, c / q
    return (min(t1, t2), max(t1, t2))


def _model(g: np.ndarray, Bp: np.ndarray, p: np.ndarray) -> float:
    return float(g @ p + 0.5 * (p @ Bp))


# -- dense B: Moré-Sorensen ------------------------------------------------------------------

def _gershgorin(B: np.ndarray) -> tuple[float, float]:
    """Bounds ``lo <= lambda_min(B)``, ``lambda_max(B) <= hi`` (CGT p. 19)."""
    diag = np.diag(B)
    radii = np.sum(np.abs(B), axis=1) - np.abs(diag)
    return float(np.min(diag - radii)), float(np.max(diag + radii))


def _safeguard(lo: float, hi: float) -> float:
    """A multiplier strictly inside ``(lo, hi)`` (CGT eq. 7.3.14, theta = 0.01)."""
    return max(np.sqrt(lo * hi), lo + _BRACKET_FRACTION * (hi - lo))


def _near_null_vector(factor: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """A unit ``z`` with small ``z'(B + lambda I)z``, by inverse iteration on the factor.

    ``factor`` is the lower Cholesky factor L of ``B + lambda I``; three solves with L L'
    from a fixed pseudo-random start amplify the eigenvector of the smallest eigenvalue
    by ``(lambda_2 + lambda)/(lambda_1 + lambda)`` each (Moré & Sorensen's role for the
    LINPACK estimate). Returns ``z`` and the Rayleigh quotient ``||L'z||^2``.
    """
    z = np.random.default_rng(20040901).standard_normal(n)
    for _ in range(3):
        z = cho_solve((factor, True), z / np.linalg.norm(z))
    z /= np.linalg.norm(z)
    return z, float(np.linalg.norm(factor.T @ z) ** 2)


def _dense_subproblem(B, g, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(B, g)`` checked (shapes, a positive radius) and ``B`` symmetrised."""
    B = np.asarray(B, dtype=float)
    g = np.asarray(g, dtype=float)
    n = g.shape[0]
    if B.shape != (n, n):
        raise ValueError(f"B has shape {B.shape}, expected {(n, n)}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    return 0.5 * (B + B.T), g


def solve_trust_region_exact(B, g, radius: float, *, k_easy: float = 0.1, k_hard: float = 0.2,
                             max_iter: int = 50) -> SubproblemSolution:
    """Nearly exact minimiser of ``m(p) = g'p + 1/2 p'Bp`` s.t. ``||p|| <= radius``.

    Nocedal & Wright alg. 4.3 (Newton's method on ``1/||p(lambda)|| - 1/radius`` with
    ``(B + lambda I) p(lambda) = -g`` factorised by Cholesky) with the safeguards of
    Moré & Sorensen (1983): a bracket ``[lambda_lo, lambda_hi]`` initialised from
    Gershgorin bounds (CGT §7.3.8) and the hard case ``p + tau z`` with ``z`` an
    approximate eigenvector of the smallest eigenvalue (N&W eq. 4.45).

    Guarantees: ``||p|| <= radius``; ``-m(p) >= min((1-k_easy)^2, 1-k_hard) * (-m(p*))``
    with ``p*`` the exact minimiser; when ``B`` is positive definite and the Newton
    step ``-B^{-1} g`` lies inside the region, it is returned. After ``max_iter``
    factorisations without convergence the exact solution is computed from an
    eigendecomposition instead (`solve_trust_region_diagonal`).
    """
    B, g = _dense_subproblem(B, g, radius)
    n = g.shape[0]
    potrf, = get_lapack_funcs(("potrf",), (B,))
    eye = np.eye(n)
    with np.errstate(under="ignore"):
        g_norm = float(np.linalg.norm(g))
        low, high = _gershgorin(B)
        fro, inf = float(np.linalg.norm(B, "fro")), float(np.linalg.norm(B, np.inf))
        # lambda_max(B) <= min(high, fro, inf) and -lambda_min(B) <= min(-low, fro, inf)
        lam_lo = max(0.0, -float(np.min(np.diag(B))), g_norm / radius - min(high, fro, inf))
        lam_hi = max(0.0, g_norm / radius + min(-low, fro, inf))
        lam = 0.0 if lam_lo == 0.0 else _safeguard(lam_lo, lam_hi)

        for it in range(1, max_iter + 1):
            shifted = B + lam * eye
            factor, info = potrf(shifted, lower=True, clean=True)
            if info != 0:                            # lambda < -lambda_min(B)
                lam_lo = max(lam_lo, lam)
                if not lam_lo < lam_hi:
                    break
                lam = _safeguard(lam_lo, lam_hi)
                continue
            p = cho_solve((factor, True), -g)
            p_norm = float(np.linalg.norm(p))
            if lam == 0.0 and p_norm <= radius:      # interior: the Newton step
                return SubproblemSolution(p, -_model(g, B @ p, p), False, 0.0, it, "interior")
            if p_norm >= radius:                     # lambda <= lambda*
                lam_lo = max(lam_lo, lam)
                if p_norm <= (1.0 + k_easy) * radius:
                    p *= radius / p_norm
                    return SubproblemSolution(p, -_model(g, B @ p, p), True, lam, it, "boundary")
            else:                                    # lambda > lambda*, or the hard case
                lam_hi = min(lam_hi, lam)
                if p_norm >= (1.0 - k_easy) * radius:
                    return SubproblemSolution(p, -_model(g, B @ p, p), True, lam, it, "boundary")
                z, z_curv = _near_null_vector(factor, n)
                t_minus, t_plus = boundary_roots(p, z, radius)
                tau = t_minus if abs(t_minus) < abs(t_plus) else t_plus
                # Moré-Sorensen termination (N&W eq. 4.45, CGT alg. 7.3.6 step 3)
                if tau * tau * z_curv <= k_hard * (p @ shifted @ p + lam * radius * radius):
                    p = p + tau * z
                    return SubproblemSolution(p, -_model(g, B @ p, p), True, lam, it, "hard")
                lam_lo = max(lam_lo, lam - z_curv)   # lambda_min(B + lam I) <= z_curv
            q = solve_triangular(factor, p, lower=True)
            q_norm = float(np.linalg.norm(q))
            if p_norm > 0.0 and q_norm > 0.0:        # N&W alg. 4.3, eq. 4.44
                lam_new = lam + (p_norm / q_norm) ** 2 * (p_norm - radius) / radius
            else:
                lam_new = -np.inf
            if not lam_lo < lam_hi:
                break
            lam = lam_new if lam_lo < lam_new < lam_hi else _safeguard(lam_lo, lam_hi)

    eigenvalues, vectors = np.linalg.eigh(B)
    sol = solve_trust_region_diagonal(eigenvalues, vectors.T @ g, radius)
    return SubproblemSolution(vectors @ sol.step, sol.model_decrease, sol.hits_boundary,
                              sol.multiplier, max_iter, sol.case)


def solve_trust_region_dense(B, g, radius: float, *, tol: float, max_cg_iter: int,
                             min_decrease: float = 0.0, k_easy: float = 0.1, k_hard: float = 0.2,
                             max_iter: int = 50) -> SubproblemSolution:
    """``min m(p)`` s.t. ``||p|| <= radius`` for a dense symmetric ``B``, as method ``newton`` takes it.

    One Cholesky factorisation of ``B`` decides:

    - ``B`` positive definite: the Newton step ``-B^{-1} g`` from that factor when it lies
      inside (one factorisation), else `solve_trust_region_exact` (the boundary
      solution, its guarantees);
    - ``B`` not positive definite: `steihaug_cg` on ``v -> B v`` (residual ``tol``, at most
      ``max_cg_iter`` products, ``min_decrease``), which starts along the steepest
      descent direction and follows negative curvature only where CG meets it, instead
      of the exact solution, which goes along the most negative eigenvector whenever the
      radius binds (N&W eq. 4.45's hard case and its neighbourhood). On small tanh
      networks far from a minimum that is most of the steps (docs/training.md). Where CG
      ends on the stationary point of the indefinite model to rounding (``||Bp + g|| <=
      1e-10 ||g||``: ``g`` has no component along the negative curvature, so CG never
      meets it, and the step goes onto a saddle of the model) or finds no decrease above
      ``min_decrease`` (at a saddle, ``g = 0``), the exact solution instead, which leaves
      along the negative curvature.
    """
    B, g = _dense_subproblem(B, g, radius)
    n = g.shape[0]
    potrf, = get_lapack_funcs(("potrf",), (B,))
    with np.errstate(under="ignore"):
        factor, info = potrf(B, lower=True, clean=True)
        if info != 0:
            sol = steihaug_cg(lambda v: B @ v, g, radius, tol=tol, max_iter=max_cg_iter,
                              min_decrease=min_decrease)
            # on the model's stationary point to rounding: a step onto a saddle of the model
            # (g has no component along its negative curvature, which CG then never sees)
            saddle = float(np.linalg.norm(B @ sol.step + g)) <= _SADDLE_RESIDUAL * float(np.linalg.norm(g))
            if not saddle and sol.model_decrease > min_decrease:
                return sol
            return solve_trust_region_exact(B, g, radius, k_easy=k_easy, k_hard=k_hard,
                                            max_iter=max_iter)
        p = cho_solve((factor, True), -g)
        if float(np.linalg.norm(p)) <= radius:
            return SubproblemSolution(p, -_model(g, B @ p, p), False, 0.0, 1, "interior")
    return solve_trust_region_exact(B, g, radius, k_easy=k_easy, k_hard=k_hard, max_iter=max_iter)


# -- B in an eigenbasis -------------------------------------------------------------------------

def _diagonal_decrease(eigenvalues, coefficients, c) -> float:
    return float(-(coefficients @ c + 0.5 * np.sum(eigenvalues * c * c)))


def solve_trust_region_diagonal(eigenvalues, coefficients, radius: float, *, rtol: float = 1e-12,
                                max_iter: int = 200) -> SubproblemSolution:
    """Exact minimiser of ``gamma'c + 1/2 sum_i lambda_i c_i^2`` s.t. ``||c|| <= radius``.

    ``eigenvalues`` lambda and ``coefficients`` gamma = Q'g describe ``B = Q diag(lambda) Q'``
    and ``g`` in an orthonormal eigenbasis; the solution ``c`` is in the same basis
    (``p = Q c``). Secular equation ``||c(mu)|| = radius`` with
    ``c_i(mu) = -gamma_i / (lambda_i + mu)``, ``mu >= max(0, -lambda_1)`` (N&W eq. 4.38),
    solved by Newton's method on ``1/radius - 1/||c(mu)||`` (N&W eq. 4.44) inside a
    bracket. The multiplier is carried as ``mu = max(0, -lambda_1) + nu`` with
    ``lambda_i + mu = (lambda_i - lambda_1) + nu``, so a root within rounding of
    ``-lambda_1`` (the nearly hard case) keeps full relative accuracy. The hard case
    (``gamma`` zero on the eigenspace of ``lambda_1 <= 0`` and ``||c(-lambda_1)|| <=
    radius``) adds ``tau e_1`` (N&W eq. 4.45).
    """
    lam = np.asarray(eigenvalues, dtype=float)
    gam = np.asarray(coefficients, dtype=float)
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    with np.errstate(under="ignore"):
        lam_min = float(np.min(lam))
        base = max(0.0, -lam_min)
        # lambda_i + base, computed so that it is exactly 0 on the lowest eigenvalue(s)
        shifted = lam - lam_min if lam_min <= 0.0 else lam
        zero = shifted == 0.0
        g_zero = float(np.linalg.norm(gam[zero]))

        def step(nu):
            d = shifted + nu
            c = np.zeros_like(gam)
            ok = d > 0.0
            c[ok] = -gam[ok] / d[ok]
            return c, d, ok

        if g_zero == 0.0:
            c, _, _ = step(0.0)
            if np.linalg.norm(c) <= radius:
                if not np.any(zero):                  # positive definite: the Newton step
                    return SubproblemSolution(c, _diagonal_decrease(lam, gam, c), False, 0.0, 0,
                                              "interior")
                i = int(np.flatnonzero(zero)[0])      # hard case (N&W eq. 4.45)
                e = np.zeros_like(c)
                e[i] = 1.0
                t_minus, t_plus = boundary_roots(c, e, radius)
                c[i] += t_minus if abs(t_minus) < abs(t_plus) else t_plus
                return SubproblemSolution(c, _diagonal_decrease(lam, gam, c), True, base, 0, "hard")
        # Root nu* in [a, b]: ||c(nu)|| >= ||gamma_zero|| / nu, and <= ||gamma|| / nu.
        a = g_zero / radius
        b = max(a, float(np.linalg.norm(gam)) / radius)
        nu, it = a, 0
        for it in range(1, max_iter + 1):
            c, d, ok = step(nu)
            c_norm = float(np.linalg.norm(c))
            if abs(c_norm - radius) <= rtol * radius:
                break
            if c_norm > radius:
                a = nu
            else:
                b = nu
            q2 = float(np.sum(gam[ok] ** 2 / d[ok] ** 3))
            newton = nu + c_norm * c_norm / q2 * (c_norm - radius) / radius if q2 > 0 else np.nan
            nu = newton if a < newton < b else 0.5 * (a + b)
            if not a < nu < b:                        # bracket exhausted at float resolution
                break
        c, _, _ = step(nu)
        c_norm = float(np.linalg.norm(c))
        if c_norm > radius:
            c = c * (radius / c_norm)
        return SubproblemSolution(c, _diagonal_decrease(lam, gam, c), True, base + nu, it, "boundary")


def solve_damped_diagonal(eigenvalues, coefficients, damping: float) -> SubproblemSolution:
    """``c = -gamma / (lambda + mu)``: the Levenberg step ``-(B + mu I)^{-1} g`` in an eigenbasis.

    Components with ``lambda_i + mu <= t eps max|lambda|`` (numerically singular) are
    left at zero, i.e. the pseudo-inverse. ``model_decrease`` is measured on the
    undamped model ``B``.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    gam = np.asarray(coefficients, dtype=float)
    with np.errstate(under="ignore"):
        d = lam + damping
        floor = lam.size * EPS * max(float(np.max(np.abs(lam))), damping, np.finfo(float).tiny)
        ok = d > floor
        c = np.zeros_like(gam)
        c[ok] = -gam[ok] / d[ok]
        return SubproblemSolution(c, _diagonal_decrease(lam, gam, c), False, damping, 0, "damped")


def solve_damped_dense(B, g, damping: float, *, semidefinite: bool = False) -> SubproblemSolution:
    """``p = -(B + sigma I + mu I)^{-1} g`` by Cholesky, for a dense symmetric ``B``.

    ``semidefinite=True`` (a Gauss-Newton matrix): ``sigma = t eps ||B||_inf``, which
    only keeps round-off from breaking the factorisation. Otherwise (a Hessian) ``B`` is
    first lifted so that its smallest eigenvalue is at least ``floor = sqrt(eps)
    ||B||_inf``: ``sigma = max(0, floor - lambda_min(B))`` (one extra factorisation of
    ``B - floor I`` tells whether ``sigma = 0``; ``lambda_min`` itself comes from a
    partial eigendecomposition only when it is not). ``B`` is symmetrised first, as in
    `solve_trust_region_exact`. ``model_decrease`` is measured on the undamped model
    ``B``; ``multiplier`` is ``sigma + mu``.
    """
    B = np.asarray(B, dtype=float)
    g = np.asarray(g, dtype=float)
    n = g.shape[0]
    if B.shape != (n, n):
        raise ValueError(f"B has shape {B.shape}, expected {(n, n)}")
    B = 0.5 * (B + B.T)
    potrf, = get_lapack_funcs(("potrf",), (B,))
    scale = max(float(np.linalg.norm(B, np.inf)), np.finfo(float).tiny)
    eye = np.eye(n)
    with np.errstate(under="ignore"):
        if semidefinite:
            sigma = n * EPS * scale
        else:
            floor = np.sqrt(EPS) * scale
            sigma = 0.0
            if potrf(B - floor * eye, lower=True, clean=False)[1] != 0:   # lambda_min(B) <= floor
                lam_min = float(eigh(B, eigvals_only=True, subset_by_index=[0, 0])[0])
                sigma = max(0.0, floor - lam_min)
        factor, info = potrf(B + (sigma + damping) * eye, lower=True, clean=True)
        if info != 0:                                # round-off at the floor: lift once more
            sigma += np.sqrt(EPS) * scale
            factor, info = potrf(B + (sigma + damping) * eye, lower=True, clean=True)
        if info != 0:
            raise np.linalg.LinAlgError("the damped matrix is not positive definite")
        p = cho_solve((factor, True), -g)
        return SubproblemSolution(p, -_model(g, B @ p, p), False, sigma + damping, 1, "damped")


# -- Steihaug-CG -------------------------------------------------------------------------------

class _Identity:
    def matvec(self, v):
        return v

    def solve(self, r):
        return r


def steihaug_cg(hvp, g, radius: float, *, tol: float, max_iter: int,
                preconditioner: Preconditioner | None = None,
                min_decrease: float = 0.0) -> SubproblemSolution:
    """Truncated (preconditioned) CG for ``min m(p)`` s.t. ``||p||_M <= radius``.

    N&W alg. 7.2 (Steihaug 1983); with a ``preconditioner`` ``M`` the trust region is
    the ellipsoid ``p'Mp <= radius^2`` and the iteration is CGT alg. 7.5.1 (the
    Steihaug-Toint method): CG on ``B p = -g`` preconditioned by ``M``, whose iterates
    ``z_j`` grow monotonically in the ``M``-norm and decrease ``m`` monotonically.
    Without one, ``M = I``.

    ``hvp(v)`` returns ``B v``. Stops at the boundary (step too long, or a direction
    of non-positive curvature, taking the boundary point of lower model value), when
    the residual ``||B p + g|| < tol`` (Euclidean), or after ``max_iter`` products.
    The first iterate is the (preconditioned) Cauchy point, so ``-m(p) >=`` its
    decrease. ``norm`` of the result is ``||p||_M``.

    The ``M``-norms are kept from ``M z`` and ``M d`` (one ``M`` product per
    iteration), so a boundary crossing is located exactly in the ellipsoid's metric.

    ``min_decrease``: after the first iteration, a direction of non-positive curvature
    is followed to the boundary only if that adds at least this much to ``-m``;
    otherwise the current iterate is returned. Strategies pass the rounding level of
    ``E``: near a minimum with an exactly flat direction (e.g. the softmax's common
    shift of the output biases) round-off alone can make ``d'Bd <= 0``, and a long
    step that the acceptance test cannot check is not worth taking.
    """
    M = _Identity() if preconditioner is None else preconditioner
    g = np.asarray(g, dtype=float)
    z = np.zeros_like(g)
    Mz = np.zeros_like(g)
    r = g.copy()                      # residual B z + g
    y = np.asarray(M.solve(r), dtype=float)
    d = -y
    ry = float(r @ y)
    model = 0.0                       # m(z)
    if np.linalg.norm(r) < tol:
        return SubproblemSolution(z, 0.0, False, None, 0, "interior", 0.0)
    with np.errstate(under="ignore"):
        for j in range(1, max_iter + 1):
            Bd = np.asarray(hvp(d), dtype=float)
            Md = np.asarray(M.matvec(d), dtype=float)
            dBd, dr = float(d @ Bd), float(d @ r)
            dMd, zMd, zMz = float(d @ Md), float(z @ Md), float(z @ Mz)
            if dBd <= 0.0:            # negative curvature: to the boundary, best of both ends
                t_minus, t_plus = _quadratic_roots(dMd, zMd, zMz - radius * radius)
                m_minus = model + t_minus * dr + 0.5 * t_minus * t_minus * dBd
                m_plus = model + t_plus * dr + 0.5 * t_plus * t_plus * dBd
                tau, boundary_model = (t_minus, m_minus) if m_minus < m_plus else (t_plus, m_plus)
                if j > 1 and model - boundary_model < min_decrease:
                    return SubproblemSolution(z, -model, False, None, j, "interior",
                                              np.sqrt(max(zMz, 0.0)))
                return SubproblemSolution(z + tau * d, -boundary_model, True, None, j,
                                          "negative_curvature", radius)
            alpha = ry / dBd
            if zMz + 2.0 * alpha * zMd + alpha * alpha * dMd >= radius * radius:
                _, tau = _quadratic_roots(dMd, zMd, zMz - radius * radius)
                model += tau * dr + 0.5 * tau * tau * dBd
                return SubproblemSolution(z + tau * d, -model, True, None, j, "boundary", radius)
            model += alpha * dr + 0.5 * alpha * alpha * dBd
            z = z + alpha * d
            Mz = Mz + alpha * Md
            r = r + alpha * Bd
            if np.linalg.norm(r) < tol:
                return SubproblemSolution(z, -model, False, None, j, "interior",
                                          np.sqrt(max(float(z @ Mz), 0.0)))
            y = np.asarray(M.solve(r), dtype=float)
            ry_next = float(r @ y)
            d = -y + (ry_next / ry) * d
            ry = ry_next
    return SubproblemSolution(z, -model, False, None, max_iter, "interior",
                              np.sqrt(max(float(z @ Mz), 0.0)))


def damped_cg(hvp, g, damping: float, *, tol: float, max_iter: int,
              preconditioner: Preconditioner | None = None) -> SubproblemSolution:
    """Preconditioned CG on ``(B + mu M) p = -g``: the Levenberg-Marquardt step in the
    metric of ``M`` (``mu``: ``damping``; without a preconditioner ``M = I``).

    ``B + mu M`` need not be positive definite: at a direction of non-positive
    curvature CG stops with its current iterate, or, at the first iteration, with
    ``p = -M^{-1} g / mu``, the minimiser of ``g'p + mu/2 p'Mp`` (which then decreases
    ``m`` too, since ``d'Bd <= 0``). Stops when ``||(B + mu M) p + g|| < tol`` or after
    ``max_iter`` products. ``model_decrease`` is measured on the undamped model
    ``m(p) = g'p + 1/2 p'Bp``, as in `solve_damped_diagonal`.
    """
    M = _Identity() if preconditioner is None else preconditioner
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    g = np.asarray(g, dtype=float)
    z = np.zeros_like(g)
    r = g.copy()                      # residual (B + mu M) z + g
    y = np.asarray(M.solve(r), dtype=float)
    d = -y
    ry = float(r @ y)
    model = 0.0                       # undamped m(z)
    if np.linalg.norm(r) < tol:
        return SubproblemSolution(z, 0.0, False, damping, 0, "damped")
    with np.errstate(under="ignore"):
        for j in range(1, max_iter + 1):
            Bd = np.asarray(hvp(d), dtype=float)
            Md = np.asarray(M.matvec(d), dtype=float)
            dBd = float(d @ Bd)
            curvature = dBd + damping * float(d @ Md)
            if curvature <= 0.0:
                if j == 1 and damping > 0.0:
                    p = d / damping
                    return SubproblemSolution(p, -(float(g @ p) + 0.5 * dBd / damping ** 2),
                                              False, damping, j, "negative_curvature")
                return SubproblemSolution(z, -model, False, damping, j, "negative_curvature")
            alpha = ry / curvature
            # undamped model along z + alpha d: g'd alpha + alpha z'Bd + alpha^2/2 d'Bd
            model += alpha * float(g @ d) + alpha * float(z @ Bd) + 0.5 * alpha * alpha * dBd
            z = z + alpha * d
            r = r + alpha * (Bd + damping * Md)
            if np.linalg.norm(r) < tol:
                return SubproblemSolution(z, -model, False, damping, j, "damped")
            y = np.asarray(M.solve(r), dtype=float)
            ry_next = float(r @ y)
            d = -y + (ry_next / ry) * d
            ry = ry_next
    return SubproblemSolution(z, -model, False, damping, max_iter, "damped")


# -- Lanczos (GLTR) ------------------------------------------------------------------------------

def lanczos_trust_region(hvp, g, radius: float, *, tol: float, max_iter: int,
                         preconditioner: Preconditioner | None = None) -> SubproblemSolution:
    """The trust-region subproblem ``min m(p)`` s.t. ``||p||_M <= radius`` on Krylov spaces.

    The generalised Lanczos trust-region method (GLTR; Gould, Lucidi, Roma & Toint 1999;
    CGT alg. 7.5.2 and §5.2 for the preconditioned Lanczos process): the Lanczos process on
    ``B`` in the ``M`` inner product builds ``Q_j = [q_1..q_j]`` with ``Q_j'MQ_j = I`` and
    ``Q_j'BQ_j = T_j`` tridiagonal, ``q_1 = M^{-1}g / gamma``, ``gamma = ||g||_{M^{-1}}``;
    the step is ``p = Q_j h`` with ``h`` the exact minimiser of ``gamma h_1 + 1/2 h'T_j h``
    s.t. ``||h|| <= radius`` (`solve_trust_region_diagonal` on the eigenpairs of ``T_j``,
    hard case included), so ``||p||_M = ||h||``. While ``T_j`` is positive definite and the
    step interior, the iterates are those of preconditioned CG; unlike Steihaug-CG, the
    iteration goes on after reaching the boundary or meeting negative curvature, and
    converges to the solution of the full subproblem.

    Stops when the residual of the shifted system,
    ``||(B + lambda M) p + g||_{M^{-1}} = beta_{j+1} |h_j|``, is at most ``tol`` times
    ``gamma / ||g||`` (``tol`` is given for the Euclidean norm of ``g``, as in
    `steihaug_cg`), when the Krylov space is invariant, or after ``max_iter`` products.
    The Lanczos vectors are kept (``2 j t`` numbers) for the step and for full
    re-orthogonalisation in the ``M`` inner product.
    """
    M = _Identity() if preconditioner is None else preconditioner
    g = np.asarray(g, dtype=float)
    g_norm = float(np.linalg.norm(g))
    if g_norm < tol or g_norm == 0.0:
        return SubproblemSolution(np.zeros_like(g), 0.0, False, 0.0, 0, "interior", 0.0)
    y = np.asarray(M.solve(g), dtype=float)
    gamma = np.sqrt(max(float(g @ y), 0.0))
    if not gamma > 0.0:
        raise ValueError("the preconditioner is not positive definite")
    tol_m = tol * gamma / g_norm
    Q, U = [], []                          # q_i and u_i = M q_i
    alphas, betas = [], []
    q, u = y / gamma, g / gamma
    sol = h = None
    with np.errstate(under="ignore"):
        for j in range(1, max_iter + 1):
            Q.append(q)
            U.append(u)
            Bq = np.asarray(hvp(q), dtype=float)
            alpha = float(q @ Bq)
            r = Bq - alpha * u
            if j > 1:
                r -= betas[-1] * U[-2]
            Qm = np.asarray(Q)
            r -= np.asarray(U).T @ (Qm @ r)          # re-orthogonalise: q_i'M (M^{-1} r) = q_i'r
            alphas.append(alpha)
            lam, V = eigh_tridiagonal(np.asarray(alphas), np.asarray(betas)) if j > 1 else \
                (np.asarray(alphas), np.ones((1, 1)))
            sol = solve_trust_region_diagonal(lam, gamma * V[0], radius)
            h = V @ sol.step
            y = np.asarray(M.solve(r), dtype=float)
            beta = np.sqrt(max(float(r @ y), 0.0))
            if beta * abs(h[-1]) <= tol_m or beta <= 1e-14 * (abs(alpha) + gamma) or j == max_iter:
                break
            betas.append(beta)
            q, u = y / beta, r / beta
    p = np.asarray(Q).T @ h
    case = "interior" if not sol.hits_boundary else ("hard" if sol.case == "hard" else "boundary")
    if sol.hits_boundary and lam[0] <= 0.0 and case != "hard":
        case = "negative_curvature"
    return SubproblemSolution(p, sol.model_decrease, sol.hits_boundary, sol.multiplier, j, case,
                              float(np.linalg.norm(h)))
