"""Reference problems P1-P4 (issue 2) as (spec, X, Y)."""
from __future__ import annotations

import numpy as np


def _dense(units, activation, sources=None):
    layer = {"type": "dense", "units": units, "activation": activation}
    if sources is not None:
        layer["sources"] = sources
    return layer


def problem(name, n=None, seed=0):
    rng = np.random.default_rng(seed)
    if name == "P1":
        from sklearn.datasets import load_diabetes
        X, Y = load_diabetes(return_X_y=True)
        X = (X - X.mean(0)) / X.std(0)
        Y = (Y - Y.mean()) / Y.std()
        spec = {"inputs": 10, "layers": [_dense(16, "tanh"), _dense(1, "identity")], "loss": "squared"}
    elif name == "P2":
        from sklearn.datasets import load_digits
        X, Y = load_digits(return_X_y=True)
        X = X / 16.0
        spec = {"inputs": 64, "layers": [_dense(32, "tanh"), _dense(10, "identity")],
                "loss": "softmax_cross_entropy"}
    elif name == "P3":
        n = n or 20000
        X = rng.normal(size=(n, 20))
        Y = np.tanh(X[:, :5]) + 0.1 * rng.normal(size=(n, 5))
        spec = {"inputs": 20, "layers": [_dense(32, "tanh", [0]), _dense(32, "tanh", [1, 0]),
                                          _dense(5, "identity", [2, 0])], "loss": "squared"}
    elif name == "P4":
        n = n or 60000
        X = rng.normal(size=(n, 784))
        Y = rng.integers(0, 10, size=n)
        spec = {"inputs": 784, "layers": [_dense(128, "tanh"), _dense(10, "identity")],
                "loss": "softmax_cross_entropy"}
    else:
        raise ValueError(f"unknown problem {name!r}")
    if n is not None and n < X.shape[0]:
        X, Y = X[:n], Y[:n]
    return spec, X, Y
