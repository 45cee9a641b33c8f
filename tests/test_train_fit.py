"""`dist_hess.fit` on stand-in models with known answers: optima, rates, escapes, stopping."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from dist_hess.train import Damping, FitResult, IterationRecord, Status, TrustRegion, fit
from dist_hess.train.driver import minimize, reduction_ratio
from dist_hess.train.objective import LocalObjective
from dist_hess.train.strategies import Step, StepStrategy
from tests.test_train_problems import (PROBLEMS, ExpLinear, LinearRegression, LogisticRegression,
                                       Rosenbrock, Saddle, logistic_data, regression_data)

# (method, globalization) pairs: every step strategy under every rule it supports
VARIANTS = [("newton", None), ("newton-cg", None), ("block-newton", "trust-region"),
            ("block-newton", "damping"), ("lm", None)]
VARIANT_IDS = [m if g is None else f"{m}-{g}" for m, g in VARIANTS]


@pytest.mark.parametrize(("method", "globalization"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("outputs", [1, 2])
def test_linear_regression_optimum_is_lstsq(method, globalization, outputs):
    X, Y = regression_data(n=50, inputs=4, outputs=outputs, seed=outputs)
    model = LinearRegression(4, outputs=outputs)
    result = fit(model, X, Y, method=method, globalization=globalization, max_iter=200)
    assert result.converged and result.gradient_norm < 1e-6
    np.testing.assert_allclose(result.w, model.lstsq(X, Y), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(("method", "globalization"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_logistic_regression_optimum_matches_scipy_bfgs(method, globalization, lam):
    X, Y = logistic_data(n=80, inputs=3, seed=4)
    model = LogisticRegression(3, lam=lam)
    result = fit(model, X, Y, method=method, globalization=globalization, max_iter=200)
    assert result.converged and result.gradient_norm < 1e-6
    reference = scipy_minimize(model.value, np.zeros(model.n_params), args=(X, Y),
                               jac=model.gradient, method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(result.w, reference.x, rtol=1e-6, atol=1e-7)
    assert result.value == pytest.approx(reference.fun, rel=1e-12)


@pytest.mark.parametrize(("method", "globalization"), VARIANTS, ids=VARIANT_IDS)
def test_rosenbrock_converges_to_its_minimum(method, globalization):
    model = Rosenbrock()
    result = fit(model, None, None, method=method, globalization=globalization, max_iter=300)
    assert result.converged, result.message
    assert result.gradient_norm < 1e-6
    np.testing.assert_allclose(result.w, [1.0, 1.0], atol=1e-5)


@pytest.mark.parametrize(("method", "options"), [
    ("newton", None), ("newton-cg", None), ("lm", None), ("block-newton", None),
    ("block-newton", {"solver": "lanczos"})],
    ids=["newton", "newton-cg", "lm", "block-newton", "block-newton-lanczos"])
def test_chained_rosenbrock_converges(method, options):
    """Six coupled parameters in two layers: the row blocks leave out the coupling, which
    block-newton's CG recovers from Hessian-vector products."""
    model = Rosenbrock(shapes=[(2, 2), (1, 2)], start=np.linspace(0.4, 1.3, 6))
    result = fit(model, None, None, method=method, max_iter=300, options=options)
    assert result.converged and result.gradient_norm < 1e-6
    np.testing.assert_allclose(result.w, np.ones(6), atol=1e-5)


def test_pure_block_step_crawls_where_the_coupling_matters():
    """The reason block-newton preconditions CG instead of stepping with the blocks alone."""
    model = Rosenbrock(shapes=[(2, 2), (1, 2)], start=np.linspace(0.4, 1.3, 6))
    coupled = fit(model, None, None, method="block-newton", max_iter=300)
    alone = fit(model, None, None, method="block-newton", max_iter=coupled.n_iter,
                options={"solver": "block"})
    assert coupled.converged and not alone.converged


@pytest.mark.parametrize("name", ["quadratic", "exp_linear", "logistic_regression",
                                  "linear_regression_2out", "rosenbrock2"])
@pytest.mark.parametrize("options", [{"solver": "block"}, {"solver": "lanczos"},
                                     {"modification": "shift"}, {"max_cg_iter": 2}],
                         ids=["block", "lanczos", "shift", "two_products"])
def test_block_newton_options_reach_the_gradient_tolerance(name, options):
    model, X, Y = PROBLEMS[name]
    result = fit(model, X, Y, method="block-newton", options=options, max_iter=300)
    assert result.converged and result.gradient_norm < 1e-6


def test_the_radius_lives_in_the_norm_the_strategy_reports():
    """A step reporting ``norm`` (||p||_M) has its radius updated in that norm."""
    class Scaled(StepStrategy):
        """Gradient steps of M-norm ``radius`` with ``M = 4 I`` (so ||p||_M = 2 ||p||)."""
        name, globalizations = "scaled", ("trust-region",)

        def solve(self, state):
            p = -state.gradient / np.linalg.norm(state.gradient) * state.radius / 2.0
            return Step(p, -float(state.gradient @ p) - 2.0 * float(p @ p), True, norm=state.radius)

    model, X, Y = PROBLEMS["quadratic"]
    result = minimize(LocalObjective(model, X, Y), Scaled(), TrustRegion(initial_radius=100.0),
                      max_iter=3)
    first = result.history[0]
    assert first.step_norm == pytest.approx(50.0)           # Euclidean, in the record
    assert not first.accepted and first.ratio < 0.25         # far past the minimum
    assert result.history[1].radius == pytest.approx(25.0)   # 0.25 * ||p||_M, not 0.25 * ||p||


@pytest.mark.parametrize("structure", ["row", "layer", "full"])
@pytest.mark.parametrize("method", ["block-newton", "lm"])
def test_block_structures_converge(method, structure):
    X, Y = regression_data(n=40, inputs=3, outputs=3, seed=7)
    model = LinearRegression(3, outputs=3)
    result = fit(model, X, Y, method=method, structure=structure, max_iter=100)
    assert result.converged and result.gradient_norm < 1e-6
    np.testing.assert_allclose(result.w, model.lstsq(X, Y), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", ["quadratic", "exp_linear", "logistic_regression",
                                  "linear_regression_2out"])
@pytest.mark.parametrize(("method", "globalization"), VARIANTS, ids=VARIANT_IDS)
def test_every_method_reaches_the_gradient_tolerance(name, method, globalization):
    model, X, Y = PROBLEMS[name]
    result = fit(model, X, Y, method=method, globalization=globalization, max_iter=300)
    assert result.converged and result.gradient_norm < 1e-6


@pytest.mark.parametrize("name", ["rosenbrock2", "logistic_regression"])
def test_newton_converges_quadratically(name):
    """Near the minimum ``||g_{k+1}|| <= C ||g_k||^2`` (C ~ L / (2 mu^2), here <= 1)."""
    model, X, Y = PROBLEMS[name]
    result = fit(model, X, Y, method="newton", max_iter=100, gtol=1e-13, ftol=0.0)
    assert result.converged
    norms = [model_start_norm(model, X, Y)] + [r.gradient_norm for r in result.history if r.accepted]
    tail = [(a, b) for a, b in zip(norms[:-1], norms[1:]) if a < 0.1 and b > 1e-14]
    assert len(tail) >= 2
    for a, b in tail:
        assert b <= 5.0 * a * a


def model_start_norm(model, X, Y):
    return float(np.linalg.norm(model.gradient(model.init(), X, Y)))


def test_newton_escapes_a_saddle_from_its_stable_manifold():
    """From (1, 0) the Newton step lands on the saddle (0, 0); the exact trust-region
    subproblem meets the hard case there and leaves along the negative curvature."""
    result = fit(Saddle(start=(1.0, 0.0)), None, None, method="newton")
    assert result.converged
    np.testing.assert_allclose(np.abs(result.w), [0.0, 1.0], atol=1e-6)
    assert result.value == pytest.approx(-0.25)


@pytest.mark.parametrize(("method", "globalization", "options"), [
    ("newton", None, None), ("newton-cg", None, None),
    ("block-newton", "trust-region", None), ("block-newton", "damping", None),
    ("block-newton", "trust-region", {"modification": "absolute"})],
    ids=["newton", "newton-cg", "block-newton", "block-newton-damping", "block-newton-absolute"])
def test_saddle_start_escapes_to_a_minimum(method, globalization, options):
    result = fit(Saddle(start=(1.0, 1e-3)), None, None, method=method,
                 globalization=globalization, options=options)
    assert result.converged
    np.testing.assert_allclose(result.w, [0.0, 1.0], atol=1e-6)
    hessian = Saddle().full(result.w, None, None)
    assert np.all(np.linalg.eigvalsh(hessian) > 0)


def test_block_newton_is_exact_on_a_row_block_diagonal_problem():
    """Two outputs, one layer: the Hessian is ``I_2 (x) Z'Z``, exactly its row blocks."""
    X, Y = regression_data(n=30, inputs=3, outputs=2, seed=3)
    model = LinearRegression(3, outputs=2)
    result = fit(model, X, Y, method="block-newton", structure="row",
                 globalization=TrustRegion(initial_radius=1e3))
    assert result.n_iter == 1 and result.converged
    np.testing.assert_allclose(result.w, model.lstsq(X, Y), rtol=1e-9)


def test_overflowing_trial_points_are_rejected():
    """exp(w) overflows for long steps: those trials are rejected, the radius shrinks."""
    model = ExpLinear(n=2)
    rule = TrustRegion(initial_radius=1e4, max_radius=1e5)
    result = fit(model, None, None, method="newton", globalization=rule)
    assert result.converged
    np.testing.assert_allclose(result.w, np.log(2.0), atol=1e-6)
    first = result.history[0]
    assert not first.accepted and first.ratio is None


def test_history_records_every_iteration():
    model, X, Y = PROBLEMS["rosenbrock2"]
    result = fit(model, X, Y, method="newton")
    assert isinstance(result, FitResult)
    assert [r.iteration for r in result.history] == list(range(1, result.n_iter + 1))
    assert all(isinstance(r, IterationRecord) and r.radius is not None and r.damping is None
               for r in result.history)
    assert any(not r.accepted for r in result.history)
    last = result.history[-1]
    assert last.value == result.value and last.gradient_norm == result.gradient_norm
    accepted_values = [r.value for r in result.history if r.accepted]
    assert accepted_values == sorted(accepted_values, reverse=True)
    assert last["value"] == last.value and last["step_length"] == last.step_norm
    with pytest.raises(KeyError, match="step_length"):
        last["loss"]
    assert (result.x is result.w, result.fun, result.nit, result.success) == \
        (True, result.value, result.n_iter, result.converged)
    assert result.jac is result.gradient


def test_trust_region_radius_follows_the_ratio():
    model, X, Y = PROBLEMS["rosenbrock2"]
    rule = TrustRegion()
    result = fit(model, X, Y, method="newton", globalization=rule)
    for now, after in zip(result.history[:-1], result.history[1:]):
        if now.ratio is None or now.ratio < 0.25:
            assert after.radius < now.radius
        elif now.ratio > 0.75:
            assert after.radius >= now.radius
        else:
            assert after.radius == now.radius
        assert now.accepted == (now.ratio is not None and now.ratio > rule.eta)


def test_lm_damping_follows_the_trainlm_schedule():
    model, X, Y = PROBLEMS["rosenbrock2"]
    # trainlm's mu_0 = 1e-3 asked for (lm's own default starts at 1, relative to G's scale)
    result = fit(model, X, Y, method="lm", globalization=Damping(), max_iter=200)
    history = result.history
    assert history[0].damping == pytest.approx(1e-3)
    assert any(not r.accepted for r in history)
    for now, after in zip(history[:-1], history[1:]):
        factor = 0.1 if now.accepted else 10.0
        assert after.damping == pytest.approx(max(now.damping * factor, 1e-20), rel=1e-12)


def test_lm_gives_up_when_the_damping_exceeds_its_maximum():
    model, X, Y = PROBLEMS["rosenbrock2"]
    rule = Damping(initial=1e-3, maximum=1e-2)
    result = fit(model, X, Y, method="lm", globalization=rule, max_iter=500)
    assert result.status in (Status.GTOL, Status.STALLED)


def test_status_is_a_string_enum_with_a_message():
    model, X, Y = PROBLEMS["rosenbrock2"]
    result = fit(model, X, Y, method="newton", max_iter=2)
    assert result.status == "max_iter" and result.status is Status.MAX_ITER
    assert not result.converged and result.n_iter == 2 and len(result.history) == 2
    assert "max_iter=2" in result.message


def test_already_converged_start_takes_no_iteration():
    model = LinearRegression(2)
    X, Y = regression_data(n=20, inputs=2)
    result = fit(model, X, Y, w0=model.lstsq(X, Y), method="block-newton")
    assert result.status == "gtol" and result.n_iter == 0 and result.history == []


def test_max_time_and_callback_stop_the_loop():
    model, X, Y = PROBLEMS["rosenbrock2"]
    timed = fit(model, X, Y, method="newton", max_time=0.0)
    assert timed.status == "max_time" and timed.n_iter == 1
    seen = []

    def callback(w, record):
        seen.append((w.copy(), record))
        return record.iteration == 3

    stopped = fit(model, X, Y, method="newton", callback=callback)
    assert stopped.status == "callback" and stopped.n_iter == 3
    assert [r.iteration for _, r in seen] == [1, 2, 3]
    np.testing.assert_array_equal(seen[-1][0], stopped.w)


def test_ftol_stops_on_a_small_relative_decrease():
    model, X, Y = PROBLEMS["logistic_regression"]
    result = fit(model, X, Y, method="lm", gtol=0.0, ftol=1e-6)
    assert result.status == "ftol" and result.converged


def test_verbose_prints_one_line_per_iteration(capsys):
    model, X, Y = PROBLEMS["quadratic"]
    result = fit(model, X, Y, method="newton", verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == result.n_iter + 3          # start, header, iterations, final


def test_reduction_ratio_is_robust_at_round_off_level():
    assert reduction_ratio(1.0, 2.0, 10.0) == pytest.approx(0.5)
    assert reduction_ratio(0.0, 0.0, 1e6) == 1.0
    assert reduction_ratio(-1e-20, 1e-20, 1.0) == pytest.approx(1.0, rel=1e-4)
    assert reduction_ratio(float("nan"), 1.0, 1.0) == float("-inf")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"method": "bfgs"}, ValueError, "unknown method"),
    ({"method": "lm", "kind": "hessian"}, ValueError, "not available"),
    ({"method": "newton", "globalization": "damping"}, ValueError, "not available"),
    ({"method": "newton", "structure": "row"}, ValueError, "full"),
    ({"method": "newton-cg", "structure": "row"}, ValueError, "no structure"),
    ({"method": "block-newton", "structure": "diagonal"}, ValueError, "structure"),
    ({"method": "block-newton", "options": {"solver": "exact"}}, ValueError, "solver"),
    ({"method": "block-newton", "options": {"max_cg_iter": 0}}, ValueError, "max_cg_iter"),
    ({"method": "newton-cg", "options": {"max_cg_iter": 0}}, ValueError, "max_cg_iter"),
    ({"method": "lm", "options": {"switch_after": 0}}, ValueError, "switch_after"),
    ({"method": "newton", "options": {"radius": 2.0}}, TypeError, "bad options"),
    ({"method": "block-newton", "options": {"min_global_curvature_ratio": 2.0}}, ValueError,
     "min_global_curvature_ratio"),
    ({"method": "newton", "max_iter": -1}, ValueError, "max_iter"),
    ({"method": "newton", "w0": np.zeros(3)}, ValueError, "w0"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    model, X, Y = PROBLEMS["rosenbrock2"]
    with pytest.raises(error, match=match):
        fit(model, X, Y, **kwargs)
