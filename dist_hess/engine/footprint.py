"""What a request's results occupy, checked against the memory limit before a shard runs.

The per-batch temporaries of the engine are bounded by ``memory_budget``
(`dist_hess.engine.budget`); the *results* are not: they have a fixed size per request,
whatever the batch. In float64, counting two copies (the shard's accumulator and the
assembled or finalised result exist at once):

=============================  ===========================================
``curvature`` ``full``         ``2 * 8 t^2``
``curvature`` ``layer``        ``2 * 8 sum_k t_k^2``  (``t_k = s_k d_k``)
``curvature`` ``row``          ``2 * 8 sum_k s_k d_k^2``
``multipliers`` for ``n`` rows ``2 * 8 n sum_k s_k``  (the batches and their concatenation)
=============================  ===========================================

`check_request` refuses a request whose items, one by one or together, exceed the
memory limit (`dist_hess.memory`), before anything is allocated. `shard_sums` runs it
on every shard (with the shard's rows), and ``dh.evaluate`` on the client before it
builds the graph (with all ``n`` rows when the multipliers are gathered there), so
Model methods, in-process and Dask evaluations refuse alike.
"""
from __future__ import annotations

import math

from ..memory import check_allocation, format_bytes, memory_limit

__all__ = ["COPIES", "result_items", "check_request"]

#: Copies of a result that exist at once (accumulator and assembled or finalised result).
COPIES = 2
WORD = 8

_HVP = ("Hessian-vector products (dh.evaluate(hvp=v), model.hvp; in dh.fit "
        "method='newton-cg' or 'block-newton')")


def _curvature_words(model, structure: str) -> int:
    if structure == "full":
        return model.n_params ** 2
    if structure == "layer":
        return sum((s * d) ** 2 for s, d in model.layer_shapes)
    return sum(s * d * d for s, d in model.layer_shapes)


def _curvature_item(model, kind: str, structure: str) -> tuple[int, str, tuple[str, ...]]:
    t = model.n_params
    words = _curvature_words(model, structure)
    if structure == "full":
        what = f"the full {t:,} x {t:,} {kind} matrix ({COPIES} copies)"
        ways = ("structure='row' or 'layer' blocks (in dh.fit: method='block-newton')", _HVP)
    elif structure == "layer":
        sizes = [s * d for s, d in model.layer_shapes]
        what = (f"the {kind} layer blocks (the largest {max(sizes):,} x {max(sizes):,}, "
                f"{COPIES} copies)")
        ways = ("structure='row' (one block per unit)", _HVP)
    else:
        what = f"the {kind} row blocks ({COPIES} copies)"
        ways = (_HVP,)
    return COPIES * WORD * words, what, ways


def result_items(model, req, rows: int) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(bytes, what, alternatives)`` for every result of ``req`` whose size does not
    depend on the batch: curvature blocks, and the multipliers of ``rows`` examples."""
    items = [_curvature_item(model, kind, structure) for kind, structure in req.curvature]
    if req.multipliers and rows > 0:
        units = sum(model.sizes[1:])
        items.append((COPIES * WORD * rows * units,
                      f"the multipliers of {rows:,} examples ({rows:,} x {units:,} numbers, "
                      f"{COPIES} copies)",
                      ("dh.evaluate(..., multipliers=True, store=PATH): the workers write them "
                       "to zarr shard by shard and the result reads them lazily",)))
    return items


def check_request(model, req, rows: int) -> None:
    """Refuse ``req`` on ``rows`` examples when its results would exceed the memory limit.

    The limit is ``req.memory_limit`` (bytes, ``math.inf`` for none) when the caller set
    it (``dh.evaluate`` passes the client's to the workers), else this process's
    (`dist_hess.memory.memory_limit`). Raises `dist_hess.memory.MemoryLimitError`.
    """
    gathered = rows if req.multipliers else 0
    if not (req.curvature or gathered):
        return
    given = req.memory_limit
    bound = memory_limit() if given is None else (None if math.isinf(given) else int(given))
    total = COPIES * WORD * (sum(_curvature_words(model, st) for _, st in req.curvature)
                             + gathered * sum(model.sizes[1:]))
    if bound is None or total <= bound:                  # every item fits, and all together
        return
    items = result_items(model, req, rows)
    limit = {} if given is None else {"limit": bound}
    for nbytes, what, ways in items:
        check_allocation(nbytes, what, ways, **limit)
    if len(items) > 1:                                   # total: the sum of the items
        parts = ", ".join(f"{what.split(' (')[0]} {format_bytes(nbytes)}"
                          for nbytes, what, _ in items)
        check_allocation(total, f"the results requested together ({parts})",
                         ("ask for fewer at once",), **limit)
