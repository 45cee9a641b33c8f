"""Derivatives of every order (DESIGN §6): directional derivatives and row tensors.

Oracles:

1. JAX nested ``jvp`` (``tests/oracle.py``) up to order 6 on the case table,
   norm-relative ``1e-8`` per order (observed: ~1e-13);
2. central differences of the engine's own lower orders (``D^q`` from
   ``D^(q-1)`` at ``w +- h v``, orders 1-3);
3. order 1 and 2 against the gradient and the exact Hessian (``<g, v>``,
   ``v' H v``); row tensors of order 1 and 2 against the gradient rows and the
   ``row`` curvature blocks (``hessian`` and ``lagrangian``);
4. row tensors of order 3 and 4 against JAX ``jacfwd`` of the objective
   restricted to the row, and against directional derivatives along
   directions supported on the row.

The JAX programs of order 6 compile in seconds per architecture; a
representative subset of the table runs by default, the rest is ``slow``.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dist_hess as dh
from dist_hess.activations import get_activation
from dist_hess import taylor
from dist_hess.engine.directional import loss_series
from dist_hess.engine.forward import forward, gather_sources
from dist_hess.engine.row_tensors import (pack_symmetric, packed_indices, row_tensor, unit_derivatives,
                                          unpack_symmetric)
from dist_hess.layers.features import FeatureLayer
from tests import oracle
from tests.cases import CASES, CASES_BY_ID, case_params, dense, network, quadratic, rbf
from tests.checks import assert_close, directional_difference

JAX_ORDER = 6
RTOL = 1e-8
FD_RTOL = 1e-5

#: one case per layer type, activation, loss, target form, skip pattern and penalty
FAST = {
    "linreg_multi_output_l2", "logreg_bce_vector", "softmax_reg_labels", "mlp_tanh_squared",
    "mlp_softplus_ce_labels", "mlp_relu_squared", "mlp_sin_bce_two_outputs", "mlp_gaussian_squared",
    "output_logistic_squared", "skip_1_0_fanout", "rbf_full_ce_skip", "mid_rbf_then_dense",
    "quadratic_multi_source", "tanh_then_quadratic_ce_l2", "deep4_mixed_skips",
    "single_example_rbf_bce", "mlp_tanh_norm_smooth", "skip_norm_paper",
    "no_bias_weight_elimination_ce", "penalty_list_layers",
}


def tiered_cases(select=None):
    """Every case; those outside ``FAST`` are marked ``slow`` (they only cost JAX compile time)."""
    return [pytest.param(case, id=case.id, marks=() if case.id in FAST else pytest.mark.slow)
            for case in CASES if select is None or select(case)]


@functools.lru_cache(maxsize=None)
def model_for(case_id):
    return CASES_BY_ID[case_id].model()


def feature_layers(model):
    return [k for k, layer in enumerate(model.layers, start=1) if isinstance(layer.propagation, FeatureLayer)]


def assert_orders_close(actual, expected, rtol=RTOL, what=""):
    """Order by order, each as its own block: ``|a_q - b_q| <= rtol |b_q| + 1e-12 ||b||``."""
    assert_close([np.asarray(a) for a in actual], [np.asarray(b) for b in expected], rtol=rtol,
                 atol_factor=1e-12, what=what)


# --------------------------------------------------------------------------- directional: JAX


@pytest.mark.parametrize("case", tiered_cases())
def test_directional_matches_jax_nested_jvp(case):
    model = model_for(case.id)
    w, v = case.w, case.random_direction()
    ours = model.directional_derivatives(w, case.X, case.Y, v, JAX_ORDER)
    ref = oracle.directional_derivatives(case.spec, w, case.X, case.Y, v, JAX_ORDER)
    assert ours.shape == (JAX_ORDER + 1,)
    assert_orders_close(ours, ref, what=case.id)


def _random_spec(seed):
    """A random architecture: 2-4 layers, random types, activations, skips, loss and penalty."""
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(1, 4))
    acts = ["tanh", "logistic", "softplus", "sin", "gaussian", "identity"]
    loss = rng.choice(["squared", "softmax_cross_entropy", "binary_cross_entropy"])
    m = int(rng.integers(2, 5))
    layers = []
    for k in range(1, m + 1):
        last = k == m
        units = int(rng.integers(2, 4)) if last else int(rng.integers(1, 4))
        sources = sorted(rng.choice(k, size=int(rng.integers(1, min(k, 2) + 1)), replace=False).tolist())
        kind = "dense" if last else rng.choice(["dense", "dense", "rbf", "quadratic"])
        act = "identity" if last and rng.random() < 0.5 else str(rng.choice(acts))
        if kind == "rbf":
            layers.append(rbf(units, str(rng.choice(["isotropic", "diagonal", "full"])), act, sources=sources[:1]))
        elif kind == "quadratic":
            layers.append(quadratic(units, act, sources=sources))
        else:
            layers.append(dense(units, act, sources=sources, bias=bool(rng.random() < 0.8)))
    return network(inputs, layers, str(loss), penalty=0.05 if rng.random() < 0.5 else None), rng


@pytest.mark.parametrize("seed", range(4))
def test_directional_order4_random_architectures(seed):
    spec, rng = _random_spec(seed)
    model = dh.Model.from_dict(spec)
    n = 7
    X = rng.normal(size=(n, spec["inputs"]))
    out = spec["layers"][-1]["units"]
    if spec["loss"] == "softmax_cross_entropy":
        Y = rng.integers(0, out, size=n)
    elif spec["loss"] == "binary_cross_entropy":
        Y = rng.integers(0, 2, size=(n, out)).astype(float)
    else:
        Y = rng.normal(size=(n, out))
    w = 0.5 * model.init(seed=seed)
    v = rng.normal(size=model.n_params)
    ours = model.directional_derivatives(w, X, Y, v, 4)
    ref = oracle.directional_derivatives(spec, w, X, Y, v, 4)
    assert_orders_close(ours, ref, what=str(spec))


# --------------------------------------------------------------------------- directional: own oracles


@pytest.mark.parametrize("case", case_params())
def test_directional_orders_one_and_two_match_gradient_and_hessian(case):
    model = model_for(case.id)
    w, v = case.w, case.random_direction(1)
    ours = model.directional_derivatives(w, case.X, case.Y, v, 2)
    H = model.curvature(w, case.X, case.Y, "hessian", "full")
    expected = [model.value(w, case.X, case.Y), model.gradient(w, case.X, case.Y) @ v, v @ H @ v]
    assert_orders_close(ours, expected, rtol=1e-10, what=case.id)


@pytest.mark.parametrize("case", case_params(lambda c: c.id in FAST))
def test_directional_matches_differences_of_lower_orders(case):
    """``D^q E[v^q] = d/ds D^(q-1) E(w + s v)[v^(q-1)]`` for ``q = 1, 2, 3``."""
    model = model_for(case.id)
    w, v = case.w, case.random_direction(2)
    exact = model.directional_derivatives(w, case.X, case.Y, v, 3)
    lower = lambda w_: model.directional_derivatives(w_, case.X, case.Y, v, 2)  # noqa: E731
    fd = directional_difference(lower, w, v, h=1e-3)
    for q in (1, 2, 3):
        scale = max(abs(exact[q]), 1e-6 * np.abs(exact).max())
        assert abs(fd[q - 1] - exact[q]) <= FD_RTOL * scale, (q, fd[q - 1], exact[q])


def test_directional_order_zero_is_value_and_order_validated():
    case = CASES_BY_ID["mlp_tanh_squared"]
    model = model_for(case.id)
    v = case.random_direction()
    out = model.directional_derivatives(case.w, case.X, case.Y, v, 0)
    assert out.shape == (1,)
    assert out[0] == pytest.approx(model.value(case.w, case.X, case.Y), rel=1e-13)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="order"):
            model.directional_derivatives(case.w, case.X, case.Y, v, bad)
    with pytest.raises(ValueError, match="length"):
        model.directional_derivatives(case.w, case.X, case.Y, v[:-1], 2)


def test_relu_network_is_piecewise_polynomial():
    """Relu hidden layer, identity output, squared loss: ``E(w + t v)`` is a quartic in ``t``
    between kinks, so every derivative of order >= 5 is exactly zero (relu^(q) = 0, q >= 2)."""
    case = CASES_BY_ID["mlp_relu_squared"]
    model = model_for(case.id)
    ours = model.directional_derivatives(case.w, case.X, case.Y, case.random_direction(), 8)
    assert np.all(ours[5:] == 0.0)
    assert np.all(ours[:5] != 0.0)


def test_linear_regression_is_quadratic():
    case = CASES_BY_ID["linreg_multi_output_l2"]
    ours = model_for(case.id).directional_derivatives(case.w, case.X, case.Y, case.random_direction(), 5)
    assert np.all(ours[3:] == 0.0)


@pytest.mark.parametrize("case_id", ["deep4_mixed_skips", "rbf_full_ce_skip", "quadratic_multi_source"])
def test_directional_independent_of_chunks_and_blocks(case_id):
    case = CASES_BY_ID[case_id]
    w, v = case.w, case.random_direction()
    whole = model_for(case_id).directional_derivatives(w, case.X, case.Y, v, 5)
    model = case.model()                          # memory_budget=1: one example per batch
    assert_orders_close(model.directional_derivatives(w, case.X, case.Y, v, 5, memory_budget=1),
                        whole, rtol=1e-12)
    X, Y = model.check_data(case.X, case.Y)
    Ws, Vs = model.unpack(w), model.unpack(v)
    for block in (1, 3):
        sums = loss_series(model, Ws, Vs, X, Y, 5, block=block)
        expected = loss_series(model, Ws, Vs, X, Y, 5)
        np.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())


# --------------------------------------------------------------------------- series arithmetic


def test_series_kernels_match_closed_forms():
    rng = np.random.default_rng(0)
    P = 7
    a0, a1 = rng.normal(size=(2, 4))
    line = np.zeros((4, P))
    line[:, 0], line[:, 1] = a0, a1
    q = np.arange(P)
    fact = np.array([math.factorial(k) for k in q], dtype=float)
    # exp(a0 + t a1) = exp(a0) sum a1^q t^q / q!
    np.testing.assert_allclose(taylor.series_exp(line), np.exp(a0)[:, None] * a1[:, None] ** q / fact, rtol=1e-14)
    # log(1 + t) = sum (-1)^(q+1) t^q / q
    one_plus_t = np.zeros(P)
    one_plus_t[:2] = 1.0
    expected = np.concatenate([[0.0], (-1.0) ** (q[1:] + 1) / q[1:]])
    np.testing.assert_allclose(taylor.series_log(one_plus_t), expected, rtol=1e-14)
    # (1 - t)(1 + t + t^2 + ...) = 1
    geometric, one_minus_t = np.ones(P), np.zeros(P)
    one_minus_t[:2] = 1.0, -1.0
    np.testing.assert_allclose(taylor.series_mul(geometric, one_minus_t), np.eye(P)[0], atol=1e-15)
    # broadcasting of the leading axes
    A, B = rng.normal(size=(3, 1, P)), rng.normal(size=(1, 5, P))
    assert taylor.series_mul(A, B).shape == (3, 5, P)
    np.testing.assert_allclose(taylor.series_mul(A, B)[2, 4], taylor.series_mul(A[2, 0], B[0, 4]))


@pytest.mark.parametrize("name", ["tanh", "logistic", "softplus", "gaussian", "sin", "identity", "relu"])
def test_compose_matches_jax_jet_of_the_activation(name):
    """``h(a(t))`` for a cubic ``a(t)``: coefficients against nested ``jax.jvp`` of ``h(a(t))``."""
    a = np.array([0.3, -0.7, 0.4, 0.25, 0.0, 0.0])
    P = len(a)
    h = oracle.ACTIVATIONS[name]
    f = lambda t: h(a[0] + a[1] * t + a[2] * t**2 + a[3] * t**3)  # noqa: E731
    expected = []
    g = f
    for q in range(P):
        expected.append(float(g(0.0)) / math.factorial(q))
        g = (lambda g_: lambda t: jax.jvp(g_, (t,), (1.0,))[1])(g)
    ours = taylor.series_compose(get_activation(name), a)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)
    short = taylor.compose_leading(get_activation(name), a[:4, None], P)   # a short leading-axis series
    np.testing.assert_allclose(taylor.to_last(short, P)[0], expected, rtol=1e-12, atol=1e-14)


def test_short_series_products_keep_exact_lengths():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    c = taylor.mul_leading(a, b, 6)
    assert c.shape == (4, 3)                      # degree 1 x degree 2 = degree 3
    np.testing.assert_allclose(c, taylor.to_leading(taylor.series_mul(taylor.to_last(a, 4), taylor.to_last(b, 4))))
    assert taylor.mul_leading(a, b, 2).shape == (2, 3)


# --------------------------------------------------------------------------- row tensors


@pytest.mark.parametrize("case", case_params(lambda c: feature_layers(c.model())))
def test_row_tensors_of_order_one_and_two(case):
    """Order 1: the gradient rows; order 2: the exact and Lagrangian row blocks (penalty included)."""
    model = model_for(case.id)
    w = case.w
    grad = model.unpack(model.gradient(w, case.X, case.Y))
    hess = model.curvature(w, case.X, case.Y, "hessian", "row")
    lag = model.curvature(w, case.X, case.Y, "lagrangian", "row")
    for k in feature_layers(model):
        assert_close(row_tensor(model, w, case.X, case.Y, k, None, 1), grad[k - 1], rtol=1e-12, what=f"layer {k}")
        assert_close(row_tensor(model, w, case.X, case.Y, k, None, 1, part="lagrangian"), grad[k - 1],
                     rtol=1e-12, what=f"layer {k} lagrangian p=1")
        assert_close(row_tensor(model, w, case.X, case.Y, k, None, 2), hess[k - 1], rtol=1e-12, what=f"layer {k}")
        assert_close(row_tensor(model, w, case.X, case.Y, k, None, 2, part="lagrangian"), lag[k - 1],
                     rtol=1e-12, scale=np.abs(hess[k - 1]).max(), what=f"layer {k} lagrangian")
        s, d = model.layer_shapes[k - 1]
        packed = row_tensor(model, w, case.X, case.Y, k, s - 1, 2, packed=True)
        assert_close(unpack_symmetric(packed, d, 2), hess[k - 1][s - 1], rtol=1e-12, what=f"layer {k} packed")


def _jax_row_tensor(case, layer, row, p):
    """``d^p E / dW_j^p`` by nested ``jax.jacfwd`` of the objective restricted to row ``j`` of ``layer``."""
    spec = case.spec
    s, d = oracle.layer_shapes(spec)[layer - 1]
    start = oracle.layer_slices(spec)[layer - 1].start + row * d
    w = jnp.asarray(case.w)
    X = jnp.asarray(case.X)
    Yc = jnp.asarray(oracle.canonical_targets(spec, case.Y))
    f = lambda r: oracle._objective(spec, w.at[start:start + d].set(r), X, Yc)  # noqa: E731
    for _ in range(p):
        f = jax.jacfwd(f)
    return np.asarray(jax.jit(f)(w[start:start + d]))


#: (case, layer): downstream skips and fan-out, an rbf or quadratic layer downstream,
#: a quadratic row, softmax and squared losses, a penalty (which stops at order 2)
ROW_CASES = [("mlp_tanh_squared", 1), ("skip_1_0_fanout", 1), ("deep4_mixed_skips", 2),
             ("mid_rbf_then_dense", 1), ("quadratic_multi_source", 2), ("tanh_then_quadratic_ce_l2", 2),
             ("output_sin_ce_onehot_l2", 2)]


@pytest.mark.parametrize("p", [3, 4])
@pytest.mark.parametrize("case_id, layer", ROW_CASES, ids=[f"{c}-layer{k}" for c, k in ROW_CASES])
def test_row_tensors_match_jax(case_id, layer, p):
    case = CASES_BY_ID[case_id]
    model = model_for(case_id)
    row = (layer + p) % model.layers[layer - 1].units
    ours = row_tensor(model, case.w, case.X, case.Y, layer, row, p)
    ref = _jax_row_tensor(case, layer, row, p)
    assert_close(ours, ref, rtol=RTOL)
    packed = row_tensor(model, case.w, case.X, case.Y, layer, row, p, packed=True)
    np.testing.assert_allclose(packed, pack_symmetric(ref, p), rtol=1e-7, atol=1e-10 * np.abs(ref).max())
    assert_close(unpack_symmetric(packed, ours.shape[0], p), ours, rtol=1e-12, what="unpack")


@pytest.mark.parametrize("case", case_params(lambda c: feature_layers(c.model())))
def test_row_tensors_along_row_directions(case):
    """``T^(p)[u, ..., u] = D^p E[v]`` for ``v`` = ``u`` on the row and 0 elsewhere, ``p = 3, 4, 5``."""
    model = model_for(case.id)
    rng = np.random.default_rng(3)
    for k in feature_layers(model):
        s, d = model.layer_shapes[k - 1]
        j = s // 2
        u = rng.normal(size=d)
        v = np.zeros(model.n_params)
        start = model.layer_slices[k - 1].start + j * d
        v[start:start + d] = u
        D = model.directional_derivatives(case.w, case.X, case.Y, v, 5)
        for p in (3, 4, 5):
            T = row_tensor(model, case.w, case.X, case.Y, k, j, p)
            along = T
            for _ in range(p):
                along = along @ u
            assert along == pytest.approx(D[p], rel=1e-9, abs=1e-12 * np.abs(D).max()), (k, p)


@pytest.mark.parametrize("case_id", ["skip_1_0_fanout", "deep4_mixed_skips", "output_logistic_squared"])
def test_lagrangian_part_is_equation_12(case_id):
    """``part="lagrangian"``: ``-sum_i e_ij h^(p)(a_ij) z_i^{(x) p}`` with the engine's multipliers."""
    case = CASES_BY_ID[case_id]
    model = model_for(case_id)
    X, Y = model.check_data(case.X, case.Y)
    cache = forward(model, model.unpack(case.w), X, order=0)
    es = model.multipliers(case.w, case.X, case.Y)
    for k in feature_layers(model):
        layer = model.layers[k - 1]
        Z = layer.propagation.features(gather_sources(model, k, cache.x))
        h3 = layer.activation.derivatives(cache.a[k - 1], 3)[3]
        c = -es[k - 1] * h3                                   # (n, s)
        expected = np.einsum("nj,na,nb,nc->jabc", c, Z, Z, Z)
        ours = row_tensor(model, case.w, case.X, case.Y, k, None, 3, part="lagrangian")
        assert_close(ours, expected, rtol=1e-11, scale=1.0, what=f"layer {k}")


@pytest.mark.parametrize("case", case_params(lambda c: c.id in FAST))
def test_unit_derivatives_of_the_output_are_minus_the_multipliers(case):
    model = model_for(case.id)
    es = oracle.multipliers(case.spec, case.w, case.X, case.Y)
    for k in range(1, len(model.layers) + 1):
        D = unit_derivatives(model, case.w, case.X, case.Y, k, order=1, seed="x")
        assert_close(D[:, :, 1], -es[k - 1], rtol=1e-10, what=f"layer {k}")
        np.testing.assert_allclose(D[:, 0, 0], oracle.loss_terms(case.spec, case.w, case.X, case.Y), rtol=1e-12)


def test_row_tensors_independent_of_memory_budget():
    case = CASES_BY_ID["skip_1_0_fanout"]
    model = model_for(case.id)
    for p, packed in ((3, False), (4, True)):
        whole = row_tensor(model, case.w, case.X, case.Y, 1, None, p, packed=packed)
        small = row_tensor(model, case.w, case.X, case.Y, 1, None, p, packed=packed, memory_budget=1)
        assert_close(small, whole, rtol=1e-12)


def test_packed_layout_is_lexicographic():
    np.testing.assert_array_equal(packed_indices(3, 2), [[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]])
    assert packed_indices(5, 4).shape == (math.comb(8, 4), 4)
    packed = np.random.default_rng(0).normal(size=(2, math.comb(6, 3)))
    T = unpack_symmetric(packed, 4, 3)
    assert T.shape == (2, 4, 4, 4)
    np.testing.assert_array_equal(T, np.transpose(T, (0, 2, 3, 1)))
    np.testing.assert_array_equal(T, np.transpose(T, (0, 2, 1, 3)))
    np.testing.assert_array_equal(pack_symmetric(T, 3), packed)
    assert T[1, 2, 0, 3] == packed[1, list(map(tuple, packed_indices(4, 3))).index((0, 2, 3))]


def test_row_tensor_arguments_are_checked():
    case = CASES_BY_ID["rbf_isotropic_dense_out"]
    model = model_for(case.id)
    with pytest.raises(NotImplementedError, match="rbf"):
        row_tensor(model, case.w, case.X, case.Y, 1, 0, 3)
    row_tensor(model, case.w, case.X, case.Y, 2, 0, 3)    # a dense layer after an rbf layer is fine
    for bad in ({"layer": 0}, {"layer": 3}, {"row": 1}, {"row": -1}, {"order": 0}, {"part": "gauss_newton"}):
        args = {"layer": 2, "row": 0, "order": 3, **bad}
        with pytest.raises(ValueError):
            row_tensor(model, case.w, case.X, case.Y, **args)
