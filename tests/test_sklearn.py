"""`dist_hess.sklearn`: the estimators pass scikit-learn's own checks, work in a Pipeline
and GridSearchCV, mean by ``alpha`` what the docstring states (closed forms: Ridge,
LogisticRegression), and `from_sklearn` maps a fitted scikit-learn MLP exactly
(predictions, and the gradient of scikit-learn's own loss from its ``_backprop``)."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn import neural_network
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import dist_hess as dh
from dist_hess import sklearn as dsk
from dist_hess.sklearn import MLPClassifier, MLPRegressor, from_sklearn


def _data(n=60, p=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    signal = np.tanh(X @ rng.normal(size=p)) + 0.3 * X[:, 0]
    return X, signal, rng


# -- scikit-learn's estimator checks -------------------------------------------------------
@parametrize_with_checks(
    [MLPRegressor((3,), max_iter=20, random_state=0),
     MLPClassifier((3,), max_iter=20, random_state=0),
     MLPRegressor((2, 2), skip=True, starts=2, max_iter=10, random_state=0)],
    expected_failed_checks=lambda estimator: dsk.EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # max_iter is kept small
        check(estimator)


def test_import_dist_hess_does_not_import_sklearn():
    code = "import sys, dist_hess; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- the estimators ---------------------------------------------------------------------------
def test_the_network_is_the_stated_spec_with_skip_connections_and_sklearn_activation_names():
    X, y, _ = _data()
    for act in ("identity", "logistic", "tanh", "relu", "softplus"):
        est = MLPRegressor((3, 2), activation=act, skip=True, max_iter=2, random_state=0)
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
        spec = est.model_.to_dict()
        assert [(layer["units"], layer["activation"], layer["sources"]) for layer in spec["layers"]] \
            == [(3, act, [0]), (2, act, [1, 0]), (1, "identity", [2, 0])]
        assert spec["loss"] == "squared" and spec["penalty"] == {"type": "l2", "lambda": 0.0001}
        assert est.coef_.shape == (est.model_.n_params,)
    assert MLPRegressor((), alpha=0).fit(X, y).model_.to_dict()["penalty"] is None
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPRegressor(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPRegressor((3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        MLPRegressor(alpha=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="starts"):
        MLPRegressor(starts=0).fit(X, y)


def test_regressor_alpha_is_ridge_lambda_and_multi_output_is_supported():
    """No hidden layer: E = 1/2 ||y - Xb - c||^2 + alpha/2 ||b||^2 is sklearn's Ridge(alpha)."""
    X, y, rng = _data()
    Y = np.column_stack([y, rng.normal(size=len(y))])
    for alpha in (0.0, 3.0):
        est = MLPRegressor((), alpha=alpha, method="newton", tol=1e-10).fit(X, Y)
        ridge = Ridge(alpha=alpha if alpha else 1e-300).fit(X, Y)
        W = est.model_.unpack(est.coef_)[0]                  # rows [bias, weights]
        np.testing.assert_allclose(W[:, 1:], ridge.coef_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(W[:, 0], ridge.intercept_, rtol=1e-9, atol=1e-12)
        assert est.predict(X).shape == (len(y), 2)
        assert est.score(X, Y) == pytest.approx(ridge.score(X, Y), rel=1e-9)
    single = MLPRegressor((), method="newton").fit(X, y)
    assert single.predict(X).shape == (len(y),)


def test_classifier_alpha_is_logistic_regression_one_over_C_with_any_labels():
    """No hidden layer: binary E = sum log-loss + alpha/2 ||b||^2 is LogisticRegression(C=1/alpha)
    (its objective C sum log-loss + 1/2 ||b||^2); multinomial the same with every class's
    coefficients penalised in both."""
    X, y, rng = _data(n=80)
    alpha = 2.0
    for labels in (np.array(["no", "yes"]), np.array([3, 7, 11])):
        k = rng.integers(len(labels), size=len(y)) if len(labels) > 2 else (y > 0).astype(int)
        target = labels[k]
        est = MLPClassifier((), alpha=alpha, method="newton", tol=1e-10).fit(X, target)
        ref = LogisticRegression(C=1 / alpha, tol=1e-12, max_iter=10_000).fit(X, target)
        assert list(est.classes_) == list(ref.classes_)
        np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-8)
        assert list(est.predict(X)) == list(ref.predict(X))
        assert est.predict(X).dtype == target.dtype
        np.testing.assert_allclose(est.predict_log_proba(X), np.log(est.predict_proba(X)),
                                   rtol=1e-12, atol=1e-12)
        assert est.score(X, target) == pytest.approx(np.mean(est.predict(X) == target))
        assert est.model_.to_dict()["loss"] == ("binary_cross_entropy" if len(labels) == 2
                                                else "softmax_cross_entropy")


def test_fitted_attributes_hessian_wald_table_and_summary():
    X, y, _ = _data()
    est = MLPRegressor((3,), alpha=0.1, random_state=0).fit(X, y)
    model, w = est.model_, est.coef_
    assert est.loss_ == pytest.approx(model.value(w, X, y), rel=1e-12)
    assert est.n_iter_ == est.fit_result_.n_iter and est.fit_result_.converged
    np.testing.assert_allclose(est.hessian_, model.curvature(w, X, y, structure="full"), rtol=1e-12)
    table = est.wald_table()
    reference = dh.wald_table((model, w, X, y))
    np.testing.assert_allclose(table.std_error, reference.std_error, rtol=1e-12)
    assert "Wald tests" in est.summary() and "L1.0 <- bias" in est.summary()
    with pytest.warns(dh.analysis.NotAMinimumWarning):      # coef_ minimises E on all of X
        half = est.wald_table(X[:40], y[:40])
    assert half.n_examples == 40
    with pytest.raises(ValueError, match="both X and y"):
        est.wald_table(X)

    clf = MLPClassifier((2,), alpha=0.5, random_state=0).fit(X, np.where(y > 0, "b", "a"))
    np.testing.assert_allclose(clf.wald_table(X, np.where(y > 0, "b", "a")).std_error,
                               clf.wald_table().std_error, rtol=1e-12)
    with pytest.raises(ValueError, match="labels not seen in fit"):
        clf.wald_table(X, np.where(y > 0, "b", "c"))


def test_hessian_is_none_above_the_stated_size():
    X, y, _ = _data(n=12, p=1)
    est = MLPRegressor((400,), max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est.fit(X, y)
    assert est.model_.n_params > dsk.HESSIAN_MAX_PARAMS and est.hessian_ is None


def test_starts_keep_the_lowest_converged_value_and_random_state_reproduces():
    X, y, _ = _data()
    est = MLPRegressor((3,), starts=3, random_state=1, method="newton").fit(X, y)
    starts = est.fit_result_.starts
    assert len(starts) == 3 and est.fit_result_.method == "newton"
    assert est.loss_ == min(r.value for r in starts if r.converged)
    again = MLPRegressor((3,), starts=3, random_state=1, method="newton").fit(X, y)
    np.testing.assert_array_equal(again.coef_, est.coef_)


def test_pipeline_with_standard_scaler_and_grid_search_over_alpha():
    X, y, _ = _data(n=90)
    X = 5.0 + 10.0 * X
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPRegressor((3,), max_iter=500, random_state=0))])
    search = GridSearchCV(pipe, {"mlp__alpha": [0.01, 100.0]}, cv=3).fit(X, y)
    assert search.best_params_["mlp__alpha"] in (0.01, 100.0)
    fitted = search.best_estimator_
    assert fitted.predict(X).shape == (90,) and fitted.score(X, y) > 0.5
    np.testing.assert_allclose(fitted.predict(X), fitted.named_steps["mlp"].predict(
        fitted.named_steps["scale"].transform(X)), rtol=1e-12)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, y, _ = _data()
    frame = pd.DataFrame(X, columns=["age", "bmi", "bp"])
    est = MLPRegressor((2,), random_state=0).fit(frame, y)
    assert list(est.feature_names_in_) == ["age", "bmi", "bp"]
    with pytest.warns(UserWarning, match="feature names"):
        plain = est.predict(X)
    np.testing.assert_array_equal(est.predict(frame), plain)
    with pytest.raises(ValueError, match="feature names"):
        est.predict(frame[["bmi", "age", "bp"]])


# -- from_sklearn ---------------------------------------------------------------------------
def _sklearn_loss_and_gradient(mlp, X, Y):
    """scikit-learn's own objective and gradient at its weights, from its private
    ``_backprop`` (what its lbfgs solver calls), the gradient in dist_hess's layout."""
    units = [X.shape[1]] + [c.shape[1] for c in mlp.coefs_]
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(units) - 1)
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]
    loss, coef_grads, intercept_grads = mlp._backprop(X, Y, None, activations, deltas,
                                                      coef_grads, intercept_grads)
    grad = np.concatenate([np.column_stack([b, c.T]).ravel()
                           for c, b in zip(coef_grads, intercept_grads)])
    return loss, grad


def _fitted_sklearn(kind, alpha):
    X, y, rng = _data(n=50)
    if kind == "regressor":
        mlp, target = neural_network.MLPRegressor, y
    elif kind == "multi-output":
        mlp, target = neural_network.MLPRegressor, np.column_stack([y, rng.normal(size=len(y))])
    elif kind == "binary":
        mlp, target = neural_network.MLPClassifier, np.where(y > 0, "yes", "no")
    elif kind == "multiclass":
        mlp, target = neural_network.MLPClassifier, np.array([2, 5, 9])[rng.integers(3, size=len(y))]
    else:                                                    # multilabel: indicator targets
        mlp, target = neural_network.MLPClassifier, (rng.normal(size=(len(y), 2)) > 0).astype(int)
    net = mlp(hidden_layer_sizes=(4, 3), activation="tanh", solver="lbfgs", alpha=alpha,
              max_iter=30, random_state=0)
    with warnings.catch_warnings(), np.errstate(under="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(X, target)
    if kind in ("regressor", "multi-output"):
        ours, theirs = target, target.reshape(len(y), -1)
    elif kind == "multilabel":
        ours = theirs = target.astype(float)
    else:
        ours = np.searchsorted(net.classes_, target)
        theirs = net._label_binarizer.transform(target).astype(float)
    return net, X, ours, theirs


KINDS = ["regressor", "multi-output", "binary", "multiclass", "multilabel"]


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("kind", KINDS)
def test_from_sklearn_predicts_as_sklearn_and_its_gradient_is_n_times_sklearns(kind, alpha):
    net, X, ours, theirs = _fitted_sklearn(kind, alpha)
    model, w = from_sklearn(net)
    n = X.shape[0]
    pred = model.predict(w, X)
    if kind in ("regressor", "multi-output"):
        np.testing.assert_allclose(pred, net.predict(X).reshape(n, -1), rtol=1e-12, atol=1e-12)
    elif kind == "binary":
        np.testing.assert_allclose(pred[:, 0], net.predict_proba(X)[:, 1], rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(pred, net.predict_proba(X), rtol=1e-12, atol=1e-12)
    assert model.to_dict()["penalty"] == ({"type": "l2", "lambda": alpha} if alpha else None)

    loss, grad = _sklearn_loss_and_gradient(net, X, theirs)
    value, gradient = model.value_and_gradient(w, X, ours)
    np.testing.assert_allclose(gradient, n * grad, rtol=1e-10, atol=1e-12 * np.abs(gradient).max())
    if kind == "multi-output":
        # sklearn's value averages its squared error over the c outputs, its gradient does not
        c = theirs.shape[1]
        penalty = alpha / 2 * sum(np.sum(W ** 2) for W in net.coefs_)
        assert n * loss == pytest.approx((value - penalty) / c + penalty, rel=1e-12)
    else:
        assert value == pytest.approx(n * loss, rel=1e-12)


def test_from_sklearn_refuses_what_it_cannot_map():
    X, y, _ = _data(n=30)
    with pytest.raises(TypeError, match="fitted scikit-learn MLPRegressor"):
        from_sklearn(neural_network.MLPRegressor())
    poisson = neural_network.MLPRegressor(hidden_layer_sizes=(2,), loss="poisson", solver="lbfgs",
                                          max_iter=5, random_state=0)
    with warnings.catch_warnings(), np.errstate(under="ignore", over="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        poisson.fit(X, np.exp(y))
    with pytest.raises(ValueError, match="output activation 'exp'"):
        from_sklearn(poisson)


def test_a_live_client_is_shared_by_clones_and_runs_a_grid_search():
    distributed = pytest.importorskip("distributed")
    X, y, _ = _data(n=40)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as client:
        est = MLPRegressor((2,), method="newton", random_state=0, client=client)
        twin = clone(est)
        assert twin.client is client and twin.get_params()["alpha"] == est.get_params()["alpha"]
        search = GridSearchCV(est, {"alpha": [0.1, 1.0]}, cv=2).fit(X, y)
        on_cluster = search.best_estimator_
    local = MLPRegressor((2,), method="newton", random_state=0,
                         alpha=search.best_params_["alpha"]).fit(X, y)
    np.testing.assert_allclose(on_cluster.coef_, local.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(on_cluster.hessian_, local.hessian_, rtol=1e-6, atol=1e-8)
