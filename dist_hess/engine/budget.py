"""Memory sizing inside a shard: how many examples go through the engine at once.

A shard's examples are processed in *batches* of rows so that no ``n x d^2``
array, nor all per-example Hessians of the shard, ever exist at once: the batch
is ``memory_budget // bytes_per_example`` rows (at least one), and at most
:data:`CACHE_ROWS` in a shard of more than twice as many (cache locality).  The estimate
counts, per example, the words of the forward cache, the frontier blocks the
second-order backward pass carries (:mod:`.backward`), the per-unit tensors of
propagations that are not linear in their weights, and the accumulator
temporaries of the requested structures.  (Rows per *shard* are the Dask
layer's ``chunk_size``; this module only splits one shard.)
"""
from __future__ import annotations

from .backward import diag_only_layers
from .per_model import per_model

__all__ = ["DEFAULT_MEMORY_BUDGET", "CACHE_ROWS", "bytes_per_example", "batch_rows"]

#: bytes of per-example temporaries inside one shard (256 MiB).
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: rows per batch in a shard of more than twice as many: a batch's arrays then stay in
#: the cache between the passes that read them again.  Measured at one thread (AMD EPYC,
#: 1 MiB L2 per core): P3 gradient and HVP 1.5x faster at 20,000 rows, 1.1x and 1.3x
#: at 4,000; P4 (784 inputs, GEMM-bound) unchanged; below ~1,000 rows a batch pays the
#: per-batch set-up (P2's 1,797 rows in two batches: 4-7% slower, hence one batch up to
#: ``2 * CACHE_ROWS``).
CACHE_ROWS = 1024


def bytes_per_example(model, req) -> int:
    """Estimated bytes of engine temporaries per example for request ``req`` (computed
    once per model and shape of request)."""
    structures = frozenset(st for _, st in req.curvature)
    order = None if req.directional is None else req.directional[1]
    key = ("bytes_per_example", structures, bool(req.curvature), bool(req.hvp), order)
    return per_model(model, key, lambda: _bytes_per_example(model, structures, bool(req.curvature),
                                                            bool(req.hvp), order))


def _bytes_per_example(model, structures, curvature, hvp, order) -> int:
    sizes = model.sizes
    S = sum(sizes[1:])
    r = [layer.propagation.n_inputs for layer in model.layers]
    s = [layer.units for layer in model.layers]
    d = [layer.propagation.n_row_params for layer in model.layers]
    words = sum(r) + 6 * S + 4 * sizes[-1] ** 2
    # propagations not linear in their weights hold (n, s, d[, d]) tensors per example
    unit_layers = [k for k, layer in enumerate(model.layers)
                   if not layer.propagation.linear_in_weights]
    if curvature:
        # frontier blocks (the input layer is never carried; diagonal-only layers carry a diagonal)
        diag = set(diag_only_layers(model)) if structures == {"row"} else set()
        for k, layer in enumerate(model.layers, start=1):
            si, ri = s[k - 1], r[k - 1]
            words += 3 * (si if k in diag else si * si)
            carried = [p for p in layer.sources if p != 0]
            if any(p not in diag for p in carried):
                words += 3 * ri * ri
            elif carried:
                words += 3 * ri
    if curvature or hvp:
        words += sum(2 * si * di + si * di * di + si * di * ri + si * ri * ri
                     for k, (si, di, ri) in enumerate(zip(s, d, r)) if k in unit_layers)
    if "row" in structures:
        words += 2 * max(d)
    if "layer" in structures or "full" in structures:
        words += 2 * max(si * di for si, di in zip(s, d))
    if "full" in structures:
        words += 4 * S * S + 3 * max(d) * max(s)
        words += max([s[k] * d[k] * max(s) for k in unit_layers], default=0)
    if order is not None:
        p = order + 1
        words += 4 * p * (sum(r) + 3 * S + sum(si * ri for si, ri in zip(s, r)) // max(len(s), 1))
    return 8 * max(words, 1)


def batch_rows(model, req, n: int) -> int:
    """Rows per batch in a shard of ``n`` examples: ``memory_budget // bytes_per_example``,
    at most :data:`CACHE_ROWS` when ``n > 2 * CACHE_ROWS``, in 1..n."""
    budget = req.memory_budget or DEFAULT_MEMORY_BUDGET
    rows = budget // bytes_per_example(model, req)
    if n > 2 * CACHE_ROWS:
        rows = min(rows, CACHE_ROWS)
    return int(max(1, min(n, rows)))
