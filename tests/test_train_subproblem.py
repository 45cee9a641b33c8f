"""Trust-region subproblem solvers, tested alone against their guarantees.

Matrices have chosen spectra (``B = Q diag(lambda) Q'`` with a random orthogonal Q), as
in scipy's ``test_trustregion_exact.py``. The exact optimum ``m*`` comes from the
Lagrangian dual, which has no gap for the trust-region subproblem:

    m* = max_{mu >= max(0, -lambda_1)}  -1/2 sum_i gamma_i^2 / (lambda_i + mu) - mu radius^2 / 2,

with ``gamma = Q'g`` (terms with ``gamma_i = 0`` dropped) -- a one-dimensional concave
maximisation done by brute force (a fine grid, then bounded refinement), independent
of the secular-equation code under test.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import ortho_group

from dist_hess.train.subproblem import (boundary_roots, solve_damped_dense, solve_damped_diagonal,
                                        solve_trust_region_dense, solve_trust_region_diagonal,
                                        solve_trust_region_exact, steihaug_cg)

K_EASY, K_HARD = 0.1, 0.2
GUARANTEED_FRACTION = min((1 - K_EASY) ** 2, 1 - K_HARD)


def model_value(B, g, p):
    return float(g @ p + 0.5 * p @ B @ p)


def dual_optimum(eigenvalues, gamma, radius):
    """``m*`` by maximising the dual over ``mu`` (brute force; see the module docstring)."""
    keep = gamma != 0
    lam, gam2 = eigenvalues[keep], gamma[keep] ** 2
    lo = max(0.0, -float(np.min(eigenvalues)))

    def neg_dual(mu):
        return 0.5 * np.sum(gam2 / (lam + mu)) + 0.5 * mu * radius ** 2

    hi = lo + np.sqrt(np.sum(gam2)) / radius + np.max(np.abs(eigenvalues)) + 1.0
    # the dual is -inf at mu = -lambda_1 unless gamma_1 = 0: stay strictly above with logs
    grid = lo + np.logspace(-14, np.log10(hi - lo), 4000)
    denominators = lam[None, :] + grid[:, None]
    values = np.full(grid.size, np.inf)
    ok = np.all(denominators > 0, axis=1)
    values[ok] = (0.5 * np.sum(gam2 / denominators[ok], axis=1) + 0.5 * grid[ok] * radius ** 2)
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = min(values[i], neg_dual(lo) if np.all(lam + lo > 0) else np.inf)
    if b > a:
        res = minimize_scalar(neg_dual, bounds=(a, b), method="bounded",
                              options={"xatol": 1e-14 * max(1.0, b)})
        best = min(best, res.fun)
    return -best


def spectral_case(eigenvalues, gamma, seed=0):
    eigenvalues = np.asarray(eigenvalues, dtype=float)
    n = eigenvalues.size
    Q = ortho_group.rvs(n, random_state=seed) if n > 1 else np.ones((1, 1))
    B = Q @ np.diag(eigenvalues) @ Q.T
    gamma = np.asarray(gamma, dtype=float)
    return 0.5 * (B + B.T), Q @ gamma, eigenvalues, gamma


rng = np.random.default_rng(0)
CASES = {
    "pd": ([1.0, 2.0, 5.0, 10.0], [1.0, -1.0, 0.5, 2.0]),
    "pd_ill_conditioned": ([1e-4, 1.0, 1e3], [1.0, 1.0, 1.0]),
    "indefinite": ([-3.0, -1.0, 0.5, 4.0], [0.3, 1.0, -2.0, 1.0]),
    "negative_definite": ([-5.0, -2.0, -1.0], [1.0, 1.0, 1.0]),
    "singular_psd": ([0.0, 1.0, 3.0], [0.0, 1.0, -1.0]),
    "hard": ([-2.0, 1.0, 3.0, 6.0], [0.0, 1.0, -1.0, 0.5]),
    "hard_repeated": ([-2.0, -2.0, 1.0, 3.0], [0.0, 0.0, 1.0, 0.5]),
    "nearly_hard": ([-2.0, 1.0, 3.0, 6.0], [1e-9, 1.0, -1.0, 0.5]),
    "zero_gradient_indefinite": ([-1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
    "one_dimensional_negative": ([-1.0], [0.5]),
    "random_20": (np.linspace(-3, 5, 20), rng.standard_normal(20)),
}
RADII = [0.05, 1.0, 30.0]


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", list(CASES))
def test_exact_solver_meets_its_guarantees(name, radius):
    B, g, lam, gamma = spectral_case(*CASES[name])
    sol = solve_trust_region_exact(B, g, radius, k_easy=K_EASY, k_hard=K_HARD)
    p = sol.step
    assert np.linalg.norm(p) <= radius * (1 + 1e-12)
    m = model_value(B, g, p)
    m_star = dual_optimum(lam, gamma, radius)
    assert sol.model_decrease == pytest.approx(-m, rel=1e-10, abs=1e-14)
    assert m >= m_star - 1e-9 * max(1.0, abs(m_star))           # nobody beats the optimum
    assert -m >= GUARANTEED_FRACTION * -m_star - 1e-12 * max(1.0, abs(m_star))


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", list(CASES))
def test_diagonal_solver_is_exact(name, radius):
    _, _, lam, gamma = spectral_case(*CASES[name])
    sol = solve_trust_region_diagonal(lam, gamma, radius)
    c = sol.step
    assert np.linalg.norm(c) <= radius * (1 + 1e-12)
    m = float(gamma @ c + 0.5 * np.sum(lam * c * c))
    m_star = dual_optimum(lam, gamma, radius)
    assert sol.model_decrease == pytest.approx(-m, rel=1e-10, abs=1e-14)
    assert m == pytest.approx(m_star, rel=1e-7, abs=1e-9)


def test_dual_reference_matches_a_grid_in_two_dimensions():
    """The oracle itself, against brute force over the disc (boundary grid + interior Newton)."""
    for eigenvalues, gamma in [([-1.0, 2.0], [0.5, 1.0]), ([1.0, 3.0], [0.1, 0.2]),
                               ([-1.0, 2.0], [0.0, 1.0])]:
        B, g, lam, gam = spectral_case(eigenvalues, gamma, seed=3)
        radius = 0.7
        theta = np.linspace(0, 2 * np.pi, 200001)
        P = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
        best = np.min(P @ g + 0.5 * np.einsum("ia,ab,ib->i", P, B, P))
        if np.all(lam > 0):
            p = -np.linalg.solve(B, g)
            if np.linalg.norm(p) <= radius:
                best = min(best, model_value(B, g, p))
        assert dual_optimum(lam, gam, radius) == pytest.approx(best, rel=1e-6, abs=1e-9)


def test_positive_definite_interior_solution_is_the_newton_step():
    B, g, _, _ = spectral_case([1.0, 2.0, 5.0, 10.0], [1.0, -1.0, 0.5, 2.0])
    newton = -np.linalg.solve(B, g)
    sol = solve_trust_region_exact(B, g, 2.0 * np.linalg.norm(newton))
    assert not sol.hits_boundary and sol.case == "interior"
    np.testing.assert_allclose(sol.step, newton, rtol=1e-12, atol=1e-14)
    diag = solve_trust_region_diagonal(np.array([1.0, 2.0]), np.array([1.0, 1.0]), 10.0)
    np.testing.assert_allclose(diag.step, [-1.0, -0.5])


@pytest.mark.parametrize("name", ["hard", "hard_repeated", "zero_gradient_indefinite"])
def test_hard_case_goes_to_the_boundary_along_the_lowest_eigenvector(name):
    B, g, lam, gamma = spectral_case(*CASES[name])
    radius = 30.0                        # ||p(-lambda_1)|| < radius: the hard case proper
    for sol in (solve_trust_region_exact(B, g, radius),
                solve_trust_region_diagonal(lam, gamma, radius)):
        assert sol.hits_boundary
        assert np.linalg.norm(sol.step) == pytest.approx(radius, rel=K_EASY)
        assert sol.multiplier == pytest.approx(-lam.min(), rel=0.3)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", [n for n in CASES if n != "zero_gradient_indefinite"])
def test_dense_solver_is_exact_when_positive_definite_and_steihaug_otherwise(name, radius):
    B, g, lam, gamma = spectral_case(*CASES[name])
    sol = solve_trust_region_dense(B, g, radius, tol=1e-10, max_cg_iter=50)
    assert np.linalg.norm(sol.step) <= radius * (1 + 1e-12)
    assert sol.model_decrease == pytest.approx(-model_value(B, g, sol.step), rel=1e-9, abs=1e-14)
    if np.min(lam) == 0:                 # singular: round-off decides the factorisation
        return
    if np.all(lam > 0):                                       # the exact solver's guarantee
        m_star = dual_optimum(lam, gamma, radius)
        assert -model_value(B, g, sol.step) >= GUARANTEED_FRACTION * -m_star - 1e-12
        newton = -np.linalg.solve(B, g)
        if np.linalg.norm(newton) <= radius:                  # one factorisation
            assert sol.case == "interior" and sol.iterations == 1
            np.testing.assert_allclose(sol.step, newton, rtol=1e-10, atol=1e-14)
    else:              # Steihaug-CG's answer when on the boundary, else the exact one
        want = steihaug_cg(lambda v: B @ v, g, radius, tol=1e-10, max_iter=50)
        if np.linalg.norm(B @ want.step + g) > 1e-10 * np.linalg.norm(g):
            np.testing.assert_array_equal(sol.step, want.step)
        else:
            exact = solve_trust_region_exact(B, g, radius)
            np.testing.assert_array_equal(sol.step, exact.step)
        assert sol.model_decrease >= cauchy_decrease(B, g, radius) * (1 - 1e-9)


def test_dense_solver_leaves_a_saddle_point_along_the_negative_curvature():
    B, g, lam, gamma = spectral_case(*CASES["zero_gradient_indefinite"])      # g = 0
    sol = solve_trust_region_dense(B, g, 1.0, tol=1e-10, max_cg_iter=50)
    assert sol.case == "hard" and sol.model_decrease > 0
    assert np.linalg.norm(sol.step) == pytest.approx(1.0, rel=K_EASY)


def test_exact_solver_falls_back_to_the_eigendecomposition():
    B, g, lam, gamma = spectral_case(*CASES["indefinite"])
    sol = solve_trust_region_exact(B, g, 1.0, max_iter=0)      # no factorisation at all
    assert -model_value(B, g, sol.step) == pytest.approx(-dual_optimum(lam, gamma, 1.0), rel=1e-7)


def test_invalid_radius_is_refused():
    with pytest.raises(ValueError, match="radius"):
        solve_trust_region_exact(np.eye(2), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="radius"):
        solve_trust_region_diagonal(np.ones(2), np.ones(2), -1.0)


def test_boundary_roots():
    z, d = np.array([0.3, -0.1]), np.array([1.0, 2.0])
    lo, hi = boundary_roots(z, d, 1.5)
    assert lo < 0 < hi
    for tau in (lo, hi):
        assert np.linalg.norm(z + tau * d) == pytest.approx(1.5, rel=1e-14)


def test_damped_step_solves_the_shifted_system():
    lam, gamma = np.array([0.0, 1.0, 4.0]), np.array([0.5, 1.0, -1.0])
    sol = solve_damped_diagonal(lam, gamma, 0.3)
    np.testing.assert_allclose((lam + 0.3) * sol.step, -gamma, atol=1e-14)
    assert sol.model_decrease == pytest.approx(-(gamma @ sol.step + 0.5 * np.sum(lam * sol.step ** 2)))
    singular = solve_damped_diagonal(lam, gamma, 0.0)          # pseudo-inverse on lambda = 0
    np.testing.assert_allclose(singular.step, [0.0, -1.0, 0.25])


def test_dense_damped_step_is_the_levenberg_step_and_lifts_an_indefinite_hessian():
    rng = np.random.default_rng(3)
    Q = ortho_group.rvs(6, random_state=4)
    g = rng.normal(size=6)
    lam = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 8.0])             # semi-definite (Gauss-Newton)
    B = Q @ np.diag(lam) @ Q.T
    sol = solve_damped_dense(B, g, 0.3, semidefinite=True)
    np.testing.assert_allclose(sol.step, -np.linalg.solve(B + 0.3 * np.eye(6), g), rtol=1e-12)
    assert sol.model_decrease == pytest.approx(-model_value(B, g, sol.step), rel=1e-12)
    assert sol.multiplier == pytest.approx(0.3)
    indefinite = Q @ np.diag(lam - 1.0) @ Q.T                   # lambda_min = -1
    lifted = solve_damped_dense(indefinite, g, 0.3)
    floor = np.sqrt(np.finfo(float).eps) * np.linalg.norm(indefinite, np.inf)
    np.testing.assert_allclose(lifted.multiplier, 1.0 + floor + 0.3, rtol=1e-10)   # lambda_min -> floor
    np.testing.assert_allclose(lifted.step, -np.linalg.solve(indefinite + lifted.multiplier * np.eye(6), g),
                               rtol=1e-8)
    assert lifted.model_decrease > 0
    definite = Q @ np.diag(lam + 1.0) @ Q.T                     # lambda_min = 1 > floor
    assert solve_damped_dense(definite, g, 2.0).multiplier == 2.0


def cauchy_decrease(B, g, radius):
    """``-m`` at the Cauchy point (N&W eq. 4.11-4.12)."""
    gBg = g @ B @ g
    g_norm = np.linalg.norm(g)
    tau = 1.0 if gBg <= 0 else min(g_norm ** 3 / (radius * gBg), 1.0)
    p = -tau * radius / g_norm * g
    return -model_value(B, g, p)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", [n for n in CASES if n != "zero_gradient_indefinite"])
def test_steihaug_stays_inside_and_beats_the_cauchy_point(name, radius):
    B, g, _, _ = spectral_case(*CASES[name])
    sol = steihaug_cg(lambda v: B @ v, g, radius, tol=1e-10, max_iter=50)
    assert np.linalg.norm(sol.step) <= radius * (1 + 1e-12)
    m = model_value(B, g, sol.step)
    assert sol.model_decrease == pytest.approx(-m, rel=1e-9, abs=1e-14)
    assert -m >= cauchy_decrease(B, g, radius) * (1 - 1e-12)


def test_steihaug_inside_converges_to_the_newton_step():
    B, g, _, _ = spectral_case(*CASES["pd"])
    newton = -np.linalg.solve(B, g)
    sol = steihaug_cg(lambda v: B @ v, g, 10 * np.linalg.norm(newton), tol=1e-12, max_iter=20)
    assert not sol.hits_boundary
    np.testing.assert_allclose(sol.step, newton, rtol=1e-9)


def test_steihaug_follows_negative_curvature_to_the_boundary():
    B = np.diag([1.0, -1.0])
    g = np.array([0.0, 1e-3])
    sol = steihaug_cg(lambda v: B @ v, g, 2.0, tol=1e-12, max_iter=10)
    assert sol.case == "negative_curvature"
    assert np.linalg.norm(sol.step) == pytest.approx(2.0)
    assert sol.step[1] < 0                     # downhill along -g
