"""Stand-in models with explicit derivatives for the training tests, and their checks.

Each stand-in implements the slice of the `dist_hess.Model` contract the optimiser uses
(``n_params``, ``layer_slices``, ``init``, ``to_dict``, ``value``, ``gradient``,
``curvature(kind, structure)``, ``hvp``), so the driver and the step strategies are
tested without the derivative engine. Parameters are laid out as in DESIGN.md §1:
``shapes`` lists ``(s_k, d_k)`` per layer, layer ``k`` stored row-major.

The tests at the bottom check every stand-in's gradient and curvature against central
finite differences along random directions (STYLE.md habit 7), and the row/layer
slicing against the full matrix.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

__all__ = ["AnalyticModel", "Quadratic", "Rosenbrock", "Saddle", "LinearRegression",
           "LogisticRegression", "ExpLinear", "regression_data", "logistic_data", "PROBLEMS"]


class AnalyticModel:
    """Base: subclasses give ``_value``, ``_gradient``, ``_hessian`` (and ``_gauss_newton``)."""

    name = "analytic"

    def __init__(self, shapes, start=None, **params):
        self.shapes = [(int(s), int(d)) for s, d in shapes]
        sizes = [s * d for s, d in self.shapes]
        ends = np.cumsum([0] + sizes)
        self.layer_slices = [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]
        self.n_params = int(ends[-1])
        self.start = None if start is None else np.asarray(start, dtype=float)
        self.params = params

    def init(self, seed=0):
        if self.start is not None:
            return self.start.copy()
        return 0.1 * np.random.default_rng(seed).standard_normal(self.n_params)

    def to_dict(self):
        return {"problem": self.name, "shapes": [list(s) for s in self.shapes],
                **{k: v for k, v in self.params.items() if isinstance(v, (int, float, str))}}

    # -- contract methods -----------------------------------------------------------------
    def value(self, w, X, Y):
        return float(self._value(np.asarray(w, dtype=float), X, Y))

    def gradient(self, w, X, Y):
        return np.asarray(self._gradient(np.asarray(w, dtype=float), X, Y), dtype=float)

    def full(self, w, X, Y, kind="hessian"):
        if kind == "hessian":
            return np.asarray(self._hessian(np.asarray(w, dtype=float), X, Y), dtype=float)
        if kind == "gauss_newton":
            return np.asarray(self._gauss_newton(np.asarray(w, dtype=float), X, Y), dtype=float)
        raise ValueError(f"unknown kind {kind!r}")

    def curvature(self, w, X, Y, kind="hessian", structure="row"):
        H = self.full(w, X, Y, kind)
        if structure == "full":
            return H
        if structure == "layer":
            return [H[s, s].copy() for s in self.layer_slices]
        if structure == "row":
            out = []
            for (rows, d), s in zip(self.shapes, self.layer_slices):
                out.append(np.stack([H[s.start + j * d:s.start + (j + 1) * d,
                                       s.start + j * d:s.start + (j + 1) * d] for j in range(rows)]))
            return out
        raise ValueError(f"unknown structure {structure!r}")

    def hvp(self, w, X, Y, v, kind="hessian"):
        return self.full(w, X, Y, kind) @ np.asarray(v, dtype=float)

    def _gauss_newton(self, w, X, Y):
        raise NotImplementedError(f"{self.name} has no Gauss-Newton matrix")


class Quadratic(AnalyticModel):
    """``E(w) = 1/2 w'Aw - b'w``; ``A`` symmetric."""

    name = "quadratic"

    def __init__(self, A, b, shapes=None, start=None):
        A = np.asarray(A, dtype=float)
        super().__init__(shapes or [(1, A.shape[0])], start)
        self.A, self.b = 0.5 * (A + A.T), np.asarray(b, dtype=float)

    def _value(self, w, X, Y):
        return 0.5 * w @ self.A @ w - self.b @ w

    def _gradient(self, w, X, Y):
        return self.A @ w - self.b

    def _hessian(self, w, X, Y):
        return self.A

    _gauss_newton = _hessian


class Rosenbrock(AnalyticModel):
    """Chained Rosenbrock ``sum_i 100 (w_{i+1} - w_i^2)^2 + (1 - w_i)^2 = 1/2 ||r(w)||^2``.

    Residuals ``r = [sqrt(200)(w_{i+1} - w_i^2), sqrt(2)(1 - w_i)]``; Gauss-Newton
    ``J'J``; Hessian ``J'J - 2 sqrt(200) sum_i r_{i,1} e_i e_i'``. Minimum ``w = 1``.
    """

    name = "rosenbrock"

    def __init__(self, shapes=((1, 2),), start=None):
        super().__init__(shapes, start)
        if start is None:
            self.start = np.tile([-1.2, 1.0], self.n_params)[:self.n_params]

    def _residuals(self, w):
        a = np.sqrt(200.0) * (w[1:] - w[:-1] ** 2)
        b = np.sqrt(2.0) * (1.0 - w[:-1])
        return a, b

    def _jacobian(self, w):
        n = w.shape[0]
        idx = np.arange(n - 1)
        Ja = np.zeros((n - 1, n))
        Ja[idx, idx] = -2.0 * np.sqrt(200.0) * w[:-1]
        Ja[idx, idx + 1] = np.sqrt(200.0)
        Jb = np.zeros((n - 1, n))
        Jb[idx, idx] = -np.sqrt(2.0)
        return np.vstack([Ja, Jb])

    def _value(self, w, X, Y):
        a, b = self._residuals(w)
        return 0.5 * (a @ a + b @ b)

    def _gradient(self, w, X, Y):
        a, b = self._residuals(w)
        return self._jacobian(w).T @ np.concatenate([a, b])

    def _gauss_newton(self, w, X, Y):
        J = self._jacobian(w)
        return J.T @ J

    def _hessian(self, w, X, Y):
        a, _ = self._residuals(w)
        H = self._gauss_newton(w, X, Y)
        idx = np.arange(w.shape[0] - 1)
        H[idx, idx] -= 2.0 * np.sqrt(200.0) * a
        return H


class Saddle(AnalyticModel):
    """``E(x, y) = x^2/2 - y^2/2 + y^4/4``: a saddle at 0, minima at ``(0, +-1)``."""

    name = "saddle"

    def __init__(self, start=(1.0, 0.0)):
        super().__init__([(1, 2)], start)

    def _value(self, w, X, Y):
        x, y = w
        return 0.5 * x * x - 0.5 * y * y + 0.25 * y ** 4

    def _gradient(self, w, X, Y):
        x, y = w
        return np.array([x, -y + y ** 3])

    def _hessian(self, w, X, Y):
        return np.diag([1.0, -1.0 + 3.0 * w[1] ** 2])


class ExpLinear(AnalyticModel):
    """``E(w) = sum_j exp(w_j) - 2 w_j``: overflows far to the right, minimum ``log 2``."""

    name = "exp_linear"

    def __init__(self, n=2, start=None):
        super().__init__([(1, n)], start if start is not None else -20.0 * np.ones(n))

    def _value(self, w, X, Y):
        return float(np.sum(np.exp(w) - 2.0 * w))

    def _gradient(self, w, X, Y):
        return np.exp(w) - 2.0

    def _hessian(self, w, X, Y):
        return np.diag(np.exp(w))

    _gauss_newton = _hessian


def _design(X):
    return np.hstack([np.ones((X.shape[0], 1)), X])


class LinearRegression(AnalyticModel):
    """One dense identity layer, squared loss: ``E = 1/2 sum_i ||y_i - W z_i||^2``,
    ``z = [1, x]``. Row ``j`` of ``W`` (``q x (p+1)``) is output ``j``; the Hessian is
    ``I_q (x) Z'Z``, block diagonal by rows."""

    name = "linear_regression"

    def __init__(self, inputs, outputs=1, start=None):
        super().__init__([(outputs, inputs + 1)], start)
        self.params = {"inputs": inputs, "outputs": outputs}
        self.outputs = outputs

    def _residual(self, w, X, Y):
        W = w.reshape(self.outputs, -1)
        return np.reshape(Y, (X.shape[0], self.outputs)) - _design(X) @ W.T

    def _value(self, w, X, Y):
        r = self._residual(w, X, Y)
        return 0.5 * np.sum(r * r)

    def _gradient(self, w, X, Y):
        return -(self._residual(w, X, Y).T @ _design(X)).reshape(-1)

    def _hessian(self, w, X, Y):
        Z = _design(X)
        return np.kron(np.eye(self.outputs), Z.T @ Z)

    _gauss_newton = _hessian

    def lstsq(self, X, Y):
        coef, *_ = np.linalg.lstsq(_design(X), np.reshape(Y, (X.shape[0], self.outputs)), rcond=None)
        return coef.T.reshape(-1)


class LogisticRegression(AnalyticModel):
    """Binary cross-entropy on logits ``a_i = w'z_i``: ``E = sum_i softplus(a_i) - y_i a_i
    + lam/2 ||w_{1:}||^2`` (the bias unpenalised, DESIGN.md §1); Hessian
    ``Z' diag(s(1-s)) Z + lam diag(0, 1, ..., 1)``, equal to the Gauss-Newton matrix."""

    name = "logistic_regression"

    def __init__(self, inputs, lam=0.0, start=None):
        super().__init__([(1, inputs + 1)], start)
        self.params = {"inputs": inputs, "lam": float(lam)}
        self.lam = float(lam)
        self.mask = np.r_[0.0, np.ones(inputs)]

    def _value(self, w, X, Y):
        a = _design(X) @ w
        return np.sum(np.logaddexp(0.0, a) - Y * a) + 0.5 * self.lam * np.sum(self.mask * w * w)

    def _gradient(self, w, X, Y):
        Z = _design(X)
        return Z.T @ (expit(Z @ w) - Y) + self.lam * self.mask * w

    def _hessian(self, w, X, Y):
        Z = _design(X)
        s = expit(Z @ w)
        return (Z * (s * (1.0 - s))[:, None]).T @ Z + np.diag(self.lam * self.mask)

    _gauss_newton = _hessian


def regression_data(n=40, inputs=3, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, inputs))
    W = rng.standard_normal((outputs, inputs + 1))
    Y = _design(X) @ W.T + 0.3 * rng.standard_normal((n, outputs))
    return X, (Y[:, 0] if outputs == 1 else Y)


def logistic_data(n=60, inputs=3, seed=0):
    """Overlapping classes, so the unpenalised optimum is finite."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, inputs))
    a = _design(X) @ rng.standard_normal(inputs + 1)
    Y = (rng.random(n) < expit(a)).astype(float)
    return X, Y


def _problem_table():
    Xr, Yr = regression_data()
    Xm, Ym = regression_data(outputs=2, seed=1)
    Xl, Yl = logistic_data()
    A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 2.0]])
    return {
        "quadratic": (Quadratic(A, np.array([1.0, -2.0, 0.5]), shapes=[(3, 1)]), None, None),
        "rosenbrock2": (Rosenbrock(), None, None),
        "rosenbrock6": (Rosenbrock(shapes=[(2, 2), (1, 2)]), None, None),
        "saddle": (Saddle(start=(0.7, 0.3)), None, None),
        "exp_linear": (ExpLinear(start=np.array([0.3, -0.4])), None, None),
        "linear_regression": (LinearRegression(3), Xr, Yr),
        "linear_regression_2out": (LinearRegression(3, outputs=2), Xm, Ym),
        "logistic_regression": (LogisticRegression(3, lam=0.1), Xl, Yl),
    }


PROBLEMS = _problem_table()


def _random_point(model, seed):
    rng = np.random.default_rng(seed)
    return model.init() + 0.3 * rng.standard_normal(model.n_params)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_gradient_matches_finite_differences(name):
    model, X, Y = PROBLEMS[name]
    w = _random_point(model, 1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = rng.standard_normal(model.n_params)
        h = 1e-5
        fd = (model.value(w + h * v, X, Y) - model.value(w - h * v, X, Y)) / (2 * h)
        assert model.gradient(w, X, Y) @ v == pytest.approx(fd, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_hessian_matches_finite_differences(name):
    model, X, Y = PROBLEMS[name]
    w = _random_point(model, 3)
    rng = np.random.default_rng(4)
    H = model.curvature(w, X, Y, kind="hessian", structure="full")
    np.testing.assert_allclose(H, H.T)
    for _ in range(3):
        v = rng.standard_normal(model.n_params)
        h = 1e-5
        fd = (model.gradient(w + h * v, X, Y) - model.gradient(w - h * v, X, Y)) / (2 * h)
        np.testing.assert_allclose(model.hvp(w, X, Y, v), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["rosenbrock2", "rosenbrock6"])
def test_rosenbrock_gauss_newton_is_hessian_at_zero_residual(name):
    model, X, Y = PROBLEMS[name]
    w = np.ones(model.n_params)
    np.testing.assert_allclose(model.full(w, X, Y, "hessian"), model.full(w, X, Y, "gauss_newton"))


@pytest.mark.parametrize("name", ["rosenbrock6", "linear_regression_2out"])
def test_row_and_layer_structures_are_diagonal_blocks_of_full(name):
    model, X, Y = PROBLEMS[name]
    w = _random_point(model, 5)
    H = model.curvature(w, X, Y, structure="full")
    for s, block in zip(model.layer_slices, model.curvature(w, X, Y, structure="layer")):
        np.testing.assert_array_equal(block, H[s, s])
    for (rows, d), s, stack in zip(model.shapes, model.layer_slices,
                                   model.curvature(w, X, Y, structure="row")):
        assert stack.shape == (rows, d, d)
        for j in range(rows):
            lo = s.start + j * d
            np.testing.assert_array_equal(stack[j], H[lo:lo + d, lo:lo + d])
