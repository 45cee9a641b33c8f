"""OBD/OBS saliencies, masks, and the backward pruning loop (issue 4).

Oracles: the equality-constrained minimum of a quadratic from its KKT system,
and least squares with a column removed (a linear model's objective is exactly
quadratic, so OBS must reproduce the refit exactly).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import MaskedModel, model_from_dict, obs_update, prune, saliencies
from dist_hess.analysis.pruning import obs_step


def linear_model(inputs, outputs=1):
    return dh.Model.from_dict({"inputs": inputs, "loss": "squared", "layers": [
        {"type": "dense", "units": outputs, "activation": "identity"}]})


# --------------------------------------------------------------------------- OBS / OBD


def test_obs_step_is_the_constrained_minimum_of_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    H = A @ A.T + 0.5 * np.eye(6)
    w = rng.normal(size=6)
    for q in range(6):
        dw, saliency = obs_step(H, w, q)
        # KKT: [H e_q; e_q' 0] [dw; mu] = [0; -w_q]
        K = np.zeros((7, 7))
        K[:6, :6], K[:6, 6], K[6, :6] = H, np.eye(6)[q], np.eye(6)[q]
        want = np.linalg.solve(K, np.r_[np.zeros(6), -w[q]])[:6]
        np.testing.assert_allclose(dw, want, rtol=1e-10, atol=1e-12)
        assert dw[q] == pytest.approx(-w[q], rel=1e-12)
        assert saliency == pytest.approx(0.5 * want @ H @ want, rel=1e-10)


def test_obs_on_linear_regression_is_the_refit_without_the_weight():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    y = X @ [0.5, -1.0, 0.05, 2.0] + 0.3 + rng.normal(size=60)
    Z = np.c_[np.ones(60), X]
    b, *_ = np.linalg.lstsq(Z, y, rcond=None)
    model = linear_model(4)
    source = (model, b, X, y)
    sal = saliencies(source)
    H = Z.T @ Z
    np.testing.assert_allclose(sal.obd, 0.5 * b ** 2 * np.diag(H), rtol=1e-10)
    E0 = model.value(b, X, y)
    for q in range(5):
        keep = [c for c in range(5) if c != q]
        refit = np.zeros(5)
        refit[keep], *_ = np.linalg.lstsq(Z[:, keep], y, rcond=None)
        dw = obs_update(source, q)
        np.testing.assert_allclose(b + dw, refit, rtol=1e-9, atol=1e-12)
        assert sal.obs[q] == pytest.approx(model.value(refit, X, y) - E0, rel=1e-8)
    # row blocks: for one output the row block is the whole Hessian
    np.testing.assert_allclose(obs_update(source, 2, structure="row"), obs_update(source, 2),
                               rtol=1e-12)


def test_obs_within_row_blocks_moves_one_row():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 2))
    Y = rng.normal(size=(50, 2))
    model = linear_model(2, outputs=2)
    Z = np.c_[np.ones(50), X]
    B, *_ = np.linalg.lstsq(Z, Y, rcond=None)
    dw = obs_update((model, B.T.ravel(), X, Y), 4, structure="row")     # row 1, column 1
    assert np.all(dw[:3] == 0) and dw[4] == pytest.approx(-B[1, 1])
    refit, *_ = np.linalg.lstsq(Z[:, [0, 2]], Y[:, 1], rcond=None)
    np.testing.assert_allclose((B.T.ravel() + dw)[3:], [refit[0], 0.0, refit[1]], rtol=1e-9,
                               atol=1e-12)


# --------------------------------------------------------------------------- the mask

NET = {"inputs": 3, "loss": "squared", "penalty": {"type": "l2", "lambda": 0.1}, "layers": [
    {"type": "dense", "units": 2, "activation": "tanh"},
    {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}]}


def test_masked_model_derivatives_and_json():
    model = dh.Model.from_dict(NET)
    mask = np.ones(model.n_params, dtype=bool)
    mask[[1, 6, 11]] = False
    masked = MaskedModel(model, mask)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    w = rng.normal(size=model.n_params)
    g = masked.gradient(w, X, y)
    assert np.all(g[~mask] == 0)
    np.testing.assert_allclose(g[mask], model.gradient(w * mask, X, y)[mask], rtol=1e-12)
    H = masked.curvature(w, X, y, structure="full")
    Hb = model.curvature(w * mask, X, y, structure="full")
    np.testing.assert_allclose(H[np.ix_(mask, mask)], Hb[np.ix_(mask, mask)], rtol=1e-12)
    np.testing.assert_array_equal(H[~mask][:, ~mask], np.eye(3))
    assert np.all(H[np.ix_(~mask, mask)] == 0)
    v = rng.normal(size=model.n_params)
    np.testing.assert_allclose(masked.hvp(w, X, y, v), H @ v, rtol=1e-10, atol=1e-12)
    rows = masked.curvature(w, X, y, structure="row")
    assert rows[0][0][1, 1] == 1.0 and np.all(rows[0][0][1, [0, 2, 3]] == 0)
    spec = json.loads(masked.to_json())
    assert spec["layers"][0]["mask"] == [[1, 0, 1, 1], [1, 1, 0, 1]]
    assert spec["layers"][1]["mask"] == [[1, 1, 1, 0, 1, 1]]
    again = model_from_dict(spec)
    assert isinstance(again, MaskedModel) and np.array_equal(again.mask, mask)
    assert again.to_dict() == spec
    assert type(model_from_dict(model.to_dict())) is dh.Model
    with pytest.raises(ValueError, match="mask"):
        model_from_dict({**NET, "layers": [{**NET["layers"][0], "mask": [[1, 1]]},
                                           NET["layers"][1]]})


@pytest.mark.parametrize("method", ["newton", "newton-cg", "block-newton", "lm"])
def test_fit_keeps_pruned_weights_at_zero(method):
    model = dh.Model.from_dict(NET)
    mask = np.ones(model.n_params, dtype=bool)
    mask[[2, 9, 12]] = False
    masked = MaskedModel(model, mask)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3))
    y = np.tanh(X[:, 0]) - X[:, 2] + 0.1 * rng.normal(size=40)
    w0 = model.init(seed=1)                           # not zero where pruned: projected
    result = masked.fit(X, y, w0=w0, method=method, max_iter=40)
    assert np.all(result.w[~mask] == 0.0) and np.all(result.gradient[~mask] == 0.0)
    assert result.value == pytest.approx(masked.value(result.w, X, y), rel=1e-12)
    if method in ("newton", "lm"):
        assert result.converged
    # dh.fit on the masked model directly: the pruned entries are inert
    direct = dh.fit(masked, X, y, w0=masked.project(w0), method=method, max_iter=25)
    assert masked.value(direct.w, X, y) == masked.value(masked.project(direct.w), X, y)
    assert np.all(masked.gradient(direct.w, X, y)[~mask] == 0.0)


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    order = np.random.default_rng(0).permutation(len(y))
    train, val = order[:300], order[300:]
    model = dh.Model.from_dict({"inputs": 10, "loss": "squared",
                                "penalty": {"type": "l2", "lambda": 1.0}, "layers": [
                                    {"type": "dense", "units": 2, "activation": "tanh"},
                                    {"type": "dense", "units": 1, "activation": "identity"}]})
    w = dh.fit(model, X[train], y[train], method="newton", max_iter=100).w
    return model, w, X[train], y[train], X[val], y[val]


def test_pruning_by_wald_on_diabetes(diabetes):
    model, w, X, y, X_val, y_val = diabetes
    path = prune(model, X, y, w, criterion="wald", threshold=0.05, max_steps=4,
                 X_val=X_val, Y_val=y_val, fit_options={"max_iter": 40})
    assert len(path) == 5 and path.best == 4
    assert [s.n_free for s in path] == [model.n_params - i for i in range(5)]
    removed = [s.removed[0] for s in path.steps[1:]]
    assert all(s.p_value > 0.05 for s in path.steps[1:])
    mask = path.mask
    assert not mask[removed].any() and mask.sum() == model.n_params - 4
    assert np.all(path.w[removed] == 0.0)
    # the fit respects the mask and the JSON carries it
    again = model_from_dict(json.loads(path.model.to_json()))
    assert np.array_equal(again.mask, mask)
    g = path.model.gradient(path.w, X, y)
    assert np.all(g[removed] == 0) and np.linalg.norm(g) < 1e-3
    table = dh.wald_table((path.model, path.w, X, y))
    assert np.all(np.isnan(table.std_error[removed])) and not table.free[removed].any()
    assert "0 (pruned)" in table.to_text()
    assert json.loads(path.to_json())["steps"][1]["removed"] == [removed[0]]
    assert "step" in path.to_csv().splitlines()[0] and "chosen" in path.to_text()


def test_pruning_units_by_validation_loss(diabetes):
    model, w, X, y, X_val, y_val = diabetes
    path = prune(model, X, y, w, criterion="validation", unit=True, X_val=X_val, Y_val=y_val,
                 fit_options={"max_iter": 40})
    assert len(path.steps[1].removed) == 12                 # an incoming row (11) + its output
    best = path.steps[path.best]
    assert all(best.val_loss <= s.val_loss for s in path.steps if s.accepted)
    if not path.steps[-1].accepted:
        assert path.steps[-1].val_loss > best.val_loss
    assert np.all(path.w[~path.mask] == 0.0)


def test_pruning_by_bic_stops_when_bic_rises(diabetes):
    model, w, X, y, _, _ = diabetes
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # the loop records, never warns
        path = prune(model, X, y, w, criterion="bic", rank="obs", max_steps=3,
                     structure="row", fit_options={"max_iter": 40})
    bics = [s.bic for s in path.steps if s.accepted]
    assert bics == sorted(bics, reverse=True)
    with pytest.raises(ValueError, match="X_val"):
        prune(model, X, y, w, criterion="validation")
