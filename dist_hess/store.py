"""The zarr store of an evaluation (DESIGN.md §5, *contract*).

Layout of a zarr v3 group::

    attrs: format="dist_hess/1", model=<model JSON dict>, n_examples,
           complete=true                         (written last)
    weights (t,)   value ()   gradient (t,)
    curvature/<kind>/row/layer_<k>      (s_k, d_k, d_k)
    curvature/<kind>/layer/layer_<k>    (t_k, t_k)
    curvature/<kind>/full               (t, t)
    multipliers/layer_<k>               (n, s_k), chunked like the data

Layers are numbered as in the paper: ``k = 1..m`` for the layers that carry
weights; multipliers of the input layer, if an engine returns them, are
``layer_0``. Everything is float64 or JSON attributes; nothing is pickled.

Writing happens in four steps so that workers can fill the multipliers region
by region while the reduction runs, and a reader never mistakes a half-written
store for a result:

1. :func:`begin_store` creates the group with ``complete=false``;
2. :func:`create_multipliers`, then :func:`write_multipliers_block` per shard
   (on the workers, each task its own rows, chunk-aligned);
3. :func:`write_results` (value, gradient, curvature);
4. :func:`mark_complete`.

``dh.evaluate`` and :func:`write_store` (which does all four from in-memory
results) run them inside :func:`staged`: the store is written under a temporary
name next to its path, by one writer at a time, and renamed into place only when
complete (`dist_hess.atomic`); a failed write leaves the previous store as it was.
:func:`open_store` reads a complete store back, read-only.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr
import zarr.errors

from .atomic import exclusive_lock, replacing
from .curvature import KINDS, STRUCTURES, check_curvature
from .model import Model

__all__ = ["FORMAT", "Store", "open_store", "write_store", "staged",
           "check_writable", "check_directory_writable", "update_attrs",
           "begin_store", "create_multipliers", "write_multipliers_block",
           "write_results", "mark_complete", "curvature_path", "multipliers_path"]

FORMAT = "dist_hess/1"


# ---------------------------------------------------------------- names

def curvature_path(kind: str, structure: str, layer: int | None = None) -> str:
    """Path inside the group of a curvature array (``layer`` for row/layer only)."""
    check_curvature(kind, structure)
    if structure == "full":
        return f"curvature/{kind}/full"
    if layer is None:
        return f"curvature/{kind}/{structure}"
    return f"curvature/{kind}/{structure}/layer_{layer}"


def multipliers_path(layer: int) -> str:
    return f"multipliers/layer_{layer}"


def _store_location(path) -> str:
    if isinstance(path, os.PathLike):
        return os.fspath(path)
    if isinstance(path, str):
        return path
    raise TypeError(f"a store is a path or URL string, got {type(path).__name__}: the "
                    "workers open it themselves, so it cannot be an in-memory object")


def _json_attr(value: Any) -> Any:
    """A JSON-clean copy (numpy scalars and arrays become Python numbers and lists)."""
    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        raise TypeError(f"store attributes must be JSON, got {type(obj).__name__}")
    return json.loads(json.dumps(value, default=default))


def _model_dict(model) -> dict:
    return _json_attr(model.to_dict() if hasattr(model, "to_dict") else dict(model))


# ---------------------------------------------------------------- writing

def _refuse_foreign(location: str) -> None:
    """Overwriting is allowed for dist_hess stores and empty or missing paths only."""
    if "://" not in location:
        if not os.path.exists(location):
            return
        if os.path.isdir(location) and not os.listdir(location):
            return
    try:
        existing = zarr.open_group(location, mode="r")
    except Exception:  # noqa: BLE001 -- anything that is not a readable zarr group
        if "://" in location:
            return      # nothing there (object stores have no directories)
        raise ValueError(f"refusing to overwrite {location!r}: it exists and is not a "
                         f"dist_hess store") from None
    if existing.attrs.get("format") != FORMAT:
        raise ValueError(f"refusing to overwrite {location!r}: it is a zarr group but not a "
                         f"dist_hess store (format={existing.attrs.get('format')!r})")


def check_writable(path) -> str:
    """Refuse, before any work is done, a location no store can be written to; return it.

    ``ValueError`` naming the path for: anything there that is not a dist_hess store or
    an empty directory (the refusal `begin_store` applies), a parent that is a file, a
    parent directory -- or the existing store directory -- in which this process cannot
    create a file (`check_directory_writable`). Missing parent directories are fine, the write creates them. URLs
    (``s3://...``) get the first check only. ``dist-hess fit`` calls it before training,
    so a bad ``--out`` fails in a second.
    """
    location = _store_location(path)
    _refuse_foreign(location)
    if "://" in location:
        return location
    parent = os.path.dirname(os.path.abspath(location))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write a store at {location!r}: {parent!r} is a file, "
                         f"not a directory")
    for directory in [parent] + ([location] if os.path.isdir(location) else []):
        check_directory_writable(directory, f"a store at {location!r}")
    return location


def check_directory_writable(directory: str, target: str) -> None:
    """``ValueError`` ("cannot write TARGET: cannot create files in DIRECTORY") unless a
    file can be created in ``directory``: tried for real, with an anonymous temporary
    file (as root, ``os.access`` says yes to read-only file systems)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {target}: cannot create files in {directory!r} "
                         f"({err.strerror or err})") from None


def begin_store(path, model, weights, *, n_examples: int,
                attrs: Mapping[str, Any] | None = None) -> zarr.Group:
    """Create (or replace) a store with ``complete=false`` and the weights in it.

    An existing dist_hess store at ``path`` is replaced; anything else there is
    refused, so a mistyped path cannot erase unrelated data.
    """
    location = check_writable(path)
    group = zarr.open_group(location, mode="w")
    meta = dict(_json_attr(dict(attrs or {})))
    meta.update(format=FORMAT, model=_model_dict(model), n_examples=int(n_examples),
                complete=False)
    group.attrs.update(meta)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1:
        raise ValueError(f"weights must be a vector (t,), got shape {weights.shape}")
    group.create_array("weights", data=weights)
    return group


def create_multipliers(group: zarr.Group, units: Sequence[int], *, n_examples: int,
                       chunk_rows: int, first_layer: int = 1) -> list[str]:
    """Empty ``multipliers/layer_<k>`` arrays ``(n, s_k)`` with ``chunk_rows`` rows per chunk.

    Returns their paths in layer order. Rows never written read as NaN.
    """
    paths = []
    for offset, s_k in enumerate(units):
        name = multipliers_path(first_layer + offset)
        group.create_array(name, shape=(int(n_examples), int(s_k)), dtype="float64",
                           chunks=(max(1, int(chunk_rows)), max(1, int(s_k))),
                           fill_value=np.nan)
        paths.append(name)
    return paths


def write_multipliers_block(path, names: Sequence[str], start: int,
                            blocks: Sequence[np.ndarray]) -> None:
    """Write one shard's multipliers (rows ``start:start+n_shard``) into each array.

    Runs on the workers; the shard's rows must cover whole zarr chunks (the
    caller picks ``chunk_rows`` dividing every shard boundary), so concurrent
    tasks never touch the same chunk.
    """
    location = _store_location(path)
    for name, block in zip(names, blocks, strict=True):
        block = np.asarray(block, dtype=np.float64)
        if block.shape[0] == 0:
            continue
        array = zarr.open_array(location, path=name, mode="r+")
        array[start:start + block.shape[0]] = block


def write_results(group: zarr.Group, *, value: float | None = None,
                  gradient: np.ndarray | None = None,
                  curvature: Mapping[tuple[str, str], Any] | None = None) -> None:
    """Write value, gradient and curvature (``{(kind, structure): result}``).

    ``result`` is a list over layers ``k = 1..m`` for ``row`` and ``layer``, one
    ``(t, t)`` array for ``full``.
    """
    if value is not None:
        group.create_array("value", data=np.asarray(value, dtype=np.float64), overwrite=True)
    if gradient is not None:
        group.create_array("gradient", data=np.asarray(gradient, dtype=np.float64),
                           overwrite=True)
    for (kind, structure), result in (curvature or {}).items():
        if structure == "full":
            group.create_array(curvature_path(kind, structure),
                               data=np.asarray(result, dtype=np.float64), overwrite=True)
            continue
        for k, block in enumerate(result, start=1):
            group.create_array(curvature_path(kind, structure, k),
                               data=np.asarray(block, dtype=np.float64), overwrite=True)


def mark_complete(group: zarr.Group) -> None:
    """The last write: readers accept the store from now on."""
    group.attrs["complete"] = True


@contextlib.contextmanager
def staged(path) -> Iterator[str]:
    """Where to write a store that is to replace ``path`` (a context manager).

    For a local path: yields a temporary directory next to it, renamed to ``path``
    in one step when the block ends without an exception (and removed when it
    raises, leaving ``path`` as it was), while an exclusive lock keeps other
    writers of ``path`` out (`dist_hess.atomic.replacing`). Raises ``ValueError``
    when another writer holds the lock, or `check_writable` refuses ``path``. A URL
    is written in place (object stores have no rename, no lock).
    """
    location = check_writable(path)
    if "://" in location:
        yield location
        return
    with replacing(location) as staging:
        _refuse_foreign(location)            # again, now that no other writer can change it
        yield staging


def write_store(path, model, weights, *, n_examples: int, value: float | None = None,
                gradient: np.ndarray | None = None,
                curvature: Mapping[tuple[str, str], Any] | None = None,
                multipliers: Sequence[np.ndarray] | None = None,
                multipliers_first_layer: int = 1,
                chunk_rows: int | None = None,
                attrs: Mapping[str, Any] | None = None) -> str:
    """Write a complete store from in-memory results; returns its location.

    ``curvature`` maps ``(kind, structure)`` to the engine's result; extra
    JSON ``attrs`` (e.g. a training iteration) are stored next to the contract's.
    """
    with staged(path) as location:
        group = begin_store(location, model, weights, n_examples=n_examples, attrs=attrs)
        if multipliers is not None:
            rows = chunk_rows or max(1, int(n_examples))
            names = create_multipliers(group, [np.shape(m)[1] for m in multipliers],
                                       n_examples=n_examples, chunk_rows=rows,
                                       first_layer=multipliers_first_layer)
            for name, block in zip(names, multipliers):
                group[name][...] = np.asarray(block, dtype=np.float64)
        write_results(group, value=value, gradient=gradient, curvature=curvature)
        mark_complete(group)
    return _store_location(path)


_CONTRACT_ATTRS = ("format", "model", "n_examples", "complete")


def update_attrs(path, attrs: Mapping[str, Any]) -> str:
    """Add or replace JSON attributes of a complete store in place; returns its location.

    The one in-place update of a finished store's attributes (``dist-hess prune`` writes
    ``pruning_path`` with it). The store is validated by `open_store` first; the
    contract's keys (``format``, ``model``, ``n_examples``, ``complete``) are refused.
    Atomic on a local file system: the attributes live in the group's ``zarr.json``,
    which zarr's local store replaces by writing a temporary file and renaming it, so a
    reader sees the old or the new attributes, never a mix (object stores replace an
    object whole). A local store's writer lock is held meanwhile
    (`dist_hess.atomic.exclusive_lock`): a concurrent writer of the same path gets a
    ``ValueError``, and this one gets it while a writer replaces the store.
    """
    store = open_store(path)
    reserved = sorted(set(attrs) & set(_CONTRACT_ATTRS))
    if reserved:
        raise ValueError(f"update_attrs cannot change the contract attributes {reserved}")
    local = "://" not in store.path
    with exclusive_lock(store.path) if local else contextlib.nullcontext():
        group = zarr.open_group(store.path, mode="r+")
        group.attrs.update(_json_attr(dict(attrs)))
    return store.path


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Store:
    """A complete dist_hess store, opened read-only (use :func:`open_store`).

    Scalars and vectors are read eagerly; curvature and multipliers on request.
    ``group`` is the raw zarr group (mode ``"r"``).
    """

    path: str
    group: zarr.Group = field(repr=False)

    @property
    def attrs(self) -> dict:
        """All group attributes (contract keys and any extras), as a copy."""
        return dict(self.group.attrs)

    @property
    def model(self):
        return Model.from_dict(self.group.attrs["model"])

    @property
    def n_examples(self) -> int:
        return int(self.group.attrs["n_examples"])

    @property
    def weights(self) -> np.ndarray:
        return self.group["weights"][...]

    @property
    def value(self) -> float | None:
        return float(self.group["value"][...]) if "value" in self.group else None

    @property
    def gradient(self) -> np.ndarray | None:
        return self.group["gradient"][...] if "gradient" in self.group else None

    @property
    def curvatures(self) -> list[tuple[str, str]]:
        """The ``(kind, structure)`` pairs present."""
        if "curvature" not in self.group:
            return []
        found = []
        for kind, node in sorted(self.group["curvature"].members()):
            for structure, _ in sorted(node.members()):
                found.append((kind, structure))
        return found

    def curvature(self, kind: str = "hessian", structure: str = "row"):
        """The stored blocks: list over layers (row, layer) or one ``(t, t)`` array (full)."""
        check_curvature(kind, structure)
        if (kind, structure) not in self.curvatures:
            have = ", ".join(f"{k}:{s}" for k, s in self.curvatures) or "none"
            raise KeyError(f"store {self.path!r} has no {kind}:{structure} curvature "
                           f"(it has: {have})")
        if structure == "full":
            return self.group[curvature_path(kind, structure)][...]
        node = self.group[curvature_path(kind, structure)]
        layers = sorted(int(name.split("_")[1]) for name, _ in node.members())
        return [node[f"layer_{k}"][...] for k in layers]

    @property
    def multiplier_layers(self) -> list[int]:
        """Layer numbers ``k`` with stored multipliers."""
        if "multipliers" not in self.group:
            return []
        return sorted(int(name.split("_")[1]) for name, _ in self.group["multipliers"].members())

    def multipliers(self, k: int):
        """Multipliers ``e^k`` of layer ``k``, ``(n, s_k)``, as a lazy dask array."""
        import dask.array as da
        if k not in self.multiplier_layers:
            raise KeyError(f"store {self.path!r} has no multipliers for layer {k} "
                           f"(it has layers {self.multiplier_layers or 'none'})")
        return da.from_zarr(self.group[multipliers_path(k)])


def open_store(path) -> Store:
    """Open a store written by ``dh.evaluate`` / ``write_store`` / training, read-only.

    Raises ``ValueError`` for a group that is not a dist_hess store and for one
    whose writer never finished (no ``complete=true``).
    """
    location = _store_location(path)
    if "://" not in location and not os.path.exists(location):
        raise FileNotFoundError(f"no store at {location!r}")
    try:
        group = zarr.open_group(location, mode="r")
    except (zarr.errors.NodeNotFoundError, FileNotFoundError):
        raise ValueError(f"{location!r} is not a dist_hess store: no zarr group there") from None
    fmt = group.attrs.get("format")
    if fmt != FORMAT:
        raise ValueError(f"{location!r} is not a dist_hess store: its format attribute is "
                         f"{fmt!r}, expected {FORMAT!r}")
    if group.attrs.get("complete") is not True:
        raise ValueError(f"{location!r} is an incomplete dist_hess store (no complete=true): "
                         f"the run writing it was interrupted or is still going; "
                         f"recompute it")
    return Store(path=location, group=group)
