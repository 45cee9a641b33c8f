"""Where an analysis reads its fit: a store, or a tuple ``(model, w, X, Y)``.

:func:`resolve` turns any accepted ``source`` into a :class:`Fitted`: the
unmasked model, the weights, which parameters are free (not pruned), and
accessors that read what a store holds and compute what it does not:

* curvature (``kind``, ``structure``): the stored array when present, else one
  cut from a larger stored structure (``full`` -> ``layer`` -> ``row``), else
  computed from the data (``dh.evaluate`` on ``client`` when one is given,
  ``model.curvature`` otherwise) and, for a store opened with ``save=True``,
  written back into it.  A store without the curvature and without data raises
  ``LookupError`` naming the command that computes it.
* the loss sum ``sum_i g_i`` (no penalty): the stored value minus the penalty.
* per-example gradients (the sandwich's meat): from the stored multipliers and
  a forward pass on ``X`` when the store has them, else a backward pass on
  ``(X, Y)``.  A store holds no data, so these need ``data=X`` or ``(X, Y)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..model import Model
from .masking import MaskedModel
from .per_example import gradient_outer_sums, gradient_projection_sums

__all__ = ["Fitted", "resolve", "cut_structure", "loss_sum"]

_ORDER = {"row": 0, "layer": 1, "full": 2}


def loss_sum(model, w, X, Y) -> float:
    """``sum_i g(x^m_i, y_i)``: the objective without its penalty (unmasked ``model``)."""
    model = model.with_mask(None)
    value = model.value(w, X, Y)
    if model.penalty is not None:
        value -= model.penalty.value(model, np.asarray(w, dtype=float))
    return float(value)


def cut_structure(model, blocks, have: str, want: str):
    """Curvature in structure ``want`` cut from ``blocks`` in the larger structure ``have``."""
    if _ORDER[want] > _ORDER[have]:
        raise ValueError(f"cannot build {want} blocks from {have} blocks")
    if want == have:
        return blocks
    if have == "full":
        blocks = [np.asarray(blocks)[sl, sl] for sl in model.layer_slices]
        if want == "layer":
            return blocks
    rows = []
    for blk, (s, d) in zip(blocks, model.layer_shapes):
        B = np.asarray(blk).reshape(s, d, s, d)
        rows.append(np.stack([B[j, :, j, :] for j in range(s)]))
    return rows


@dataclass
class Fitted:
    """A fitted model as the analysis sees it (see the module docstring).

    ``model`` is unmasked; ``free`` marks the estimated parameters; ``w`` has
    zeros at the pruned entries.  ``X``/``Y`` are ``None`` when not given.
    """

    model: object
    w: np.ndarray
    free: np.ndarray
    n_examples: int
    X: object = None
    Y: object = None
    store: object = None
    client: object = None
    save: bool = False
    stored_value: float | None = None
    _curvature: dict = field(default_factory=dict, repr=False)

    @property
    def masked_model(self):
        """The model with its mask (a :class:`MaskedModel` when anything is pruned)."""
        if np.all(self.free):
            return self.model
        return MaskedModel(self.model, self.free)

    @property
    def n_free(self) -> int:
        return int(self.free.sum())

    @property
    def has_data(self) -> bool:
        return self.X is not None and self.Y is not None

    def where(self) -> str:
        return f"store {self.store.path!r}" if self.store is not None else "the given model"

    # -- curvature --------------------------------------------------------------------
    def stored_curvatures(self) -> list[tuple[str, str]]:
        return list(self.store.curvatures) if self.store is not None else []

    def available(self, kind: str) -> list[str]:
        """Structures of ``kind`` readable without computing, largest first."""
        have = {s for k, s in self.stored_curvatures() if k == kind}
        have |= {s for k, s in self._curvature if k == kind}
        if not have:
            return []
        top = max(have, key=_ORDER.get)
        return [s for s in ("full", "layer", "row") if _ORDER[s] <= _ORDER[top]]

    def curvature(self, kind: str = "hessian", structure: str = "full"):
        """Curvature of the unmasked model at ``w`` (the engine's layout for ``structure``)."""
        key = (kind, structure)
        if key in self._curvature:
            return self._curvature[key]
        for k, s in list(self._curvature):
            if k == kind and _ORDER[s] > _ORDER[structure]:
                return cut_structure(self.model, self._curvature[(k, s)], s, structure)
        stored = [s for k, s in self.stored_curvatures() if k == kind]
        for have in sorted(stored, key=_ORDER.get):
            if _ORDER[have] >= _ORDER[structure]:
                blocks = self.store.curvature(kind, have)
                self._curvature[(kind, have)] = blocks
                return cut_structure(self.model, blocks, have, structure)
        if not self.has_data:
            have = ", ".join(f"{k}:{s}" for k, s in self.stored_curvatures()) or "none"
            raise LookupError(
                f"{self.where()} holds no {kind} curvature of structure {structure} or larger "
                f"(it has: {have}); pass data=(X, Y) to compute it, or store it with "
                f"dist-hess derivatives ... --curvature {kind}:{structure}")
        blocks = self._compute_curvature(kind, structure)
        self._curvature[key] = blocks
        if self.store is not None and self.save:
            self._write_curvature(kind, structure, blocks)
        return blocks

    def _compute_curvature(self, kind, structure):
        if self.client is not None:
            from ..distributed import evaluate
            result = evaluate(self.model, self.w, self.X, self.Y, curvature=(kind, structure),
                              client=self.client)
            return result.curvature
        return self.model.curvature(self.w, np.asarray(self.X), np.asarray(self.Y), kind=kind,
                                    structure=structure)

    def _write_curvature(self, kind, structure, blocks):
        from ..store import add_curvature, open_store
        self.store = open_store(add_curvature(self.store.path, {(kind, structure): blocks}))

    def hvp(self, v, kind: str = "hessian") -> np.ndarray:
        if not self.has_data:
            raise LookupError("curvature-vector products need the data: pass data=(X, Y)")
        return self.model.hvp(self.w, np.asarray(self.X), np.asarray(self.Y), v, kind=kind)

    # -- first order --------------------------------------------------------------------
    def loss_sum(self) -> float:
        """``sum_i g_i`` at ``w`` (the penalty removed from the stored or computed value)."""
        model = self.model
        if self.stored_value is not None:
            value = self.stored_value
            if model.penalty is not None:
                value -= model.penalty.value(model, self.w)
            return float(value)
        if not self.has_data:
            raise LookupError(f"{self.where()} holds no value; pass data=(X, Y)")
        return loss_sum(model, self.w, np.asarray(self.X), np.asarray(self.Y))

    def objective_summary(self) -> tuple[float | None, float | None]:
        """``(E(w), ||dE/dw||)`` over the free parameters: stored, else computed from the
        data (one pass), else ``(stored value or None, None)``."""
        value = self.stored_value
        gradient = None if self.store is None else self.store.gradient
        if (value is None or gradient is None) and self.has_data:
            if self.client is not None:
                from ..distributed import evaluate
                result = evaluate(self.model, self.w, self.X, self.Y, client=self.client)
                value, gradient = result.value, result.gradient
            else:
                value, gradient = self.model.value_and_gradient(self.w, np.asarray(self.X),
                                                                np.asarray(self.Y))
        norm = None if gradient is None else float(np.linalg.norm(np.asarray(gradient) * self.free))
        return (None if value is None else float(value)), norm

    def stored_multipliers(self):
        """The store's multipliers ``[e^1..e^m]`` (lazy), or ``None`` when not all are there."""
        if self.store is None:
            return None
        layers = self.store.multiplier_layers
        m = len(self.model.layers)
        if not all(k in layers for k in range(1, m + 1)):
            return None
        return [self.store.multipliers(k) for k in range(1, m + 1)]

    def _per_example_inputs(self):
        """``(Y or None, multipliers or None)`` for per-example gradients (the sandwich)."""
        if self.X is None:
            raise LookupError(
                f"the sandwich needs per-example gradients: pass data=X (with the stored "
                f"multipliers) or data=(X, Y); {self.where()} holds no data")
        multipliers = self.stored_multipliers()
        if multipliers is None and self.Y is None:
            raise LookupError(f"{self.where()} has no multipliers: pass data=(X, Y)")
        return (None if multipliers is not None else self.Y), multipliers

    def meat(self, blocks):
        """``sum_i g_i[b] g_i[b]'`` for each index array ``b`` (no penalty in ``g_i``)."""
        Y, multipliers = self._per_example_inputs()
        return gradient_outer_sums(self.model, self.w, self.X, Y, blocks=blocks,
                                   multipliers=multipliers)

    def meat_products(self, V):
        """``V' (sum_i g_i g_i') V`` for directions ``V (t, k)`` (no ``t x t`` matrix)."""
        Y, multipliers = self._per_example_inputs()
        return gradient_projection_sums(self.model, self.w, self.X, Y, directions=V,
                                        multipliers=multipliers)


def _as_data(data):
    if data is None:
        return None, None
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError("data must be X or a pair (X, Y)")
        return data[0], data[1]
    return data, None


def _named_by_columns(model, X):
    """``model`` with ``X``'s DataFrame column names as ``input_names`` when it has none."""
    columns = getattr(X, "columns", None)
    if model.input_names is not None or columns is None or len(columns) != model.inputs:
        return model
    return model.with_names([str(c) for c in columns])


def resolve(source, *, data=None, client=None, save: bool = False) -> Fitted:
    """A :class:`Fitted` from a store path, an open store, a :class:`Fitted`, or ``(model, w, X, Y)``.

    ``data``: ``X`` or ``(X, Y)`` for a store (stores hold no data); a pandas ``X`` (here
    or in the tuple) names the inputs of a model without ``input_names`` by its columns;
    ``client``: compute missing curvature on this Dask client; ``save``: write
    computed curvature back into the store.
    """
    from ..store import Store, open_store

    if isinstance(source, Fitted):
        return source
    if isinstance(source, (str, os.PathLike)):
        source = open_store(source)
    if isinstance(source, Store):
        masked = Model.from_dict(source.attrs["model"])
        free, model = masked.free, masked.with_mask(None)
        X, Y = _as_data(data)
        model = _named_by_columns(model, X)
        w = np.asarray(source.weights, dtype=float) * free
        if X is not None and np.shape(X)[0] != source.n_examples:
            raise ValueError(f"data has {np.shape(X)[0]} examples but the store was computed "
                             f"on {source.n_examples}")
        return Fitted(model=model, w=w, free=free, n_examples=source.n_examples, X=X, Y=Y,
                      store=source, client=client, save=save, stored_value=source.value)
    if isinstance(source, (tuple, list)) and len(source) == 4:
        model, w, X, Y = source
        free, model = model.free, _named_by_columns(model.with_mask(None), X)
        w = model.check_weights(w) * free
        X, Y = model.check_data(np.asarray(X), Y)
        return Fitted(model=model, w=w, free=free, n_examples=int(X.shape[0]), X=X, Y=Y,
                      client=client)
    raise TypeError("source must be a store path, an open store (dh.open_store), or a tuple "
                    f"(model, w, X, Y); got {type(source).__name__}")
