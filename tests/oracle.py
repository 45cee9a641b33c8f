"""Independent JAX reference for the dist_hess contract (test-only).

Everything here is built from the JSON spec dict alone (DESIGN.md §1–§2) and
shares no code with the engine.  Automatic differentiation does the calculus;
this module only states the forward model:

* layer ``k`` (``k = 1..m``, ``spec["layers"][k-1]``) reads ``sources_k``,
  ``x^k = h^k(P^k(u^k; W^k))`` with ``u^k`` the concatenation of its sources;
* ``W^k`` is an ``(s_k, d_k)`` matrix stored row-major; the flat parameter
  vector is the concatenation of those matrices in layer order;
* ``E(w) = sum_i g(x^m_i, y_i) + pen(w)``, ``pen`` a sum over penalty objects and
  the layers each applies to of ``lambda_k phi(penalised entries of W^k)``
  (``PENALTY_TYPES``: one function per JSON penalty ``type``).

Index letters: ``n`` example, ``j`` unit (row of ``W^k``), ``a, b`` row entries,
``t`` flat parameter.

Layer types: one :class:`LayerReference` per JSON ``type`` in ``LAYER_TYPES``
(its row length, ``P(u; W)`` in ``jax.numpy``, defaults, unpenalised columns,
and how ``tests/cases.py`` draws test weights).  A new layer type is one entry
there (:func:`register_layer_reference`) plus a row in ``tests/cases.py``.

Public functions (all take the spec dict first):

``layer_shapes``, ``n_params``, ``layer_slices``, ``penalty_mask``, ``penalty_layers``, ``penalty_value``,
``penalty_hessian``, ``penalty_gauss_newton``, ``forward``, ``preactivations``, ``canonical_targets``,
``reference`` (every quantity below at once, memoised),
``loss_terms``, ``objective``, ``gradient``, ``hessian``, ``hvp``,
``gauss_newton``, ``lagrangian``, ``multipliers``, ``downstream_curvature``,
``curvature``, ``directional_derivatives``, and the block extractors
``row_blocks``, ``layer_blocks``, ``blocks`` (spec, full matrix).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Callable

if "jax" not in sys.modules:
    # The oracle compiles one small program per case; XLA's optimisation
    # passes cost far more than they save at these sizes.
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
         "--xla_llvm_disable_expensive_passes=true"]
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Reruns reuse compiled programs (set JAX_COMPILATION_CACHE_DIR to move or "" to disable).
_CACHE_DIR = os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax")
)
if _CACHE_DIR:
    jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

KINDS = ("hessian", "gauss_newton", "lagrangian")
STRUCTURES = ("row", "layer", "full")

ACTIVATIONS = {
    "identity": lambda a: a,
    "tanh": jnp.tanh,
    "logistic": lambda a: 1.0 / (1.0 + jnp.exp(-a)),
    "softplus": lambda a: jnp.logaddexp(a, 0.0),
    "gaussian": lambda a: jnp.exp(-a / 2.0),
    "relu": lambda a: jnp.where(a > 0.0, a, 0.0),
    "sin": jnp.sin,
}

# --------------------------------------------------------------------------- layer types


@dataclass(frozen=True)
class LayerReference:
    """A layer type as the oracle states it.  ``layer`` below is the layer's JSON dict
    with ``defaults`` and ``in_width`` (its sources' widths summed) filled in.

    ``row_length(layer) -> d``; ``propagate(layer, W, u) -> a`` for a batch
    (``u`` ``(n, in_width)``, ``W`` ``(s, d)``, ``a`` ``(n, s)``, ``jax.numpy``);
    ``draw(layer, (s, d), rng, scale) -> (s, d)`` numpy test weights that keep the
    activations informative; ``unpenalised(layer)``: row columns the l2 penalty
    skips; ``single_source``: the type reads exactly one source.
    """

    row_length: Callable
    propagate: Callable
    draw: Callable
    defaults: dict = field(default_factory=dict)
    unpenalised: Callable = lambda layer: []
    single_source: bool = False


LAYER_TYPES: dict[str, LayerReference] = {}


def register_layer_reference(name: str, reference: LayerReference) -> LayerReference:
    LAYER_TYPES[name] = reference
    return reference


def _dense(layer, W, u):
    """``a_j = W_j . z``, ``z = [1, u]`` (``u`` without bias)."""
    z = jnp.concatenate([jnp.ones((u.shape[0], 1)), u], axis=1) if layer["bias"] else u
    return z @ W.T


register_layer_reference("dense", LayerReference(
    row_length=lambda layer: int(bool(layer["bias"])) + layer["in_width"],
    propagate=_dense,
    draw=lambda layer, shape, rng, scale: scale * rng.normal(size=shape),
    defaults={"bias": True},
    unpenalised=lambda layer: [0] if layer["bias"] else []))


RBF_WIDTH_COUNT = {
    "isotropic": lambda s: 1,
    "diagonal": lambda s: s,
    "full": lambda s: s * (s + 1) // 2,
}


def _rbf(layer, W, u):
    """``a_j = (u - mu_j)' M_j (u - mu_j)`` with the metric's ``M_j``."""
    s_in = layer["in_width"]
    mu, width = W[:, :s_in], W[:, s_in:]
    diff = u[:, None, :] - mu[None, :, :]  # (n, j, a)
    metric = layer["metric"]
    if metric == "isotropic":
        return jnp.exp(width[:, 0])[None, :] * jnp.sum(diff**2, axis=2)
    if metric == "diagonal":
        return jnp.sum(jnp.exp(width)[None, :, :] * diff**2, axis=2)
    if metric == "full":
        rows, cols = np.tril_indices(s_in)  # row-major lower triangle
        L = jnp.zeros((W.shape[0], s_in, s_in)).at[:, rows, cols].set(width)
        proj = jnp.einsum("nja,jab->njb", diff, L)  # L' (x - mu)
        return jnp.sum(proj**2, axis=2)
    raise ValueError(f"oracle: unknown metric {metric!r}")


def _rbf_weights(layer, shape, rng, scale):
    """Centres near the data, widths about ``1 / s_in``."""
    s, d = shape
    s_in = layer["in_width"]
    mu = 0.5 * rng.normal(size=(s, s_in))
    metric = layer["metric"]
    if metric == "isotropic":
        width = np.log(1.0 / s_in) + 0.3 * rng.normal(size=(s, 1))
    elif metric == "diagonal":
        width = np.log(1.0 / s_in) + 0.3 * rng.normal(size=(s, s_in))
    else:
        rows, cols = np.tril_indices(s_in)
        L = 0.3 * rng.normal(size=(s, s_in, s_in)) / np.sqrt(s_in)
        L[:, np.arange(s_in), np.arange(s_in)] = (1.0 + 0.2 * rng.normal(size=(s, s_in))) / np.sqrt(s_in)
        width = L[:, rows, cols]
    return np.concatenate([mu, width], axis=1)


register_layer_reference("rbf", LayerReference(
    row_length=lambda layer: layer["in_width"] + RBF_WIDTH_COUNT[layer["metric"]](layer["in_width"]),
    propagate=_rbf,
    draw=_rbf_weights,
    single_source=True))


def _quadratic(layer, W, u):
    """``a_j = sum_{a <= b} w_{j,ab} z_a z_b``, ``z = [1, u]``."""
    z = jnp.concatenate([jnp.ones((u.shape[0], 1)), u], axis=1)
    rows, cols = np.triu_indices(z.shape[1])  # row-major upper triangle, a <= b
    return (z[:, rows] * z[:, cols]) @ W.T


register_layer_reference("quadratic", LayerReference(
    row_length=lambda layer: (1 + layer["in_width"]) * (2 + layer["in_width"]) // 2,
    propagate=_quadratic,
    draw=lambda layer, shape, rng, scale: 0.6 * scale * rng.normal(size=shape)))


def layer_reference(kind) -> LayerReference:
    try:
        return LAYER_TYPES[kind]
    except KeyError:
        raise ValueError(f"oracle: unknown layer type {kind!r}") from None


# --------------------------------------------------------------------------- layout


def _layers(spec):
    """The layers of ``spec`` with defaults filled in and widths resolved."""
    widths = [int(spec["inputs"])]
    layers = []
    for k, raw in enumerate(spec["layers"], start=1):
        layer = dict(raw)
        layer.setdefault("sources", [k - 1])
        layer["sources"] = [int(s) for s in layer["sources"]]
        assert all(0 <= s < k for s in layer["sources"]), (k, layer["sources"])
        reference = layer_reference(layer["type"])
        for key, value in reference.defaults.items():
            layer.setdefault(key, value)
        assert not reference.single_source or len(layer["sources"]) == 1, (k, layer["sources"])
        layer["in_width"] = sum(widths[s] for s in layer["sources"])
        layer["row_length"] = reference.row_length(layer)
        layers.append(layer)
        widths.append(int(layer["units"]))
    return layers


def layer_shapes(spec):
    """List of ``(s_k, d_k)`` for ``k = 1..m``."""
    return [(int(layer["units"]), layer["row_length"]) for layer in _layers(spec)]


def n_params(spec):
    return sum(s * d for s, d in layer_shapes(spec))


def layer_slices(spec):
    """Slices of the flat vector, one per layer, in layer order."""
    slices, start = [], 0
    for s, d in layer_shapes(spec):
        slices.append(slice(start, start + s * d))
        start += s * d
    return slices


def _unflatten(spec, w):
    return [w[sl].reshape(shape) for sl, shape in zip(layer_slices(spec), layer_shapes(spec))]


def penalty_mask(spec):
    """``(t,)`` array, 1 where penalties apply, 0 on unpenalised columns (dense biases)."""
    parts = []
    for layer, (s, d) in zip(_layers(spec), layer_shapes(spec)):
        mask = np.ones((s, d))
        mask[:, layer_reference(layer["type"]).unpenalised(layer)] = 0.0
        parts.append(mask.ravel())
    return np.concatenate(parts)


# --------------------------------------------------------------------------- penalties
#
# ``spec["penalty"]``: one penalty object or a list (their sum).  An object applies
# to ``layers`` (1-based, all by default) with one lambda per such layer (a number
# is repeated); each kind is a function of one layer's weight matrix and its mask of
# penalised entries (unpenalised columns: dense biases), in ``PENALTY_TYPES``.

PENALTY_TYPES: dict[str, Callable] = {}


def register_penalty_reference(name: str, phi: Callable) -> Callable:
    """``phi(item, W, mask)``: the kind's value on one layer at lambda 1; ``W`` ``(s, d)``
    (``jax.numpy``), ``mask`` ``(s, d)`` numpy 0/1 (penalised entries), ``item`` the JSON
    object (for its options)."""
    PENALTY_TYPES[name] = phi
    return phi


def _norm(item, W, mask):
    e = item.get("epsilon", 0.0)
    return jnp.sqrt(jnp.sum(mask * W**2) + e**2) - e


register_penalty_reference("l2", lambda item, W, mask: 0.5 * jnp.sum(mask * W**2))
register_penalty_reference("norm", _norm)
register_penalty_reference(
    "weight_elimination",
    lambda item, W, mask: jnp.sum(mask * W**2 / (item.get("scale", 1.0) ** 2 + W**2)))


def _penalty_items(spec):
    penalty = spec.get("penalty")
    if not penalty:
        return []
    return list(penalty) if isinstance(penalty, list) else [penalty]


def penalty_layers(spec, item):
    """``[(k, lambda)]``: the layers one penalty object applies to, with their lambdas."""
    m = len(spec["layers"])
    layers = item.get("layers", list(range(1, m + 1)))
    lam = item["lambda"]
    lams = list(lam) if isinstance(lam, list) else [lam] * len(layers)
    assert len(lams) == len(layers), (lams, layers)
    return [(int(k), float(l)) for k, l in zip(layers, lams)]


def _penalty_term(spec, item, w):
    """One penalty object's value ``sum_k lambda_k phi(W^k; mask^k)``."""
    phi = PENALTY_TYPES[item["type"]]
    masks = _unflatten(spec, penalty_mask(spec))
    Ws = _unflatten(spec, w)
    return sum((lam * phi(item, Ws[k - 1], masks[k - 1]) for k, lam in penalty_layers(spec, item)),
               jnp.asarray(0.0))


def penalty_value(spec, w):
    """``pen(w)`` (a ``jax.numpy`` scalar: differentiable)."""
    return sum((_penalty_term(spec, item, w) for item in _penalty_items(spec)), jnp.asarray(0.0))


def penalty_hessian(spec, w=None):
    """``pen''`` at ``w`` ``(t, t)`` (``jax.hessian``; ``w = 0`` by default, enough for l2)."""
    w = jnp.zeros(n_params(spec)) if w is None else jnp.asarray(w, dtype=jnp.float64)
    return np.asarray(jax.hessian(lambda w_: penalty_value(spec, w_))(w))


def penalty_gauss_newton(spec, w=None):
    """What ``gauss_newton`` adds for the penalty: each object's layer blocks of ``pen''``
    projected onto the positive semi-definite cone (``eigh``, negative eigenvalues to 0)."""
    t = n_params(spec)
    w = jnp.zeros(t) if w is None else jnp.asarray(w, dtype=jnp.float64)
    out = np.zeros((t, t))
    for item in _penalty_items(spec):
        H = np.asarray(jax.hessian(lambda w_, item=item: _penalty_term(spec, item, w_))(w))
        for sl in layer_slices(spec):
            lam, Q = np.linalg.eigh(0.5 * (H[sl, sl] + H[sl, sl].T))
            out[sl, sl] += (Q * np.maximum(lam, 0.0)) @ Q.T
    return out


# --------------------------------------------------------------------------- forward


def _propagate(layer, W, u):
    """``a = P(u; W)`` for a batch: ``u`` is ``(n, in_width)``, ``W`` is ``(s, d)``."""
    return layer_reference(layer["type"]).propagate(layer, W, u)


def _sources(layer, xs):
    return jnp.concatenate([xs[s] for s in layer["sources"]], axis=1)


def _forward(spec, w, X, perturbations=None):
    """Return ``(xs, pre)``: ``xs[k]`` is ``x^k`` (``xs[0] = X``), ``pre[k-1]`` is ``a^k``.

    ``perturbations[k-1]`` (shape ``(n, s_k)``) is added to ``x^k`` after the
    activation; differentiating at zero perturbation gives ``dE/dx^k``.
    """
    xs, pre = [jnp.asarray(X, dtype=jnp.float64)], []
    for k, (layer, W) in enumerate(zip(_layers(spec), _unflatten(spec, w)), start=1):
        a = _propagate(layer, W, _sources(layer, xs))
        x = ACTIVATIONS[layer["activation"]](a)
        if perturbations is not None:
            x = x + perturbations[k - 1]
        pre.append(a)
        xs.append(x)
    return xs, pre


def forward(spec, w, X):
    """List ``[x^0, x^1, ..., x^m]`` as numpy arrays."""
    xs, _ = _forward(spec, jnp.asarray(w), X)
    return [np.asarray(x) for x in xs]


def preactivations(spec, w, X):
    """List ``[a^1, ..., a^m]`` as numpy arrays."""
    _, pre = _forward(spec, jnp.asarray(w), X)
    return [np.asarray(a) for a in pre]


# --------------------------------------------------------------------------- losses


def canonical_targets(spec, Y):
    """Targets as a float ``(n, s_m)`` array (class labels become one-hot rows)."""
    out_units = int(spec["layers"][-1]["units"])
    Y = np.asarray(Y)
    if spec["loss"] == "softmax_cross_entropy" and Y.ndim == 1:
        assert np.issubdtype(Y.dtype, np.integer), Y.dtype
        return np.eye(out_units)[Y]
    Y = Y.astype(np.float64)
    if Y.ndim == 1:
        assert out_units == 1
        Y = Y[:, None]
    assert Y.shape[1] == out_units, (Y.shape, out_units)
    return Y


def _loss_one(loss, x, y):
    """``g(x, y)`` for one example: ``x``, ``y`` are ``(s_m,)``."""
    if loss == "squared":
        return 0.5 * jnp.sum((y - x) ** 2)
    if loss == "softmax_cross_entropy":
        return -jnp.sum(y * jax.nn.log_softmax(x))
    if loss == "binary_cross_entropy":
        return jnp.sum(jnp.logaddexp(x, 0.0) - y * x)
    raise ValueError(f"oracle: unknown loss {loss!r}")


def _loss_terms(spec, out, Yc):
    return jax.vmap(lambda x, y: _loss_one(spec["loss"], x, y))(out, Yc)


def loss_terms(spec, w, X, Y):
    """``(n,)`` per-example losses ``g_i`` (no penalty)."""
    xs, _ = _forward(spec, jnp.asarray(w), X)
    return np.asarray(_loss_terms(spec, xs[-1], canonical_targets(spec, Y)))


def _objective(spec, w, X, Yc):
    xs, _ = _forward(spec, w, X)
    return jnp.sum(_loss_terms(spec, xs[-1], Yc)) + penalty_value(spec, w)


# --------------------------------------------------------------------------- derivatives
#
# All derivatives of one (spec, w, X, Y) come out of a single jitted program
# (one compilation per spec and data shape), memoised on the input bytes, so a
# test that asks for the value, the Hessian and the multipliers pays once.


def _multipliers(spec, w, X, Yc):
    """``[e^1, ..., e^m]``: ``e^k_i = -dg_i/dx^k_i``, total derivative, no penalty.

    A zero perturbation is added to each ``x^k``; the gradient of the summed
    loss with respect to it is ``dg_i/dx^k_i`` row by row (example ``i`` only
    sees its own row).
    """
    zeros = [jnp.zeros((X.shape[0], s)) for s, _ in layer_shapes(spec)]

    def summed_loss(perturbations):
        xs, _ = _forward(spec, w, X, perturbations)
        return jnp.sum(_loss_terms(spec, xs[-1], Yc))

    return [-g for g in jax.grad(summed_loss)(zeros)]


def _gauss_newton(spec, w, X, Yc):
    """``sum_i J_i' g''_i J_i`` (no penalty), ``J_i = d x^m_i / dw``."""
    net = lambda w_: _forward(spec, w_, X)[0][-1]  # noqa: E731
    J = jax.jacfwd(net)(w)  # (n, s_m, t)
    G = jax.vmap(jax.hessian(lambda x, y: _loss_one(spec["loss"], x, y)))(net(w), Yc)
    return jnp.einsum("nat,nab,nbu->tu", J, G, J)


def _lagrangian_potential(spec, w, xs, es):
    """``Phi(W) = -sum_k sum_i sum_j e^k_ij h^k(P^k_j(u^k_i; W^k))`` with ``xs``, ``es`` fixed.

    Its Hessian is the paper's eq. (10) without the penalty: each term depends
    on one layer's ``W^k`` only (inputs ``u`` and multipliers ``e`` are held
    fixed), so the Hessian is block diagonal, and the second derivative of
    ``h(P)`` is ``h'' dP dP' + h' d²P``, exactly eq. (10)'s two terms.
    """
    total = 0.0
    for layer, W, e in zip(_layers(spec), _unflatten(spec, w), es):
        a = _propagate(layer, W, _sources(layer, xs))
        total = total - jnp.sum(e * ACTIVATIONS[layer["activation"]](a))
    return total


def _everything(spec, w, X, Yc):
    E = lambda w_: _objective(spec, w_, X, Yc)  # noqa: E731
    xs = [jax.lax.stop_gradient(x) for x in _forward(spec, w, X)[0]]
    es = [jax.lax.stop_gradient(e) for e in _multipliers(spec, w, X, Yc)]
    both = lambda w_: jnp.stack([E(w_), _lagrangian_potential(spec, w_, xs, es)])  # noqa: E731
    hessians = jax.hessian(both)(w)  # (2, t, t)
    value, grad = jax.value_and_grad(E)(w)
    return {
        "value": value,
        "gradient": grad,
        "hessian": hessians[0],
        "gauss_newton": _gauss_newton(spec, w, X, Yc),
        "lagrangian": hessians[1],
        "multipliers": es,
    }


def _spec_key(spec):
    return json.dumps(spec, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _program(spec_key):
    spec = json.loads(spec_key)
    return jax.jit(lambda w, X, Yc: _everything(spec, w, X, Yc))


@functools.lru_cache(maxsize=64)
def _reference(spec_key, w_bytes, X_bytes, X_shape, Yc_bytes, Yc_shape):
    spec = json.loads(spec_key)
    w = np.frombuffer(w_bytes, dtype=np.float64)
    X = np.frombuffer(X_bytes, dtype=np.float64).reshape(X_shape)
    Yc = np.frombuffer(Yc_bytes, dtype=np.float64).reshape(Yc_shape)
    raw = _program(spec_key)(w, X, Yc)
    pen = penalty_hessian(spec, w) if _penalty_items(spec) else 0.0
    pen_gn = penalty_gauss_newton(spec, w) if _penalty_items(spec) else 0.0
    out = {
        "value": float(raw["value"]),
        "gradient": np.asarray(raw["gradient"]),
        "hessian": np.asarray(raw["hessian"]),
        "gauss_newton": np.asarray(raw["gauss_newton"]) + pen_gn,
        "lagrangian": np.asarray(raw["lagrangian"]) + pen,
        "multipliers": [np.asarray(e) for e in raw["multipliers"]],
        "penalty_gauss_newton": np.asarray(pen_gn + np.zeros((w.size, w.size))),
    }
    for value in out.values():
        for array in value if isinstance(value, list) else [value]:
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
    return out


def reference(spec, w, X, Y):
    """Every reference quantity at once, as a dict (read-only numpy arrays).

    Keys: ``value`` (float), ``gradient`` (t,), ``hessian``, ``gauss_newton``,
    ``lagrangian`` (t, t; ``lagrangian`` includes ``pen''``, ``gauss_newton`` its
    positive semi-definite part, :func:`penalty_gauss_newton`), ``multipliers``
    (list of (n, s_k)), ``penalty_gauss_newton`` (t, t).
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    Yc = np.ascontiguousarray(canonical_targets(spec, Y), dtype=np.float64)
    assert w.shape == (n_params(spec),), (w.shape, n_params(spec))
    return _reference(_spec_key(spec), w.tobytes(), X.tobytes(), X.shape, Yc.tobytes(), Yc.shape)


def objective(spec, w, X, Y):
    """``E(w) = sum_i g(x^m_i, y_i) + pen(w)`` as a float."""
    return reference(spec, w, X, Y)["value"]


def gradient(spec, w, X, Y):
    return reference(spec, w, X, Y)["gradient"].copy()


def hessian(spec, w, X, Y):
    """The exact ``(t, t)`` Hessian of ``E`` (``jax.hessian``)."""
    return reference(spec, w, X, Y)["hessian"].copy()


def gauss_newton(spec, w, X, Y):
    """``sum_i J_i' g''_i J_i`` + the PSD part of ``pen''``, ``J_i = d x^m_i / dw``, ``g''`` the loss Hessian."""
    return reference(spec, w, X, Y)["gauss_newton"].copy()


def lagrangian(spec, w, X, Y):
    """The paper's eq. (10) + ``pen''`` (block diagonal over layers)."""
    return reference(spec, w, X, Y)["lagrangian"].copy()


def multipliers(spec, w, X, Y):
    """``[e^1, ..., e^m]``, ``e^k`` of shape ``(n, s_k)``: ``e^k_i = -dg_i/dx^k_i``."""
    return [e.copy() for e in reference(spec, w, X, Y)["multipliers"]]


def hvp(spec, w, X, Y, v, kind="hessian"):
    """``C v`` for the curvature ``C`` of ``kind`` (one of ``KINDS``)."""
    return reference(spec, w, X, Y)[kind] @ np.asarray(v, dtype=np.float64)


def downstream_curvature(spec, w, X, Y):
    """Per layer, ``hessian - gauss_newton - lagrangian + (PSD part of pen'')`` on the layer block.

    This is the part of the exact layer block that flows in from downstream
    nonlinearities; it vanishes when every layer after ``k`` is dense with an
    identity activation.
    """
    ref = reference(spec, w, X, Y)
    D = ref["hessian"] - ref["gauss_newton"] - ref["lagrangian"] + ref["penalty_gauss_newton"]
    return layer_blocks(spec, D)


def curvature(spec, w, X, Y, kind="hessian", structure="row"):
    return blocks(spec, reference(spec, w, X, Y)[kind], structure)


@functools.lru_cache(maxsize=None)
def _taylor_program(spec_key, order):
    spec = json.loads(spec_key)

    def derivatives(w, v, X, Yc):
        derivative = lambda t: _objective(spec, w + t * v, X, Yc)  # noqa: E731
        values = []
        for _ in range(order + 1):
            values.append(derivative(0.0))
            derivative = (lambda f: lambda t: jax.jvp(f, (t,), (1.0,))[1])(derivative)
        return jnp.stack(values)

    return jax.jit(derivatives)


def directional_derivatives(spec, w, X, Y, v, order):
    """``[E, DE[v], ..., D^p E[v, ..., v]]`` at ``w`` (``p = order``), by nested ``jax.jvp``."""
    Yc = canonical_targets(spec, Y)
    program = _taylor_program(_spec_key(spec), int(order))
    f64 = lambda a: jnp.asarray(a, dtype=jnp.float64)  # noqa: E731
    return np.asarray(program(f64(w), f64(v), f64(X), f64(Yc)))


# --------------------------------------------------------------------------- blocks


def row_blocks(spec, M):
    """List over layers of ``(s_k, d_k, d_k)``: the per-row diagonal blocks of ``M``."""
    out = []
    for sl, (s, d) in zip(layer_slices(spec), layer_shapes(spec)):
        block = np.asarray(M)[sl, sl].reshape(s, d, s, d)
        out.append(np.einsum("jajb->jab", block).copy())
    return out


def layer_blocks(spec, M):
    """List over layers of ``(t_k, t_k)``: the per-layer diagonal blocks of ``M``."""
    return [np.asarray(M)[sl, sl].copy() for sl in layer_slices(spec)]


def blocks(spec, M, structure):
    if structure == "row":
        return row_blocks(spec, M)
    if structure == "layer":
        return layer_blocks(spec, M)
    if structure == "full":
        return np.asarray(M).copy()
    raise ValueError(f"oracle: unknown structure {structure!r}")
