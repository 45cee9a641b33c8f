"""Pruned weights held at zero: a mask on the flat parameter vector.

:class:`MaskedModel` wraps a :class:`dist_hess.Model` and exposes the same
interface (``value``, ``gradient``, ``curvature``, ``hvp``, ``multipliers``,
``directional_derivatives``, ``n_params``, ``layer_slices``, ``layer_shapes``,
``to_dict``...), so :func:`dist_hess.train.fit` and the analysis take it
wherever they take a model.  The parameterisation stays the full one (the
layout of DESIGN §1, so row and layer blocks keep their shapes); with ``m`` the
0/1 mask and ``P = diag(m)``:

    E_m(w)    = E(P w)
    grad      = P grad E(P w)                          (pruned entries: 0)
    curvature = P H(P w) P + (I - P)                   (pruned rows/columns: 0, diagonal 1)
    hvp(v)    = P H(P w) P v + (I - P) v

The pruned entries are inert: nothing computed depends on them (``E_m`` reads
``P w``), their gradient is 0 and their curvature row is ``e_q``, so a Newton
step ``-(B + lambda I)^-1 g`` leaves them where they are.  Steps built from
eigendecompositions or the trust-region hard case (``p + tau z``) can still put
round-off (or, in the hard case, a finite amount) on them; it changes nothing
(``E_m(w) = E_m(P w)``), and :meth:`MaskedModel.fit` (used by the pruning loop)
returns ``P w``, so pruned weights come back exactly 0.  The unit diagonal only
keeps the matrices invertible: analysis code restricts to the free entries
instead.

JSON: :meth:`MaskedModel.to_dict` adds ``"mask"`` (a list of lists of 0/1,
shape ``(s_k, d_k)``) to each layer that has a pruned entry, and
:func:`model_from_dict` reads it back (a :class:`Model` when no layer has a
mask, a :class:`MaskedModel` otherwise).
"""
from __future__ import annotations

import copy

import numpy as np

from ..jsonio import dump_json
from ..model import Model

__all__ = ["MaskedModel", "model_from_dict", "split_mask", "free_mask"]


def free_mask(model) -> np.ndarray:
    """``(t,)`` booleans: ``True`` for the entries that are estimated (not pruned)."""
    mask = getattr(model, "mask", None)
    if mask is None:
        return np.ones(model.n_params, dtype=bool)
    return np.asarray(mask, dtype=bool).copy()


def base_model(model) -> Model:
    """The unmasked :class:`Model` under ``model`` (``model`` itself when it has no mask)."""
    return model.base if isinstance(model, MaskedModel) else model


class MaskedModel:
    """A model whose pruned parameters (``mask == 0``) are held at zero.

    ``mask`` is a flat ``(t,)`` array of 0/1 (or booleans) in the contract's
    parameter order.  Attributes not defined here (``layers``, ``sizes``,
    ``loss``, ``penalty``, ``layer_of``, ``unpack``...) are the base model's.
    """

    def __init__(self, model: Model, mask):
        if isinstance(model, MaskedModel):
            mask = np.asarray(mask, dtype=bool) & model.mask
            model = model.base
        mask = np.asarray(mask)
        if mask.shape != (model.n_params,):
            raise ValueError(f"mask must have shape ({model.n_params},) (n_params), got {mask.shape}")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("mask entries must be 0 or 1")
        self.base = model
        self.mask = mask.astype(bool)
        self._p = self.mask.astype(float)

    # -- layout and delegation ---------------------------------------------------------
    def __getattr__(self, name):
        if name in ("base", "mask", "_p"):       # not yet set (during unpickling/copy)
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def n_params(self) -> int:
        return self.base.n_params

    @property
    def n_free(self) -> int:
        return int(self.mask.sum())

    @property
    def layer_slices(self):
        return self.base.layer_slices

    @property
    def layer_shapes(self):
        return self.base.layer_shapes

    def layer_masks(self) -> list[np.ndarray]:
        """The mask as ``(s_k, d_k)`` 0/1 integer matrices, layer by layer."""
        return [self.mask[sl].reshape(shape).astype(int)
                for sl, shape in zip(self.layer_slices, self.layer_shapes)]

    def project(self, w) -> np.ndarray:
        """``P w``: ``w`` with its pruned entries set to zero (a copy)."""
        return np.asarray(w, dtype=float) * self._p

    def init(self, seed=0) -> np.ndarray:
        return self.project(self.base.init(seed=seed))

    def fit(self, X, Y, *, w0=None, **options):
        """``dist_hess.train.fit`` on this model from ``P w0``; the result's ``w`` is ``P w``
        (pruned weights exactly 0).  ``options`` are ``fit``'s (``method``, ``max_iter``...)."""
        import dataclasses

        from ..train import fit
        w0 = self.init(seed=0) if w0 is None else self.project(w0)
        result = fit(self, X, Y, w0=w0, **options)
        return dataclasses.replace(result, w=self.project(result.w),
                                   gradient=self._p * result.gradient)

    def prune(self, indices) -> "MaskedModel":
        """A new model with ``indices`` (flat) pruned as well."""
        mask = self.mask.copy()
        mask[np.asarray(indices, dtype=int)] = False
        return MaskedModel(self.base, mask)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        spec = self.base.to_dict()
        for layer, m in zip(spec["layers"], self.layer_masks()):
            if not np.all(m == 1):
                layer["mask"] = m.tolist()
        return spec

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, spec: dict) -> "MaskedModel":
        model, mask = split_mask(spec)
        return cls(model, np.ones(model.n_params, dtype=bool) if mask is None else mask)

    def __repr__(self):
        arch = "-".join(str(s) for s in self.base.sizes)
        return (f"<MaskedModel {arch}, {self.n_free} of {self.n_params} parameters free, "
                f"loss {self.base.loss.name}>")

    # -- derivatives (the contract's methods, restricted to the free entries) -----------
    def value(self, w, X, Y) -> float:
        return self.base.value(self.project(w), X, Y)

    def gradient(self, w, X, Y) -> np.ndarray:
        return self._p * self.base.gradient(self.project(w), X, Y)

    def value_and_gradient(self, w, X, Y):
        value, grad = self.base.value_and_gradient(self.project(w), X, Y)
        return value, self._p * grad

    def multipliers(self, w, X, Y):
        return self.base.multipliers(self.project(w), X, Y)

    def curvature(self, w, X, Y, kind="hessian", structure="row"):
        blocks = self.base.curvature(self.project(w), X, Y, kind=kind, structure=structure)
        return restrict_curvature(self.base, blocks, self.mask, structure)

    def hvp(self, w, X, Y, v, kind="hessian") -> np.ndarray:
        v = np.asarray(v, dtype=float)
        out = self._p * self.base.hvp(self.project(w), X, Y, self._p * v, kind=kind)
        return out + (1.0 - self._p) * v

    def directional_derivatives(self, w, X, Y, v, order) -> np.ndarray:
        return self.base.directional_derivatives(self.project(w), X, Y,
                                                 self._p * np.asarray(v, dtype=float), order)


def restrict_curvature(model, blocks, mask, structure):
    """``P B P + (I - P)`` for curvature ``blocks`` in ``structure`` (row | layer | full)."""
    mask = np.asarray(mask, dtype=bool)
    p = mask.astype(float)
    if structure == "full":
        out = np.asarray(blocks, dtype=float) * np.outer(p, p)
        idx = np.flatnonzero(~mask)
        out[idx, idx] = 1.0
        return out
    result = []
    for blk, sl, (s, d) in zip(blocks, model.layer_slices, model.layer_shapes):
        pk = p[sl]
        if structure == "row":
            pr = pk.reshape(s, d)
            out = blk * pr[:, :, None] * pr[:, None, :]
            j, c = np.nonzero(pr == 0)
            out[j, c, c] = 1.0
        else:
            out = blk * np.outer(pk, pk)
            idx = np.flatnonzero(pk == 0)
            out[idx, idx] = 1.0
        result.append(out)
    return result


def split_mask(spec: dict):
    """``(Model, mask or None)`` from a spec whose layers may carry a ``"mask"`` key."""
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), (list, tuple)):
        return Model.from_dict(spec), None
    spec = copy.deepcopy(spec)
    masks = [layer.pop("mask", None) if isinstance(layer, dict) else None
             for layer in spec["layers"]]
    model = Model.from_dict(spec)
    if all(m is None for m in masks):
        return model, None
    parts = []
    for k, (m, (s, d)) in enumerate(zip(masks, model.layer_shapes), start=1):
        if m is None:
            parts.append(np.ones(s * d, dtype=bool))
            continue
        arr = np.asarray(m)
        if arr.shape != (s, d):
            raise ValueError(f"layer {k}: 'mask' must be a list of {s} rows of {d} entries "
                             f"(the layer's weight matrix shape), got shape {arr.shape}")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"layer {k}: 'mask' entries must be 0 or 1")
        parts.append(arr.astype(bool).ravel())
    return model, np.concatenate(parts)


def model_from_dict(spec: dict):
    """A :class:`Model`, or a :class:`MaskedModel` when some layer carries a ``"mask"``."""
    model, mask = split_mask(spec)
    return model if mask is None else MaskedModel(model, mask)
