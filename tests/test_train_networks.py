"""`fit` on real `dist_hess.Model` networks (needs the derivative engine), in process."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

pytest.importorskip("dist_hess.engine.sums")

import dist_hess as dh  # noqa: E402
from dist_hess.train import fit  # noqa: E402

METHODS = ["newton", "newton-cg", "block-newton", "lm"]


def linear_model(loss="squared", penalty=None):
    spec = {"inputs": 3, "layers": [{"type": "dense", "units": 1, "activation": "identity"}],
            "loss": loss}
    if penalty is not None:
        spec["penalty"] = penalty
    return dh.Model.from_dict(spec)


@pytest.mark.parametrize("method", METHODS)
def test_linear_network_optimum_is_lstsq(method):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    Y = X @ [0.5, 1.0, -1.0] - 0.2 + 0.1 * rng.standard_normal(30)
    result = dh.fit(linear_model(), X, Y, method=method, max_iter=100)
    assert result.converged and result.gradient_norm < 1e-6
    Z = np.hstack([np.ones((30, 1)), X])
    np.testing.assert_allclose(result.w, np.linalg.lstsq(Z, Y, rcond=None)[0], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_logistic_network_matches_scipy_bfgs(method):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 3))
    Y = (rng.random(60) < 1 / (1 + np.exp(-(X @ [1.0, -1.0, 0.5])))).astype(float)
    model = linear_model("binary_cross_entropy", {"type": "l2", "lambda": 0.1})
    result = dh.fit(model, X, Y, method=method, max_iter=100)
    assert result.converged and result.gradient_norm < 1e-6
    reference = scipy_minimize(model.value, np.zeros(model.n_params), args=(X, Y),
                               jac=model.gradient, method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(result.w, reference.x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["newton", "newton-cg", "lm"])
def test_small_mlp_with_a_skip_connection_converges(method):
    spec = {"inputs": 2,
            "layers": [{"type": "dense", "units": 3, "activation": "tanh"},
                       {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}],
            "loss": "squared", "penalty": {"type": "l2", "lambda": 0.01}}
    model = dh.Model.from_dict(spec)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 2))
    Y = np.tanh(X[:, 0] - X[:, 1]) + 0.05 * rng.standard_normal(40)
    result = dh.fit(model, X, Y, method=method, max_iter=300)
    assert result.converged and result.gradient_norm < 1e-6
    np.testing.assert_allclose(result.gradient, model.gradient(result.w, X, Y))
    if method != "lm":                              # a local minimum: the Hessian is PSD
        H = model.curvature(result.w, X, Y, kind="hessian", structure="full")
        assert np.linalg.eigvalsh(H).min() > -1e-8


def test_fit_is_exported_from_the_package_root():
    assert dh.fit is fit


def test_one_memory_budget_option_for_model_methods_evaluate_and_fit():
    """``memory_budget=`` is passed the same way everywhere; one example per batch changes
    only the order of the sums."""
    rng = np.random.default_rng(2)
    model = dh.Model.from_dict({"inputs": 3, "loss": "squared", "layers": [
        {"type": "dense", "units": 4, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}]})
    X = rng.standard_normal((25, 3))
    Y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(25)
    w = model.init(seed=0)
    H = model.curvature(w, X, Y, "hessian", "full")
    np.testing.assert_allclose(model.curvature(w, X, Y, "hessian", "full", memory_budget=1), H,
                               rtol=1e-12, atol=1e-14)
    ev = dh.evaluate(model, w, X, Y, curvature="hessian:full", memory_budget=1)
    np.testing.assert_allclose(ev.curvature, H, rtol=1e-12, atol=1e-14)
    whole = dh.fit(model, X, Y, method="newton", max_iter=5)
    batched = dh.fit(model, X, Y, method="newton", max_iter=5, memory_budget=1)
    np.testing.assert_allclose(batched.w, whole.w, rtol=1e-9, atol=1e-12)
    for call in (lambda: model.value(w, X, Y, memory_budget=0),
                 lambda: dh.evaluate(model, w, X, Y, memory_budget=-1),
                 lambda: dh.fit(model, X, Y, max_iter=1, memory_budget=2.5)):
        with pytest.raises(ValueError, match="memory_budget"):
            call()
