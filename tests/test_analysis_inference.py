"""Honest inference by default (issue 14 items 1-2, issue 13 item 5).

* the exact full covariance is the default, refused up front over the memory
  budget with the alternatives named; block structures are labelled approximations;
* exact standard errors of selected parameters by conjugate gradients on exact
  Hessian-vector products, against the full inverse (``t`` in the thousands);
* degenerate models: a non-identifiable parameter or a zero standard error gives
  ``n.i.`` with no z or p; bad options are refused;
* the statsmodels-layout summary (text, HTML) and ``to_frame``.

Oracles: dense ``numpy.linalg.inv`` / ``eigh`` of the exact full Hessian (itself
checked against JAX in tests/test_derivatives.py) and ordinary least squares.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import (NonIdentifiableWarning, laplace_predict, prune, saliencies,
                                select_parameters)
from dist_hess.analysis.covariance import COVARIANCE_BUDGET, full_covariance_bytes


def linear_model(inputs, loss="squared"):
    return dh.Model.from_dict({"inputs": inputs, "loss": loss, "layers": [
        {"type": "dense", "units": 1, "activation": "identity"}]})


def ols(n=100, inputs=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, inputs))
    y = X @ rng.normal(size=inputs) + 0.3 + rng.normal(scale=0.5, size=n)
    Z = np.c_[np.ones(n), X]
    b = np.linalg.lstsq(Z, y, rcond=None)[0]
    s2 = np.sum((y - Z @ b) ** 2) / (n - Z.shape[1])
    return linear_model(inputs), b, X, y, np.sqrt(s2 * np.diag(np.linalg.inv(Z.T @ Z)))


def small_net(penalty=0.5, seed=1, n=120):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = np.tanh(X[:, 0] - 0.5 * X[:, 1]) + 0.1 * rng.normal(size=n)
    model = dh.Model.from_dict({"inputs": 3, "loss": "squared",
                                "penalty": {"type": "l2", "lambda": penalty}, "layers": [
                                    {"type": "dense", "units": 4, "activation": "tanh"},
                                    {"type": "dense", "units": 1, "activation": "identity"}]})
    w = dh.fit(model, X, y, method="newton", w0=model.init(seed=0), gtol=1e-10).w
    return model, w, X, y


# --------------------------------------------------------------------------- defaults, budget


def test_the_default_is_the_exact_full_covariance_and_blocks_are_labelled():
    model, b, X, y, se = ols()
    table = dh.wald_table((model, b, X, y))
    assert table.structure == "full" and not table.approximation and table.solver == "eigh"
    np.testing.assert_allclose(table.std_error, se, rtol=1e-10)
    assert "exact" in table.covariance_type and "APPROXIMATION" not in table.to_text()
    rows = dh.wald_table((model, b, X, y), structure="row")
    assert rows.approximation and "APPROXIMATION" in rows.covariance_type
    for text in (rows.to_text(), rows.summary().as_html(), rows.to_csv(), rows.to_json()):
        assert "APPROXIMATION" in text
    assert json.loads(rows.to_json())["approximation"] is True
    assert rows.to_frame().attrs["approximation"] is True


def test_the_full_covariance_over_budget_is_refused_before_computing_and_names_the_way_out():
    model, b, X, y, se = ols()
    t = model.n_params
    assert full_covariance_bytes(t) == 8 * 6 * t * t and COVARIANCE_BUDGET == 2 * 2**30
    with pytest.raises(ValueError, match=r"parameters=\[\.\.\.\].*structure='row'"):
        dh.wald_table((model, b, X, y), memory_budget=100)
    with pytest.raises(ValueError, match="over the memory budget"):
        dh.wald_table((model, b, X, y), memory_budget=100, solver="eigh", parameters=[1])
    # over the budget with a selection: exact standard errors by CG, the same numbers
    table = dh.wald_table((model, b, X, y), memory_budget=100, parameters=["L1.0 <- x1", 3])
    assert table.solver == "cg" and list(table.index) == [2, 3]
    assert table.covariance.preconditioner == "row"          # layer blocks over 100 bytes too
    np.testing.assert_allclose(table.std_error, se[[2, 3]], rtol=1e-10)
    assert np.all(table.cg_residual <= 1e-10)
    assert "conjugate gradients" in table.covariance_type


# --------------------------------------------------------------------------- CG, selected parameters


def teacher_network():
    """t = 1017 (hidden layers without bias, all penalised), targets from the network
    itself plus 1% noise: the Hessian is positive definite (checked), condition ~1e3."""
    rng = np.random.default_rng(0)
    n, d = 1100, 16
    X = rng.normal(size=(n, d))
    model = dh.Model.from_dict({
        "inputs": d, "loss": "squared", "penalty": {"type": "l2", "lambda": 5.0},
        "layers": [{"type": "dense", "units": 42, "activation": "tanh", "bias": False},
                   {"type": "dense", "units": 8, "activation": "tanh", "bias": False},
                   {"type": "dense", "units": 1, "activation": "identity"}]})
    w = model.init(seed=0)
    y = model.predict(w, X)[:, 0] + 0.01 * rng.normal(size=n)
    return model, w, X, y


def test_cg_standard_errors_equal_the_full_inverse_at_t_in_the_thousands():
    model, w, X, y = teacher_network()
    assert model.n_params == 1017
    H = model.curvature(w, X, y, structure="full")
    assert np.linalg.eigvalsh(H)[0] > 0
    s2 = 2 * (model.value(w, X, y) - 2.5 * np.sum(w[model.penalty_mask] ** 2)) \
        / (X.shape[0] - model.n_params)
    selected = [3, 800, model.n_params - 1]
    Hinv = np.linalg.inv(H)[np.ix_(selected, selected)]
    table = dh.wald_table((model, w, X, y), parameters=selected, solver="cg")
    assert list(table.index) == selected and table.identifiable.all()
    np.testing.assert_allclose(table.std_error, np.sqrt(s2 * np.diag(Hinv)), rtol=1e-8)
    np.testing.assert_allclose(table.covariance.submatrix(selected), s2 * Hinv, rtol=1e-8,
                               atol=1e-8 * np.abs(s2 * Hinv).max())
    assert np.all(table.cg_residual <= 1e-10) and table.covariance.passes > 1
    assert table.covariance.preconditioner == "layer"
    assert "Max CG residual:" in table.to_text()


def test_cg_sandwich_and_joint_tests_equal_the_full_matrix():
    model, w, X, y = small_net()
    full = dh.wald_table((model, w, X, y), covariance="sandwich")
    groups = ["layer:2", "unit:1:0"]
    cg = dh.wald_table((model, w, X, y), covariance="sandwich", parameters=groups, solver="cg")
    assert list(cg.index) == sorted(set(range(16, 21)) | set(range(4)))
    np.testing.assert_allclose(cg.std_error, full.std_error[cg.index], rtol=1e-8)
    hess_full = dh.wald_table((model, w, X, y))
    hess_cg = dh.wald_table((model, w, X, y), parameters="layer:2", solver="cg")
    a, b = hess_full.joint_wald("layer:2"), hess_cg.joint_wald("layer:2")
    assert a.df == b.df == 5 and b.statistic == pytest.approx(a.statistic, rel=1e-8)
    with pytest.raises(ValueError, match="not in this table"):
        hess_cg.joint_wald("layer:1")


def test_parameter_selection_by_index_name_group_and_mask():
    model = small_net()[0]
    assert list(select_parameters(model, 5)) == [5]
    assert list(select_parameters(model, ["L2.0 <- bias", 0, "layer:2"])) == [0] + list(range(16, 21))
    mask = np.zeros(model.n_params, dtype=bool)
    mask[[1, 7]] = True
    assert list(select_parameters(model, mask)) == [1, 7]
    with pytest.raises(ValueError, match="did you mean"):
        select_parameters(model, "L1.0 <- x9")
    for bad in ([model.n_params], [], [True], 2.5):
        with pytest.raises((ValueError, TypeError)):
            select_parameters(model, bad)


@pytest.mark.slow
def test_cg_solves_run_on_a_cluster_and_equal_the_in_process_ones():
    from distributed import Client, LocalCluster

    model, w, X, y = small_net()
    here = dh.wald_table((model, w, X, y), parameters="layer:2", solver="cg")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        there = dh.wald_table((model, w, X, y), parameters="layer:2", solver="cg", client=client)
    np.testing.assert_allclose(there.std_error, here.std_error, rtol=1e-10)
    assert np.all(there.cg_residual <= 1e-10)


# --------------------------------------------------------------------------- degenerate models


def dead_relu():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(50, 2)), rng.normal(size=50)
    model = dh.Model.from_dict({"inputs": 2, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "relu"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    w = np.array([-100.0, 0.1, 0.1, 0.5, 1.0, -1.0, 0.0, 0.7, 0.3])
    return model, w, X, y


@pytest.mark.filterwarnings("ignore::dist_hess.analysis.NotAMinimumWarning")
@pytest.mark.parametrize("covariance", ["hessian", "sandwich"])
@pytest.mark.parametrize("structure", ["full", "row"])
def test_a_dead_unit_is_not_identifiable_and_gets_no_z_or_p(covariance, structure):
    model, w, X, y = dead_relu()
    with pytest.warns(NonIdentifiableWarning):
        table = dh.wald_table((model, w, X, y), covariance=covariance, structure=structure)
    dead = [0, 1, 2, 7]                              # the unit's row and its outgoing weight
    assert not table.identifiable[dead].any()
    assert np.all(np.isnan(table.z[dead])) and np.all(np.isnan(table.p_value[dead]))
    live = np.setdiff1d(np.arange(9), dead)
    assert np.all(table.std_error[live] > 0) and np.all(np.isfinite(table.p_value[live]))
    text = table.to_text()
    bias = next(line for line in text.splitlines() if line.startswith("L1.0 <- bias"))
    assert bias.split()[-1] == "n.i." and "inf" not in bias      # no z, p or interval
    rows = {r["name"]: r for r in table.rows()}
    assert rows["L1.0 <- bias"]["z"] is None and rows["L1.0 <- bias"]["stars"] == ""


def test_the_sandwich_at_a_singular_hessian_uses_the_same_identifiable_subspace():
    """Duplicated input column: H is exactly singular along (x0, x2); the sandwich has a
    finite standard error for every identifiable parameter and n.i. for the others."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 2))
    X = np.c_[X, X[:, 0]]
    y = np.tanh(X[:, 0]) + 0.1 * rng.normal(size=80)
    model = dh.Model.from_dict({"inputs": 3, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    w = dh.fit(model, X, y, method="newton", w0=model.init(seed=0)).w
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonIdentifiableWarning)
        hessian = dh.wald_table((model, w, X, y))
        sandwich = dh.wald_table((model, w, X, y), covariance="sandwich")
    ni = ~hessian.identifiable
    assert ni.any() and np.array_equal(~sandwich.identifiable, ni)
    assert np.all(np.isfinite(sandwich.std_error)) and np.all(sandwich.std_error[~ni] > 0)
    assert np.all(np.isnan(sandwich.p_value[ni]))


def test_bad_options_are_refused_with_their_names():
    model, b, X, y, _ = ols()
    source = (model, b, X, y)
    for options, match in [({"rcond": -1}, "rcond"), ({"rcond": math.nan}, "rcond"),
                           ({"covariance": "robust"}, "covariance"), ({"kind": "lagrangian"}, "kind"),
                           ({"structure": "diag"}, "structure"), ({"solver": "lu"}, "solver"),
                           ({"cg_tol": 0}, "cg_tol"), ({"cg_max_iter": 0}, "cg_max_iter"),
                           ({"memory_budget": -5}, "memory_budget"),
                           ({"solver": "cg", "structure": "row"}, "structure='full'"),
                           ({"parameters": [99]}, "out of range")]:
        with pytest.raises((ValueError, TypeError), match=match):
            dh.wald_table(source, **options)
    with pytest.raises(ValueError, match="alpha"):
        dh.wald_table(source).summary(alpha=1.5)
    with pytest.raises(ValueError, match="rcond"):
        saliencies(source, rcond=-1)
    with pytest.raises(ValueError, match="kind"):
        laplace_predict(source, X[:2], kind="lagrangian")
    for options, match in [({"threshold": -1}, "threshold"), ({"threshold": math.nan}, "threshold"),
                           ({"candidates": [999]}, "candidates"), ({"max_steps": -1}, "max_steps"),
                           ({"candidates": []}, "candidates"), ({"structure": "rows"}, "structure")]:
        with pytest.raises(ValueError, match=match):
            prune(model, X, y, b, **options)


# --------------------------------------------------------------------------- summary, frame


def test_summary_in_the_statsmodels_layout_as_text_and_html():
    model, b, X, y, se = ols()
    table = dh.wald_table((model, b, X, y))
    text = str(table.summary())
    for field in ("coef", "std err", "P>|z|", "[0.025", "0.975]", "No. Observations:", "100",
                  "No. Parameters:", "E(w):", "||grad||:", "s^2:", "Covariance Type:",
                  "inverse Hessian", "Non-identifiable:"):
        assert field in text, field
    line = next(line for line in text.splitlines() if line.startswith("L1.0 <- x0"))
    lower, upper = b[1] - 1.959963984540054 * se[1], b[1] + 1.959963984540054 * se[1]
    assert f"{b[1]:.4f}" in line and f"{se[1]:.4f}" in line
    assert f"{lower:.4f}" in line and f"{upper:.4f}" in line
    html = table.summary().as_html()
    assert html.count("<table") == 2 and "P&gt;|z|" in html and "L1.0 &lt;- x0" in html
    assert table._repr_html_() == html
    assert len(table.summary(max_rows=2).as_text().splitlines()) < len(text.splitlines())


def test_to_frame_has_the_statsmodels_columns():
    pd = pytest.importorskip("pandas")
    model, b, X, y, se = ols()
    frame = dh.wald_table((model, b, X, y)).to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:7]) == ["index", "coef", "std err", "z", "P>|z|", "[0.025",
                                       "0.975]"]
    np.testing.assert_allclose(frame["std err"].to_numpy(), se, rtol=1e-10)
    assert frame.index[1] == "L1.0 <- x0" and frame.attrs["n_examples"] == 100
