"""The one table of architecture cases that feeds every derivative test.

Each ``Case`` holds a JSON spec dict (DESIGN.md §1), deterministic data ``X``,
``Y`` (read-only arrays) and a deterministic, layout-aware weight generator
``make_w(seed)``.  Sizes are small so the JAX reference Hessian stays cheap.

Public names: ``Case``, ``CASES``, ``CASES_BY_ID``, ``case_params``,
and the spec builders ``dense``, ``rbf``, ``quadratic``, ``network``.

Adding a layer type: one builder here, one branch in ``_layer_weights``, and a
few rows in ``CASES``.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests import oracle

# --------------------------------------------------------------------------- spec builders


def dense(units, activation, sources=None, bias=None):
    """A dense layer; ``sources`` / ``bias`` are left out of the dict when not given,
    so the contract's defaults (``[k-1]``, ``true``) are exercised too."""
    layer = {"type": "dense", "units": units, "activation": activation}
    if sources is not None:
        layer["sources"] = list(sources)
    if bias is not None:
        layer["bias"] = bias
    return layer


def rbf(units, metric, activation="gaussian", sources=None):
    layer = {"type": "rbf", "units": units, "metric": metric, "activation": activation}
    if sources is not None:
        layer["sources"] = list(sources)
    return layer


def quadratic(units, activation="identity", sources=None):
    layer = {"type": "quadratic", "units": units, "activation": activation}
    if sources is not None:
        layer["sources"] = list(sources)
    return layer


def network(inputs, layers, loss, penalty=None):
    spec = {"inputs": inputs, "layers": layers, "loss": loss}
    if penalty is not None:
        spec["penalty"] = {"type": "l2", "lambda": penalty}
    return spec


# --------------------------------------------------------------------------- data


def _targets(spec, n, form, rng):
    """Targets for ``spec["loss"]`` in one of the contract's forms.

    ``form``: ``"vector"`` (n,) [one output], ``"matrix"`` (n, s_m),
    ``"labels"`` integer (n,), ``"onehot"`` (n, C).
    """
    units = spec["layers"][-1]["units"]
    loss = spec["loss"]
    if loss == "squared":
        Y = rng.normal(size=(n, units))
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, size=(n, units)).astype(np.float64)
    elif loss == "softmax_cross_entropy":
        labels = rng.integers(0, units, size=n)
        return labels if form == "labels" else np.eye(units)[labels]
    else:
        raise ValueError(loss)
    if form == "vector":
        assert units == 1
        return Y[:, 0]
    assert form == "matrix", form
    return Y


def _layer_weights(layer, shape, rng, scale):
    """An ``(s_k, d_k)`` weight matrix whose rows keep the activations informative."""
    s, d = shape
    if layer["type"] == "dense":
        return scale * rng.normal(size=shape)
    if layer["type"] == "quadratic":
        return 0.6 * scale * rng.normal(size=shape)
    if layer["type"] == "rbf":
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
    raise ValueError(layer["type"])


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- the case type


@dataclass(frozen=True, eq=False)
class Case:
    """One architecture with its data.

    ``spec`` is a fresh deep copy on every access (the engine may not mutate
    the caller's dict, and tests may not leak edits into each other).
    """

    id: str
    _spec: dict
    X: np.ndarray
    Y: np.ndarray
    weight_scale: float = 0.5
    relu_margin: float = 0.02
    notes: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self):
        return copy.deepcopy(self._spec)

    @property
    def n_examples(self):
        return self.X.shape[0]

    @property
    def n_params(self):
        return oracle.n_params(self._spec)

    @property
    def w(self):
        """The case's default weights, ``make_w(0)``."""
        return self.make_w(0)

    def make_w(self, seed=0):
        """Deterministic ``(t,)`` weights in the contract's layout.

        For networks with relu units the draw is repeated (deterministically)
        until every relu pre-activation is at least ``relu_margin`` away from 0,
        so finite differences never straddle the kink.
        """
        key = ("w", seed)
        if key not in self._cache:
            self._cache[key] = _readonly(self._draw_weights(seed))
        return self._cache[key].copy()

    def random_direction(self, index=0):
        """A deterministic unit vector of length ``t``."""
        rng = np.random.default_rng([zlib.crc32(self.id.encode()), 7919, index])
        v = rng.normal(size=self.n_params)
        return v / np.linalg.norm(v)

    def model(self):
        """``dist_hess.Model.from_dict(self.spec)`` (imported lazily)."""
        from dist_hess import Model

        return Model.from_dict(self.spec)

    def _draw_weights(self, seed):
        layers = oracle._layers(self._spec)
        shapes = oracle.layer_shapes(self._spec)
        relu_layers = [k for k, layer in enumerate(layers) if layer["activation"] == "relu"]
        for attempt in range(200):
            rng = np.random.default_rng([zlib.crc32(self.id.encode()), seed, attempt])
            w = np.concatenate(
                [_layer_weights(layer, shape, rng, self.weight_scale).ravel() for layer, shape in zip(layers, shapes)]
            )
            if not relu_layers:
                return w
            pre = oracle.preactivations(self._spec, w, self.X)
            if min(np.abs(pre[k]).min() for k in relu_layers) >= self.relu_margin:
                return w
        raise RuntimeError(f"case {self.id}: no relu-safe weights found")


def _case(case_id, spec, n, target_form, *, x_scale=1.0, notes="", **kwargs):
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    X = x_scale * rng.normal(size=(n, spec["inputs"]))
    Y = _targets(spec, n, target_form, rng)
    return Case(case_id, spec, _readonly(X), _readonly(Y), notes=notes, **kwargs)


SQ, CE, BCE = "squared", "softmax_cross_entropy", "binary_cross_entropy"

# --------------------------------------------------------------------------- the table

CASES = [
    # ---- one layer: the closed-form models
    _case("linreg_vector_target", network(3, [dense(1, "identity")], SQ), 12, "vector"),
    _case("linreg_multi_output_l2", network(3, [dense(3, "identity")], SQ, penalty=0.3), 10, "matrix"),
    _case("linreg_no_bias_l2", network(4, [dense(2, "identity", bias=False)], SQ, penalty=0.1), 9, "matrix"),
    _case("logreg_bce_vector", network(3, [dense(1, "identity")], BCE), 15, "vector"),
    _case("logreg_bce_n1_l2", network(3, [dense(1, "identity", sources=[0])], BCE, penalty=0.2), 14, "matrix"),
    _case("softmax_reg_labels", network(3, [dense(3, "identity")], CE), 16, "labels"),
    _case("softmax_reg_onehot_l2", network(4, [dense(4, "identity")], CE, penalty=0.05), 13, "onehot"),
    # ---- two-layer MLPs, one per activation
    _case("mlp_tanh_squared", network(3, [dense(4, "tanh"), dense(2, "identity")], SQ), 12, "matrix"),
    _case("mlp_logistic_squared_l2", network(3, [dense(4, "logistic"), dense(2, "identity")], SQ, 0.1), 11, "matrix"),
    _case("mlp_softplus_ce_labels", network(3, [dense(4, "softplus"), dense(3, "identity")], CE), 14, "labels"),
    _case("mlp_gaussian_squared", network(2, [dense(3, "gaussian"), dense(1, "identity")], SQ), 10, "vector"),
    _case("mlp_relu_squared", network(3, [dense(4, "relu"), dense(2, "identity")], SQ), 10, "matrix",
          notes="relu'' = 0 a.e.; weights redrawn until |a| >= 0.02"),
    _case("mlp_sin_bce_two_outputs", network(3, [dense(4, "sin"), dense(2, "identity")], BCE), 13, "matrix"),
    _case("mlp_identity_hidden", network(3, [dense(3, "identity"), dense(2, "identity")], SQ), 9, "matrix"),
    # ---- non-identity output activations (h'' at the output)
    _case("output_logistic_squared", network(3, [dense(3, "tanh"), dense(2, "logistic")], SQ), 11, "matrix"),
    _case("output_sin_ce_onehot_l2", network(2, [dense(3, "softplus"), dense(3, "sin")], CE, 0.2), 12, "onehot"),
    _case("output_tanh_bce_vector", network(3, [dense(3, "sin"), dense(1, "tanh")], BCE), 10, "vector"),
    # ---- skip connections, fan-out, source order
    _case("skip_2_0",
          network(3, [dense(3, "tanh"), dense(3, "tanh"), dense(2, "identity", sources=[2, 0])], SQ),
          12, "matrix"),
    _case("skip_1_0_fanout",
          network(2, [dense(3, "tanh"), dense(3, "logistic", sources=[1, 0]), dense(2, "identity", sources=[2, 1])],
                  SQ, 0.1),
          11, "matrix", notes="layer 1 is read by layers 2 and 3"),
    _case("skip_unordered_sources",
          network(3, [dense(2, "softplus", sources=[0]), dense(3, "tanh", sources=[0, 1]),
                      dense(3, "identity", sources=[1, 2, 0])], CE),
          14, "labels"),
    _case("skip_every_layer_reads_input",
          network(2, [dense(3, "sin"), dense(2, "tanh", sources=[0, 1]), dense(1, "identity", sources=[2, 0, 1])],
                  BCE, 0.05),
          12, "vector"),
    _case("relu_with_skip",
          network(3, [dense(4, "relu"), dense(3, "relu"), dense(2, "identity", sources=[2, 0])], SQ),
          9, "matrix"),
    # ---- bias false
    _case("no_bias_hidden", network(3, [dense(4, "tanh", bias=False), dense(2, "identity", bias=True)], SQ, 0.2),
          10, "matrix"),
    _case("no_bias_anywhere_ce",
          network(3, [dense(3, "logistic", bias=False), dense(3, "identity", sources=[1, 0], bias=False)], CE),
          12, "onehot"),
    # ---- rbf
    _case("rbf_isotropic_dense_out", network(2, [rbf(3, "isotropic"), dense(1, "identity")], SQ), 12, "vector"),
    _case("rbf_diagonal_l2", network(3, [rbf(3, "diagonal"), dense(2, "identity")], SQ, 0.1), 11, "matrix"),
    _case("rbf_full", network(3, [rbf(2, "full", sources=[0]), dense(2, "identity")], SQ), 10, "matrix"),
    _case("rbf_full_ce_skip",
          network(2, [rbf(3, "full"), dense(3, "identity", sources=[1, 0])], CE, 0.1), 13, "labels"),
    _case("rbf_identity_activation", network(2, [rbf(2, "diagonal", activation="identity"), dense(1, "tanh")], SQ),
          9, "vector"),
    _case("mid_rbf_then_dense",
          network(3, [dense(3, "tanh"), rbf(3, "diagonal"), dense(2, "identity")], SQ), 12, "matrix",
          notes="rbf in the middle, fed by tanh, followed by dense"),
    # ---- quadratic
    _case("quadratic_single_source", network(2, [quadratic(2), dense(1, "identity")], SQ), 11, "vector"),
    _case("quadratic_output", network(3, [quadratic(2, "identity")], SQ, 0.1), 10, "matrix"),
    _case("quadratic_multi_source",
          network(2, [dense(2, "tanh"), quadratic(2, "tanh", sources=[1, 0]), dense(2, "identity")], SQ),
          12, "matrix"),
    _case("tanh_then_quadratic_ce_l2",
          network(3, [dense(3, "tanh"), quadratic(3, "identity")], CE, 0.05), 14, "labels"),
    _case("quadratic_logistic_bce", network(2, [quadratic(2, "logistic"), dense(1, "identity")], BCE), 12, "matrix"),
    # ---- deep and narrow
    _case("deep5_tanh_l2",
          network(2, [dense(3, "tanh"), dense(3, "tanh"), dense(3, "tanh"), dense(3, "tanh"), dense(2, "identity")],
                  SQ, 0.01),
          10, "matrix"),
    _case("deep4_mixed_skips",
          network(3, [dense(3, "logistic"), dense(3, "softplus", sources=[1, 0]), dense(2, "sin", sources=[2]),
                      dense(3, "identity", sources=[3, 1])], CE),
          13, "onehot"),
    _case("width1_bottleneck",
          network(3, [dense(3, "tanh"), dense(1, "tanh"), dense(2, "identity")], SQ), 10, "matrix"),
    _case("width1_everywhere", network(1, [dense(1, "tanh"), dense(1, "softplus"), dense(1, "identity")], SQ),
          8, "vector"),
    # ---- a single example
    _case("single_example_mlp", network(3, [dense(3, "tanh"), dense(2, "identity")], SQ, 0.1), 1, "matrix"),
    _case("single_example_ce_onehot", network(2, [dense(3, "sin"), dense(3, "identity")], CE), 1, "onehot"),
    _case("single_example_rbf_bce", network(2, [rbf(2, "isotropic"), dense(1, "identity")], BCE), 1, "vector"),
]

CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES), "case ids must be unique"


def case_params(select=None):
    """``pytest.param(case, id=case.id)`` for every case (or those ``select(case)`` keeps)."""
    return [pytest.param(case, id=case.id) for case in CASES if select is None or select(case)]
