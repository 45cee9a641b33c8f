"""Facts about a model's structure computed once per model (the engine's per-layer
layout, the bytes per example of a request): a weak-keyed memo, so that a model
no longer used takes its entries with it.  Only what depends on the architecture
alone may go here (a model's layers, sizes and sources never change)."""
from __future__ import annotations

import weakref

__all__ = ["per_model"]

_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_MISSING = object()


def per_model(model, key, compute):
    """``compute()`` for ``(model, key)``, computed on the first call only (on every
    call for a model-like object that cannot be a weak key)."""
    try:
        entries = _MEMO.get(model)
        if entries is None:
            entries = _MEMO[model] = {}
    except TypeError:
        return compute()
    value = entries.get(key, _MISSING)
    if value is _MISSING:
        value = entries[key] = compute()
    return value
