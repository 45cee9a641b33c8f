"""Facts about a model's structure computed once per model (the engine's per-layer
layout, the bytes per example of a request), dropped with the model.  Only what
depends on the architecture alone may go here (a model's layers, sizes and sources
never change).

The memo is a plain dict keyed by ``id(model)`` (a lookup costs a dict access; a
``WeakKeyDictionary`` makes a weak reference on every lookup, about 0.5 us, several
times per call); ``weakref.finalize`` removes a model's entries when it is collected,
before its id can be reused."""
from __future__ import annotations

import weakref

__all__ = ["per_model"]

_MEMO: dict = {}
_MISSING = object()


def per_model(model, key, compute):
    """``compute()`` for ``(model, key)``, computed on the first call only (on every
    call for a model-like object that cannot be weakly referenced)."""
    entries = _MEMO.get(id(model))
    if entries is None:
        try:
            weakref.finalize(model, _MEMO.pop, id(model), None)
        except TypeError:
            return compute()
        entries = _MEMO[id(model)] = {}
    value = entries.get(key, _MISSING)
    if value is _MISSING:
        value = entries[key] = compute()
    return value
