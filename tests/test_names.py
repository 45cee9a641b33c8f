"""Named parameters (issue 14 item 3): the model JSON's optional ``input_names`` and
``output_names`` (DESIGN §1), taken from a CSV header, a DataFrame's columns or a
bundled data set's feature names, used in the tables, groups and store attrs."""
from __future__ import annotations

import json

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import parameter_names
from dist_hess.cli import main
from dist_hess.datasets import data_names, load_sklearn

SPEC = {"inputs": 2, "loss": "softmax_cross_entropy",
        "input_names": ["age", "bmi"], "output_names": ["a", "b", "c"],
        "layers": [{"type": "dense", "units": 2, "activation": "tanh"},
                   {"type": "dense", "units": 3, "activation": "identity", "sources": [1, 0]}]}


def test_names_round_trip_through_the_json_and_name_every_parameter():
    model = dh.Model.from_dict(SPEC)
    assert model.input_names == ("age", "bmi") and model.output_names == ("a", "b", "c")
    again = dh.Model.from_dict(json.loads(model.to_json()))
    assert again.to_dict() == model.to_dict()
    names = parameter_names(model)
    assert names[:3] == ["L1.0 <- bias", "L1.0 <- age", "L1.0 <- bmi"]
    assert names[6:12] == ["L2.a <- bias", "L2.a <- L1.0", "L2.a <- L1.1", "L2.a <- age",
                           "L2.a <- bmi", "L2.b <- bias"]
    # masked models (pruning) keep them, through the JSON too
    from dist_hess.analysis import MaskedModel, model_from_dict
    masked = MaskedModel(model, np.arange(model.n_params) != 1)
    assert masked.input_names == model.input_names and masked.pruned([2]).output_names[0] == "a"
    assert model_from_dict(json.loads(masked.to_json())).input_names == ("age", "bmi")
    # without names: the old labels, and no keys in the JSON
    plain = {k: v for k, v in SPEC.items() if not k.endswith("_names")}
    assert parameter_names(dh.Model.from_dict(plain))[1] == "L1.0 <- x0"
    assert "input_names" not in dh.Model.from_dict(plain).to_dict()


def test_one_logit_unit_takes_two_class_names():
    spec = {"inputs": 1, "loss": "binary_cross_entropy", "output_names": ["no", "yes"],
            "layers": [{"type": "dense", "units": 1, "activation": "identity"}]}
    assert parameter_names(dh.Model.from_dict(spec)) == ["L1.yes <- bias", "L1.yes <- x0"]


@pytest.mark.parametrize("names, match", [
    ({"input_names": ["age"]}, "input_names has 1 names, expected 2"),
    ({"input_names": ["age", "age"]}, "distinct"),
    ({"input_names": ["age", ""]}, "non-empty"),
    ({"input_names": "age,bmi"}, "list of strings"),
    ({"output_names": ["a", "b"]}, "output_names has 2 names, expected 3"),
])
def test_bad_names_are_refused(names, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dh.Model.from_dict({**SPEC, **names})


@pytest.mark.filterwarnings("ignore::dist_hess.analysis.NonIdentifiableWarning")  # softmax shift
def test_wald_tables_and_groups_use_the_names():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = rng.integers(0, 3, size=60)
    model = dh.Model.from_dict({**SPEC, "penalty": {"type": "l2", "lambda": 1.0}})
    w = dh.fit(model, X, y, method="newton", w0=model.init(seed=0)).w
    table = dh.wald_table((model, w, X, y))
    assert "L1.0 <- bmi" in table.to_text() and table.name[7] == "L2.a <- L1.0"
    assert table.joint_wald("input:bmi").name == "input bmi"
    assert table.joint_wald("input:bmi").df == table.joint_wald("input:1").df == 5
    assert list(dh.wald_table((model, w, X, y), parameters="L2.c <- age").index) == [19]


def test_dataframe_columns_name_the_inputs():
    pd = pytest.importorskip("pandas")
    X, y = load_sklearn("diabetes")
    frame = pd.DataFrame(X, columns=data_names("sklearn:diabetes")[0])
    model = dh.Model.from_dict({"inputs": 10, "layers": [
        {"type": "dense", "units": 1, "activation": "identity"}]})
    b = np.linalg.lstsq(np.c_[np.ones(len(y)), X], y, rcond=None)[0]
    table = dh.wald_table((model, b, frame, y))
    assert table.name[3] == "L1.0 <- bmi"
    assert table.to_frame().index[3] == "L1.0 <- bmi"


def test_data_names_from_a_csv_header_and_the_bundled_sets(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("height,weight,price\n1,2,3\n")
    assert data_names(str(path), ["price"]) == (["height", "weight"], ["price"])
    inputs, outputs = data_names("sklearn:diabetes")
    assert inputs == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert outputs is None
    assert data_names("sklearn:iris")[1] == ["setosa", "versicolor", "virginica"]
    assert data_names(str(tmp_path / "d.npz")) == (None, None)


def test_fit_on_a_bundled_set_stores_the_names_and_analyze_prints_them(tmp_path, capsys):
    """The README's flow on a linear model of sklearn:diabetes: the store's model JSON holds
    the feature names, and analyze prints exact full-covariance standard errors (OLS) under
    them, without the data."""
    spec = {"inputs": 10, "layers": [{"type": "dense", "units": 1, "activation": "identity"}]}
    (tmp_path / "ols.json").write_text(json.dumps(spec))
    store = str(tmp_path / "ols.zarr")
    assert main(["fit", str(tmp_path / "ols.json"), "sklearn:diabetes", "--method", "newton",
                 "--out", store, "--quiet"]) == 0
    attrs = dh.open_store(store).attrs["model"]
    assert attrs["input_names"][2] == "bmi"
    capsys.readouterr()
    assert main(["analyze", store]) == 0
    text = capsys.readouterr().out
    X, y = load_sklearn("diabetes")
    Z = np.c_[np.ones(len(y)), X]
    b = np.linalg.lstsq(Z, y, rcond=None)[0]
    se = np.sqrt(np.sum((y - Z @ b) ** 2) / (len(y) - 11) * np.diag(np.linalg.inv(Z.T @ Z)))
    line = next(line for line in text.splitlines() if line.startswith("L1.0 <- bmi"))
    assert f"{se[3]:.4f}" in line and "Wald tests (inverse Hessian, exact)" in text


@pytest.mark.filterwarnings("ignore::dist_hess.analysis.NonIdentifiableWarning")  # softmax shift
def test_estimators_take_dataframe_columns_and_class_labels_as_names():
    pd = pytest.importorskip("pandas")
    from dist_hess.sklearn import MLPClassifier

    X, y = load_sklearn("iris")
    inputs, classes = data_names("sklearn:iris")
    frame = pd.DataFrame(X, columns=inputs)
    labels = np.array(classes)[y]
    clf = MLPClassifier(hidden_layer_sizes=(2,), alpha=1.0, max_iter=30).fit(frame, labels)
    assert clf.model_.input_names == tuple(inputs)
    assert clf.model_.output_names == tuple(sorted(classes))
    assert "L2.setosa <- L1.0" in clf.summary() and "L1.0 <- petal width (cm)" in clf.summary()
