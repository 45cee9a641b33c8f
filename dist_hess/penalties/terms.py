"""The model's penalty: a sum of terms ``lambda_k phi(W^k)`` over the layers each applies to.

A :class:`PenaltyTerm` is one JSON penalty object: a kind ``phi`` (a
:class:`~.base.Penalty`), one ``lambda`` per layer it applies to (``"lambda"``: a
number, or a list with one value per layer) and those layers (``"layers"``: 1-based
indices; all by default).  :class:`PenaltySum` is the model's penalty (``model.penalty``):
one term, or the sum of a JSON list of them, and everything the engine asks of it
after the reduction (:func:`dist_hess.engine.finalization.finalize`), each as a sum
over ``(term, layer)`` of the kind's per-layer answer times ``lambda_k``:

=====================  =====================================================
method                 adds
=====================  =====================================================
``value``              ``pen(w)``
``gradient``           ``pen'(w)`` ``(t,)``
``add_curvature``      ``pen''`` (``hessian``, ``lagrangian``) or its PSD part
                       (``gauss_newton``) to row, layer or full blocks
``hvp``                the same times ``v``
``diagonal``           the diagonal of the same
``directional``        ``D^p pen[v, ..., v]``, ``p = 0..order``
``row_tensor``         ``d^p pen / dW_j^p`` for rows of one layer
=====================  =====================================================

No term couples two layers, so curvature is added layer block by layer block
(a layer block ``(t_k, t_k)`` is formed only for ``layer`` and ``full``).  Each
layer's mask is its penalised entries (``model.penalty_mask``) that are free
(``model.mask``): a layer with none contributes nothing.  A ``ValueError`` of a
kind (the norm at ``e = 0`` and ``W^k = 0``) is raised again naming the layer.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .base import Penalty, factorial_scale
from .hessian import as_layer_hessian

__all__ = ["PenaltyTerm", "PenaltySum"]


@dataclass(frozen=True)
class PenaltyTerm:
    """One penalty object: ``sum_{k in layers} lam[i] * kind(W^k)``.

    ``lam``: one value per entry of ``layers``; ``lam_listed``, ``layers_given`` and
    ``options_given`` (the kind's option keys the JSON had; ``None``: all): how the JSON
    wrote them, so that ``to_dict`` writes back what was read.
    """
    kind: Penalty
    lam: tuple
    layers: tuple
    lam_listed: bool = False
    layers_given: bool = False
    options_given: frozenset | None = None

    def to_dict(self) -> dict:
        out = {"type": self.kind.type,
               "lambda": list(self.lam) if self.lam_listed else self.lam[0]}
        out.update({key: value for key, value in self.kind.options().items()
                    if self.options_given is None or key in self.options_given})
        if self.layers_given:
            out["layers"] = list(self.layers)
        return out


@contextlib.contextmanager
def _naming(kind, k):
    """Raise a kind's ``ValueError`` again with the penalty type and layer ``k`` in front."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{kind.type} penalty on layer {k}: {err}") from None


class PenaltySum:
    """``pen(W) = sum_terms sum_{k in term.layers} lambda_k phi_term(W^k)`` (``model.penalty``)."""

    def __init__(self, terms, listed: bool = False):
        self.terms = tuple(terms)
        self.listed = bool(listed)

    def to_dict(self):
        """The JSON ``"penalty"``: the one object, or the list when it was given as one."""
        items = [term.to_dict() for term in self.terms]
        return items if self.listed else items[0]

    def __repr__(self):
        return f"<PenaltySum {self.to_dict()!r}>"

    # -- what each layer of each term sees --------------------------------------------
    def _layers(self, model, w):
        """``(kind, k, lambda, slice, W, mask)`` for every term and layer with free penalised entries."""
        free = model.penalty_mask if model.mask is None else model.penalty_mask & model.mask
        for term in self.terms:
            for k, lam in zip(term.layers, term.lam):
                sl, shape = model.layer_slices[k - 1], model.layer_shapes[k - 1]
                mask = free[sl].reshape(shape)
                if lam == 0.0 or not mask.any():
                    continue
                yield term.kind, k, lam, sl, w[sl].reshape(shape), mask

    # -- the engine's questions -----------------------------------------------------------
    def value(self, model, w) -> float:
        total = 0.0
        for kind, k, lam, _, W, mask in self._layers(model, w):
            with _naming(kind, k):
                total += lam * kind.value(W, mask)
        return float(total)

    def gradient(self, model, w) -> np.ndarray:
        out = np.zeros(model.n_params)
        for kind, k, lam, sl, W, mask in self._layers(model, w):
            with _naming(kind, k):
                out[sl] += lam * np.asarray(kind.gradient(W, mask)).ravel()
        return out

    def hvp(self, model, w, v, kind_of_curvature="hessian") -> np.ndarray:
        """``pen'' v`` (``hessian``), or the Gauss-Newton part times ``v`` (``gauss_newton``)."""
        out = np.zeros(model.n_params)
        for kind, k, lam, sl, W, mask in self._layers(model, w):
            V = v[sl].reshape(W.shape)
            with _naming(kind, k):
                Hv = (kind.gauss_newton_hvp(W, mask, V) if kind_of_curvature == "gauss_newton"
                      else kind.hvp(W, mask, V))
            out[sl] += lam * np.asarray(Hv).ravel()
        return out

    def add_curvature(self, model, w, blocks, kind_of_curvature: str, structure: str):
        """``blocks`` (``structure`` row | layer | full) plus the penalty's curvature, as new arrays."""
        copied = {}
        for kind, k, lam, sl, W, mask in self._layers(model, w):
            with _naming(kind, k):
                H = (kind.gauss_newton(W, mask) if kind_of_curvature == "gauss_newton"
                     else kind.hessian(W, mask))
            H = as_layer_hessian(H, W.shape)
            if structure == "full":
                full = copied.setdefault(None, np.array(blocks, dtype=float))
                H.add_dense(full[sl, sl], lam)
            elif k not in copied:
                copied[k] = np.array(blocks[k - 1], dtype=float)
            if structure == "row":
                H.add_rows(copied[k], lam)
            elif structure == "layer":
                H.add_dense(copied[k], lam)
        if structure == "full":
            return copied.get(None, blocks)
        return [copied.get(k, blk) for k, blk in enumerate(blocks, start=1)]

    def diagonal(self, model, w, kind_of_curvature="hessian") -> np.ndarray:
        """``diag(pen'')`` ``(t,)`` (``gauss_newton``: of its positive semi-definite part)."""
        out = np.zeros(model.n_params)
        for kind, k, lam, sl, W, mask in self._layers(model, w):
            with _naming(kind, k):
                H = (kind.gauss_newton(W, mask) if kind_of_curvature == "gauss_newton"
                     else kind.hessian(W, mask))
            out[sl] += lam * as_layer_hessian(H, W.shape).diagonal_entries().ravel()
        return out

    def directional(self, model, w, v, order: int) -> np.ndarray:
        """``[pen, D pen[v], ..., D^order pen[v, ..., v]]`` along ``v``."""
        out = np.zeros(order + 1)
        for kind, k, lam, sl, W, mask in self._layers(model, w):
            with _naming(kind, k):
                coefficients = np.asarray(kind.taylor(W, mask, v[sl].reshape(W.shape), order))
            out += lam * factorial_scale(coefficients)
        return out

    def row_tensor(self, model, w, layer: int, rows, order: int):
        """``d^p pen / dW_j^p`` for rows ``rows`` of ``layer``: ``(R,) + (d,) * p``, or ``None`` (zero)."""
        total = None
        for kind, k, lam, _, W, mask in self._layers(model, w):
            if k != layer:
                continue
            with _naming(kind, k):
                T = kind.row_tensor(W, mask, rows, order)
            if T is not None:
                total = lam * T if total is None else total + lam * T
        return total
