"""Reading zarr arrays so that damage raises a clear error instead of reading back as numbers.

Three kinds of damage, one exception, :class:`DamagedStoreError` (a ``ValueError``)
naming the store, the array and the chunk:

- a **missing chunk**: zarr reads an absent chunk as the array's fill value; a
  group opened with :func:`open_strict` raises instead (:class:`StrictStore`).
  Writers therefore write every chunk, even one equal to the fill value
  (``write_empty_chunks``), see ``dist_hess.store``;
- a **changed chunk** (truncated, overwritten): every array carries the
  ``crc32c`` codec after compression, so the bytes are checked before they are
  decompressed; :func:`read` turns a failed check (or any decoding error) into
  :class:`DamagedStoreError`;
- **changed attributes**: :func:`attribute_checksums` records a digest of each
  attribute when a store is completed and :func:`check_attribute_checksums`
  compares them on open.

:func:`lazy` gives the same checks to dask arrays, chunk by chunk, when computed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import uuid

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore, WrapperStore

__all__ = ["DamagedStoreError", "StrictStore", "open_strict", "read", "lazy",
           "missing_chunks", "attribute_checksums", "check_attribute_checksums"]

_METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


class DamagedStoreError(ValueError):
    """A store whose arrays or attributes are not what its writer wrote."""


def _chunk_name(key: str) -> tuple[str, str]:
    """``(array path, chunk)`` of a chunk key such as ``"multipliers/layer_1/c/3/0"``."""
    if key == "c" or key.endswith("/c"):
        return key[:-2] or "/", "()"
    name, sep, coords = key.partition("/c/")
    return (name, str(tuple(int(c) for c in coords.split("/")))) if sep else (key, key)


class StrictStore(WrapperStore):
    """A read-only store in which a chunk that is not there raises `DamagedStoreError`.

    Metadata documents (``zarr.json``) may be absent (that is how zarr asks whether
    a node exists); any other key is a chunk and must be present.
    """

    def _missing(self, key: str):
        if key.rsplit("/", 1)[-1] in _METADATA_NAMES:
            return None
        name, chunk = _chunk_name(key)
        where = str(getattr(self._store, "root", self._store))
        raise DamagedStoreError(f"store {where!r}: chunk {chunk} of array {name!r} is missing "
                                f"({key}); the store is damaged, recompute it")

    async def get(self, key, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        return self._missing(key) if value is None else value

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        return [self._missing(key) if value is None else value
                for (key, _), value in zip(key_ranges, values)]


def open_strict(location: str) -> zarr.Group:
    """The zarr v3 group at ``location`` (path or URL), read-only, missing chunks refused."""
    if "://" in location:
        inner = FsspecStore.from_url(location, read_only=True)
    else:
        inner = LocalStore(location, read_only=True)
    return zarr.open_group(StrictStore(inner), mode="r", zarr_format=3)


def _chunk_regions(array, selection):
    """``(chunk coordinates, region)`` of the chunks a basic ``selection`` touches
    (all chunks for anything but a tuple of slices)."""
    ranges = [range(n) for n in array.cdata_shape]
    if isinstance(selection, tuple) and len(selection) == array.ndim \
            and all(isinstance(s, slice) for s in selection):
        ranges = []
        for s, n, c in zip(selection, array.shape, array.chunks):
            start, stop, _ = s.indices(n)
            ranges.append(range(start // c, -(-stop // c)))
    for coords in itertools.product(*ranges):
        yield coords, tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, array.chunks))


def _damaged(array, name: str, location: str, selection, err: Exception) -> DamagedStoreError:
    """The error for a read of ``array`` that failed with ``err``, naming the first bad chunk."""
    chunk = "?"
    for coords, region in _chunk_regions(array, selection):
        try:
            array[region]
        except Exception:  # noqa: BLE001 -- any failure marks the chunk; reported below
            chunk = str(coords)
            break
    return DamagedStoreError(
        f"store {location!r}: chunk {chunk} of array {name!r} fails its checksum or cannot be "
        f"decoded ({type(err).__name__}: {str(err)[:200]}); the store is damaged, recompute it")


def read(array, name: str, location: str, selection=Ellipsis) -> np.ndarray:
    """``array[selection]``, with damage reported as `DamagedStoreError`."""
    try:
        return array[selection]
    except (DamagedStoreError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 -- codecs raise ValueError, RuntimeError, zstd errors
        raise _damaged(array, name, location, selection, err) from None


def missing_chunks(array) -> bool:
    """Whether some chunk of ``array`` is not stored (one listing of its chunks)."""
    return array.nchunks_initialized < array.nchunks


class _CheckedArray:
    """What ``dask.array.from_array`` slices: a zarr array read through :func:`read`."""

    def __init__(self, array, name: str, location: str):
        self.array, self.name, self.location = array, name, location
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, selection):
        return read(self.array, self.name, self.location, selection)


def lazy(array, name: str, location: str):
    """``array`` as a dask array chunked like it; each chunk is checked when computed."""
    import dask.array as da
    return da.from_array(_CheckedArray(array, name, location), chunks=array.chunks,
                         name=f"from-zarr-{uuid.uuid4().hex}", asarray=True,
                         meta=np.empty((0,) * array.ndim, dtype=array.dtype))


# ---------------------------------------------------------------- attributes

def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def attribute_checksums(attrs: dict) -> dict[str, str]:
    """A digest of each attribute's canonical JSON (to store with the attributes)."""
    return {key: _digest(value) for key, value in sorted(attrs.items())}


def check_attribute_checksums(attrs: dict, checksums: dict, location: str) -> None:
    """Raise `DamagedStoreError` naming the attributes that differ from their digests."""
    changed = sorted(key for key, digest in checksums.items()
                     if key not in attrs or _digest(attrs[key]) != digest)
    if changed:
        raise DamagedStoreError(
            f"store {location!r}: attribute {', '.join(map(repr, changed))} differs from the "
            f"checksum written with the store, so it was changed afterwards; the store is "
            f"damaged or was edited, recompute it")
