"""How in-memory (numpy) data reach the workers: loaded by them, never inside a graph.

``da.from_array(X)`` puts every shard into the task graph: the client sends the
whole data set to the scheduler in one message (distributed warns "Sending large
graph of size 59.89 MiB" for 10,000 x 784 doubles), and the scheduler keeps a copy
for as long as the persisted array lives. Instead, `load_shards` returns dask arrays
whose chunks are the shards ``boundaries[i]:boundaries[i+1]``, made by one of:

- **files** (every worker runs on this machine, e.g. a ``LocalCluster``): each shard is
  written once with ``numpy.save`` to a temporary directory, and a worker reads its
  shards with ``numpy.load``; the graph holds only file names, so a worker that dies
  costs a re-read, never lost data. The directory is removed once neither returned
  array is referenced, or at exit;
- **scatter** (some worker elsewhere): the shards are scattered once, one future each
  (``hash=False``, no broadcast); a shard held only by a worker that dies is lost, and
  calls that need it fail. Give the data as dask or zarr arrays (read by the workers,
  recomputable) to survive that on a multi-machine cluster.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref

import numpy as np

__all__ = ["load_shards", "workers_are_local"]

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def workers_are_local(client) -> bool:
    """Whether every worker of ``client`` runs on this machine (loopback or this host's name)."""
    hosts = {info.get("host", "") for info in client.scheduler_info(n_workers=-1)["workers"].values()}
    if not hosts:
        return False
    here = {socket.gethostname(), socket.getfqdn()}
    try:
        here.add(socket.gethostbyname(socket.gethostname()))
    except OSError:                                    # pragma: no cover - no resolver
        pass
    return all(h.startswith(_LOOPBACK) or h in here for h in hosts)


def _load(path: str) -> np.ndarray:
    return np.load(path)


def load_shards(client, X: np.ndarray, Y: np.ndarray, boundaries) -> tuple:
    """``(X, Y)`` as persisted dask arrays, one chunk per shard, loaded by the workers."""
    import dask.array as da
    from dask import delayed

    b = [int(v) for v in boundaries]
    pieces = {"X": [X[b[i]:b[i + 1]] for i in range(len(b) - 1)],
              "Y": [Y[b[i]:b[i + 1]] for i in range(len(b) - 1)]}
    directory = None
    if workers_are_local(client):
        import dask

        directory = tempfile.mkdtemp(prefix="dist_hess-data-",
                                     dir=dask.config.get("temporary-directory", None))
        sources = {}
        for name, parts in pieces.items():
            sources[name] = []
            for i, part in enumerate(parts):
                path = os.path.join(directory, f"{name}_{i}.npy")
                np.save(path, np.ascontiguousarray(part))
                sources[name].append(delayed(_load, pure=True)(path))
    else:
        sources = {name: client.scatter(parts, hash=False) for name, parts in pieces.items()}
    arrays = []
    for name, parts in pieces.items():
        chunks = [da.from_delayed(src, shape=part.shape, dtype=part.dtype)
                  for src, part in zip(sources[name], parts)]
        arrays.append(da.concatenate(chunks, axis=0))
    Xd, Yd = client.persist(arrays)
    if directory is not None:                # removed once neither array is referenced
        files = _Files(directory)
        Xd._dist_hess_files = Yd._dist_hess_files = files
        weakref.finalize(files, shutil.rmtree, directory, True)
    return Xd, Yd


class _Files:
    """The shard files' directory, referenced by the arrays that read it."""

    __slots__ = ("directory", "__weakref__")

    def __init__(self, directory: str):
        self.directory = directory
