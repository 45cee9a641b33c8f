"""Propagations (layer types) and their registry (DESIGN §1).

A new layer type is one module (a :class:`Propagation` subclass) plus one
:func:`register_layer` call.
"""
from .base import Propagation
from .dense import Dense
from .quadratic import Quadratic
from .rbf import RBF

__all__ = ["Propagation", "Dense", "RBF", "Quadratic", "LAYERS", "register_layer", "get_layer_type"]

LAYERS: dict[str, type] = {}


def register_layer(cls):
    """Register a :class:`Propagation` subclass under ``cls.type`` (the JSON ``type``)."""
    if not (isinstance(cls, type) and issubclass(cls, Propagation)):
        raise TypeError(f"expected a Propagation subclass, got {cls!r}")
    if not cls.type:
        raise ValueError("a propagation class needs a non-empty .type")
    LAYERS[cls.type] = cls
    return cls


def get_layer_type(name):
    try:
        return LAYERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layer type {name!r}; known types: {sorted(LAYERS)}") from None


for _cls in (Dense, RBF, Quadratic):
    register_layer(_cls)
