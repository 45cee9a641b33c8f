"""The per-shard numpy engine: forward cache, backward passes, block assembly,
curvature-vector products and Taylor propagation.

Entry points (docs/internals.md): build a :class:`Request`, run
:func:`shard_sums` on each shard, combine with :func:`add_sums`, then
:func:`finalize` once (penalty and mask).
"""
from .finalization import finalize
from .request import Request
from .sums import add_sums, shard_sums, zero_sums

__all__ = ["Request", "shard_sums", "add_sums", "zero_sums", "finalize"]
