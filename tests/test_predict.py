"""`Model.predict`: the network output (``raw``) against the JAX oracle's forward pass,
and the loss's prediction (``mean``) from it, on every case of the table."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from tests import oracle
from tests.cases import CASES, case_params


@pytest.mark.parametrize("case", case_params())
def test_raw_output_is_the_oracle_forward_pass_and_mean_applies_the_inverse_link(case):
    model = case.model()
    raw = model.predict(case.w, case.X, output="raw")
    np.testing.assert_allclose(raw, oracle.forward(case.spec, case.w, case.X)[-1], rtol=1e-12, atol=1e-12)
    expected = {"squared": raw, "softmax_cross_entropy": softmax(raw, axis=1),
                "binary_cross_entropy": expit(raw)}[case.spec["loss"]]
    np.testing.assert_allclose(model.predict(case.w, case.X), expected, rtol=1e-12, atol=1e-15)


def test_chunks_do_not_change_the_prediction_and_empty_input_gives_no_rows():
    case = CASES[0]
    model = case.model()
    whole = model.predict(case.w, case.X)
    np.testing.assert_array_equal(model.predict(case.w, case.X, chunk_rows=3), whole)
    empty = model.predict(case.w, case.X[:0])
    assert empty.shape == (0, whole.shape[1])


def test_softmax_probabilities_stay_finite_for_huge_logits():
    import dist_hess as dh
    model = dh.Model.from_dict({"inputs": 1, "layers": [{"type": "dense", "units": 3, "activation": "identity"}],
                                "loss": "softmax_cross_entropy"})
    w = np.array([1e3, 0.0, -1e3, 0.0, 0.0, 0.0])
    with np.errstate(under="ignore"):          # exp(-1e4) -> 0 is the right answer
        p = model.predict(w, np.array([[5.0], [-5.0]]))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"output": "probabilities"}, ValueError, "'probabilities'"),
    ({"chunk_rows": 0}, ValueError, "chunk_rows"),
])
def test_bad_arguments_are_named(kwargs, error, fragment):
    case = CASES[0]
    with pytest.raises(error, match=fragment):
        case.model().predict(case.w, case.X, **kwargs)


def test_bad_inputs_are_named():
    case = CASES[0]
    model = case.model()
    with pytest.raises(ValueError, match="X must have shape"):
        model.predict(case.w, case.X[:, :1] if case.X.shape[1] > 1 else np.ones((3, 5)))
    with pytest.raises(ValueError, match="n_params"):
        model.predict(case.w[:-1], case.X)
