"""Penalties (DESIGN §1, dist_hess.penalties): parsing, the protocol's pieces, and every
kind through training and analysis.

The derivatives of models with each kind are checked against the JAX oracle by the
case-table tests (tests/test_derivatives.py, test_higher_order.py, test_closed_forms.py:
the rows of ``tests.cases.PENALTY_CASES``); this file adds what the table does not:
bad input, ``to_dict``, the norm's non-differentiable point, the structured Hessians
alone, masks, bitwise equality of the shards' reduction, and lm, Wald tables,
pruning, spectra and Laplace with each kind.
"""
from __future__ import annotations

import json

import dask
import dask.array as da
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import laplace_predict, prune, saliencies, spectra, wald_table
from dist_hess.analysis.source import loss_sum, resolve
from dist_hess.engine.row_tensors import row_tensor
from dist_hess.penalties import L2, LayerHessian, Norm, WeightElimination, parse_penalty
from dist_hess.penalties import hessian as penalty_hessian_module
from tests import oracle
from tests.cases import CASES_BY_ID, PENALTY_CASES, dense, l2, network, norm, weight_elimination
from tests.checks import assert_close, assert_psd
from tests.distributed_support import assert_bitwise_equal

SPEC = network(3, [dense(3, "tanh"), dense(2, "tanh", sources=[1, 0]), dense(1, "identity")], "squared")


def _with_penalty(penalty, spec=SPEC):
    spec = json.loads(json.dumps(spec))
    spec["penalty"] = penalty
    return spec


# --------------------------------------------------------------------------- parsing

BAD = [
    ({"type": "lasso", "lambda": 0.1}, r"unknown penalty type 'lasso'"),
    ({"type": "l2", "lambda": 0.1, "lamda": 2}, r"unknown keys \['lamda'\]"),
    ({"type": "norm", "lambda": 0.1, "scale": 1.0}, r"unknown keys \['scale'\]"),
    ({"type": "l2"}, r"missing 'lambda'"),
    ({"lambda": 0.1}, r"missing 'type'"),
    ({"type": "l2", "lambda": -0.5}, r"lambda must be a finite number >= 0, got -0.5"),
    ({"type": "l2", "lambda": float("nan")}, r"got nan"),
    ({"type": "norm", "lambda": float("inf")}, r"got inf"),
    ({"type": "l2", "lambda": True}, r"got True"),
    ({"type": "l2", "lambda": "0.1"}, r"got '0.1'"),
    ({"type": "l2", "lambda": [0.1, 0.2]}, r"lists 2 values.*one per layer.*3 layers.*\[0.1, 0.2\]"),
    ({"type": "l2", "lambda": [0.1, 0.2], "layers": [2]}, r"lists 2 values.*1 layers in 'layers'"),
    ({"type": "l2", "lambda": [0.1, -1.0, 0.2]}, r"got -1.0"),
    ({"type": "norm", "lambda": 0.1, "epsilon": -0.01}, r"epsilon must be a finite number >= 0, got -0.01"),
    ({"type": "norm", "lambda": 0.1, "epsilon": float("nan")}, r"epsilon .* got nan"),
    ({"type": "weight_elimination", "lambda": 0.1, "scale": 0}, r"scale must be a finite number > 0, got 0"),
    ({"type": "weight_elimination", "lambda": 0.1, "scale": -2.0}, r"got -2.0"),
    ({"type": "l2", "lambda": 0.1, "layers": [4]}, r"layer 4 in 'layers' is out of range.*1..3"),
    ({"type": "l2", "lambda": 0.1, "layers": [0]}, r"layer 0 in 'layers' is out of range"),
    ({"type": "l2", "lambda": 0.1, "layers": [1, 1]}, r"lists a layer twice"),
    ({"type": "l2", "lambda": 0.1, "layers": []}, r"non-empty list"),
    ({"type": "l2", "lambda": 0.1, "layers": [True]}, r"layer True"),
    ([], r"empty list"),
    ([{"type": "l2", "lambda": 0.1}, {"type": "norm", "lambda": 0.1, "epsilon": -1}], r"penalty\[1\]"),
]


@pytest.mark.parametrize("penalty, message", BAD, ids=[m for _, m in BAD])
def test_bad_penalties_are_value_errors_naming_the_value(penalty, message):
    with pytest.raises(ValueError, match=message):
        dh.Model.from_dict(_with_penalty(penalty))


def test_a_penalty_that_is_not_an_object_is_a_type_error():
    with pytest.raises(TypeError, match="penalty must be a dict"):
        dh.Model.from_dict(_with_penalty("l2"))


ROUND_TRIP = [
    {"type": "l2", "lambda": 0.1},
    {"type": "l2", "lambda": [0.1, 0.0, 2.5]},
    {"type": "norm", "lambda": 0.3},
    {"type": "norm", "lambda": 0.3, "epsilon": 0.01, "layers": [1, 2]},
    {"type": "weight_elimination", "lambda": [1.0, 2.0], "scale": 0.5, "layers": [3, 1]},
    [{"type": "norm", "lambda": 0.2, "epsilon": 0.0, "layers": [1]}, {"type": "l2", "lambda": 0.01}],
]


@pytest.mark.parametrize("penalty", ROUND_TRIP, ids=[json.dumps(p) for p in ROUND_TRIP])
def test_to_dict_round_trips_exactly(penalty, tmp_path):
    model = dh.Model.from_dict(_with_penalty(penalty))
    assert model.to_dict()["penalty"] == penalty
    path = tmp_path / "model.json"
    model.to_json(path)
    again = dh.Model.from_json(path)
    assert again.to_dict() == model.to_dict()
    w = model.init(seed=1)
    X = np.random.default_rng(0).normal(size=(5, 3))
    assert again.value(w, X, X[:, 0]) == model.value(w, X, X[:, 0])


# --------------------------------------------------------------------------- the norm at zero


def test_paper_norm_at_a_zero_layer_names_the_layer():
    model = dh.Model.from_dict(_with_penalty({"type": "norm", "lambda": 0.1}))
    X = np.random.default_rng(0).normal(size=(6, 3))
    w = model.init(seed=0)
    sl, (s, d) = model.layer_slices[1], model.layer_shapes[1]
    W2 = w[sl].reshape(s, d)
    W2[:, 1:] = 0.0                       # every penalised weight of layer 2 (the biases are not)
    w[sl] = W2.ravel()
    for call in (lambda: model.value(w, X, X[:, 0]), lambda: model.gradient(w, X, X[:, 0]),
                 lambda: model.curvature(w, X, X[:, 0], "gauss_newton", "row"),
                 lambda: model.hvp(w, X, X[:, 0], w),
                 lambda: model.directional_derivatives(w, X, X[:, 0], w, 3)):
        with pytest.raises(ValueError, match=r"norm penalty on layer 2: .*epsilon = 0"):
            call()
    smooth = dh.Model.from_dict(_with_penalty({"type": "norm", "lambda": 0.1, "epsilon": 1e-3}))
    assert np.isfinite(smooth.curvature(w, X, X[:, 0], "hessian", "full")).all()


def test_a_layer_whose_penalised_weights_are_all_pruned_has_no_penalty_term():
    """``pen(P w)`` is constant in the free weights when a layer keeps none of its penalised
    weights: nothing is added, even for the norm at ``e = 0``."""
    model = dh.Model.from_dict(_with_penalty({"type": "norm", "lambda": 0.4}))
    free = model.free
    sl, (s, d) = model.layer_slices[1], model.layer_shapes[1]
    layer2 = free[sl].reshape(s, d)
    layer2[:, 1:] = False
    free[sl] = layer2.ravel()
    masked = model.with_mask(free)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=9)
    w = masked.project(model.init(seed=3))
    unpenalised = dh.Model.from_dict(_with_penalty({"type": "norm", "lambda": 0.4, "layers": [1, 3]}))
    reference = unpenalised.with_mask(free)
    assert masked.value(w, X, y) == pytest.approx(reference.value(w, X, y), rel=1e-14)
    assert_close(masked.curvature(w, X, y, "hessian", "full"), reference.curvature(w, X, y, "hessian", "full"),
                 1e-14)


# --------------------------------------------------------------------------- the structured Hessians

KINDS = {"l2": L2(), "norm": Norm(epsilon=0.2), "norm_paper": Norm(), "weight_elimination": WeightElimination(0.4)}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_layer_hessians_row_blocks_products_and_psd_part(name, monkeypatch):
    """Row blocks are the diagonal blocks of the layer matrix (the norm couples every row),
    ``hvp`` is the matrix times ``V``, and ``gauss_newton`` is the PSD projection."""
    monkeypatch.setattr(penalty_hessian_module, "LOW_RANK_CHUNK_BYTES", 64)   # U C U' row by row
    kind = KINDS[name]
    rng = np.random.default_rng(4)
    W, V = rng.normal(size=(2, 3, 4))
    mask = np.ones((3, 4), dtype=bool)
    mask[:, 0] = False
    H = kind.hessian(W, mask)
    dense_H = H.to_dense()
    if H.factors is not None:
        U = H.factors.reshape(12, -1)
        np.testing.assert_allclose(dense_H, np.diag(H.diagonal.ravel()) + U @ H.core @ U.T, rtol=1e-14)
    rows = H.add_rows(np.zeros((3, 4, 4)))
    for j in range(3):
        np.testing.assert_allclose(rows[j], dense_H[4 * j:4 * j + 4, 4 * j:4 * j + 4], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(kind.hvp(W, mask, V).ravel(), dense_H @ V.ravel(), rtol=1e-13)
    assert not dense_H[~mask.ravel()].any() and not dense_H[:, ~mask.ravel()].any()
    gn = kind.gauss_newton(W, mask).to_dense()
    assert_psd(gn)
    lam, Q = np.linalg.eigh(dense_H)
    np.testing.assert_allclose(gn, (Q * np.maximum(lam, 0)) @ Q.T, atol=1e-13 * np.abs(dense_H).max())
    np.testing.assert_allclose(kind.gauss_newton_hvp(W, mask, V).ravel(), gn @ V.ravel(), atol=1e-13)
    if name == "norm":
        assert np.count_nonzero(dense_H[:4, 4:]) > 0, "the norm's Hessian couples the rows of a layer"
    if name == "weight_elimination":
        assert lam.min() < 0 < lam.max(), "scale 0.4 makes pen'' indefinite at these weights"


@pytest.mark.parametrize("case_id", ["skip_norm_paper", "penalty_list_layers", "isotropic_rbf_norm_layer_two"])
def test_penalty_row_and_layer_blocks_are_blocks_of_its_full_hessian(case_id):
    """The penalty's curvature alone (``add_curvature`` on zeros): row blocks are the diagonal
    sub-blocks of the layer blocks, which are the diagonal blocks of the full matrix; its
    products and its diagonal (Hessian-free's preconditioner) are those of the full matrix."""
    case = CASES_BY_ID[case_id]
    model, w = case.model(), case.w
    for kind in ("hessian", "gauss_newton"):
        zeros_full = np.zeros((model.n_params, model.n_params))
        full = model.penalty.add_curvature(model, w, zeros_full, kind, "full")
        layers = model.penalty.add_curvature(model, w, [np.zeros((s * d, s * d)) for s, d in model.layer_shapes],
                                             kind, "layer")
        rows = model.penalty.add_curvature(model, w, [np.zeros((s, d, d)) for s, d in model.layer_shapes],
                                           kind, "row")
        expected = (oracle.penalty_hessian(case.spec, w) if kind == "hessian"
                    else oracle.penalty_gauss_newton(case.spec, w))
        assert_close(full, expected, 1e-12, what=kind)
        assert not zeros_full.any(), "add_curvature must not write into its input"
        assert_close(layers, oracle.layer_blocks(case.spec, full), 1e-14, what=f"{kind} layer")
        assert_close(rows, oracle.row_blocks(case.spec, full), 1e-14, what=f"{kind} row")
        v = case.random_direction(3)
        assert_close(model.penalty.hvp(model, w, v, kind), full @ v, 1e-12, what=f"{kind} hvp")
        assert_close(model.penalty.diagonal(model, w, kind), np.diagonal(full), 1e-14, what=f"{kind} diagonal")


ROW_TENSOR_CASES = [("skip_norm_paper", 1), ("skip_norm_paper", 3), ("no_bias_weight_elimination_ce", 2),
                    ("penalty_list_layers", 2), ("penalty_list_layers", 3)]


@pytest.mark.parametrize("case_id, layer", ROW_TENSOR_CASES, ids=[f"{c}-layer{k}" for c, k in ROW_TENSOR_CASES])
def test_penalty_row_tensors_of_order_three_and_four_match_jax(case_id, layer):
    """``d^p pen / dW_j^p`` alone (the objective's row tensor minus the loss's) against nested
    ``jax.jacfwd`` of the oracle's penalty restricted to the row."""
    case = CASES_BY_ID[case_id]
    model, spec = case.model(), case.spec
    s, d = model.layer_shapes[layer - 1]
    row = s - 1
    start = model.layer_slices[layer - 1].start + row * d
    w = jnp.asarray(case.w)
    for p in (3, 4):
        with_pen = row_tensor(model, case.w, case.X, case.Y, layer, row, p)
        without = row_tensor(model, case.w, case.X, case.Y, layer, row, p, penalty=False)
        f = lambda r: oracle.penalty_value(spec, w.at[start:start + d].set(r))  # noqa: E731
        for _ in range(p):
            f = jax.jacfwd(f)
        expected = np.asarray(f(w[start:start + d]))
        assert_close(with_pen - without, expected, 1e-9, scale=np.abs(with_pen).max(), what=f"p={p}")


# --------------------------------------------------------------------------- the reduction


def test_penalty_terms_are_added_once_and_bitwise_equal_across_schedulers():
    """Shards carry no penalty: the loop and dask graphs over the same shards give the same bits,
    and they equal the single-shard model methods to rounding."""
    case = CASES_BY_ID["penalty_list_layers"]
    model, w = case.model(), case.w
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, model.inputs))
    Y = rng.integers(0, 2, size=(40, model.sizes[-1])).astype(float)
    v = case.random_direction(0)
    curvature = (("hessian", "row"), ("gauss_newton", "layer"), ("lagrangian", "full"))
    kwargs = dict(curvature=curvature, hvp=[("hessian", v), ("gauss_newton", v)], directional=(v, 4),
                  split_every=3)
    loop = dh.evaluate(model, w, X, Y, chunk_size=7, **kwargs)
    with dask.config.set(scheduler="threads", num_workers=3):
        graph = dh.evaluate(model, w, da.from_array(X, chunks=(7, -1)), da.from_array(Y, 7), **kwargs)
    assert_bitwise_equal(loop, graph)
    for a, b in zip(loop.hvp, graph.hvp):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loop.directional, graph.directional)
    assert_close(loop.value, model.value(w, X, Y), 1e-13)
    assert_close(loop.curvature_of("lagrangian", "full"), model.curvature(w, X, Y, "lagrangian", "full"), 1e-12)
    assert_close(loop.directional, model.directional_derivatives(w, X, Y, v, 4), 1e-12)


# --------------------------------------------------------------------------- training and analysis

#: Lambdas small enough that the minimum is a smooth point (a large norm lambda puts it at
#: W^k = 0, where the paper's e = 0 norm is not differentiable and Newton stalls).
EVERY_KIND = {
    "l2_per_layer": l2([0.05, 0.1, 0.02]),
    "norm_paper": norm(0.02),
    "norm_smooth": norm(0.05, epsilon=0.05, layers=[2, 3]),
    "weight_elimination": weight_elimination(0.05, scale=0.5),
    "list": [norm(0.02, epsilon=0.01, layers=[1]), weight_elimination(0.05, scale=1.0, layers=[2]),
             l2(0.05, layers=[3])],
}


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 3))
    y = np.tanh(X[:, 0] - 0.5 * X[:, 1]) + 0.5 * np.tanh(X[:, 2] + X[:, 0]) + 0.1 * rng.normal(size=60)
    return X, y


@pytest.mark.filterwarnings("ignore::dist_hess.analysis.NonIdentifiableWarning")
@pytest.mark.parametrize("name", sorted(EVERY_KIND))
def test_fit_wald_pruning_spectra_and_laplace_with_every_kind(name, regression):
    """Smoke test of the whole chain (the numbers themselves are the derivative tests' job);
    a penalised minimum may keep a flat direction (the bias of a unit whose outgoing weights
    went to 0): the analysis then warns and uses pseudo-inverses."""
    X, y = regression
    model = dh.Model.from_dict(_with_penalty(EVERY_KIND[name]))
    result = dh.fit(model, X, y, w0=model.init(seed=0), method="newton", max_iter=300, gtol=1e-10)
    assert result.converged, result.message
    w = result.w
    assert np.linalg.norm(oracle.gradient(model.to_dict(), w, X, y)) <= 1e-5
    source = (model, w, X, y)
    penalty = oracle.penalty_value(model.to_dict(), w)
    assert loss_sum(model, w, X, y) == pytest.approx(result.value - float(penalty), rel=1e-12)
    table = wald_table(source)
    assert np.all(np.isfinite(table.std_error)) and np.all(table.std_error > 0)
    spec = spectra(source, k=3)
    H = oracle.hessian(model.to_dict(), w, X, y)
    np.testing.assert_allclose(spec.full.eigenvalues, np.linalg.eigvalsh(H), atol=1e-8 * np.abs(H).max())
    pred = laplace_predict(source, X[:5])
    assert pred.kind == "gauss_newton" and np.all(np.isfinite(pred.predictive_variance))
    sal = saliencies(source)
    assert np.all(np.isfinite(sal.obs))
    path = prune(model, X, y, w, criterion="bic", max_steps=1, fit_options={"max_iter": 200})
    assert len(path.steps) == 2 and path.steps[1].removed


def test_a_store_keeps_the_penalty_and_the_analysis_strips_it(regression, tmp_path):
    """The model JSON in the store carries the list of penalties; the loss sum of a stored
    fit is the stored value minus the penalty (no data needed), and a Wald table reads it."""
    X, y = regression
    model = dh.Model.from_dict(_with_penalty(EVERY_KIND["list"]))
    w = dh.fit(model, X, y, w0=model.init(seed=0), method="newton", max_iter=300).w
    path = str(tmp_path / "run.zarr")
    dh.evaluate(model, w, X, y, curvature="hessian:full", store=path)
    store = dh.open_store(path)
    assert store.model.to_dict()["penalty"] == EVERY_KIND["list"]
    fitted = resolve(path)
    assert fitted.loss_sum() == pytest.approx(loss_sum(model, w, X, y), rel=1e-12)
    from_store, from_data = wald_table(path), wald_table((model, w, X, y))
    np.testing.assert_allclose(from_store.std_error, from_data.std_error, rtol=1e-10)


def test_lm_with_weight_elimination_keeps_gauss_newton_semidefinite(regression):
    """pen'' of weight elimination is indefinite (``|w| > c / sqrt(3)``); ``gauss_newton`` adds
    its positive part, so lm's Cholesky (``semidefinite=True``) and its row-block eigensolves
    stay valid, from the start (weights doubled: many beyond ``c / sqrt(3)``) to the minimum."""
    X, y = regression
    scale = 1.0
    model = dh.Model.from_dict(_with_penalty(weight_elimination(0.3, scale=scale)))
    w0 = 2.0 * model.init(seed=1)
    pen = oracle.penalty_hessian(model.to_dict(), w0)
    assert np.linalg.eigvalsh(pen).min() < 0
    assert_psd(model.curvature(w0, X, y, "gauss_newton", "full"))
    start = model.value(w0, X, y)
    for hybrid in (False, True):
        result = dh.fit(model, X, y, w0=w0, method="lm", max_iter=200, options={"hybrid": hybrid})
        assert result.converged, (hybrid, result.message)
        assert np.linalg.norm(oracle.gradient(model.to_dict(), result.w, X, y)) <= 1e-5
        penalised = model.penalty_mask
        assert np.any(np.abs(result.w[penalised]) > scale / np.sqrt(3)), "the positive part is active"
        assert_psd(model.curvature(result.w, X, y, "gauss_newton", "full"))
    rows = dh.fit(model, X, y, w0=w0, method="lm", structure="row", max_iter=30)
    assert rows.value < start and all(np.isfinite(r.value) for r in rows.history)


def test_parse_penalty_alone():
    pen = parse_penalty({"type": "norm", "lambda": [0.1, 0.2], "layers": [2, 1]}, 2)
    (term,) = pen.terms
    assert term.layers == (2, 1) and term.lam == (0.1, 0.2) and isinstance(term.kind, Norm)
    assert parse_penalty(None, 3) is None
    assert isinstance(LayerHessian((1, 1), diagonal=np.ones((1, 1))).psd_part(), LayerHessian)
    assert set(PENALTY_CASES) >= {"skip_norm_paper", "penalty_list_layers"}
