"""The worked examples of docs/extending.md: a user propagation, activation, loss and
penalty get every derivative from the generic engine, checked by finite differences and,
for the propagation and the penalty, against the independent JAX oracle through the whole
stack (model methods, sharded ``evaluate``, ``fit``, parameter names and groups).

Everything a new layer type needs is in this file: the propagation (one class, one
``register_layer``), its JAX reference (one ``oracle.register_layer_reference``) and
its test case (one ``make_case`` row); a new penalty kind the same way (one class, one
``register_penalty``, one ``oracle.register_penalty_reference``, one case)."""
import jax.numpy as jnp
import numpy as np
import pytest

import dist_hess as dh
from dist_hess.activations import ACTIVATIONS, Activation, register_activation
from dist_hess.analysis import input_group, parameter_names
from dist_hess.layers import LAYERS, Propagation, register_layer
from dist_hess.losses import LOSSES, Loss, register_loss
from dist_hess.penalties import PENALTIES, Penalty, register_penalty
from dist_hess.taylor import series_exp, series_log, series_mul
from tests import oracle
from tests.cases import SQ, dense, layer, make_case, network
from tests.checks import assert_close


class ScaledDot(Propagation):
    """a_j = exp(g_j) * (v_j . u); row j = [g_j, v_j]."""
    type = "scaled_dot"

    @property
    def n_row_params(self):
        return self.n_inputs + 1

    def column_labels(self, inputs):
        return ["g"] + [f"v({x})" for x in inputs]

    def input_columns(self, r):
        return [1 + r]

    def value(self, W, u):
        return np.exp(W[:, 0]) * (u @ W[:, 1:].T)

    def param_grad(self, W, u):
        a = self.value(W, u)
        scale = np.exp(W[:, 0])[None, :, None]
        return np.concatenate([a[:, :, None], scale * u[:, None, :].repeat(self.units, 1)], axis=2)

    def input_jac(self, W, u):
        J = np.exp(W[:, 0])[:, None] * W[:, 1:]
        return np.broadcast_to(J, (u.shape[0],) + J.shape)

    def param_hess(self, W, u):
        n, s, d = u.shape[0], self.units, self.n_row_params
        H = np.zeros((n, s, d, d))
        H[:, :, 0, 0] = self.value(W, u)
        H[:, :, 0, 1:] = np.exp(W[:, 0])[None, :, None] * u[:, None, :]
        H[:, :, 1:, 0] = H[:, :, 0, 1:]
        return H

    def mixed_hess(self, W, u):
        n, s, r = u.shape[0], self.units, self.n_inputs
        e = np.exp(W[:, 0])
        M = np.zeros((n, s, r + 1, r))
        M[:, :, 0, :] = (e[:, None] * W[:, 1:])[None]
        M[:, :, 1:, :] = (e[:, None, None] * np.eye(r))[None]
        return M

    def taylor(self, W, V, u_series):
        """exp(g + t dg) * ((v + t dv) . u(t)): (n, r, p+1) -> (n, s, p+1)."""
        P = u_series.shape[-1]
        g = np.zeros((self.units, P))
        g[:, 0] = W[:, 0]
        if P > 1:
            g[:, 1] = V[:, 0]
        dot = np.einsum("nrp,jr->njp", u_series, W[:, 1:])
        dot[..., 1:] += np.einsum("nrp,jr->njp", u_series[..., :-1], V[:, 1:])
        return series_mul(series_exp(g)[None], dot)


SCALED_DOT_REFERENCE = oracle.LayerReference(
    row_length=lambda spec: spec["in_width"] + 1,
    propagate=lambda spec, W, u: jnp.exp(W[:, 0]) * (u @ W[:, 1:].T),
    draw=lambda spec, shape, rng, scale: scale * rng.normal(size=shape))

SCALED_DOT_CASE = make_case(
    "scaled_dot_skip_l2",
    network(3, [layer("scaled_dot", 3, "tanh"), dense(2, "identity", sources=[1, 0])], SQ, 0.1),
    11, "matrix")


class Cube(Activation):
    name = "cube"

    def derivatives(self, a, order):
        out = [a**3, 3 * a**2, 6 * a, 6 * np.ones_like(a)]
        return (out + [np.zeros_like(a)] * order)[: order + 1]


class Poisson(Loss):
    name = "poisson"

    def value(self, out, Y):
        return (np.exp(out) - Y * out).sum(axis=1)

    def grad(self, out, Y):
        return np.exp(out) - Y

    def hess(self, out, Y):
        n, c = out.shape
        H = np.zeros((n, c, c))
        H[:, np.arange(c), np.arange(c)] = np.exp(out)
        return H


class RowNorm(Penalty):
    """phi(W) = sum_j (sqrt(||m_j w_j||^2 + e^2) - e): one norm per unit (a group lasso on
    each unit's incoming weights)."""
    type = "row_norm"
    extra_keys = ("epsilon",)
    convex = True

    def __init__(self, epsilon=0.1):
        if not epsilon > 0:
            raise ValueError(f"row_norm epsilon must be > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)

    def options(self):
        return {"epsilon": self.epsilon}

    def _radii(self, W, mask):                    # (s, 1)
        return np.sqrt(np.sum(mask * W * W, axis=1, keepdims=True) + self.epsilon**2)

    def value(self, W, mask):
        return float(np.sum(self._radii(W, mask) - self.epsilon))

    def gradient(self, W, mask):                  # (s, d)
        return mask * W / self._radii(W, mask)

    def hessian(self, W, mask):                   # dense (t_k, t_k), block diagonal over rows
        s, d = W.shape
        r, y = self._radii(W, mask)[:, 0], mask * W
        H = np.zeros((s, d, s, d))
        for j in range(s):
            H[j, :, j, :] = np.diag(mask[j] / r[j]) - np.outer(y[j], y[j]) / r[j] ** 3
        return H.reshape(s * d, s * d)

    def taylor(self, W, mask, V, order):          # sqrt(q_j(t)), q_j(t) = ||m_j (w_j + t v_j)||^2 + e^2
        q = np.zeros((W.shape[0], order + 1))
        q[:, 0] = np.sum(mask * W * W, axis=1) + self.epsilon**2
        if order >= 1:
            q[:, 1] = 2.0 * np.sum(mask * W * V, axis=1)
        if order >= 2:
            q[:, 2] = np.sum(mask * V * V, axis=1)
        root = series_exp(0.5 * series_log(q))
        root[:, 0] -= self.epsilon
        return root.sum(axis=0)


def _row_norm_reference(item, W, mask):
    e = item["epsilon"]
    return jnp.sum(jnp.sqrt(jnp.sum(mask * W**2, axis=1) + e**2) - e)


ROW_NORM_CASE = make_case(
    "row_norm_user_penalty",
    network(3, [dense(4, "tanh"), dense(2, "identity", sources=[1, 0])], SQ,
            [{"type": "row_norm", "lambda": 0.3, "epsilon": 0.1, "layers": [1]},
             {"type": "l2", "lambda": 0.05, "layers": [2]}]),
    11, "matrix")


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_layer(ScaledDot)
    oracle.register_layer_reference("scaled_dot", SCALED_DOT_REFERENCE)
    register_activation(Cube())
    register_loss(Poisson())
    register_penalty(RowNorm)
    oracle.register_penalty_reference("row_norm", _row_norm_reference)
    yield
    LAYERS.pop("scaled_dot")
    oracle.LAYER_TYPES.pop("scaled_dot")
    ACTIVATIONS.pop("cube")
    LOSSES.pop("poisson")
    PENALTIES.pop("row_norm")
    oracle.PENALTY_TYPES.pop("row_norm")


def _fd_hessian(model, w, X, Y, eps=1e-5):
    t = model.n_params
    cols = []
    for i in range(t):
        e = np.zeros(t)
        e[i] = eps
        cols.append((model.gradient(w + e, X, Y) - model.gradient(w - e, X, Y)) / (2 * eps))
    return np.array(cols)


def test_user_defined_pieces_get_exact_derivatives():
    spec = {"inputs": 3,
            "layers": [{"type": "scaled_dot", "units": 3, "activation": "tanh"},
                       {"type": "dense", "units": 2, "activation": "cube", "sources": [1, 0]},
                       {"type": "dense", "units": 2, "activation": "identity", "sources": [2, 1]}],
            "loss": "poisson"}
    model = dh.Model.from_dict(spec)
    assert model.to_dict()["layers"][0]["type"] == "scaled_dot"
    rng = np.random.default_rng(3)
    w = 0.4 * rng.normal(size=model.n_params)
    X = rng.normal(size=(9, 3))
    Y = rng.poisson(1.0, size=(9, 2)).astype(float)
    v = rng.normal(size=model.n_params)
    eps = 1e-6
    fd_grad = (model.value(w + eps * v, X, Y) - model.value(w - eps * v, X, Y)) / (2 * eps)
    assert np.isclose(model.gradient(w, X, Y) @ v, fd_grad, rtol=1e-7)
    H = model.curvature(w, X, Y, "hessian", "full")
    np.testing.assert_allclose(H, _fd_hessian(model, w, X, Y), rtol=1e-6, atol=1e-6 * np.abs(H).max())
    np.testing.assert_allclose(model.hvp(w, X, Y, v), H @ v, rtol=1e-10, atol=1e-12 * np.abs(H).max())
    rows = model.curvature(w, X, Y, "hessian", "row")
    for k, (sl, (s, d)) in enumerate(zip(model.layer_slices, model.layer_shapes)):
        for j in range(s):
            block = H[sl.start + j * d: sl.start + (j + 1) * d, sl.start + j * d: sl.start + (j + 1) * d]
            np.testing.assert_allclose(rows[k][j], block, rtol=1e-12, atol=1e-12 * np.abs(H).max())


def _assert_model_matches_oracle(model, case):
    """Value, gradient, multipliers, the three kinds in the three structures, both
    curvature-vector products and order-4 directional derivatives, at 1e-10 (1e-9)."""
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    ref = oracle.reference(spec, w, X, Y)
    value, grad = model.value_and_gradient(w, X, Y)
    assert_close(value, ref["value"], what="value")
    assert_close(grad, ref["gradient"], what="gradient")
    assert_close(model.multipliers(w, X, Y), ref["multipliers"], what="multipliers")
    for kind in ("hessian", "gauss_newton", "lagrangian"):
        for structure in ("row", "layer", "full"):
            assert_close(model.curvature(w, X, Y, kind, structure),
                         oracle.blocks(spec, ref[kind], structure), what=f"{kind}:{structure}")
    v = case.random_direction()
    for kind in ("hessian", "gauss_newton"):
        assert_close(model.hvp(w, X, Y, v, kind), oracle.hvp(spec, w, X, Y, v, kind), what=kind)
    assert_close(model.directional_derivatives(w, X, Y, v, 4),
                 oracle.directional_derivatives(spec, w, X, Y, v, 4), 1e-9, what="directional")
    return ref, v


def test_a_registered_propagation_through_the_whole_stack():
    """The one-file recipe of docs/extending.md, against the JAX oracle at 1e-10."""
    case = SCALED_DOT_CASE
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    model = dh.Model.from_dict(spec)
    ref, v = _assert_model_matches_oracle(model, case)
    # sharded (three uneven shards, in process): the same sums
    ev = dh.evaluate(model, w, X, Y, curvature="hessian:full", hvp=[("gauss_newton", v)],
                     multipliers=True, chunk_size=4)
    assert_close(ev.curvature, ref["hessian"], what="evaluate hessian")
    assert_close(ev.hvp[0], oracle.hvp(spec, w, X, Y, v, "gauss_newton"), what="evaluate hvp")
    assert_close(ev.multipliers, ref["multipliers"], what="evaluate multipliers")
    # training: the oracle's gradient vanishes at the fitted weights
    result = dh.fit(model, X, Y, w0=w, method="newton", max_iter=100)
    assert result.converged
    assert np.linalg.norm(oracle.gradient(spec, result.w, X, Y)) <= 1e-5
    # names and groups come from the propagation
    names = parameter_names(model)
    assert names[:4] == ["L1.0 g", "L1.0 v(x0)", "L1.0 v(x1)", "L1.0 v(x2)"]
    group = input_group(model, 1)
    assert [names[q] for q in group][:3] == ["L1.0 v(x1)", "L1.1 v(x1)", "L1.2 v(x1)"]
    assert "L2.0 <- x1" in [names[q] for q in group]


def test_a_registered_penalty_through_the_whole_stack():
    """The penalty recipe of docs/extending.md, against the JAX oracle at 1e-10: a dense
    (t_k, t_k) Hessian, Taylor coefficients for every order, PSD for gauss_newton."""
    case = ROW_NORM_CASE
    spec, w, X, Y = case.spec, case.w, case.X, case.Y
    model = dh.Model.from_dict(spec)
    assert model.to_dict()["penalty"] == spec["penalty"]
    ref, v = _assert_model_matches_oracle(model, case)
    grad = model.gradient(w, X, Y)
    eps = 1e-6
    fd = (model.value(w + eps * v, X, Y) - model.value(w - eps * v, X, Y)) / (2 * eps)
    assert np.isclose(grad @ v, fd, rtol=1e-7)
    ev = dh.evaluate(model, w, X, Y, curvature="gauss_newton:row", directional=(v, 3), chunk_size=4)
    assert_close(ev.curvature, oracle.blocks(spec, ref["gauss_newton"], "row"), what="evaluate rows")
    assert_close(ev.directional, oracle.directional_derivatives(spec, w, X, Y, v, 3), 1e-9,
                 what="evaluate directional")
    result = dh.fit(model, X, Y, w0=w, method="newton", max_iter=200)
    assert result.converged
    assert np.linalg.norm(oracle.gradient(spec, result.w, X, Y)) <= 1e-5
    with pytest.raises(ValueError, match=r"penalty\[0\]: row_norm epsilon must be > 0, got 0"):
        dh.Model.from_dict({**spec, "penalty": [{"type": "row_norm", "lambda": 0.1, "epsilon": 0}]})
