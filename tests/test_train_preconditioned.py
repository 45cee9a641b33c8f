"""Preconditioned trust-region solvers, tested alone against their guarantees.

The trust region is the ellipsoid ``||p||_M <= radius``. With ``M = L L'`` the change of
variables ``q = L'p`` turns it into the Euclidean subproblem for ``B^ = L^{-1} B L^{-T}``,
``g^ = L^{-1} g``, whose optimum comes from the same dual oracle as the unpreconditioned
tests (`tests.test_train_subproblem.dual_optimum`), and whose Cauchy point is the first
iterate of preconditioned Steihaug-CG.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_triangular
from scipy.stats import ortho_group

from dist_hess.train.blocks import BlockDiagonal, block_groups
from dist_hess.train.subproblem import damped_cg, lanczos_trust_region, steihaug_cg
from tests.test_train_subproblem import (CASES, RADII, cauchy_decrease, dual_optimum, model_value,
                                         spectral_case)


class Dense:
    """A dense symmetric positive-definite preconditioner ``M``."""

    def __init__(self, M):
        self.M = np.asarray(M, dtype=float)

    def matvec(self, v):
        return self.M @ v

    def solve(self, r):
        return np.linalg.solve(self.M, r)


def preconditioner(n, seed=1, condition=50.0):
    Q = ortho_group.rvs(n, random_state=seed) if n > 1 else np.ones((1, 1))
    return Dense(Q @ np.diag(np.geomspace(1.0, condition, n)) @ Q.T)


def transformed(B, g, M):
    """``(B^, g^, eigenvalues of B^, coefficients of g^)`` with ``M = L L'``."""
    L = np.linalg.cholesky(M)
    Bh = solve_triangular(L, solve_triangular(L, B, lower=True).T, lower=True)
    Bh = 0.5 * (Bh + Bh.T)
    gh = solve_triangular(L, g, lower=True)
    lam, V = np.linalg.eigh(Bh)
    return Bh, gh, lam, V.T @ gh


def m_norm(p, M):
    return float(np.sqrt(p @ M.matvec(p)))


NAMES = [n for n in CASES if n != "zero_gradient_indefinite"]


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", NAMES)
def test_preconditioned_steihaug_stays_in_the_ellipsoid_and_beats_its_cauchy_point(name, radius):
    B, g, _, _ = spectral_case(*CASES[name])
    M = preconditioner(g.size)
    sol = steihaug_cg(lambda v: B @ v, g, radius, tol=1e-10, max_iter=50, preconditioner=M)
    assert m_norm(sol.step, M) <= radius * (1 + 1e-10)
    assert sol.norm == pytest.approx(m_norm(sol.step, M), rel=1e-9, abs=1e-14)
    m = model_value(B, g, sol.step)
    assert sol.model_decrease == pytest.approx(-m, rel=1e-9, abs=1e-14)
    Bh, gh, lam, gamma = transformed(B, g, M.M)
    assert -m >= cauchy_decrease(Bh, gh, radius) * (1 - 1e-10)
    assert m >= dual_optimum(lam, gamma, radius) - 1e-9 * max(1.0, abs(m))


def test_exact_preconditioner_gives_the_newton_step_in_one_product():
    B, g, _, _ = spectral_case(*CASES["pd_ill_conditioned"])
    products = []

    def hvp(v):
        products.append(v)
        return B @ v

    sol = steihaug_cg(hvp, g, 1e6, tol=1e-9 * np.linalg.norm(g), max_iter=10,
                      preconditioner=Dense(B))
    assert len(products) == 1 and sol.case == "interior"
    np.testing.assert_allclose(sol.step, -np.linalg.solve(B, g), rtol=1e-10)


def test_block_eigensystem_is_a_preconditioner():
    """`BlockEigensystem.matvec/solve` are ``M v`` and ``M^{-1} r`` of the block matrix."""
    rng = np.random.default_rng(3)
    slices = [slice(0, 6), slice(6, 9)]
    groups = block_groups("row", slices, row_sizes=[3, 3])
    stacks = []
    for g in groups:
        A = rng.standard_normal((g.n_blocks, g.size, g.size))
        stacks.append(np.einsum("mab,mcb->mac", A, A) + np.eye(g.size))
    blocks = BlockDiagonal(groups, stacks, 9)
    eig = blocks.eigh()
    dense = blocks.to_dense()
    v = rng.standard_normal(9)
    np.testing.assert_allclose(eig.matvec(v), dense @ v, rtol=1e-12)
    np.testing.assert_allclose(eig.solve(v), np.linalg.solve(dense, v), rtol=1e-10)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("hard")])
@pytest.mark.parametrize("preconditioned", [False, True], ids=["euclidean", "preconditioned"])
def test_lanczos_solves_the_subproblem_on_the_whole_space(name, radius, preconditioned):
    """After ``n`` products the Krylov space is everything: GLTR is exact (outside the
    hard case, where ``g`` has no component along the lowest eigenvector)."""
    B, g, lam, gamma = spectral_case(*CASES[name])
    M = preconditioner(g.size) if preconditioned else None
    sol = lanczos_trust_region(lambda v: B @ v, g, radius, tol=1e-13, max_iter=g.size,
                               preconditioner=M)
    metric = M or Dense(np.eye(g.size))
    assert m_norm(sol.step, metric) <= radius * (1 + 1e-10)
    assert sol.norm == pytest.approx(m_norm(sol.step, metric), rel=1e-8, abs=1e-14)
    m = model_value(B, g, sol.step)
    assert sol.model_decrease == pytest.approx(-m, rel=1e-8, abs=1e-13)
    if preconditioned:
        _, _, lam, gamma = transformed(B, g, metric.M)
    assert m == pytest.approx(dual_optimum(lam, gamma, radius), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"radius={r}")
@pytest.mark.parametrize("name", NAMES)
def test_lanczos_never_does_worse_than_steihaug(name, radius):
    B, g, _, _ = spectral_case(*CASES[name])
    M = preconditioner(g.size, seed=5)
    for iterations in (1, 2, g.size):
        cg = steihaug_cg(lambda v: B @ v, g, radius, tol=0.0, max_iter=iterations,
                         preconditioner=M)
        gltr = lanczos_trust_region(lambda v: B @ v, g, radius, tol=0.0, max_iter=iterations,
                                    preconditioner=M)
        assert gltr.model_decrease >= cg.model_decrease * (1 - 1e-9) - 1e-14
        assert m_norm(gltr.step, M) <= radius * (1 + 1e-10)


def test_lanczos_leaves_along_negative_curvature():
    B = np.diag([1.0, -1.0])
    g = np.array([1.0, 1e-3])
    sol = lanczos_trust_region(lambda v: B @ v, g, 2.0, tol=1e-12, max_iter=2)
    assert sol.hits_boundary and np.linalg.norm(sol.step) == pytest.approx(2.0)
    assert abs(sol.step[1]) > 1.5                 # mostly along the negative eigenvector


@pytest.mark.parametrize("damping", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("name", ["pd", "pd_ill_conditioned", "singular_psd", "random_20"])
def test_damped_cg_solves_the_shifted_system(name, damping):
    B, g, lam, _ = spectral_case(*CASES[name])
    M = preconditioner(g.size, seed=2)
    sol = damped_cg(lambda v: B @ v, g, damping, tol=1e-12 * np.linalg.norm(g),
                    max_iter=4 * g.size, preconditioner=M)
    assert sol.model_decrease == pytest.approx(-model_value(B, g, sol.step), rel=1e-8)
    if np.linalg.eigvalsh(B + damping * M.M)[0] > 0:
        expected = -np.linalg.solve(B + damping * M.M, g)
        np.testing.assert_allclose(sol.step, expected, rtol=1e-7, atol=1e-10)
    else:                                  # stopped at negative curvature, still downhill
        assert sol.case == "negative_curvature" and sol.model_decrease > 0


def test_damped_cg_at_negative_curvature_takes_the_damped_gradient_step():
    B = -np.eye(3)
    g = np.array([1.0, -2.0, 0.5])
    M = preconditioner(3)
    sol = damped_cg(lambda v: B @ v, g, 0.1, tol=1e-12, max_iter=10, preconditioner=M)
    assert sol.case == "negative_curvature"
    np.testing.assert_allclose(sol.step, -M.solve(g) / 0.1, rtol=1e-12)
    assert sol.model_decrease == pytest.approx(-model_value(B, g, sol.step)) and sol.model_decrease > 0
