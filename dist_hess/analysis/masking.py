"""Masked models as the analysis builds them: pruned weights held at zero.

The mask itself is the model's (:attr:`dist_hess.Model.mask`, the layers' JSON
``"mask"``, :meth:`~dist_hess.Model.with_mask`, :meth:`~dist_hess.Model.pruned`)
and so are the masked derivatives: with ``P = diag(mask)``, ``E_m(w) = E(P w)``,
gradient ``P grad E(P w)``, curvature ``P B P + (I - P)``, ``hvp(v) = P B P v +
(I - P) v``, applied once by the engine (:mod:`dist_hess.engine.finalization`).
This module adds only what pruning needs on top:

* :class:`MaskedModel` ``(model, mask)``: ``model.with_mask(model.free & mask)``
  (weights already pruned stay pruned), a :class:`~dist_hess.Model` in every
  respect, plus :meth:`MaskedModel.fit`, which returns ``P w``;
* :func:`model_from_dict`: :meth:`Model.from_dict <dist_hess.Model.from_dict>`,
  as a :class:`MaskedModel` when some layer carries a ``"mask"``.

Steps built from eigendecompositions or the trust-region hard case
(``p + tau z``) could put round-off on pruned entries; the driver projects every
step and :meth:`MaskedModel.fit` projects the result, so pruned weights come
back exactly 0.
"""
from __future__ import annotations

import dataclasses

from ..model import Model
from ..train import fit as train_fit

__all__ = ["MaskedModel", "model_from_dict"]


class MaskedModel(Model):
    """``MaskedModel(model, mask)``: ``model`` with the weights where ``mask`` is 0 pruned too.

    ``mask`` is a flat ``(t,)`` array of 0/1 (or booleans) in the contract's
    parameter order.  Everything but :meth:`fit` is :class:`~dist_hess.Model`'s.
    """

    def __init__(self, model: Model, mask):
        masked = model.with_mask(mask)               # checks the shape and the entries
        if model.mask is not None:
            masked = masked.with_mask(masked.free & model.mask)
        Model.__init__(self, masked.inputs, masked.layers, masked.loss, masked.penalty)
        self.input_names, self.output_names = model.input_names, model.output_names

    @classmethod
    def from_dict(cls, spec: dict) -> "MaskedModel":
        model = Model.from_dict(spec)
        return cls(model, model.free)

    def fit(self, X, Y, *, w0=None, **options):
        """``dist_hess.train.fit`` on this model from ``P w0``; the result's ``w`` is ``P w``
        (pruned weights exactly 0).  ``options`` are ``fit``'s (``method``, ``max_iter``...)."""
        w0 = self.init(seed=0) if w0 is None else self.project(w0)
        result = train_fit(self, X, Y, w0=w0, **options)
        return dataclasses.replace(result, w=self.project(result.w),
                                   gradient=self.project(result.gradient))


def model_from_dict(spec: dict) -> Model:
    """``Model.from_dict(spec)``; a :class:`MaskedModel` when some layer carries a ``"mask"``."""
    model = Model.from_dict(spec)
    return model if model.mask is None else MaskedModel(model, model.mask)
