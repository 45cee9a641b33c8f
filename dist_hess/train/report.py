"""What a trained network does on data: its outputs and one score per loss.

``outputs(model, w, X)`` is ``x^m``, the last layer's activations (logits for the
cross-entropy losses): ``model.predict(w, X, output="raw")``. ``score`` gives the figure a
reader expects for the loss: ``r2`` (coefficient of determination) for ``squared``,
``accuracy`` for ``binary_cross_entropy`` (logit > 0) and ``softmax_cross_entropy``
(arg-max of the logits, targets as labels or one-hot rows).
"""
from __future__ import annotations

import numpy as np

__all__ = ["outputs", "score"]


def outputs(model, w, X) -> np.ndarray:
    """``x^m`` for every example, ``(n, s_m)``."""
    return model.predict(w, X, output="raw")


def score(model, w, X, Y) -> tuple[str, float]:
    """``("r2", R^2)`` for a squared loss, ``("accuracy", fraction correct)`` otherwise."""
    out = outputs(model, w, X)
    loss = model.loss.name
    Y = np.asarray(Y)
    if loss == "squared":
        Y = Y.reshape(out.shape)
        residual = float(np.sum((Y - out) ** 2))
        total = float(np.sum((Y - Y.mean(axis=0)) ** 2))
        return "r2", 1.0 - residual / total if total > 0 else float("nan")
    if loss == "binary_cross_entropy":
        predicted = (out > 0).astype(float)
        return "accuracy", float(np.mean(predicted == Y.reshape(out.shape)))
    if loss == "softmax_cross_entropy":
        labels = Y.argmax(axis=1) if Y.ndim == 2 else Y.astype(int)
        return "accuracy", float(np.mean(out.argmax(axis=1) == labels))
    raise ValueError(f"no score for loss {loss!r}")
