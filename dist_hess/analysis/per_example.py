"""Per-example gradients and output Jacobians, rebuilt from the multipliers.

Index letters: ``n`` example, ``j`` unit of layer ``k``, ``c`` a row parameter,
``o`` a network output.  For layer ``k`` (seed eqs. (8)-(9), DESIGN §2)

    delta^k_nj = dE_n/da^k_nj = -e^k_nj h'^k(a^k_nj)
    g_n[W^k_jc] = delta^k_nj dP_j/dW_jc(u^k_n)

so a dense row ``j`` has ``g_n = delta_nj z_n`` with ``z = [1, u]``.  The
multipliers ``e^k`` come from a store (``Store.multipliers(k)``, the examples'
total derivatives) or from one backward pass (:func:`dist_hess.engine.backward.first_order`);
``a``, ``h'`` and ``dP/dW`` from one forward pass.  The parameter gradients
``dP/dW`` are the engine's objects: a shared ``phi (n, d)`` (dense, quadratic)
or one ``G (n, s, d)`` per unit (rbf, user layers).

The Jacobian of output ``o`` is the same computation with the loss gradient
replaced by the unit vector ``e_o`` (``dE/dx^m = e_o``): one backward pass per
output, exact.

Work is chunked over examples so that no more than about ``budget`` bytes of
``(n, t)`` gradients exist at once.
"""
from __future__ import annotations

import numpy as np

from ..engine.backward import first_order
from ..engine.forward import forward

__all__ = ["example_gradients", "iter_example_gradients", "output_jacobian", "gradient_outer_sums",
           "gradient_projection_sums", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 64 * 2**20


def _assemble(model, cache, deltas) -> np.ndarray:
    """``(n, t)``: ``delta^k_nj dP_j/dW_jc`` for every layer, in the flat parameter order."""
    n = cache.x[0].shape[0]
    parts = []
    for k in range(1, len(model.layers) + 1):
        op = cache.param_grad(model, k)
        delta = deltas[k]
        if hasattr(op, "G"):                      # UnitParamGrad: G (n, s, d)
            Gk = delta[:, :, None] * op.G
        else:                                     # SharedParamGrad: phi (n, d)
            Gk = delta[:, :, None] * op.phi[:, None, :]
        parts.append(Gk.reshape(n, -1))
    return np.concatenate(parts, axis=1)


def example_gradients(model, w, X, Y=None, *, multipliers=None) -> np.ndarray:
    """Per-example gradients ``g_n = dE_n/dW`` (no penalty), ``(n, t)``.

    ``multipliers``: the list over layers ``k = 1..m`` of ``e^k`` ``(n, s_k)``
    for these rows (then ``Y`` is not needed); otherwise one backward pass on
    ``Y`` gives them.
    """
    w = model.check_weights(w)
    X = model.check_inputs(X)
    cache = forward(model, model.unpack(w), X, order=1)
    if multipliers is None:
        if Y is None:
            raise ValueError("per-example gradients need the targets Y or the stored multipliers")
        Y = model.loss.prepare_targets(Y, model.sizes[-1])
        _, deltas = first_order(model, cache, model.loss.grad(cache.x[-1], Y))
    else:
        if len(multipliers) != len(model.layers):
            raise ValueError(f"expected multipliers for {len(model.layers)} layers, "
                             f"got {len(multipliers)}")
        deltas = [None] + [-np.asarray(e, dtype=float) * h1
                           for e, h1 in zip(multipliers, cache.h1)]
    return _assemble(model, cache, deltas)


def chunk_rows(n_params: int, n: int, budget: int | None = None) -> int:
    budget = budget or DEFAULT_BUDGET
    return int(max(1, min(max(n, 1), budget // (8 * 3 * max(n_params, 1)))))


def iter_example_gradients(model, w, X, Y=None, *, multipliers=None, budget=None):
    """Yield ``(start, stop, G)`` with ``G`` the ``(stop - start, t)`` per-example gradients.

    ``multipliers``: list over layers of ``(n, s_k)`` arrays (numpy, dask or zarr:
    only the rows of the current chunk are read).
    """
    n = int(np.shape(X)[0])
    step = chunk_rows(model.n_params, n, budget)
    for start in range(0, n, step):
        stop = min(n, start + step)
        Xc = np.asarray(X[start:stop], dtype=float)
        Yc = None if Y is None else np.asarray(Y[start:stop])
        Mc = None
        if multipliers is not None:
            Mc = [np.asarray(e[start:stop], dtype=float) for e in multipliers]
        yield start, stop, example_gradients(model, w, Xc, Yc, multipliers=Mc)


def gradient_outer_sums(model, w, X, Y=None, *, blocks, multipliers=None, budget=None):
    """``sum_n g_n[b] g_n[b]'`` for each index array ``b`` in ``blocks`` (the sandwich's meat)."""
    sums = [np.zeros((len(b), len(b))) for b in blocks]
    for _, _, G in iter_example_gradients(model, w, X, Y, multipliers=multipliers, budget=budget):
        for i, b in enumerate(blocks):
            Gb = G[:, b]
            sums[i] += Gb.T @ Gb
    return sums


def gradient_projection_sums(model, w, X, Y=None, *, directions, multipliers=None,
                             budget=None) -> np.ndarray:
    """``sum_n (g_n' V)' (g_n' V)`` = ``V' M V`` for directions ``V (t, k)``: the sandwich's
    meat seen through ``V`` (exactly positive semi-definite), ``M`` never formed."""
    V = np.asarray(directions, dtype=float)
    out = np.zeros((V.shape[1], V.shape[1]))
    for _, _, G in iter_example_gradients(model, w, X, Y, multipliers=multipliers, budget=budget):
        GV = G @ V
        out += GV.T @ GV
    return out


def output_jacobian(model, w, X) -> np.ndarray:
    """``J[n, o, :] = d x^m_no / dW``: ``(n, c, t)``, exact (one backward pass per output)."""
    w = model.check_weights(w)
    X = model.check_inputs(X)
    n, c = X.shape[0], model.sizes[-1]
    cache = forward(model, model.unpack(w), X, order=1)
    J = np.empty((n, c, model.n_params))
    for o in range(c):
        seed = np.zeros((n, c))
        seed[:, o] = 1.0
        _, deltas = first_order(model, cache, seed)
        J[:, o, :] = _assemble(model, cache, deltas)
    return J
