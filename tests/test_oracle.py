"""Self-tests of the JAX oracle and the case table (no engine needed).

The oracle is itself checked against finite differences of its own value and
gradient, closed forms, and the structural identities it must satisfy, so that
an engine/oracle disagreement can be trusted to be the engine's.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from tests import oracle
from tests.cases import CASES, case_params, dense, network, quadratic, rbf
from tests.checks import assert_close, assert_psd, assert_symmetric, directional_difference


def test_table_is_big_and_varied():
    assert len(CASES) >= 32
    specs = [case.spec for case in CASES]
    layers = [layer for spec in specs for layer in spec["layers"]]
    activations = {layer["activation"] for layer in layers}
    assert activations == {"identity", "tanh", "logistic", "softplus", "gaussian", "relu", "sin"}
    assert {spec["loss"] for spec in specs} == {"squared", "softmax_cross_entropy", "binary_cross_entropy"}
    assert {layer["metric"] for layer in layers if layer["type"] == "rbf"} == {"isotropic", "diagonal", "full"}
    assert any(layer["type"] == "quadratic" and len(layer.get("sources", [0])) > 1 for layer in layers)
    assert any(layer.get("bias") is False for layer in layers)
    assert any(case.n_examples == 1 for case in CASES)
    assert any(len(spec["layers"]) >= 5 for spec in specs)
    assert any("penalty" in spec for spec in specs) and any("penalty" not in spec for spec in specs)
    target_forms = {(case.spec["loss"], case.Y.ndim, case.Y.dtype.kind) for case in CASES}
    assert ("softmax_cross_entropy", 1, "i") in target_forms and ("softmax_cross_entropy", 2, "f") in target_forms
    assert ("binary_cross_entropy", 1, "f") in target_forms and ("binary_cross_entropy", 2, "f") in target_forms


@pytest.mark.parametrize("case", case_params())
def test_case_is_deterministic_and_read_only(case):
    np.testing.assert_array_equal(case.make_w(0), case.make_w(0))
    assert not np.array_equal(case.make_w(0), case.make_w(1))
    assert case.w.shape == (oracle.n_params(case.spec),)
    assert not case.X.flags.writeable and not case.Y.flags.writeable
    assert 1 <= case.n_examples <= 25
    for k, (layer, a, x) in enumerate(zip(case.spec["layers"], oracle.preactivations(case.spec, case.w, case.X),
                                          oracle.forward(case.spec, case.w, case.X)[1:])):
        assert np.all(np.isfinite(x))
        if layer["activation"] == "relu":
            assert np.abs(a).min() >= case.relu_margin
            assert (a > 0).any() and (a < 0).any(), f"layer {k + 1}: relu should be active and inactive"
        if layer["activation"] == "gaussian":
            assert x.max() > 0.05, f"layer {k + 1}: gaussian units are all ~0"


def test_layout_by_hand():
    spec = network(
        3,
        [dense(4, "tanh"), rbf(2, "full", sources=[1]), quadratic(2, sources=[2, 0]),
         dense(1, "identity", sources=[3, 1], bias=False), rbf(3, "isotropic", sources=[0]),
         rbf(1, "diagonal", sources=[0])],
        "squared",
    )
    # dense 4x(1+3); rbf full on 4: 4 + 10; quadratic on 2+3: q = 6, 21; dense no bias 2+4;
    # rbf isotropic on 3: 3 + 1; rbf diagonal on 3: 3 + 3
    assert oracle.layer_shapes(spec) == [(4, 4), (2, 14), (2, 21), (1, 6), (3, 4), (1, 6)]
    assert oracle.n_params(spec) == 16 + 28 + 42 + 6 + 12 + 6
    sizes = [sl.stop - sl.start for sl in oracle.layer_slices(spec)]
    assert sizes == [16, 28, 42, 6, 12, 6]
    mask = oracle.penalty_mask(spec)
    assert mask[:16].reshape(4, 4)[:, 0].sum() == 0 and mask[:16].reshape(4, 4)[:, 1:].all()
    assert mask[16:].all()


def test_propagations_by_hand():
    """One example, one unit per layer type, evaluated by hand."""
    x = np.array([[0.3, -1.2]])
    # rbf full: row = [mu (2), L00, L10, L11]; M = L L'
    mu, (l00, l10, l11) = np.array([0.1, 0.4]), (1.1, -0.3, 0.7)
    L = np.array([[l00, 0.0], [l10, l11]])
    diff = x[0] - mu
    spec = network(2, [rbf(1, "full", activation="identity")], "squared")
    a = oracle.preactivations(spec, np.r_[mu, l00, l10, l11], x)[0]
    assert_close(a, np.array([[diff @ L @ L.T @ diff]]), 1e-14)
    # rbf diagonal and isotropic
    beta = np.array([0.2, -0.5])
    spec = network(2, [rbf(1, "diagonal", activation="gaussian")], "squared")
    a = oracle.forward(spec, np.r_[mu, beta], x)[-1]
    assert_close(a, np.exp(-0.5 * np.sum(np.exp(beta) * diff**2))[None, None], 1e-14)
    spec = network(2, [rbf(1, "isotropic", activation="identity")], "squared")
    assert_close(oracle.forward(spec, np.r_[mu, 0.3], x)[-1], np.exp(0.3) * (diff @ diff)[None, None], 1e-14)
    # quadratic: z = [1, x1, x2], row = w00, w01, w02, w11, w12, w22
    q = np.arange(1.0, 7.0)
    z = np.r_[1.0, x[0]]
    expected = q[0] + q[1] * z[1] + q[2] * z[2] + q[3] * z[1] ** 2 + q[4] * z[1] * z[2] + q[5] * z[2] ** 2
    spec = network(2, [quadratic(1)], "squared")
    assert_close(oracle.forward(spec, q, x)[-1], np.array([[expected]]), 1e-14)
    # dense with sources [1, 0]: row = [bias, weights on x^1, weights on x^0]
    spec = network(2, [dense(1, "identity"), dense(1, "identity", sources=[1, 0])], "squared")
    w = np.array([0.5, 2.0, 3.0, 0.1, 10.0, 100.0, 1000.0])
    x1 = 0.5 + 2.0 * 0.3 + 3.0 * -1.2
    assert_close(oracle.forward(spec, w, x)[-1], np.array([[0.1 + 10.0 * x1 + 100.0 * 0.3 + 1000.0 * -1.2]]), 1e-14)


@pytest.mark.parametrize("case", case_params())
def test_oracle_against_finite_differences(case):
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    ref = oracle.reference(spec, w, X, Y)
    H = ref["hessian"]
    for index in range(2):
        v = case.random_direction(index)
        fd = directional_difference(lambda w_: oracle.objective(spec, w_, X, Y), w, v)
        assert abs(fd - ref["gradient"] @ v) <= 1e-7 * np.linalg.norm(ref["gradient"])
        fd = directional_difference(lambda w_: oracle.gradient(spec, w_, X, Y), w, v)
        assert_close(H @ v, fd, 1e-7, scale=np.linalg.norm(H, 2), atol_factor=1e-7)
    assert_symmetric(H)
    assert_symmetric(ref["lagrangian"])
    assert_psd(ref["gauss_newton"])


@pytest.mark.parametrize("case", case_params())
def test_oracle_structure(case):
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    ref = oracle.reference(spec, w, X, Y)
    pen = oracle.penalty_gauss_newton(spec, w)      # pen'' itself for a convex penalty
    # eq. (10) is block diagonal over layers
    off_diagonal = ref["lagrangian"].copy()
    for sl in oracle.layer_slices(spec):
        off_diagonal[sl, sl] = 0.0
    assert not off_diagonal.any()
    # output layer: H = GN + Lag - (PSD part of pen'')
    last = oracle.layer_slices(spec)[-1]
    D = ref["hessian"] - ref["gauss_newton"] - ref["lagrangian"] + pen
    assert np.linalg.norm(D[last, last]) <= 1e-12 * np.linalg.norm(ref["hessian"])
    # row blocks are the diagonal blocks of the layer blocks
    for rows, block, (s, d) in zip(oracle.row_blocks(spec, ref["hessian"]), oracle.layer_blocks(spec, ref["hessian"]),
                                   oracle.layer_shapes(spec)):
        assert rows.shape == (s, d, d) and block.shape == (s * d, s * d)
        for j in range(s):
            np.testing.assert_array_equal(rows[j], block[j * d:(j + 1) * d, j * d:(j + 1) * d])


@pytest.mark.parametrize("case", case_params())
def test_oracle_multipliers(case):
    """``e^k = -dg/dx^k``: output layer in closed form, every layer by finite differences
    of the loss in an additive perturbation of ``x^k``."""
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    es = oracle.multipliers(spec, w, X, Y)
    assert [e.shape for e in es] == [(case.n_examples, s) for s, _ in oracle.layer_shapes(spec)]
    out = oracle.forward(spec, w, X)[-1]
    Yc = oracle.canonical_targets(spec, Y)
    closed = {"squared": lambda: Yc - out,
              "softmax_cross_entropy": lambda: Yc - softmax(out, axis=1),
              "binary_cross_entropy": lambda: Yc - expit(out)}[spec["loss"]]()
    assert_close(es[-1], closed, 1e-12)
    rng = np.random.default_rng(0)
    for k, e in enumerate(es):
        U = rng.normal(size=e.shape)

        def loss(step, k=k, U=U):
            perturbations = [np.zeros_like(other) for other in es]
            perturbations[k] = step * U
            xs, _ = oracle._forward(spec, w, X, perturbations)
            return float(np.sum(oracle._loss_terms(spec, xs[-1], Yc)))

        fd = (loss(1e-5) - loss(-1e-5)) / 2e-5
        assert abs(fd + np.sum(e * U)) <= 1e-6 * max(np.linalg.norm(e) * np.linalg.norm(U), 1e-12)


def test_oracle_linear_regression_closed_form():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    Z = np.hstack([np.ones((11, 1)), X])
    for lam in (0.0, 0.4):
        spec = network(3, [dense(2, "identity")], "squared", penalty=lam or None)
        w = rng.normal(size=8)
        ref = oracle.reference(spec, w, X, Y)
        pen = oracle.penalty_hessian(spec)
        assert_close(ref["hessian"], np.kron(np.eye(2), Z.T @ Z) + pen, 1e-12)
        assert_close(ref["gauss_newton"], ref["hessian"], 1e-12)
        assert_close(ref["lagrangian"], pen, 1e-12, scale=np.linalg.norm(ref["hessian"]))
        assert_close(ref["multipliers"], [Y - Z @ w.reshape(2, 4).T], 1e-12)


def test_oracle_logistic_and_softmax_closed_forms():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(13, 2))
    Z = np.hstack([np.ones((13, 1)), X])
    y = rng.integers(0, 2, size=13).astype(float)
    w = rng.normal(size=3)
    spec = network(2, [dense(1, "identity")], "binary_cross_entropy")
    p = expit(Z @ w)
    assert_close(oracle.hessian(spec, w, X, y), Z.T @ (Z * (p * (1 - p))[:, None]), 1e-12)
    assert_close(oracle.hessian(spec, w, X, y[:, None]), oracle.gauss_newton(spec, w, X, y), 1e-12)

    labels = rng.integers(0, 3, size=13)
    W = rng.normal(size=(3, 3))
    spec = network(2, [dense(3, "identity")], "softmax_cross_entropy")
    P = softmax(Z @ W.T, axis=1)
    weights = np.einsum("nj,jl->njl", P, np.eye(3)) - np.einsum("nj,nl->njl", P, P)
    expected = np.einsum("njl,na,nb->jalb", weights, Z, Z).reshape(9, 9)
    assert_close(oracle.hessian(spec, W.ravel(), X, labels), expected, 1e-12)
    assert_close(oracle.hessian(spec, W.ravel(), X, np.eye(3)[labels]), expected, 1e-12)


def test_oracle_lagrangian_by_hand():
    """One tanh layer, squared loss: eq. (10) is ``-sum_i e_ij h''(a_ij) z_i z_i'`` per row."""
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    W = rng.normal(size=(2, 3))
    spec = network(2, [dense(2, "tanh")], "squared")
    Z = np.hstack([np.ones((9, 1)), X])
    A = Z @ W.T
    E = Y - np.tanh(A)
    second = -2.0 * np.tanh(A) * (1.0 - np.tanh(A) ** 2)
    rows = np.einsum("nj,na,nb->jab", -E * second, Z, Z)
    assert_close(oracle.curvature(spec, W.ravel(), X, Y, "lagrangian", "row"), [rows], 1e-12)
    lagrangian = oracle.lagrangian(spec, W.ravel(), X, Y)
    assert not lagrangian[:3, 3:].any()


def test_oracle_directional_derivatives():
    rng = np.random.default_rng(3)
    # linear regression: E(w + t v) is a quadratic in t
    X, Y = rng.normal(size=(8, 2)), rng.normal(size=8)
    spec = network(2, [dense(1, "identity")], "squared")
    w, v = rng.normal(size=3), rng.normal(size=3)
    Z = np.hstack([np.ones((8, 1)), X])
    got = oracle.directional_derivatives(spec, w, X, Y, v, order=6)
    expected = [0.5 * np.sum((Y - Z @ w) ** 2), -(Y - Z @ w) @ (Z @ v), np.sum((Z @ v) ** 2), 0, 0, 0, 0]
    assert_close(got, np.array(expected), 1e-12)
    # a nonlinear case: orders 1 and 2 from the gradient and Hessian, order 3 by differences
    case = next(c for c in CASES if c.id == "mlp_tanh_squared")
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    v = case.random_direction(0)
    got = oracle.directional_derivatives(spec, w, X, Y, v, order=4)
    ref = oracle.reference(spec, w, X, Y)
    assert_close(got[:3], np.array([ref["value"], ref["gradient"] @ v, v @ ref["hessian"] @ v]), 1e-11)
    fd = directional_difference(lambda w_: v @ oracle.hvp(spec, w_, X, Y, v), w, v)
    assert abs(fd - got[3]) <= 1e-6 * max(abs(got[3]), 1.0)
    fd = directional_difference(lambda w_: oracle.directional_derivatives(spec, w_, X, Y, v, order=3)[3], w, v)
    assert abs(fd - got[4]) <= 1e-6 * max(abs(got[4]), 1.0)


def test_oracle_target_forms_agree():
    case = next(c for c in CASES if c.id == "softmax_reg_labels")
    labels = case.Y
    a = oracle.reference(case.spec, case.w, case.X, labels)
    b = oracle.reference(case.spec, case.w, case.X, np.eye(3)[labels])
    for key in ("hessian", "gauss_newton", "lagrangian", "gradient"):
        assert_close(a[key], b[key], 1e-14)
    case = next(c for c in CASES if c.id == "logreg_bce_vector")
    a = oracle.reference(case.spec, case.w, case.X, case.Y)
    b = oracle.reference(case.spec, case.w, case.X, case.Y[:, None])
    assert_close(a["hessian"], b["hessian"], 1e-14)
