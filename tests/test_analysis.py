"""Inference from the exact Hessian (issue 4): Wald tables, sandwich, joint tests, spectra, Laplace.

Oracles computed independently in the tests (STYLE habit 7): ordinary least
squares ``s2 (Z'Z)^-1`` with ``s2 = RSS/(n c - p)`` from ``numpy.linalg.lstsq``,
logistic regression ``(Z'WZ)^-1`` at an IRLS fit, White's HC0 sandwich,
dense ``eigh`` for Lanczos, the OLS prediction variance for the Laplace
approximation, and central differences for per-example gradients and output
Jacobians.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

import dist_hess as dh
from dist_hess.analysis import (NonIdentifiableWarning, example_gradients, input_group,
                                joint_wald, laplace_predict, lanczos_extremes, layer_group,
                                output_jacobian, spectra, unit_group)


def linear_model(inputs, outputs=1, loss="squared"):
    return dh.Model.from_dict({"inputs": inputs, "loss": loss, "layers": [
        {"type": "dense", "units": outputs, "activation": "identity"}]})


def ols_data(n=120, inputs=3, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, inputs))
    B = rng.normal(size=(inputs + 1, outputs))
    B[-1] = 0.0                                       # one null coefficient per output
    Y = np.c_[np.ones(n), X] @ B + rng.normal(scale=0.7, size=(n, outputs))
    return X, (Y[:, 0] if outputs == 1 else Y)


def design(X):
    return np.c_[np.ones(X.shape[0]), X]


def ols_reference(X, Y):
    """Estimates ``(c, d)`` and standard errors by lstsq, one common noise variance."""
    Z = design(X)
    Y2 = Y.reshape(len(Y), -1)
    B, *_ = np.linalg.lstsq(Z, Y2, rcond=None)
    n, c = Y2.shape
    p = B.size
    s2 = np.sum((Y2 - Z @ B) ** 2) / (n * c - p)
    se = np.sqrt(s2 * np.diag(np.linalg.inv(Z.T @ Z)))
    return B.T, np.tile(se, (c, 1)), s2


# --------------------------------------------------------------------------- OLS and logistic


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("structure", ["full", "layer", "row"])
def test_ols_standard_errors(outputs, structure):
    X, Y = ols_data(outputs=outputs, seed=outputs)
    B, se, s2 = ols_reference(X, Y)
    model = linear_model(3, outputs)
    table = dh.wald_table((model, B.ravel(), X, Y), structure=structure)
    np.testing.assert_allclose(table.estimate, B.ravel(), rtol=1e-12)
    np.testing.assert_allclose(table.std_error, se.ravel(), rtol=1e-9)
    assert table.sigma2 == pytest.approx(s2, rel=1e-10)
    z = B.ravel() / se.ravel()
    np.testing.assert_allclose(table.z, z, rtol=1e-9)
    np.testing.assert_allclose(table.p_value, 2 * stats.norm.sf(np.abs(z)), rtol=1e-7)
    assert list(table.layer) == [1] * (4 * outputs)
    assert list(table.row) == [j for j in range(outputs) for _ in range(4)]
    assert list(table.column) == list(range(4)) * outputs
    assert table.identifiable.all()


def test_ols_from_a_store_needs_no_data(tmp_path):
    X, Y = ols_data(seed=3)
    B, se, _ = ols_reference(X, Y)
    model = linear_model(3)
    path = tmp_path / "ols.zarr"
    dh.evaluate(model, B.ravel(), X, Y, curvature="hessian:full", store=str(path))
    table = dh.wald_table(str(path))                 # value and Hessian read from the store
    np.testing.assert_allclose(table.std_error, se.ravel(), rtol=1e-9)
    table = dh.wald_table(dh.open_store(str(path)), structure="row")
    np.testing.assert_allclose(table.std_error, se.ravel(), rtol=1e-9)


def irls(Z, y, n_iter=50):
    b = np.zeros(Z.shape[1])
    for _ in range(n_iter):
        p = expit(Z @ b)
        W = p * (1 - p)
        b = b + np.linalg.solve((Z.T * W) @ Z, Z.T @ (y - p))
    return b


def test_logistic_regression_standard_errors():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3))
    y = (rng.random(400) < expit(0.3 + X @ [1.0, -0.6, 0.0])).astype(float)
    model = linear_model(3, loss="binary_cross_entropy")
    fit = dh.fit(model, X, y, method="newton", w0=np.zeros(4))
    Z = design(X)
    b = irls(Z, y)
    p = expit(Z @ b)
    se = np.sqrt(np.diag(np.linalg.inv((Z.T * (p * (1 - p))) @ Z)))
    table = dh.wald_table((model, fit.w, X, y))
    np.testing.assert_allclose(table.estimate, b, rtol=1e-6)
    np.testing.assert_allclose(table.std_error, se, rtol=1e-6)
    assert table.sigma2 is None


# --------------------------------------------------------------------------- sandwich


def test_sandwich_of_ols_is_white_hc0(tmp_path):
    X, Y = ols_data(seed=7)
    Z = design(X)
    b, *_ = np.linalg.lstsq(Z, Y, rcond=None)
    r = Y - Z @ b
    bread = np.linalg.inv(Z.T @ Z)
    hc0 = bread @ ((Z.T * r ** 2) @ Z) @ bread
    model = linear_model(3)
    table = dh.wald_table((model, b, X, Y), covariance="sandwich")
    np.testing.assert_allclose(table.std_error, np.sqrt(np.diag(hc0)), rtol=1e-9)
    assert table.sigma2 is None
    # from a store: per-example gradients rebuilt from the stored multipliers and X alone
    path = str(tmp_path / "run.zarr")
    dh.evaluate(model, b, X, Y, curvature="hessian:full", multipliers=True, store=path)
    stored = dh.wald_table(path, covariance="sandwich", data=X)
    np.testing.assert_allclose(stored.std_error, table.std_error, rtol=1e-12)
    with pytest.raises(LookupError, match="data"):
        dh.wald_table(path, covariance="sandwich")


def test_sandwich_equals_hessian_covariance_when_well_specified():
    """Logistic regression, n = 20000 simulated from the model: both estimate the same
    covariance (the information equality), within the Monte Carlo error of the meat."""
    rng = np.random.default_rng(11)
    n = 20000
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < expit(-0.4 + X @ [0.8, -0.5, 0.3])).astype(float)
    model = linear_model(3, loss="binary_cross_entropy")
    w = dh.fit(model, X, y, method="newton", w0=np.zeros(4)).w
    hess = dh.wald_table((model, w, X, y))
    sand = dh.wald_table((model, w, X, y), covariance="sandwich")
    np.testing.assert_allclose(sand.std_error, hess.std_error, rtol=0.04)


# --------------------------------------------------------------------------- per-example pieces

SKIP_RBF = {"inputs": 2, "loss": "squared", "layers": [
    {"type": "rbf", "units": 3, "activation": "gaussian", "metric": "diagonal"},
    {"type": "dense", "units": 2, "activation": "tanh", "sources": [1, 0]},
    {"type": "dense", "units": 2, "activation": "identity", "sources": [2, 1]}]}


def test_per_example_gradients_sum_to_the_gradient_and_match_the_multipliers():
    model = dh.Model.from_dict(SKIP_RBF)
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    w = model.init(seed=1)
    G = example_gradients(model, w, X, Y)
    np.testing.assert_allclose(G.sum(axis=0), model.gradient(w, X, Y), rtol=1e-10, atol=1e-12)
    G2 = example_gradients(model, w, X, multipliers=model.multipliers(w, X, Y))
    np.testing.assert_allclose(G2, G, rtol=1e-12, atol=1e-14)
    # example 4 alone: its gradient is the model's gradient on that one row
    np.testing.assert_allclose(G[4], model.gradient(w, X[4:5], Y[4:5]), rtol=1e-10, atol=1e-12)


def test_output_jacobian_matches_central_differences():
    model = dh.Model.from_dict(SKIP_RBF)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 2))
    w = model.init(seed=2)
    J = output_jacobian(model, w, X)
    from dist_hess.engine.forward import forward

    def f(v):
        return forward(model, model.unpack(v), X, order=0).x[-1]

    for _ in range(3):
        v = rng.normal(size=model.n_params)
        h = 1e-6
        fd = (f(w + h * v) - f(w - h * v)) / (2 * h)
        np.testing.assert_allclose(J @ v, fd, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- identifiability


def duplicated_unit_fit():
    """A 1-hidden-unit tanh net fitted by Newton, then its unit split into two equal ones:
    the same function, a stationary point, and the outgoing weights' difference is null."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 2))
    y = np.tanh(X @ [1.0, -0.5] + 0.2) * 1.5 + 0.1 * rng.normal(size=80)
    one = dh.Model.from_dict({"inputs": 2, "loss": "squared", "layers": [
        {"type": "dense", "units": 1, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    w1 = dh.fit(one, X, y, method="newton", w0=np.array([0.1, 0.8, -0.4, 0.0, 1.0])).w
    two = dh.Model.from_dict({"inputs": 2, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    w2 = np.r_[w1[:3], w1[:3], w1[3], w1[4] / 2, w1[4] / 2]
    return two, w2, X, y


def test_duplicate_hidden_units_warn_and_name_the_parameters():
    model, w, X, y = duplicated_unit_fit()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        table = dh.wald_table((model, w, X, y))
    # (splitting a unit of a minimum gives a line of stationary points, partly saddles:
    # a NotAMinimumWarning may come too)
    message = " ".join(str(r.message) for r in record if r.category is NonIdentifiableWarning)
    assert "L2.0 <- L1.0" in message and "L2.0 <- L1.1" in message
    assert not table.identifiable[model.n_params - 1] and not table.identifiable[model.n_params - 2]
    # issue 13 item 5: a non-identifiable parameter has no z and no p-value (was: finite)
    ni = ~table.identifiable
    assert np.all(np.isfinite(table.std_error)) and np.all(np.isfinite(table.p_value[~ni]))
    assert np.all(np.isnan(table.z[ni])) and np.all(np.isnan(table.p_value[ni]))
    assert "[n.i.]" in table.to_text()


def test_dead_unit_with_row_blocks():
    """A relu unit that never fires: its whole row block is zero."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(50, 2))
    y = rng.normal(size=50)
    model = dh.Model.from_dict({"inputs": 2, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "relu"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    w = np.array([-100.0, 0.1, 0.1, 0.5, 1.0, -1.0, 0.0, 0.7, 0.3])
    with pytest.warns(NonIdentifiableWarning, match=r"L1\.0 <- bias"):
        table = dh.wald_table((model, w, X, y), structure="row")
    assert not table.identifiable[:3].any() and table.identifiable[3:6].all()
    assert np.all(np.isfinite(table.std_error))


# --------------------------------------------------------------------------- joint tests, groups


def test_groups_of_a_skip_network():
    model = dh.Model.from_dict({"inputs": 3, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}]})
    # layer 1 rows: [b, x0, x1, x2] (0..7); layer 2 row: [b, L1.0, L1.1, x0, x1, x2] (8..13)
    assert list(input_group(model, 1)) == [2, 6, 12]
    assert list(unit_group(model, 1, 1)) == [4, 5, 6, 7]
    assert list(unit_group(model, 1, 1, outgoing=True)) == [4, 5, 6, 7, 10]
    assert list(layer_group(model, 2)) == list(range(8, 14))


def test_joint_wald_of_linear_regression():
    X, Y = ols_data(n=150, inputs=3, seed=9)
    b, *_ = np.linalg.lstsq(design(X), Y, rcond=None)
    model = linear_model(3)
    table = dh.wald_table((model, b, X, Y))
    one = joint_wald(table, "input:1")
    assert one.df == 1 and one.statistic == pytest.approx(table.z[2] ** 2, rel=1e-10)
    assert one.p_value == pytest.approx(table.p_value[2], rel=1e-8)
    # all slopes at once: b' Sigma^-1 b with Sigma = s2 (Z'Z)^-1, by hand
    Z = design(X)
    s2 = np.sum((Y - Z @ b) ** 2) / (150 - 4)
    S = s2 * np.linalg.inv(Z.T @ Z)[1:, 1:]
    stat = b[1:] @ np.linalg.solve(S, b[1:])
    group = joint_wald((model, b, X, Y), [1, 2, 3])
    assert group.df == 3 and group.statistic == pytest.approx(stat, rel=1e-9)
    assert group.p_value == pytest.approx(stats.chi2.sf(stat, 3), rel=1e-8)
    assert joint_wald(table, "layer:1").df == 4


def test_block_structures_invert_the_blocks():
    model = dh.Model.from_dict({"inputs": 2, "loss": "squared", "layers": [
        {"type": "dense", "units": 2, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity"}]})
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(40, 2)), rng.normal(size=40)
    w = model.init(seed=3)
    s2 = 2 * model.value(w, X, y) / (40 - model.n_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # an arbitrary point: not a minimum
        for structure in ("row", "layer"):
            blocks = model.curvature(w, X, y, structure=structure)
            want = []
            for B in blocks:
                for H in (B if structure == "row" else [B]):
                    lam, V = np.linalg.eigh(H)
                    keep = lam > 1e-10 * np.abs(lam).max()
                    want.append(np.diag((V[:, keep] / lam[keep]) @ V[:, keep].T))
            table = dh.wald_table((model, w, X, y), structure=structure)
            np.testing.assert_allclose(table.std_error, np.sqrt(s2 * np.concatenate(want)),
                                       rtol=1e-9)


# --------------------------------------------------------------------------- spectra


def test_lanczos_equals_dense_eigh():
    model = dh.Model.from_dict(SKIP_RBF)
    rng = np.random.default_rng(12)
    X, Y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    w = model.init(seed=4)
    H = model.curvature(w, X, Y, structure="full")
    e = np.linalg.eigvalsh(H)
    lanczos = spectra((model, w, X, Y), k=3, max_dense=0, structures=("full",))
    assert lanczos.full.method == "lanczos"
    np.testing.assert_allclose(lanczos.full.top, e[::-1][:3], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lanczos.full.bottom, e[:3], rtol=1e-8, atol=1e-10)
    top, bottom = lanczos_extremes(lambda v: H @ v, H.shape[0], 2)
    np.testing.assert_allclose(bottom, e[:2], rtol=1e-8, atol=1e-10)
    dense = spectra((model, w, X, Y), k=3)
    np.testing.assert_allclose(dense.full.eigenvalues, e, rtol=1e-10, atol=1e-10)
    assert dense.full.n_negative == int(np.sum(e < 0))
    rows = model.curvature(w, X, Y, structure="row")
    for k, spec in enumerate(dense.layers):
        for j, eig in enumerate(spec.row_eigenvalues):
            np.testing.assert_allclose(eig, np.linalg.eigvalsh(rows[k][j]), rtol=1e-10,
                                       atol=1e-10)
        assert spec.layer_negative == int(np.sum(spec.layer_eigenvalues < 0))
    assert "full (dense)" in dense.to_text()


# --------------------------------------------------------------------------- Laplace


def test_laplace_regression_is_the_ols_prediction_variance():
    X, Y = ols_data(n=100, seed=13)
    Z = design(X)
    b, *_ = np.linalg.lstsq(Z, Y, rcond=None)
    s2 = np.sum((Y - Z @ b) ** 2) / (100 - 4)
    X_new = np.random.default_rng(1).normal(size=(6, 3))
    Zn = design(X_new)
    var = s2 * np.einsum("na,ab,nb->n", Zn, np.linalg.inv(Z.T @ Z), Zn)
    for structure in ("full", "row"):
        pred = laplace_predict((linear_model(3), b, X, Y), X_new, structure=structure)
        np.testing.assert_allclose(pred.mean[:, 0], Zn @ b, rtol=1e-12)
        np.testing.assert_allclose(pred.variance[:, 0], var, rtol=1e-9)
        np.testing.assert_allclose(pred.predictive_variance[:, 0], var + s2, rtol=1e-9)


def test_laplace_classification_probit():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 2))
    y = (rng.random(300) < expit(X @ [1.5, -1.0])).astype(float)
    model = linear_model(2, loss="binary_cross_entropy")
    w = dh.fit(model, X, y, method="newton", w0=np.zeros(3)).w
    X_new = np.array([[0.0, 0.0], [2.0, -2.0], [30.0, 30.0]])
    pred = laplace_predict((model, w, X, y), X_new)
    Z, Zn = design(X), design(X_new)
    p = expit(Z @ w)
    var = np.einsum("na,ab,nb->n", Zn, np.linalg.inv((Z.T * (p * (1 - p))) @ Z), Zn)
    np.testing.assert_allclose(pred.variance[:, 0], var, rtol=1e-8)
    want = expit(Zn @ w / np.sqrt(1 + np.pi * var / 8))
    np.testing.assert_allclose(pred.probabilities[:, 0], want, rtol=1e-10)
    # moderated: closer to 1/2 than the plug-in probability
    assert np.all(np.abs(pred.probabilities[:, 0] - 0.5) <= np.abs(expit(Zn @ w) - 0.5) + 1e-15)
