"""The worked examples of docs/extending.md: a user propagation, activation and loss
get every derivative from the generic engine, checked by finite differences."""
import numpy as np
import pytest

import dist_hess as dh
from dist_hess.activations import ACTIVATIONS, Activation, register_activation
from dist_hess.layers import LAYERS, Propagation, register_layer
from dist_hess.losses import LOSSES, Loss, register_loss


class ScaledDot(Propagation):
    """a_j = exp(g_j) * (v_j . u); row j = [g_j, v_j]."""
    type = "scaled_dot"

    @property
    def n_row_params(self):
        return self.n_inputs + 1

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


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_layer(ScaledDot)
    register_activation(Cube())
    register_loss(Poisson())
    yield
    LAYERS.pop("scaled_dot")
    ACTIVATIONS.pop("cube")
    LOSSES.pop("poisson")


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
