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
4. :func:`mark_complete` (with a checksum of every attribute).

``dh.evaluate`` and :func:`write_store` (which does all four from in-memory
results) run them inside :func:`staged`: the store is written under a temporary
name next to its path, by one writer at a time, and renamed into place only when
complete (`dist_hess.atomic`); a failed write leaves the previous store as it was.

Every array is float64, compressed and then checksummed (``crc32c``), with every
chunk written and NaN as its (never read) fill value. :func:`open_store` reads a
complete store back, read-only, after checking its attributes and the presence,
shape and chunks of every array against the model; damage anywhere raises
`DamagedStoreError` naming the array and chunk (`dist_hess.integrity`).
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
from zarr.codecs import Crc32cCodec, ZstdCodec

from .atomic import exclusive_lock, replacing
from .curvature import KINDS, check_curvature
from .integrity import (DamagedStoreError, attribute_checksums, check_attribute_checksums, lazy,
                        missing_chunks, open_strict, read)
from .model import Model

__all__ = ["FORMAT", "Store", "DamagedStoreError", "open_store", "write_store", "staged",
           "check_writable", "check_directory_writable", "update_attrs", "add_curvature",
           "begin_store", "create_multipliers", "write_multipliers_block",
           "write_results", "mark_complete", "curvature_path", "multipliers_path"]

FORMAT = "dist_hess/1"
#: The attribute written with ``complete``: ``{"attributes": {name: digest of every other
#: attribute}, "arrays": [path of every array]}``, checked by :func:`open_store`.
INTEGRITY = "integrity"


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

#: Compressed, then checksummed: a changed or truncated chunk fails the check before
#: it is decompressed.
CODECS = (ZstdCodec(level=0), Crc32cCodec())
#: Every chunk is written, even one equal to the fill value, so that a missing chunk
#: always means damage (`dist_hess.integrity.StrictStore`).
WRITE_EVERY_CHUNK = {"write_empty_chunks": True}


def _create_array(group: zarr.Group, name: str, data=None, **kwargs) -> zarr.Array:
    """The one way arrays are created in a store: float64, `CODECS`, NaN fill, every chunk."""
    if data is not None:
        data = np.asarray(data, dtype=np.float64)
    else:
        kwargs.setdefault("dtype", "float64")
    return group.create_array(name, data=data, compressors=CODECS, fill_value=np.nan,
                              config=WRITE_EVERY_CHUNK, overwrite=True, **kwargs)


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
    create a file (`check_directory_writable`). Missing parent directories are fine, the
    write creates them. URLs (``s3://...``) get the first check only. ``dist-hess fit``
    calls it before training, so a bad ``--out`` fails in a second.
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
    _create_array(group, "weights", weights)
    return group


def create_multipliers(group: zarr.Group, units: Sequence[int], *, n_examples: int,
                       chunk_rows: int, first_layer: int = 1) -> list[str]:
    """Empty ``multipliers/layer_<k>`` arrays ``(n, s_k)`` with ``chunk_rows`` rows per chunk.

    Returns their paths in layer order. Rows never written are missing chunks
    (refused on read).
    """
    paths = []
    for offset, s_k in enumerate(units):
        name = multipliers_path(first_layer + offset)
        _create_array(group, name, shape=(int(n_examples), int(s_k)),
                      chunks=(max(1, int(chunk_rows)), max(1, int(s_k))))
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
        array = zarr.open_array(location, path=name, mode="r+").with_config(WRITE_EVERY_CHUNK)
        array[start:start + block.shape[0]] = block


def write_results(group: zarr.Group, *, value: float | None = None,
                  gradient: np.ndarray | None = None,
                  curvature: Mapping[tuple[str, str], Any] | None = None) -> None:
    """Write value, gradient and curvature (``{(kind, structure): result}``).

    ``result`` is a list over layers ``k = 1..m`` for ``row`` and ``layer``, one
    ``(t, t)`` array for ``full``.
    """
    if value is not None:
        _create_array(group, "value", value)
    if gradient is not None:
        _create_array(group, "gradient", gradient)
    for (kind, structure), result in (curvature or {}).items():
        if structure == "full":
            _create_array(group, curvature_path(kind, structure), result)
            continue
        for k, block in enumerate(result, start=1):
            _create_array(group, curvature_path(kind, structure, k), block)


def _own_attrs(attrs: Mapping[str, Any]) -> dict:
    return {k: v for k, v in attrs.items() if k not in ("complete", INTEGRITY)}


def _arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """Every array in ``group`` by its path."""
    return {name: node for name, node in group.members(max_depth=None)
            if isinstance(node, zarr.Array)}


def mark_complete(group: zarr.Group) -> None:
    """The last write: `INTEGRITY` (attribute digests, array list) and ``complete=true``,
    in one document. Readers accept the store from now on."""
    integrity = {"attributes": attribute_checksums(_own_attrs(group.attrs.asdict())),
                 "arrays": sorted(_arrays(group))}
    group.attrs.update({INTEGRITY: integrity, "complete": True})


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
                group[name].with_config(WRITE_EVERY_CHUNK)[...] = np.asarray(block,
                                                                             dtype=np.float64)
        write_results(group, value=value, gradient=gradient, curvature=curvature)
        mark_complete(group)
    return _store_location(path)


_CONTRACT_ATTRS = ("format", "model", "n_examples", "complete")


@contextlib.contextmanager
def _opened_in_place(location: str) -> Iterator[zarr.Group]:
    """The group of a store `open_store` accepted at ``location``, opened for writing in
    place under its writer lock (a local store; object stores have no lock)."""
    with exclusive_lock(location) if "://" not in location else contextlib.nullcontext():
        yield zarr.open_group(location, mode="r+")


def update_attrs(path, attrs: Mapping[str, Any]) -> str:
    """Add or replace JSON attributes of a complete store in place; returns its location.

    The one in-place update of a finished store's attributes (``dist-hess prune`` writes
    ``pruning_path`` with it). The store is validated by `open_store` first; the
    contract's keys (``format``, ``model``, ``n_examples``, ``complete``) are refused.
    Atomic on a local file system: the attributes live in the group's ``zarr.json``,
    which zarr's local store replaces by writing a temporary file and renaming it, so a
    reader sees the old or the new attributes, never a mix (object stores replace an
    object whole). The `INTEGRITY` digests cover what the writer wrote: replacing such an
    attribute rewrites its digest in the same document; a new attribute (an annotation
    such as ``pruning_path``) is not covered. A local store's writer lock is held
    meanwhile (`dist_hess.atomic.exclusive_lock`): a concurrent writer of the same path
    gets a ``ValueError``, and this one gets it while a writer replaces the store.
    """
    store = open_store(path)
    reserved = sorted(set(attrs) & {*_CONTRACT_ATTRS, INTEGRITY})
    if reserved:
        raise ValueError(f"update_attrs cannot change the contract attributes {reserved}")
    with _opened_in_place(store.path) as group:
        update = _json_attr(dict(attrs))
        integrity = group.attrs.asdict().get(INTEGRITY)
        covered = {} if integrity is None else integrity["attributes"]
        replaced = {key: value for key, value in update.items() if key in covered}
        if replaced:                           # their digests follow, in the same document
            update[INTEGRITY] = {**integrity, "attributes": {
                **covered, **attribute_checksums(replaced)}}
        group.attrs.update(update)
    return store.path


def add_curvature(path, curvature: Mapping[tuple[str, str], Any]) -> str:
    """Write more curvature (``{(kind, structure): result}``) into a complete store, in place.

    Under the store's writer lock (``ValueError`` if another writer holds it), with the
    new arrays added to the `INTEGRITY` list in the same document as the attributes, so
    `open_store` then requires them. Not atomic: a write killed midway leaves a store
    that `open_store` refuses as damaged (a missing chunk); recompute it. Returns the
    location.
    """
    store = open_store(path)
    with _opened_in_place(store.path) as group:
        write_results(group, curvature=curvature)
        integrity = group.attrs.asdict().get(INTEGRITY)
        if integrity is not None:
            group.attrs.update({INTEGRITY: {**integrity, "arrays": sorted(_arrays(group))}})
    return store.path


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Store:
    """A complete dist_hess store, opened read-only and checked (use :func:`open_store`).

    Scalars and vectors are read on access, curvature and multipliers on request;
    every read checks its chunks (`DamagedStoreError` when damaged). ``group`` is
    the raw zarr group (mode ``"r"``, missing chunks refused).
    """

    path: str
    group: zarr.Group = field(repr=False)

    def _read(self, name: str) -> np.ndarray:
        return read(self.group[name], name, self.path)

    @property
    def attrs(self) -> dict:
        """All group attributes (contract keys and any extras), as a copy."""
        return dict(self.group.attrs)

    @property
    def model(self) -> Model:
        return Model.from_dict(self.group.attrs["model"])

    @property
    def n_examples(self) -> int:
        return int(self.group.attrs["n_examples"])

    @property
    def weights(self) -> np.ndarray:
        return self._read("weights")

    @property
    def value(self) -> float | None:
        return float(self._read("value")) if "value" in self.group else None

    @property
    def gradient(self) -> np.ndarray | None:
        return self._read("gradient") if "gradient" in self.group else None

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
            return self._read(curvature_path(kind, structure))
        m = len(self.group.attrs["model"]["layers"])
        return [self._read(curvature_path(kind, structure, k)) for k in range(1, m + 1)]

    @property
    def multiplier_layers(self) -> list[int]:
        """Layer numbers ``k`` with stored multipliers."""
        if "multipliers" not in self.group:
            return []
        return sorted(int(name.split("_")[1]) for name, _ in self.group["multipliers"].members())

    def multipliers(self, k: int):
        """Multipliers ``e^k`` of layer ``k``, ``(n, s_k)``, as a lazy dask array
        (each chunk checked when computed)."""
        if k not in self.multiplier_layers:
            raise KeyError(f"store {self.path!r} has no multipliers for layer {k} "
                           f"(it has layers {self.multiplier_layers or 'none'})")
        name = multipliers_path(k)
        return lazy(self.group[name], name, self.path)


def _expected_shapes(model: Model, n_examples: int) -> dict[str, tuple]:
    """Shape of every array the contract allows in ``group``, present or not (DESIGN.md §5)."""
    t = model.n_params
    shapes = {"weights": (t,), "value": (), "gradient": (t,)}
    for kind in KINDS:
        shapes[curvature_path(kind, "full")] = (t, t)
        for k, (s, d) in enumerate(model.layer_shapes, start=1):
            shapes[curvature_path(kind, "row", k)] = (s, d, d)
            shapes[curvature_path(kind, "layer", k)] = (s * d, s * d)
    for k, s_k in enumerate(model.sizes):
        shapes[multipliers_path(k)] = (n_examples, s_k)
    return shapes


def _check_store(group: zarr.Group, location: str) -> None:
    """Attributes against their checksums, every array against the model (DESIGN.md §5).

    Raises `DamagedStoreError` naming the first attribute, array or chunk that is wrong.
    """
    attrs = group.attrs.asdict()
    try:
        arrays = _arrays(group)
    except Exception as err:  # noqa: BLE001 -- zarr raises many types for unreadable metadata
        raise DamagedStoreError(f"store {location!r}: the metadata of its arrays cannot be "
                                f"read ({type(err).__name__}: {err})") from None
    integrity = attrs.get(INTEGRITY)
    if integrity is not None:                      # stores written before it: no such check
        check_attribute_checksums(_own_attrs(attrs), integrity["attributes"], location)
        for name in integrity["arrays"]:
            if name not in arrays:
                raise DamagedStoreError(f"store {location!r}: array {name!r} is missing")
    try:
        model = Model.from_dict(attrs.get("model"))
    except (TypeError, ValueError) as err:
        raise DamagedStoreError(f"store {location!r}: its 'model' attribute is not a model "
                                f"({err})") from None
    n = attrs.get("n_examples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DamagedStoreError(f"store {location!r}: its 'n_examples' attribute must be a "
                                f"positive integer, got {n!r}")
    if "weights" not in arrays:
        raise DamagedStoreError(f"store {location!r}: array 'weights' is missing")
    shapes = _expected_shapes(model, n)
    for name, array in sorted(arrays.items()):
        if name not in shapes:
            continue                               # not the contract's: not ours to judge
        if array.shape != shapes[name] or array.dtype != np.float64:
            raise DamagedStoreError(
                f"store {location!r}: array {name!r} has shape {array.shape} and dtype "
                f"{array.dtype}, expected {shapes[name]} float64 for this model and "
                f"n_examples={n}")
        if missing_chunks(array):
            read(array, name, location)            # raises, naming the missing chunk
    for name in ("weights", "value", "gradient"):  # small: their checksums now, not on use
        if name in arrays:
            read(arrays[name], name, location)


def open_store(path) -> Store:
    """Open a store written by ``dh.evaluate`` / ``write_store`` / training, read-only.

    Raises ``FileNotFoundError`` when nothing is at ``path``; ``ValueError`` for a
    group that is not a dist_hess store and for one whose writer never finished
    (no ``complete=true``); `DamagedStoreError` (a ``ValueError``) naming the
    attribute, array or chunk when the store is damaged: an attribute changed after
    writing, an array missing or of the wrong shape for the model and
    ``n_examples``, a chunk missing or failing its checksum (weights, value and
    gradient are read now; curvature and multipliers are checked when read).
    """
    location = _store_location(path)
    if "://" not in location and not os.path.exists(location):
        raise FileNotFoundError(f"no store at {location!r}")
    try:
        group = open_strict(location)
    except (zarr.errors.NodeNotFoundError, FileNotFoundError):
        raise ValueError(f"{location!r} is not a dist_hess store: no zarr group there") from None
    except Exception as err:  # noqa: BLE001 -- zarr raises many types for unreadable metadata
        raise DamagedStoreError(f"store {location!r}: its zarr.json cannot be read "
                                f"({type(err).__name__}: {err})") from None
    fmt = group.attrs.get("format")
    if fmt != FORMAT:
        raise ValueError(f"{location!r} is not a dist_hess store: its format attribute is "
                         f"{fmt!r}, expected {FORMAT!r}")
    if group.attrs.get("complete") is not True:
        raise ValueError(f"{location!r} is an incomplete dist_hess store (no complete=true): "
                         f"the run writing it was interrupted or is still going; "
                         f"recompute it")
    _check_store(group, location)
    return Store(path=location, group=group)
