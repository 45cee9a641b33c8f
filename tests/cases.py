"""The one table of architecture cases that feeds every derivative test.

Each ``Case`` holds a JSON spec dict (DESIGN.md §1), deterministic data ``X``,
``Y`` (read-only arrays) and a deterministic, layout-aware weight generator
``make_w(seed)``.  Sizes are small so the JAX reference Hessian stays cheap.

Public names: ``Case``, ``CASES``, ``CASES_BY_ID``, ``case_params``, ``make_case``,
``PENALTY_CASES`` (the ids of the rows with a penalty other than one l2 lambda), and
the spec builders ``layer`` (any type), ``dense``, ``rbf``, ``quadratic``, ``network``
and the penalties ``l2``, ``norm``, ``weight_elimination``.

Adding a layer type: its reference in ``tests/oracle.py`` (``LAYER_TYPES``: the
forward map, and how test weights are drawn) and a row in ``CASES`` (built with
``layer(...)``).
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests import oracle

# --------------------------------------------------------------------------- spec builders


def layer(kind, units, activation, sources=None, **options):
    """A layer of JSON type ``kind``; ``sources`` and options that are ``None`` are left
    out of the dict, so the contract's defaults (``[k-1]``, ``bias: true``) are exercised too."""
    spec = {"type": kind, "units": units, "activation": activation}
    if sources is not None:
        spec["sources"] = list(sources)
    spec.update({key: value for key, value in options.items() if value is not None})
    return spec


def dense(units, activation, sources=None, bias=None):
    return layer("dense", units, activation, sources, bias=bias)


def rbf(units, metric, activation="gaussian", sources=None):
    return layer("rbf", units, activation, sources, metric=metric)


def quadratic(units, activation="identity", sources=None):
    return layer("quadratic", units, activation, sources)


def network(inputs, layers, loss, penalty=None):
    """``penalty``: a number (an l2 lambda), a penalty dict or a list of them (used as given)."""
    spec = {"inputs": inputs, "layers": layers, "loss": loss}
    if isinstance(penalty, (dict, list)):
        spec["penalty"] = copy.deepcopy(penalty)
    elif penalty is not None:
        spec["penalty"] = {"type": "l2", "lambda": penalty}
    return spec


def norm(lam, epsilon=None, layers=None):
    """``{"type": "norm", ...}``; ``epsilon=None`` leaves it out (the default 0: the seed's ``||W^k||``)."""
    return _penalty("norm", lam, layers, epsilon=epsilon)


def weight_elimination(lam, scale=None, layers=None):
    return _penalty("weight_elimination", lam, layers, scale=scale)


def l2(lam, layers=None):
    return _penalty("l2", lam, layers)


def _penalty(kind, lam, layers, **options):
    spec = {"type": kind, "lambda": lam}
    spec.update({key: value for key, value in options.items() if value is not None})
    if layers is not None:
        spec["layers"] = list(layers)
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
        relu_layers = [k for k, spec in enumerate(layers) if spec["activation"] == "relu"]
        for attempt in range(200):
            rng = np.random.default_rng([zlib.crc32(self.id.encode()), seed, attempt])
            parts = [oracle.layer_reference(spec["type"]).draw(spec, shape, rng, self.weight_scale)
                     for spec, shape in zip(layers, shapes)]
            w = np.concatenate([part.ravel() for part in parts])
            if not relu_layers:
                return w
            pre = oracle.preactivations(self._spec, w, self.X)
            if min(np.abs(pre[k]).min() for k in relu_layers) >= self.relu_margin:
                return w
        raise RuntimeError(f"case {self.id}: no relu-safe weights found")


def make_case(case_id, spec, n, target_form, *, x_scale=1.0, notes="", **kwargs):
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    X = x_scale * rng.normal(size=(n, spec["inputs"]))
    Y = _targets(spec, n, target_form, rng)
    return Case(case_id, spec, _readonly(X), _readonly(Y), notes=notes, **kwargs)


SQ, CE, BCE = "squared", "softmax_cross_entropy", "binary_cross_entropy"

# --------------------------------------------------------------------------- the table

CASES = [
    # ---- one layer: the closed-form models
    make_case("linreg_vector_target", network(3, [dense(1, "identity")], SQ), 12, "vector"),
    make_case("linreg_multi_output_l2", network(3, [dense(3, "identity")], SQ, penalty=0.3), 10, "matrix"),
    make_case("linreg_no_bias_l2", network(4, [dense(2, "identity", bias=False)], SQ, penalty=0.1), 9, "matrix"),
    make_case("logreg_bce_vector", network(3, [dense(1, "identity")], BCE), 15, "vector"),
    make_case("logreg_bce_n1_l2", network(3, [dense(1, "identity", sources=[0])], BCE, penalty=0.2), 14, "matrix"),
    make_case("softmax_reg_labels", network(3, [dense(3, "identity")], CE), 16, "labels"),
    make_case("softmax_reg_onehot_l2", network(4, [dense(4, "identity")], CE, penalty=0.05), 13, "onehot"),
    # ---- two-layer MLPs, one per activation
    make_case("mlp_tanh_squared", network(3, [dense(4, "tanh"), dense(2, "identity")], SQ), 12, "matrix"),
    make_case("mlp_logistic_squared_l2", network(3, [dense(4, "logistic"), dense(2, "identity")], SQ, 0.1), 11, "matrix"),
    make_case("mlp_softplus_ce_labels", network(3, [dense(4, "softplus"), dense(3, "identity")], CE), 14, "labels"),
    make_case("mlp_gaussian_squared", network(2, [dense(3, "gaussian"), dense(1, "identity")], SQ), 10, "vector"),
    make_case("mlp_relu_squared", network(3, [dense(4, "relu"), dense(2, "identity")], SQ), 10, "matrix",
              notes="relu'' = 0 a.e.; weights redrawn until |a| >= 0.02"),
    make_case("mlp_sin_bce_two_outputs", network(3, [dense(4, "sin"), dense(2, "identity")], BCE), 13, "matrix"),
    make_case("mlp_identity_hidden", network(3, [dense(3, "identity"), dense(2, "identity")], SQ), 9, "matrix"),
    # ---- non-identity output activations (h'' at the output)
    make_case("output_logistic_squared", network(3, [dense(3, "tanh"), dense(2, "logistic")], SQ), 11, "matrix"),
    make_case("output_sin_ce_onehot_l2", network(2, [dense(3, "softplus"), dense(3, "sin")], CE, 0.2), 12, "onehot"),
    make_case("output_tanh_bce_vector", network(3, [dense(3, "sin"), dense(1, "tanh")], BCE), 10, "vector"),
    # ---- skip connections, fan-out, source order
    make_case("skip_2_0",
              network(3, [dense(3, "tanh"), dense(3, "tanh"), dense(2, "identity", sources=[2, 0])], SQ),
              12, "matrix"),
    make_case("skip_1_0_fanout",
              network(2, [dense(3, "tanh"), dense(3, "logistic", sources=[1, 0]), dense(2, "identity", sources=[2, 1])],
                      SQ, 0.1),
              11, "matrix", notes="layer 1 is read by layers 2 and 3"),
    make_case("skip_unordered_sources",
              network(3, [dense(2, "softplus", sources=[0]), dense(3, "tanh", sources=[0, 1]),
                          dense(3, "identity", sources=[1, 2, 0])], CE),
              14, "labels"),
    make_case("skip_every_layer_reads_input",
              network(2, [dense(3, "sin"), dense(2, "tanh", sources=[0, 1]), dense(1, "identity", sources=[2, 0, 1])],
                      BCE, 0.05),
              12, "vector"),
    make_case("relu_with_skip",
              network(3, [dense(4, "relu"), dense(3, "relu"), dense(2, "identity", sources=[2, 0])], SQ),
              9, "matrix"),
    # ---- bias false
    make_case("no_bias_hidden", network(3, [dense(4, "tanh", bias=False), dense(2, "identity", bias=True)], SQ, 0.2),
              10, "matrix"),
    make_case("no_bias_anywhere_ce",
              network(3, [dense(3, "logistic", bias=False), dense(3, "identity", sources=[1, 0], bias=False)], CE),
              12, "onehot"),
    # ---- rbf
    make_case("rbf_isotropic_dense_out", network(2, [rbf(3, "isotropic"), dense(1, "identity")], SQ), 12, "vector"),
    make_case("rbf_diagonal_l2", network(3, [rbf(3, "diagonal"), dense(2, "identity")], SQ, 0.1), 11, "matrix"),
    make_case("rbf_full", network(3, [rbf(2, "full", sources=[0]), dense(2, "identity")], SQ), 10, "matrix"),
    make_case("rbf_full_ce_skip",
              network(2, [rbf(3, "full"), dense(3, "identity", sources=[1, 0])], CE, 0.1), 13, "labels"),
    make_case("rbf_identity_activation", network(2, [rbf(2, "diagonal", activation="identity"), dense(1, "tanh")], SQ),
              9, "vector"),
    make_case("mid_rbf_then_dense",
              network(3, [dense(3, "tanh"), rbf(3, "diagonal"), dense(2, "identity")], SQ), 12, "matrix",
              notes="rbf in the middle, fed by tanh, followed by dense"),
    # ---- quadratic
    make_case("quadratic_single_source", network(2, [quadratic(2), dense(1, "identity")], SQ), 11, "vector"),
    make_case("quadratic_output", network(3, [quadratic(2, "identity")], SQ, 0.1), 10, "matrix"),
    make_case("quadratic_multi_source",
              network(2, [dense(2, "tanh"), quadratic(2, "tanh", sources=[1, 0]), dense(2, "identity")], SQ),
              12, "matrix"),
    make_case("tanh_then_quadratic_ce_l2",
              network(3, [dense(3, "tanh"), quadratic(3, "identity")], CE, 0.05), 14, "labels"),
    make_case("quadratic_logistic_bce", network(2, [quadratic(2, "logistic"), dense(1, "identity")], BCE), 12, "matrix"),
    # ---- deep and narrow
    make_case("deep5_tanh_l2",
              network(2, [dense(3, "tanh"), dense(3, "tanh"), dense(3, "tanh"), dense(3, "tanh"), dense(2, "identity")],
                      SQ, 0.01),
              10, "matrix"),
    make_case("deep4_mixed_skips",
              network(3, [dense(3, "logistic"), dense(3, "softplus", sources=[1, 0]), dense(2, "sin", sources=[2]),
                          dense(3, "identity", sources=[3, 1])], CE),
              13, "onehot"),
    make_case("width1_bottleneck",
              network(3, [dense(3, "tanh"), dense(1, "tanh"), dense(2, "identity")], SQ), 10, "matrix"),
    make_case("width1_everywhere", network(1, [dense(1, "tanh"), dense(1, "softplus"), dense(1, "identity")], SQ),
              8, "vector"),
    # ---- a single example
    make_case("single_example_mlp", network(3, [dense(3, "tanh"), dense(2, "identity")], SQ, 0.1), 1, "matrix"),
    make_case("single_example_ce_onehot", network(2, [dense(3, "sin"), dense(3, "identity")], CE), 1, "onehot"),
    make_case("single_example_rbf_bce", network(2, [rbf(2, "isotropic"), dense(1, "identity")], BCE), 1, "vector"),
    # ---- penalties (DESIGN §1): each kind on several layer types, skips and bias-free layers
    make_case("mlp_tanh_norm_smooth",
              network(3, [dense(4, "tanh"), dense(2, "identity")], SQ, norm(0.3, epsilon=0.1)), 12, "matrix"),
    make_case("skip_norm_paper",
              network(3, [dense(3, "tanh"), dense(3, "tanh"), dense(2, "identity", sources=[2, 0])], SQ,
                      norm(0.2)),
              11, "matrix", notes="epsilon left out: the seed's lambda sum_k ||W^k|| (e = 0)"),
    make_case("no_bias_weight_elimination_ce",
              network(3, [dense(3, "logistic", bias=False), dense(3, "identity", sources=[1, 0], bias=False)], CE,
                      weight_elimination(0.5, scale=0.3)),
              12, "labels", notes="scale 0.3 < sqrt(3) |w| for most weights: pen'' indefinite"),
    make_case("rbf_full_weight_elimination",
              network(2, [rbf(3, "full"), dense(1, "identity")], SQ, weight_elimination(0.2, scale=0.5)), 11, "vector"),
    make_case("quadratic_l2_per_layer",
              network(2, [dense(2, "tanh"), quadratic(2, "tanh", sources=[1, 0]), dense(2, "identity")], SQ,
                      l2([0.1, 0.0, 0.3])),
              12, "matrix"),
    make_case("penalty_list_layers",
              network(2, [rbf(2, "diagonal"), dense(3, "softplus", sources=[1, 0]), dense(2, "identity")], BCE,
                      [norm([0.2, 0.1], epsilon=0.05, layers=[1, 3]),
                       weight_elimination(0.3, scale=0.4, layers=[2]), l2(0.05)]),
              13, "matrix", notes="a sum of three kinds, two restricted to layers"),
    make_case("isotropic_rbf_norm_layer_two",
              network(2, [rbf(3, "isotropic"), dense(2, "sin", bias=False)], CE, norm(0.4, epsilon=0.2, layers=[2])),
              10, "onehot"),
]

CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES), "case ids must be unique"

PENALTY_CASES = tuple(case.id for case in CASES
                      if isinstance(case._spec.get("penalty"), list)
                      or case._spec.get("penalty", {}).get("type", "l2") != "l2"
                      or isinstance(case._spec.get("penalty", {}).get("lambda"), list))


def case_params(select=None):
    """``pytest.param(case, id=case.id)`` for every case (or those ``select(case)`` keeps)."""
    return [pytest.param(case, id=case.id) for case in CASES if select is None or select(case)]
