"""The model: JSON spec, parameter layout and the public derivative methods (DESIGN §1, §3).

Layer ``k`` (1-based; layer 0 is the input) reads ``sources_k``, computes
``a^k = P^k(u^k; W^k)`` with ``u^k`` its sources' outputs concatenated in order,
then ``x^k = h^k(a^k)``.  The flat parameter vector concatenates the row-major
``(s_k, d_k)`` matrices ``W^k`` in layer order.

Pruned weights (held at zero) are a mask on that layout, parsed once from the
layers' JSON ``"mask"`` (``(s_k, d_k)`` lists of 0/1) or built with
:meth:`Model.with_mask` / :meth:`Model.pruned`; every derivative is then the
masked objective's ``E_m(w) = E(P w)`` (``P = diag(mask)``), restricted once by
the engine (:mod:`dist_hess.engine.finalization`).
"""
from __future__ import annotations

import copy
import json
import numbers
from dataclasses import dataclass, field, replace

import numpy as np

from .activations import Activation, get_activation
from .curvature import KINDS, STRUCTURES, check_curvature, check_hvp_kind
from .engine import Request, finalize, shard_sums
from .engine.forward import forward
from .engine.row_tensors import row_tensor
from .jsonio import dump_json
from .layers import LAYERS, Propagation, get_layer_type
from .losses import Loss, _check_finite, get_loss
from .penalties import PenaltySum, parse_penalty

__all__ = ["Model", "Layer", "KINDS", "STRUCTURES"]

#: The one message for data without examples (`Model.check_data`, ``dh.evaluate``, ``dh.fit``).
NO_EXAMPLES = "X has no examples (0 rows)"

_LAYER_KEYS = {"type", "units", "activation", "sources", "mask"}
_MODEL_KEYS = {"inputs", "layers", "loss", "penalty", "input_names", "output_names"}


@dataclass(frozen=True)
class Layer:
    """One layer: its index ``k``, propagation, activation, sources and mask.

    ``mask``: ``None`` (every weight free) or an ``(s_k, d_k)`` boolean array,
    ``False`` where a weight is pruned (held at zero).
    """
    index: int
    propagation: Propagation
    activation: Activation
    sources: tuple[int, ...]
    mask: np.ndarray | None = field(default=None, compare=False)

    @property
    def units(self):
        return self.propagation.units

    @property
    def shape(self):
        return (self.propagation.units, self.propagation.n_row_params)


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_names(names, lengths, what) -> tuple[str, ...]:
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"{what} must be a list of strings, got {names!r}")
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"{what}: every name must be a non-empty string, got {bad[:3]!r}")
    if len(names) not in lengths:
        raise ValueError(f"{what} has {len(names)} names, expected "
                         f"{' or '.join(str(n) for n in lengths)}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{what}: names must be distinct; repeated: {twice[:5]}")
    return tuple(names)


class Model:
    """A feed-forward network with its loss and penalty.

    Build it with :meth:`from_dict` / :meth:`from_json`; every derivative method
    takes the flat weights ``w`` (``(n_params,)``), inputs ``X`` ``(n, inputs)``
    and targets ``Y`` (see DESIGN §1).  The engine takes the examples in batches
    of rows whose temporaries stay within ``memory_budget`` bytes, a keyword of
    every derivative method (``None``: the engine's default, 256 MiB; the same
    option as ``dh.evaluate(memory_budget=)`` and ``dh.fit(memory_budget=)``).
    """

    def __init__(self, inputs: int, layers: list[Layer], loss: Loss, penalty: PenaltySum | None):
        self.inputs = inputs
        self.layers = list(layers)
        self.loss = loss
        self.penalty = penalty
        self.sizes = [inputs] + [layer.units for layer in self.layers]
        self.layer_shapes = [layer.shape for layer in self.layers]
        sizes = [s * d for s, d in self.layer_shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.layer_slices = [slice(int(offsets[k]), int(offsets[k + 1])) for k in range(len(sizes))]
        self.n_params = int(offsets[-1])
        self.penalty_mask = np.concatenate(
            [np.tile(layer.propagation.penalty_mask(), layer.units) for layer in self.layers])
        #: ``(t,)`` booleans, ``False`` for pruned weights; ``None`` when nothing is pruned.
        self.mask = None
        if any(layer.mask is not None for layer in self.layers):
            self.mask = np.concatenate([
                np.ones(s * d, dtype=bool) if layer.mask is None else layer.mask.ravel()
                for layer, (s, d) in zip(self.layers, self.layer_shapes)])

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict) -> "Model":
        if not isinstance(spec, dict):
            raise TypeError(f"a model spec must be a dict, got {type(spec).__name__}")
        unknown = set(spec) - _MODEL_KEYS
        if unknown:
            raise ValueError(f"unknown model keys {sorted(unknown)}; allowed: {sorted(_MODEL_KEYS)}")
        if "inputs" not in spec:
            raise ValueError("model spec needs 'inputs' (the number of input features)")
        inputs = _positive_int(spec["inputs"], "'inputs'")
        layer_specs = spec.get("layers")
        if not isinstance(layer_specs, (list, tuple)) or not layer_specs:
            raise ValueError(f"model spec needs a non-empty list 'layers', got {layer_specs!r}")
        sizes = [inputs]
        layers = []
        for k, ls in enumerate(layer_specs, start=1):
            layer = cls._parse_layer(k, ls, sizes)
            layers.append(layer)
            sizes.append(layer.units)
        loss = get_loss(spec.get("loss", "squared"))
        penalty = parse_penalty(spec.get("penalty"), len(layers))
        model = cls(inputs, layers, loss, penalty)
        return model.with_names(spec.get("input_names"), spec.get("output_names"))

    @staticmethod
    def _parse_layer(k, ls, sizes):
        where = f"layer {k}"
        if not isinstance(ls, dict):
            raise TypeError(f"{where}: expected a dict, got {ls!r}")
        if "type" not in ls:
            raise ValueError(f"{where}: missing 'type' (one of {', '.join(sorted(LAYERS))})")
        prop_cls = get_layer_type(ls["type"])
        allowed = _LAYER_KEYS | set(prop_cls.extra_keys)
        unknown = set(ls) - allowed
        if unknown:
            raise ValueError(f"{where} ({ls['type']}): unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(allowed)}")
        if "units" not in ls:
            raise ValueError(f"{where}: missing 'units'")
        units = _positive_int(ls["units"], f"{where}: 'units'")
        if "activation" not in ls:
            raise ValueError(f"{where}: missing 'activation' (required)")
        activation = get_activation(ls["activation"])
        sources = ls.get("sources", [k - 1])
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"{where}: 'sources' must be a non-empty list of earlier layers, got {sources!r}")
        for src in sources:
            if isinstance(src, bool) or not isinstance(src, numbers.Integral) or not 0 <= src < k:
                raise ValueError(f"{where}: source {src!r} is not an earlier layer "
                                 f"(sources must lie in 0..{k - 1})")
        if len(set(sources)) != len(sources):
            raise ValueError(f"{where}: sources {list(sources)} list a layer twice")
        if prop_cls.single_source and len(sources) != 1:
            raise ValueError(f"{where}: an {ls['type']} layer reads exactly one source, "
                             f"got sources {list(sources)}")
        options = {key: ls[key] for key in prop_cls.extra_keys if key in ls}
        n_inputs = sum(sizes[s] for s in sources)
        prop = prop_cls(units, n_inputs, **options)
        mask = None
        if ls.get("mask") is not None:
            mask = np.asarray(ls["mask"])
            shape = (units, prop.n_row_params)
            if mask.shape != shape or not np.all((mask == 0) | (mask == 1)):
                raise ValueError(f"{where}: 'mask' must be a list of {shape[0]} rows of "
                                 f"{shape[1]} entries 0 or 1 (the layer's weight matrix), "
                                 f"got {ls['mask']!r}")
            mask = mask.astype(bool)
            if mask.all():
                mask = None
        return Layer(k, prop, activation, tuple(int(s) for s in sources), mask)

    @classmethod
    def from_json(cls, path) -> "Model":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        layers = []
        for layer in self.layers:
            d = {"type": layer.propagation.type, "units": layer.units,
                 "activation": layer.activation.name, "sources": list(layer.sources)}
            d.update(layer.propagation.options())
            if layer.mask is not None:
                d["mask"] = layer.mask.astype(int).tolist()
            layers.append(d)
        spec = {"inputs": self.inputs, "layers": layers, "loss": self.loss.name,
                "penalty": None if self.penalty is None else self.penalty.to_dict()}
        if self.input_names is not None:
            spec["input_names"] = list(self.input_names)
        if self.output_names is not None:
            spec["output_names"] = list(self.output_names)
        return spec

    # -- names (DESIGN §1, optional) -----------------------------------------------------
    #: ``inputs`` strings naming the input columns (``None``: ``x0, x1, ...``).
    input_names: tuple[str, ...] | None = None
    #: strings naming the output units, or the classes (two for one logit unit).
    output_names: tuple[str, ...] | None = None

    def with_names(self, input_names=None, output_names=None) -> "Model":
        """A copy with these ``input_names`` / ``output_names`` (``None`` keeps the current
        ones), checked: distinct non-empty strings, ``inputs`` of them, and as many output
        names as output units, or two class names for one ``binary_cross_entropy`` unit."""
        new = copy.copy(self)
        if input_names is not None:
            new.input_names = _check_names(input_names, [self.inputs], "input_names")
        if output_names is not None:
            units = self.sizes[-1]
            lengths = [units, 2] if (units == 1 and
                                     self.loss.name == "binary_cross_entropy") else [units]
            new.output_names = _check_names(output_names, lengths, "output_names")
        return new

    def to_json(self, path=None):
        return dump_json(self.to_dict(), path)

    def __repr__(self):
        arch = "-".join(str(s) for s in self.sizes)
        params = (f"{self.n_params} parameters" if self.mask is None else
                  f"{self.n_free} of {self.n_params} parameters free")
        return f"<{type(self).__name__} {arch}, {params}, loss {self.loss.name}>"

    # -- the mask: pruned weights held at zero ------------------------------------------
    @property
    def free(self) -> np.ndarray:
        """``(t,)`` booleans, ``True`` for the weights that are estimated (not pruned); a copy."""
        return np.ones(self.n_params, dtype=bool) if self.mask is None else self.mask.copy()

    @property
    def n_free(self) -> int:
        """Number of weights not pruned."""
        return self.n_params if self.mask is None else int(self.mask.sum())

    def layer_masks(self) -> list[np.ndarray]:
        """The mask as ``(s_k, d_k)`` 0/1 integer matrices, layer by layer (the JSON ``"mask"``)."""
        free = self.free
        return [free[sl].reshape(shape).astype(int)
                for sl, shape in zip(self.layer_slices, self.layer_shapes)]

    def with_mask(self, mask) -> "Model":
        """A new model with the same layers, loss and penalty and ``mask`` as its mask.

        ``mask``: ``(t,)`` 0/1 or booleans in the parameter layout, ``False`` where a
        weight is pruned; ``None`` (or all true) for none pruned.  The new model is of the
        same class as this one.
        """
        if mask is None:
            masks = [None] * len(self.layers)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.n_params,):
                raise ValueError(f"mask must have shape ({self.n_params},) (n_params), "
                                 f"got {mask.shape}")
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError("mask entries must be 0 or 1")
            mask = mask.astype(bool)
            masks = [mask[sl].reshape(shape)
                     for sl, shape in zip(self.layer_slices, self.layer_shapes)]
            masks = [None if m.all() else m for m in masks]
        layers = [replace(layer, mask=m) for layer, m in zip(self.layers, masks)]
        new = copy.copy(self)              # same class; every attribute is set again below
        Model.__init__(new, self.inputs, layers, self.loss, self.penalty)
        return new

    def pruned(self, indices) -> "Model":
        """A new model with the weights at flat ``indices`` pruned too (:meth:`with_mask`)."""
        free = self.free
        free[np.asarray(indices, dtype=int)] = False
        return self.with_mask(free)

    # -- parameters -------------------------------------------------------------------
    def init(self, seed=0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return self.project(np.concatenate([layer.propagation.init(rng).ravel()
                                            for layer in self.layers]))

    def project(self, w) -> np.ndarray:
        """``w`` with its pruned entries (``mask`` false) set to zero (a copy)."""
        w = np.array(w, dtype=float)
        return w if self.mask is None else w * self.mask

    def unpack(self, w) -> list[np.ndarray]:
        """Views ``W^k`` ``(s_k, d_k)`` into the flat vector, layer by layer."""
        return [w[sl].reshape(shape) for sl, shape in zip(self.layer_slices, self.layer_shapes)]

    def layer_of(self, index: int) -> tuple[int, int, int]:
        """``(layer k (1-based), row j, column c)`` of flat parameter ``index``."""
        for k, (sl, (s, d)) in enumerate(zip(self.layer_slices, self.layer_shapes), start=1):
            if sl.start <= index < sl.stop:
                j, c = divmod(index - sl.start, d)
                return k, j, c
        raise IndexError(f"parameter index {index} out of range 0..{self.n_params - 1}")

    # -- input checking -------------------------------------------------------------------
    def check_weights(self, w) -> np.ndarray:
        w = check_real(w, "w")
        if w.ndim != 1 or w.shape[0] != self.n_params:
            raise ValueError(f"weights must be a vector of length {self.n_params} (n_params), "
                             f"got shape {w.shape}")
        _check_finite(w, "w")
        if self.mask is not None:          # pruned weights are held at zero
            w = w * self.mask
        return w

    def check_inputs(self, X) -> np.ndarray:
        X = check_real(X, "X")
        if X.ndim == 1 and self.inputs == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != self.inputs:
            raise ValueError(f"X must have shape (n, {self.inputs}) for a model with "
                             f"{self.inputs} inputs, got {X.shape}")
        _check_finite(X, "X")
        return X

    def check_data(self, X, Y):
        """``(X, Y)`` checked for a sum over examples: as `check_inputs`, at least one
        row (data without examples are refused everywhere; only `predict` maps 0 rows
        to 0 rows), targets prepared by the loss, real numbers only."""
        X = self.check_inputs(X)
        if X.shape[0] == 0:
            raise ValueError(NO_EXAMPLES)
        refuse_complex(Y, "Y")
        Y = self.loss.prepare_targets(Y, self.sizes[-1])
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X and Y have different numbers of rows: {X.shape[0]} and {Y.shape[0]}")
        return X, Y

    # -- derivatives (contract, DESIGN §3) ----------------------------------------------------
    def _sums(self, w, X, Y, memory_budget, **request):
        w = self.check_weights(w)
        X, Y = self.check_data(X, Y)
        req = Request(memory_budget=memory_budget, **request)
        return finalize(self, w, shard_sums(self, w, X, Y, req, checked=True), req)

    def value(self, w, X, Y, *, memory_budget: int | None = None) -> float:
        """``E(W) = sum_i g(x^m_i, y_i) + pen(W)``."""
        return float(self._sums(w, X, Y, memory_budget, value=True, gradient=False)["value"])

    def predict(self, w, X, *, output: str = "mean", chunk_rows: int = 65536) -> np.ndarray:
        """Predictions for the rows of ``X``, ``(n, c)``, by forward passes over row chunks.

        ``output="mean"`` (default): the loss's prediction from the network output
        (squared: the output itself; softmax_cross_entropy: class probabilities;
        binary_cross_entropy: probabilities). ``output="raw"``: the network output
        ``x^m`` the loss reads (logits for the cross-entropies).
        """
        if output not in ("mean", "raw"):
            raise ValueError(f"output must be 'mean' or 'raw', got {output!r}")
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
        Ws = self.unpack(self.check_weights(w))
        X = self.check_inputs(X)
        parts = [forward(self, Ws, X[i:i + chunk_rows], order=0).x[-1]
                 for i in range(0, X.shape[0], chunk_rows)] or [np.empty((0, self.sizes[-1]))]
        out = np.concatenate(parts, axis=0)
        return self.loss.mean(out) if output == "mean" else out

    def gradient(self, w, X, Y, *, memory_budget: int | None = None) -> np.ndarray:
        """``dE/dW`` by one forward and one backward (Lagrangian) pass, seed eqs. (7)-(9)."""
        return self._sums(w, X, Y, memory_budget, value=False, gradient=True)["gradient"]

    def value_and_gradient(self, w, X, Y, *, memory_budget: int | None = None):
        s = self._sums(w, X, Y, memory_budget, value=True, gradient=True)
        return float(s["value"]), s["gradient"]

    def multipliers(self, w, X, Y, *, memory_budget: int | None = None) -> list[np.ndarray]:
        """The paper's ``e^k_i = -dE_i/dx^k_i`` (total derivative, no penalty): list of ``(n, s_k)``."""
        s = self._sums(w, X, Y, memory_budget, value=False, gradient=False, multipliers=True)
        return s["multipliers"]

    def curvature(self, w, X, Y, kind="hessian", structure="row", *,
                  memory_budget: int | None = None):
        """Exact curvature ``kind`` (hessian | gauss_newton | lagrangian) in ``structure``.

        ``row``: list over layers of ``(s_k, d_k, d_k)``; ``layer``: list of ``(t_k, t_k)``;
        ``full``: ``(t, t)``.  See docs/theory.md.
        """
        check_curvature(kind, structure)
        s = self._sums(w, X, Y, memory_budget, value=False, gradient=False,
                       curvature=((kind, structure),))
        return s[f"curvature/{kind}/{structure}"]

    def hvp(self, w, X, Y, v, kind="hessian", *, memory_budget: int | None = None) -> np.ndarray:
        """Exact curvature-vector product (kind hessian or gauss_newton) by forward-over-reverse."""
        check_hvp_kind(kind)
        v = check_real(v, "v")
        if v.shape != (self.n_params,):
            raise ValueError(f"v must be a vector of length {self.n_params}, got shape {v.shape}")
        _check_finite(v, "v")
        s = self._sums(w, X, Y, memory_budget, value=False, gradient=False, hvp=((kind, v),))
        return s["hvp/0"]

    def directional_derivatives(self, w, X, Y, v, order, *,
                                memory_budget: int | None = None) -> np.ndarray:
        """``[E, DE[v], D^2E[v,v], ..., D^pE[v,...,v]]`` at ``w`` by Taylor propagation (DESIGN §6)."""
        s = self._sums(w, X, Y, memory_budget, value=False, gradient=False,
                       directional=check_direction(v, order, self.n_params))
        return s["directional"]

    def row_tensor(self, w, X, Y, layer, row=None, order=2, *, packed=False, part="exact",
                   memory_budget: int | None = None):
        """Exact ``order``-th derivative tensor of ``E`` w.r.t. row ``row`` of layer ``layer`` (DESIGN §6).

        ``sum_i c^(p)_ij z_i^{(x) p}`` (+ pen' / pen'' for p = 1, 2); ``part="lagrangian"`` gives
        the seed's eq. (12).  See :func:`dist_hess.engine.row_tensors.row_tensor`, docs/higher_order.md.
        """
        return row_tensor(self, w, X, Y, layer, row, order, packed=packed, part=part,
                          memory_budget=memory_budget)


def refuse_complex(a, name: str) -> None:
    """``TypeError`` naming ``a`` when its dtype is complex (read from ``a.dtype`` when it
    has one: a dask array is not computed)."""
    if np.iscomplexobj(a):
        dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
        raise TypeError(f"{name} is complex (dtype {dtype}); dist_hess differentiates "
                        f"real functions of real numbers: pass real values (take .real "
                        f"if the imaginary part is meant to be zero)")


def check_real(a, name: str) -> np.ndarray:
    """``a`` as a float array; ``TypeError`` naming it when it is complex (the imaginary
    part would otherwise be dropped silently)."""
    if type(a) is np.ndarray and a.dtype == np.float64:    # the usual case: nothing to convert
        return a
    array = np.asarray(a)
    refuse_complex(array, name)
    return np.asarray(array, dtype=float)


def check_direction(v, order, n_params: int) -> tuple[np.ndarray, int]:
    """``(v, order)`` of a directional-derivative request, checked: ``v`` a finite
    vector of length ``n_params``, ``order`` an integer ``>= 0``."""
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise ValueError(f"order must be an integer >= 0, got {order!r}")
    v = check_real(v, "v")
    if v.shape != (n_params,):
        raise ValueError(f"v must be a vector of length {n_params}, got shape {v.shape}")
    _check_finite(v, "v")
    return v, int(order)
