"""Examples split into shards along rows.

``X`` and ``Y`` may be numpy arrays, dask arrays chunked along examples only,
or zarr arrays (read by the workers chunk by chunk through ``da.from_zarr``).
A dask array split along its columns is refused: a shard must hold whole
examples.

The shard boundaries decide the reduction tree, so by default they depend on
the number of examples only (never on the number of workers): the same data
gives the same bits on any cluster.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import reduce

import numpy as np

from ..model import NO_EXAMPLES, refuse_complex
from .cluster import resolve_client
from .transport import load_shards

__all__ = ["Shards", "as_shards", "default_chunk_rows", "persist_data", "is_dask_array",
           "MIN_SHARD_ROWS", "MAX_DEFAULT_SHARDS"]

#: Default sharding of in-memory data: at most this many shards ...
MAX_DEFAULT_SHARDS = 32
#: ... of at least this many rows each (fewer only when there are fewer examples).
MIN_SHARD_ROWS = 1024


def default_chunk_rows(n: int) -> int:
    """Rows per shard for ``n`` in-memory examples: balanced, worker-count independent.

    From four shards on, their number is a multiple of four, so that two and four workers
    get equal shares (`ShardPool` places contiguous runs): at ``n = 10,000`` eight shards
    of 1,250 rows, 5,000 rows per worker of two, where nine of 1,112 gave one worker 5,556
    rows and the other 4,444, and a call waits for the busier one."""
    shards = max(1, min(MAX_DEFAULT_SHARDS, n // MIN_SHARD_ROWS))
    if shards >= 4:
        shards -= shards % 4
    return max(1, math.ceil(n / shards))


def is_dask_array(a) -> bool:
    """Whether ``a`` is a ``dask.array.Array``. No dask array exists before
    ``dask.array`` is imported, so this answers without importing it."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(a, da.Array)


def _is_zarr(a) -> bool:
    """Whether ``a`` is a ``zarr.Array`` (without importing zarr, as `is_dask_array`)."""
    zarr = sys.modules.get("zarr")
    return zarr is not None and isinstance(a, zarr.Array)


def _check_row_chunks(name: str, a) -> None:
    if any(len(c) > 1 for c in a.chunks[1:]):
        raise ValueError(
            f"{name} is chunked along its columns (chunks={a.chunks}); dist_hess splits "
            f"examples (rows) only, each shard needs whole rows. Rechunk first: "
            f"{name} = {name}.rechunk({{1: -1}})")


@dataclass(frozen=True)
class Shards:
    """``X``, ``Y`` and the row offsets of the shards (``boundaries[i]:boundaries[i+1]``)."""

    X: object
    Y: object
    boundaries: tuple[int, ...]

    @property
    def n_examples(self) -> int:
        return self.boundaries[-1]

    @property
    def n_shards(self) -> int:
        return len(self.boundaries) - 1

    @property
    def lazy(self) -> bool:
        return is_dask_array(self.X)

    @property
    def row_chunks(self) -> tuple[int, ...]:
        return tuple(np.diff(self.boundaries).tolist())

    def store_chunk_rows(self) -> int:
        """Largest row count that divides every shard boundary: the zarr chunk
        of per-example outputs, so that each shard writes whole chunks."""
        inner = [b for b in self.boundaries[1:-1] if b > 0]
        return reduce(math.gcd, inner, 0) or max(1, self.n_examples)

    def numpy_blocks(self):
        """``(start, X_shard, Y_shard)`` for in-memory data, in order."""
        b = self.boundaries
        for i in range(self.n_shards):
            yield b[i], self.X[b[i]:b[i + 1]], self.Y[b[i]:b[i + 1]]

    def as_dask(self) -> "Shards":
        """The same shards as dask arrays (numpy data is embedded chunk by chunk)."""
        if self.lazy:
            return self
        import dask.array as da
        rows = self.row_chunks
        X = da.from_array(self.X, chunks=(rows,) + self.X.shape[1:])
        Y = da.from_array(self.Y, chunks=(rows,) + self.Y.shape[1:])
        return Shards(X, Y, self.boundaries)

    def dask_blocks(self):
        """``(start, X_block, Y_block)`` as ``Delayed`` objects, in order."""
        xs = self.X.to_delayed().ravel()
        ys = self.Y.to_delayed().ravel()
        return list(zip(self.boundaries[:-1], xs, ys))


def _boundaries(row_chunks) -> tuple[int, ...]:
    return tuple(int(b) for b in np.concatenate([[0], np.cumsum(row_chunks, dtype=np.int64)]))


def _as_dask(name: str, a, chunk_size):
    import dask.array as da
    if _is_zarr(a):
        rows = chunk_size or a.chunks[0]
        return da.from_zarr(a, chunks=(rows,) + tuple(a.shape[1:]))
    _check_row_chunks(name, a)
    return a.rechunk({0: chunk_size}) if chunk_size else a


def as_shards(X, Y, chunk_size: int | None = None) -> Shards:
    """Validate ``X (n, s_0)`` and ``Y (n, ...)`` and split them along rows.

    ``chunk_size`` (rows per shard) rechunks dask/zarr inputs and splits numpy
    ones; without it dask arrays keep their chunks, zarr arrays their row chunks,
    and numpy arrays get :func:`default_chunk_rows`.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size!r}")
    chunk_size = None if chunk_size is None else int(chunk_size)
    lazy = any(is_dask_array(a) or _is_zarr(a) for a in (X, Y))
    if lazy:
        import dask.array as da
        X = _as_dask("X", X, chunk_size) if is_dask_array(X) or _is_zarr(X) else np.asarray(X)
        Y = _as_dask("Y", Y, chunk_size) if is_dask_array(Y) or _is_zarr(Y) else np.asarray(Y)
    else:
        X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2:
        raise ValueError(f"X must be a matrix (n examples, s_0 inputs), got shape {X.shape}")
    if Y.ndim not in (1, 2):
        raise ValueError(f"Y must be (n,) or (n, outputs), got shape {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} examples (rows) but Y has {Y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError(NO_EXAMPLES)
    refuse_complex(X, "X")
    refuse_complex(Y, "Y")
    if not lazy:
        rows = chunk_size or default_chunk_rows(X.shape[0])
        chunks = [rows] * (X.shape[0] // rows) + ([X.shape[0] % rows] if X.shape[0] % rows else [])
        return Shards(X, Y, _boundaries(chunks))
    # Align the rows of both on the dask one (X first).
    lead = X if is_dask_array(X) else Y
    rows = lead.chunks[0]
    X = X.rechunk({0: rows}) if is_dask_array(X) else da.from_array(X, chunks=(rows,) + X.shape[1:])
    Y = Y.rechunk({0: rows}) if is_dask_array(Y) else da.from_array(Y, chunks=(rows,) + Y.shape[1:])
    return Shards(X, Y, _boundaries(rows))


def persist_data(X, Y, client=None, *, chunk_size: int | None = None):
    """Load ``X, Y`` onto the cluster's workers once and return them as dask arrays.

    Pass the returned arrays to every later :func:`dist_hess.evaluate` call
    (e.g. each Newton iteration): the shards stay in the workers' memory and
    only weights and partial sums travel. Numpy data are not embedded in the graph:
    the workers read them from shard files when they all run on this machine, else
    they are scattered once (`dist_hess.distributed.transport`).

    ``client``: a ``distributed.Client`` or a scheduler address; ``None`` means
    the current client, else the embedded local cluster.
    """
    shards = as_shards(X, Y, chunk_size)
    client = resolve_client(client)
    if not shards.lazy:                 # numpy: read by the workers, not sent in a graph
        return load_shards(client, shards.X, shards.Y, shards.boundaries)
    X, Y = client.persist([shards.X, shards.Y])
    return X, Y
