"""Bad specs and bad data fail early with a message that names the offending value;
extreme logits stay finite."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from tests import oracle
from tests.cases import dense, network, rbf
from tests.checks import assert_close

BAD = (ValueError, TypeError)

BASE = network(3, [dense(4, "tanh"), dense(2, "identity", sources=[1, 0])], "squared")
N_PARAMS = 4 * 4 + 2 * (1 + 4 + 3)  # 32


def _Model():
    from dist_hess import Model

    return Model


def _edited(edit):
    spec = copy.deepcopy(BASE)
    edit(spec)
    return spec


# --------------------------------------------------------------------------- specs


def _set(path, value):
    def edit(spec):
        target = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


SPEC_ERRORS = [
    pytest.param(_set(["layers", 0, "activation"], "swish"), r"swish", id="unknown_activation"),
    pytest.param(_set(["loss"], "hinge"), r"hinge", id="unknown_loss"),
    pytest.param(_set(["layers", 1, "type"], "conv2d"), r"conv2d", id="unknown_layer_type"),
    pytest.param(_set(["penalty"], {"type": "elastic_net", "lambda": 0.1}), r"elastic_net", id="unknown_penalty"),
    pytest.param(lambda spec: spec["layers"][0].pop("activation"), r"activation", id="missing_activation"),
    pytest.param(_set(["layers", 0, "sources"], [1]), r"\b1\b", id="source_is_the_layer_itself"),
    pytest.param(_set(["layers", 1, "sources"], [3]), r"\b3\b", id="source_is_a_later_layer"),
    pytest.param(_set(["layers", 1, "sources"], [1, 7]), r"\b7\b", id="source_does_not_exist"),
    pytest.param(_set(["layers", 1, "sources"], [-1]), r"-1", id="negative_source"),
    pytest.param(_set(["layers", 1, "sources"], [0, 0]), r"\b0\b", id="source_read_twice"),
    pytest.param(_set(["layers", 0], rbf(4, "diagonal", sources=[0])), None, id="valid_rbf_control"),
    pytest.param(lambda spec: spec["layers"].__setitem__(1, rbf(2, "diagonal", sources=[1, 0])),
                 r"(?i)source", id="rbf_with_two_sources"),
    pytest.param(_set(["layers", 0], rbf(4, "cosine")), r"cosine", id="unknown_rbf_metric"),
]


@pytest.mark.parametrize("edit, match", SPEC_ERRORS)
def test_bad_spec(edit, match):
    spec = _edited(edit)
    if match is None:  # the control: the same edit machinery gives a valid model
        assert _Model().from_dict(spec).n_params == oracle.n_params(spec)
        return
    with pytest.raises(BAD, match=match):
        _Model().from_dict(spec)


# --------------------------------------------------------------------------- data


def _data(n=8, seed=0):
    """Valid ``(w, X, Y)`` for ``BASE``."""
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    return 0.5 * rng.normal(size=N_PARAMS), X, Y


METHODS = ["value", "gradient", "multipliers", "curvature", "hvp"]


def _call(model, method, w, X, Y):
    if method == "curvature":
        return model.curvature(w, X, Y, kind="hessian", structure="row")
    if method == "hvp":
        return model.hvp(w, X, Y, np.ones(model.n_params), kind="hessian")
    return getattr(model, method)(w, X, Y)


def _with_value(array, index, value):
    array = np.array(array, dtype=float)
    array[index] = value
    return array


DATA_ERRORS = [
    # (name, (w, X, Y) -> (w, X, Y), match)
    ("weights_too_long", lambda w, X, Y: (np.append(w, 0.0), X, Y), rf"\b{N_PARAMS + 1}\b"),
    ("weights_too_short", lambda w, X, Y: (w[:-2], X, Y), rf"\b{N_PARAMS - 2}\b"),
    ("rows_of_X_and_Y_differ", lambda w, X, Y: (w, X, Y[:7]), r"\b7\b"),
    ("input_width", lambda w, X, Y: (w, np.hstack([X, X[:, :2]]), Y), r"\b5\b"),
    ("target_width", lambda w, X, Y: (w, X, np.hstack([Y, Y[:, :1]])), r"\b3\b"),
    ("nan_in_X", lambda w, X, Y: (w, _with_value(X, (2, 1), np.nan), Y), r"(?i)nan|finite"),
    ("inf_in_X", lambda w, X, Y: (w, _with_value(X, (0, 0), np.inf), Y), r"(?i)inf|finite"),
    ("nan_in_Y", lambda w, X, Y: (w, X, _with_value(Y, (5, 0), np.nan)), r"(?i)nan|finite"),
    ("inf_in_Y", lambda w, X, Y: (w, X, _with_value(Y, (1, 1), -np.inf)), r"(?i)inf|finite"),
    ("nan_in_w", lambda w, X, Y: (_with_value(w, 3, np.nan), X, Y), r"(?i)nan|finite"),
    ("inf_in_w", lambda w, X, Y: (_with_value(w, 30, np.inf), X, Y), r"(?i)inf|finite"),
    ("no_examples", lambda w, X, Y: (w, X[:0], Y[:0]), r"X has no examples \(0 rows\)"),
    ("complex_w", lambda w, X, Y: (w + 0j, X, Y), r"w0? is complex \(dtype complex128\)"),
    ("complex_X", lambda w, X, Y: (w, X * (1 + 1e-3j), Y), r"X is complex"),
    ("complex_Y", lambda w, X, Y: (w, X, Y + 0j), r"Y is complex"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name, corrupt, match", [pytest.param(*e, id=e[0]) for e in DATA_ERRORS])
def test_bad_data(name, corrupt, match, method):
    model = _Model().from_dict(copy.deepcopy(BASE))
    w, X, Y = corrupt(*_data())
    with pytest.raises(BAD, match=match):
        _call(model, method, w, X, Y)


def test_bad_data_control():
    """The uncorrupted data is accepted by every method."""
    model = _Model().from_dict(copy.deepcopy(BASE))
    for method in METHODS:
        _call(model, method, *_data())


def _entry_points():
    """Every way data and weights reach the engine besides the Model methods above."""
    import dask.array as da

    import dist_hess as dh
    from dist_hess.sklearn import MLPRegressor

    def as_dask(X):
        return da.from_array(X, chunks=(3, -1)) if X.shape[0] else X
    return {
        "value_and_gradient": lambda m, w, X, Y: m.value_and_gradient(w, X, Y),
        "directional": lambda m, w, X, Y: m.directional_derivatives(w, X, Y, np.ones(m.n_params), 3),
        "row_tensor": lambda m, w, X, Y: m.row_tensor(w, X, Y, layer=1, row=0, order=3),
        "evaluate": lambda m, w, X, Y: dh.evaluate(m, w, X, Y, curvature="hessian"),
        "evaluate_dask": lambda m, w, X, Y: dh.evaluate(m, w, as_dask(X), Y),
        "fit": lambda m, w, X, Y: dh.fit(m, X, Y, w0=w, max_iter=2),
        "sklearn": lambda m, w, X, Y: MLPRegressor(hidden_layer_sizes=(2,), max_iter=2).fit(X, Y),
    }


@pytest.mark.parametrize("entry, name, corrupt, match", [
    pytest.param(entry, *e, id=f"{e[0]}-{entry}") for entry in sorted(_entry_points())
    for e in DATA_ERRORS[-4:] if (entry, e[0]) != ("sklearn", "complex_w")])   # no weights there
def test_no_examples_and_complex_numbers_are_refused_everywhere(entry, name, corrupt, match):
    """One rule for data without rows (a sum over no examples is not a fit: refused) and
    for complex numbers (their imaginary part used to be dropped silently)."""
    model = _Model().from_dict(copy.deepcopy(BASE))
    w, X, Y = corrupt(*_data())
    if entry == "sklearn":
        match = r"(?i)0 sample|complex"              # scikit-learn's own check_array
    with pytest.raises(BAD, match=match):
        _entry_points()[entry](model, w, X, Y[:, 0] if entry == "sklearn" else Y)


def test_fit_refuses_empty_or_complex_data_before_writing_a_checkpoint(tmp_path):
    import dist_hess as dh

    model = _Model().from_dict(copy.deepcopy(BASE))
    w, X, Y = _data()
    for bad in [dict(X=X[:0], Y=Y[:0]), dict(X=X + 0j, Y=Y), dict(X=X, Y=Y, w0=w + 1j)]:
        with pytest.raises(BAD, match="no examples|complex"):
            dh.fit(model, checkpoint=tmp_path / "fit.zarr", **{"w0": w, **bad})
        assert not (tmp_path / "fit.zarr").exists()
    for v in [np.ones(N_PARAMS) * 1j, [1j] * N_PARAMS]:
        with pytest.raises(TypeError, match="complex"):
            model.hvp(w, X, Y, v)
        with pytest.raises(TypeError, match="complex"):
            dh.evaluate(model, w, X, Y, hvp=[("hessian", v)])
    assert model.predict(w, X[:0]).shape == (0, 2)   # a map of rows: 0 rows give 0 rows


def test_hvp_direction_of_wrong_length():
    model = _Model().from_dict(copy.deepcopy(BASE))
    w, X, Y = _data()
    with pytest.raises(BAD, match=rf"\b{N_PARAMS - 1}\b"):
        model.hvp(w, X, Y, np.ones(N_PARAMS - 1), kind="hessian")


def _classifier(loss, outputs):
    return _Model().from_dict(network(3, [dense(outputs, "identity")], loss))


TARGET_ERRORS = [
    ("softmax_cross_entropy", 3, lambda n: np.r_[np.zeros(n - 1, dtype=int), 3], r"\b3\b", "label_too_large"),
    ("softmax_cross_entropy", 3, lambda n: np.r_[np.zeros(n - 1, dtype=int), -1], r"-1", "negative_label"),
    ("softmax_cross_entropy", 3, lambda n: np.eye(4)[np.arange(n) % 4], r"\b4\b", "onehot_wrong_width"),
    ("binary_cross_entropy", 1, lambda n: np.r_[np.zeros(n - 1), 2.0], r"\b2(\.0*)?\b", "bce_target_two"),
    ("binary_cross_entropy", 1, lambda n: np.r_[np.ones(n - 1), 0.5], r"0\.5", "bce_target_half"),
    ("binary_cross_entropy", 2, lambda n: np.c_[np.zeros(n), np.r_[np.ones(n - 1), -1.0]], r"-1", "bce_negative"),
]


@pytest.mark.parametrize("method", ["value", "gradient", "curvature"])
@pytest.mark.parametrize("loss, outputs, make_targets, match",
                         [pytest.param(*e[:4], id=e[4]) for e in TARGET_ERRORS])
def test_bad_targets(loss, outputs, make_targets, match, method):
    model = _classifier(loss, outputs)
    n = 9
    X = np.random.default_rng(1).normal(size=(n, 3))
    w = np.zeros(model.n_params)
    with pytest.raises(BAD, match=match):
        _call(model, method, w, X, make_targets(n))


# --------------------------------------------------------------------------- numerical stability


def _huge_logit_problem(loss, outputs):
    """Logits of size ~1e4, half the examples on the wrong side."""
    X = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.5], [-1.0, 0.5, 1.0]])
    W = np.zeros((outputs, 4))
    W[:, 1:] = 1e4 * np.linspace(-1.0, 1.0, 3 * outputs).reshape(outputs, 3)
    if outputs > 1:
        W[0, 1:] = -W[0, 1:]
    else:
        W[0, 1:] = [1e4, -1e4, 5e3]  # logits 1e4, -1e4, 5e3, 2.25e4, -1e4
    return X, W.ravel()


@pytest.mark.parametrize(
    "loss, outputs, targets",
    [
        pytest.param("softmax_cross_entropy", 3, np.array([0, 1, 2, 0, 2]), id="softmax_labels"),
        pytest.param("softmax_cross_entropy", 3, np.eye(3)[[2, 2, 0, 1, 0]], id="softmax_onehot"),
        pytest.param("binary_cross_entropy", 1, np.array([0.0, 1.0, 1.0, 0.0, 1.0]), id="bce_vector"),
        pytest.param("binary_cross_entropy", 2, np.array([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0]], float),
                     id="bce_two_outputs"),
    ],
)
def test_huge_logits_stay_finite(loss, outputs, targets):
    spec = network(3, [dense(outputs, "identity")], loss)
    model = _Model().from_dict(copy.deepcopy(spec))
    X, w = _huge_logit_problem(loss, outputs)
    logits = oracle.forward(spec, w, X)[-1]
    assert np.abs(logits).max() >= 5e3
    # exp(-1e4) underflowing to 0 is the correct answer; overflow and invalid still raise.
    with np.errstate(under="ignore"):
        value = float(model.value(w, X, targets))
        grad = np.asarray(model.gradient(w, X, targets))
        hessian = np.asarray(model.curvature(w, X, targets, kind="hessian", structure="full"))
    assert np.isfinite(value) and value > 1e3
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(hessian))
    assert_close(value, oracle.objective(spec, w, X, targets), 1e-10)
    assert_close(grad, oracle.gradient(spec, w, X, targets), 1e-10)
