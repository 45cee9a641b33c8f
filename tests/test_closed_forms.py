"""Closed forms and the hessian = gauss_newton + lagrangian + downstream decomposition.

* Linear regression (one dense identity layer, squared loss): every row block
  of the Hessian is ``Z'Z`` (``Z = [1, X]``), and the paper's eq. (10) gives 0:
  DESIGN.md §2's counterexample.  With a penalty both gain ``pen''``.
* Logistic regression (one dense identity unit, BCE): ``Z' diag(p(1-p)) Z``.
* Softmax regression: block ``(j, l)`` is ``sum_i (p_ij δ_jl - p_ij p_il) z_i z_i'``.
* For every layer ``k``: ``hessian = gauss_newton + lagrangian - pen'' + D_k``,
  ``D_k`` the curvature that flows in through downstream nonlinearities; ``D``
  vanishes on the output layer and whenever all later layers are dense identity.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from tests import oracle
from tests.cases import case_params, dense, network
from tests.checks import assert_close

RTOL = 1e-10


def _model(spec):
    from dist_hess import Model

    return Model.from_dict(spec)


def _design(X, bias):
    return np.hstack([np.ones((X.shape[0], 1)), X]) if bias else X


def _data(n, inputs, outputs, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, inputs))
    Y = rng.normal(size=(n, outputs))
    W = 0.5 * rng.normal(size=(outputs, inputs + 1))
    return X, Y, W


def _penalty_diagonal(lam, outputs, d, bias):
    mask = np.ones((outputs, d))
    if bias:
        mask[:, 0] = 0.0
    return lam * mask.ravel()


# --------------------------------------------------------------------------- linear regression


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_linear_regression(outputs, bias, lam):
    X, Y, W = _data(17, 3, outputs, seed=outputs + 10 * bias)
    W = W if bias else W[:, 1:]
    spec = network(3, [dense(outputs, "identity", bias=bias)], "squared", penalty=lam or None)
    model = _model(spec)
    Z = _design(X, bias)
    d = Z.shape[1]
    w = W.ravel()
    target = Y[:, 0] if outputs == 1 else Y
    residual = Y - Z @ W.T
    pen = _penalty_diagonal(lam, outputs, d, bias)
    ZtZ = Z.T @ Z

    assert model.n_params == outputs * d
    assert_close(model.value(w, X, target), 0.5 * np.sum(residual**2) + 0.5 * np.sum(pen * w**2), RTOL)
    assert_close(model.gradient(w, X, target), -(residual.T @ Z).ravel() + pen * w, RTOL)
    assert_close(list(model.multipliers(w, X, target)), [residual], RTOL)

    hessian = np.kron(np.eye(outputs), ZtZ) + np.diag(pen)
    for kind in ("hessian", "gauss_newton"):
        assert_close(model.curvature(w, X, target, kind=kind, structure="full"), hessian, RTOL)
        assert_close(list(model.curvature(w, X, target, kind=kind, structure="layer")), [hessian], RTOL)
        rows = [ZtZ + np.diag(p) for p in pen.reshape(outputs, d)]
        assert_close(list(model.curvature(w, X, target, kind=kind, structure="row")), [np.array(rows)], RTOL)

    # eq. (10) misses the whole Hessian: it is pen'' alone (0 without a penalty).
    scale = np.linalg.norm(hessian)
    lagrangian = model.curvature(w, X, target, kind="lagrangian", structure="full")
    assert_close(lagrangian, np.diag(pen), RTOL, scale=scale)
    rows = [np.diag(p) for p in pen.reshape(outputs, d)]
    assert_close(list(model.curvature(w, X, target, kind="lagrangian", structure="row")), [np.array(rows)],
                 RTOL, scale=scale)


# --------------------------------------------------------------------------- logistic regression


@pytest.mark.parametrize("target_shape", ["vector", "column"])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_logistic_regression(target_shape, lam):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(19, 3))
    y = rng.integers(0, 2, size=19).astype(float)
    w = 0.7 * rng.normal(size=4)
    spec = network(3, [dense(1, "identity")], "binary_cross_entropy", penalty=lam or None)
    model = _model(spec)
    Z = _design(X, True)
    logits = Z @ w
    p = expit(logits)
    pen = _penalty_diagonal(lam, 1, 4, True)
    target = y if target_shape == "vector" else y[:, None]

    value = np.sum(np.logaddexp(0.0, logits) - y * logits) + 0.5 * np.sum(pen * w**2)
    assert_close(model.value(w, X, target), value, RTOL)
    assert_close(model.gradient(w, X, target), Z.T @ (p - y) + pen * w, RTOL)
    assert_close(list(model.multipliers(w, X, target)), [(y - p)[:, None]], RTOL)
    hessian = Z.T @ (Z * (p * (1 - p))[:, None]) + np.diag(pen)
    for kind in ("hessian", "gauss_newton"):
        assert_close(model.curvature(w, X, target, kind=kind, structure="full"), hessian, RTOL)
        assert_close(list(model.curvature(w, X, target, kind=kind, structure="row")), [hessian[None]], RTOL)
    assert_close(model.curvature(w, X, target, kind="lagrangian", structure="full"), np.diag(pen), RTOL,
                 scale=np.linalg.norm(hessian))


def test_two_independent_logistic_regressions():
    """BCE with two outputs: block diagonal, one ``Z' diag(p(1-p)) Z`` per unit."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(14, 2))
    Y = rng.integers(0, 2, size=(14, 2)).astype(float)
    W = 0.6 * rng.normal(size=(2, 3))
    model = _model(network(2, [dense(2, "identity")], "binary_cross_entropy"))
    Z = _design(X, True)
    P = expit(Z @ W.T)
    blocks = [Z.T @ (Z * (P[:, j] * (1 - P[:, j]))[:, None]) for j in range(2)]
    full = np.zeros((6, 6))
    full[:3, :3], full[3:, 3:] = blocks
    assert_close(model.gradient(W.ravel(), X, Y), ((P - Y).T @ Z).ravel(), RTOL)
    assert_close(model.curvature(W.ravel(), X, Y, kind="hessian", structure="full"), full, RTOL)
    assert_close(list(model.curvature(W.ravel(), X, Y, kind="hessian", structure="row")), [np.array(blocks)], RTOL)


# --------------------------------------------------------------------------- softmax regression


@pytest.mark.parametrize("target_form", ["labels", "onehot"])
@pytest.mark.parametrize("bias", [True, False])
def test_softmax_regression(target_form, bias):
    rng = np.random.default_rng(5)
    n, inputs, classes = 21, 3, 4
    X = rng.normal(size=(n, inputs))
    labels = rng.integers(0, classes, size=n)
    onehot = np.eye(classes)[labels]
    Z = _design(X, bias)
    d = Z.shape[1]
    W = 0.5 * rng.normal(size=(classes, d))
    model = _model(network(inputs, [dense(classes, "identity", bias=bias)], "softmax_cross_entropy"))
    target = labels if target_form == "labels" else onehot
    logits = Z @ W.T
    P = softmax(logits, axis=1)
    w = W.ravel()

    value = np.sum(np.log(np.sum(np.exp(logits), axis=1)) - logits[np.arange(n), labels])
    assert_close(model.value(w, X, target), value, RTOL)
    assert_close(model.gradient(w, X, target), ((P - onehot).T @ Z).ravel(), RTOL)
    assert_close(list(model.multipliers(w, X, target)), [onehot - P], RTOL)

    # H[(j, a), (l, b)] = sum_i (p_ij δ_jl - p_ij p_il) z_ia z_ib
    weights = np.einsum("nj,jl->njl", P, np.eye(classes)) - np.einsum("nj,nl->njl", P, P)
    hessian = np.einsum("njl,na,nb->jalb", weights, Z, Z).reshape(classes * d, classes * d)
    rows = np.einsum("njj,na,nb->jab", weights, Z, Z)
    for kind in ("hessian", "gauss_newton"):
        assert_close(model.curvature(w, X, target, kind=kind, structure="full"), hessian, RTOL)
        assert_close(list(model.curvature(w, X, target, kind=kind, structure="layer")), [hessian], RTOL)
        assert_close(list(model.curvature(w, X, target, kind=kind, structure="row")), [rows], RTOL)
    assert_close(model.curvature(w, X, target, kind="lagrangian", structure="full"), np.zeros_like(hessian),
                 RTOL, scale=np.linalg.norm(hessian))


# --------------------------------------------------------------------------- the decomposition


def _engine_layer_blocks(model, case, kind):
    return [np.asarray(b) for b in model.curvature(case.w, case.X, case.Y, kind=kind, structure="layer")]


def _downstream(case, model):
    """Per layer: hessian - gauss_newton - lagrangian + (PSD part of pen'', what gauss_newton
    adds; pen'' itself for a convex penalty) from the engine's three kinds."""
    H, G, L = (_engine_layer_blocks(model, case, kind) for kind in ("hessian", "gauss_newton", "lagrangian"))
    pen = oracle.layer_blocks(case.spec, oracle.penalty_gauss_newton(case.spec, case.w))
    return [h - g - lg + p for h, g, lg, p in zip(H, G, L, pen)], H


@pytest.mark.parametrize("case", case_params())
def test_output_layer_hessian_is_gauss_newton_plus_lagrangian(case):
    """Output layer: nothing is downstream, so ``H = GN + Lag - pen''`` exactly (layer and row blocks)."""
    model = case.model()
    downstream, H = _downstream(case, model)
    assert_close(downstream[-1], np.zeros_like(H[-1]), RTOL, scale=np.linalg.norm(H[-1]), atol_factor=1e-11)
    rows = {kind: np.asarray(model.curvature(case.w, case.X, case.Y, kind=kind, structure="row")[-1])
            for kind in ("hessian", "gauss_newton", "lagrangian")}
    pen_rows = oracle.row_blocks(case.spec, oracle.penalty_gauss_newton(case.spec, case.w))[-1]
    assert_close(rows["gauss_newton"] + rows["lagrangian"] - pen_rows, rows["hessian"], RTOL,
                 atol_factor=1e-11)


def _first_layer_with_linear_downstream(case):
    """0-based index of the last layer that is not dense-identity (its downstream is linear,
    and so is every later layer's); 0 when the whole network is linear."""
    layers = case.spec["layers"]
    nonlinear = [k for k, layer in enumerate(layers) if layer["type"] != "dense" or layer["activation"] != "identity"]
    return max(nonlinear, default=0)


@pytest.mark.parametrize("case", case_params())
def test_downstream_curvature(case):
    """``H - GN - Lag + pen''`` per layer: equals the oracle's, and is 0 when downstream is linear."""
    model = case.model()
    downstream, H = _downstream(case, model)
    expected = oracle.downstream_curvature(case.spec, case.w, case.X, case.Y)
    scale = max(np.linalg.norm(h) for h in H)
    assert_close(downstream, expected, 1e-9, scale=scale, atol_factor=1e-11)
    for k in range(_first_layer_with_linear_downstream(case), len(H)):
        assert np.linalg.norm(downstream[k]) <= 1e-11 * scale, f"layer {k + 1} has a linear downstream"


@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_linear_downstream_mlp(lam):
    """tanh → identity → identity: every layer block satisfies ``H = GN + Lag - pen''``, and
    on the identity layers eq. (10) is ``pen''`` alone while ``H = GN``."""
    rng = np.random.default_rng(8)
    spec = network(3, [dense(4, "tanh"), dense(3, "identity"), dense(2, "identity")], "squared",
                   penalty=lam or None)
    X, Y = rng.normal(size=(15, 3)), rng.normal(size=(15, 2))
    w = 0.5 * rng.normal(size=oracle.n_params(spec))
    model = _model(spec)
    H, G, L = ([np.asarray(b) for b in model.curvature(w, X, Y, kind=kind, structure="layer")]
               for kind in ("hessian", "gauss_newton", "lagrangian"))
    pen = oracle.layer_blocks(spec, oracle.penalty_hessian(spec))
    for k in range(3):
        assert_close(G[k] + L[k] - pen[k], H[k], RTOL, what=f"layer {k + 1}")
    for k in (1, 2):
        assert_close(L[k], pen[k], RTOL, scale=np.linalg.norm(H[k]), what=f"layer {k + 1} lagrangian")
        assert_close(G[k], H[k], RTOL, what=f"layer {k + 1} gauss-newton")
    # the first layer's own nonlinearity is in the Lagrangian, not in GN
    assert np.linalg.norm(L[0] - pen[0]) > 1e-3 * np.linalg.norm(H[0])


def test_identity_hidden_mlp_row_blocks():
    """Contiguous MLP, identity hidden layers, logistic output: the hidden row blocks of
    ``H - GN - Lag + pen''`` are the curvature from the output nonlinearity (not 0), and
    the engine's three kinds reproduce the oracle's difference row by row."""
    rng = np.random.default_rng(9)
    spec = network(3, [dense(3, "identity"), dense(2, "identity"), dense(2, "logistic")], "squared", penalty=0.1)
    X, Y = rng.normal(size=(13, 3)), rng.normal(size=(13, 2))
    w = 0.7 * rng.normal(size=oracle.n_params(spec))
    model = _model(spec)
    rows = {kind: [np.asarray(b) for b in model.curvature(w, X, Y, kind=kind, structure="row")]
            for kind in ("hessian", "gauss_newton", "lagrangian")}
    pen = oracle.row_blocks(spec, oracle.penalty_hessian(spec))
    ref = oracle.reference(spec, w, X, Y)
    expected = oracle.row_blocks(spec, ref["hessian"] - ref["gauss_newton"] - ref["lagrangian"]
                                 + oracle.penalty_hessian(spec))
    got = [h - g - lg + p for h, g, lg, p in zip(rows["hessian"], rows["gauss_newton"], rows["lagrangian"], pen)]
    scale = max(np.linalg.norm(h) for h in rows["hessian"])
    assert_close(got, expected, 1e-9, scale=scale, atol_factor=1e-11)
    for k in (0, 1):  # hidden layers: identity, so eq. (10) is pen'' alone, and D is not 0
        assert_close(rows["lagrangian"][k], pen[k], RTOL, scale=scale)
        assert np.linalg.norm(got[k]) > 1e-3 * np.linalg.norm(rows["hessian"][k])
    assert np.linalg.norm(got[2]) <= 1e-11 * scale
