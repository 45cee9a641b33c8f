"""Fit checkpoints: the weights and the optimiser state after every iteration, in zarr v3.

Layout (a zarr v3 group; plain arrays and JSON attributes, nothing pickled)::

    attrs: format="dist_hess/fit-checkpoint/1", method, strategy (its JSON config),
           globalization, model (fingerprint: n_params, layer_slices, spec),
           and, once an iteration is complete:
           complete_iteration, slot, radius, damping, status, history (list of records)
    weights_0 (t,)   weights_1 (t,)      two slots, written alternately

An iteration writes the weights into the slot *not* named by ``attrs["slot"]``, then
replaces all attributes in one write (``complete_iteration`` and ``slot`` last, in the
same document). A write interrupted before the attributes land leaves the previous
state intact and readable; zarr's local store replaces ``zarr.json`` atomically, so
the attributes are either old or new. A group without ``complete_iteration`` holds no
usable state and is started afresh.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .result import IterationRecord

__all__ = ["FORMAT", "CheckpointState", "CheckpointWriter", "read_checkpoint", "model_fingerprint"]

FORMAT = "dist_hess/fit-checkpoint/1"
SLOTS = ("weights_0", "weights_1")


def model_fingerprint(model) -> dict:
    """JSON identifying the model: parameter layout, and its spec when it has ``to_dict``."""
    spec = model.to_dict() if hasattr(model, "to_dict") else None
    return json.loads(json.dumps({
        "n_params": int(model.n_params),
        "layer_slices": [[int(s.start), int(s.stop)] for s in model.layer_slices],
        "spec": spec,
    }, sort_keys=True))


@dataclass
class CheckpointState:
    """The state stored after iteration ``iteration`` (0: the starting point)."""

    method: str
    strategy: dict
    globalization: str
    model: dict
    iteration: int
    w: np.ndarray
    radius: float | None
    damping: float | None
    status: str | None
    history: list[IterationRecord]
    slot: int


def _open(path, mode: str):
    import zarr
    from zarr.errors import GroupNotFoundError

    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path) and os.listdir(path) \
            and not os.path.exists(os.path.join(path, "zarr.json")):
        raise ValueError(f"{str(path)!r} is a non-empty directory that is not a zarr v3 group; "
                         f"refusing to use it as a checkpoint")
    try:
        return zarr.open_group(path, mode=mode, zarr_format=3)
    except (FileNotFoundError, GroupNotFoundError):
        return None
    except Exception as err:  # noqa: BLE001 -- zarr raises many types for unreadable metadata
        raise ValueError(f"checkpoint {str(path)!r} cannot be read as a zarr v3 group "
                         f"({type(err).__name__}: {err}); was a write interrupted? "
                         f"Remove it to start afresh.") from err


def read_checkpoint(path) -> CheckpointState | None:
    """The last complete state at ``path``, or ``None`` when there is none yet.

    Raises ``ValueError`` when ``path`` holds something that is not a fit checkpoint
    or cannot be read.
    """
    group = _open(path, "r")
    if group is None:
        return None
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a dist_hess fit checkpoint "
                         f"(format attribute {attrs.get('format')!r}, expected {FORMAT!r})")
    if "complete_iteration" not in attrs:
        return None
    slot = attrs["slot"]
    if slot not in (0, 1):
        raise ValueError(f"checkpoint {str(path)!r} names weight slot {slot!r}")
    w = np.asarray(group[SLOTS[slot]][...], dtype=float)
    history = [IterationRecord.from_dict(d) for d in attrs["history"]]
    iteration = int(attrs["complete_iteration"])
    if len(history) != iteration:
        raise ValueError(f"checkpoint {str(path)!r} is inconsistent: iteration {iteration} "
                         f"but {len(history)} history records")
    return CheckpointState(method=attrs["method"], strategy=attrs["strategy"],
                           globalization=attrs["globalization"], model=attrs["model"],
                           iteration=iteration, w=w, radius=attrs.get("radius"),
                           damping=attrs.get("damping"), status=attrs.get("status"),
                           history=history, slot=slot)


class CheckpointWriter:
    """Writes `CheckpointState`-shaped snapshots to ``path`` after every iteration."""

    def __init__(self, path, *, method: str, strategy: dict, globalization: str, model: dict,
                 resume_slot: int | None = None):
        import zarr

        group = _open(path, "a")
        if group is None:                                       # pragma: no cover
            group = zarr.open_group(path, mode="w", zarr_format=3)
        existing = group.attrs.asdict()
        if existing and existing.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} exists and is not a dist_hess fit checkpoint; "
                             f"refusing to overwrite it")
        self.path = path
        self.group = group
        self.n_params = int(model["n_params"])
        self.base = {"format": FORMAT, "method": method, "strategy": strategy,
                     "globalization": globalization, "model": model}
        if resume_slot is None:                                 # fresh: no complete state
            group.attrs.put(self.base)
            for name in SLOTS:
                group.create_array(name, shape=(self.n_params,), dtype="float64",
                                   chunks=(max(1, self.n_params),), overwrite=True)
        self.slot = resume_slot

    def write(self, *, iteration: int, w: np.ndarray, radius, damping, status,
              history: list[IterationRecord]) -> None:
        slot = 0 if self.slot is None else 1 - self.slot
        self.group[SLOTS[slot]][...] = np.asarray(w, dtype=float)
        self.group.attrs.put({
            **self.base,
            "radius": None if radius is None else float(radius),
            "damping": None if damping is None else float(damping),
            "status": None if status is None else str(status),
            "history": [r.to_dict() for r in history],
            "slot": slot,
            "complete_iteration": int(iteration),
        })
        self.slot = slot
