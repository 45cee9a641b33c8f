"""Data-parallel evaluation on Dask: shard -> combine (fixed tree) -> finalize.

- :func:`evaluate` -- ``dh.evaluate`` (DESIGN.md §3-§4);
- :func:`persist_data` -- keep ``X, Y`` in the workers' memory across calls;
- :mod:`.cluster` -- which client runs it (current, address, embedded LocalCluster);
- :mod:`.packing`, :mod:`.tree`, :mod:`.tasks` -- packed transport of symmetric
  blocks, the fixed reduction tree, and the functions the workers run.
"""
from .cluster import close_clients
from .data import persist_data
from .evaluate import Evaluation, evaluate

__all__ = ["evaluate", "Evaluation", "persist_data", "close_clients"]
