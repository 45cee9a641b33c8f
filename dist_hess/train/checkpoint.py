"""Fit checkpoints: the weights and the optimiser state after every iteration, in zarr v3.

Layout (a zarr v3 group; plain arrays and JSON attributes, nothing pickled)::

    attrs: format="dist_hess/fit-checkpoint/1", method, strategy (its JSON config),
           globalization, model (fingerprint: n_params, layer_slices, spec),
           data (shape, dtype and hash of X and Y), options (everything that changes
           the trajectory; both `dist_hess.train.fingerprint`),
           and, once an iteration is complete:
           complete_iteration, slot, radius, damping (the globalisation's knob; the
           other one null), strategy_state (`StepStrategy.state_dict` less its
           arrays), strategy_arrays (the names of those), status, history (records)
    weights_0 (t,)   weights_1 (t,)      two slots, written alternately
    strategy_0_NAME  strategy_1_NAME     each numpy array of the strategy state, in
                                         the same two slots

A strategy state is a JSON object whose top-level values may also be numpy arrays (a
warm start of ``t`` numbers does not belong in the attributes). An iteration writes
the weights and those arrays into the slot *not* named by ``attrs["slot"]``, then
replaces all attributes in one write (``complete_iteration`` and ``slot`` last, in the
same document). A write interrupted before the attributes land leaves the previous
state intact and readable; zarr's local store replaces ``zarr.json`` atomically, so
the attributes are either old or new. A group without ``complete_iteration`` holds no
usable state and is started afresh. A checkpoint written before ``strategy_state``
existed reads as an empty strategy state; one written before ``data`` and ``options``
existed reads them as ``None`` (the resume cannot check them).

A fresh checkpoint (attributes and empty slots) is built under a temporary name next
to its path and renamed into place (`dist_hess.atomic`): a process killed while
creating it leaves nothing there, or what was there, and the rerun starts afresh.

zarr is imported by `_open`, on the first checkpoint read or written, so that a fit
without a checkpoint does not pay for loading it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..atomic import replacing
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
    strategy_state: dict
    status: str | None
    history: list[IterationRecord]
    slot: int
    data: dict | None = None
    options: dict | None = None


def _open(path, mode: str):
    """The zarr v3 group at ``path`` (``None`` if there is none), imported here only (module docstring)."""
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
    strategy_state = dict(attrs.get("strategy_state") or {})
    for name in attrs.get("strategy_arrays", []):
        strategy_state[name] = np.asarray(group[_array_name(slot, name)][...])
    return CheckpointState(method=attrs["method"], strategy=attrs["strategy"],
                           globalization=attrs["globalization"], model=attrs["model"],
                           iteration=iteration, w=w, radius=attrs.get("radius"),
                           damping=attrs.get("damping"),
                           strategy_state=strategy_state,
                           status=attrs.get("status"), history=history, slot=slot,
                           data=attrs.get("data"), options=attrs.get("options"))


def _create(path, attrs: dict, n_params: int) -> None:
    """A checkpoint with ``attrs`` and empty weight slots at ``path``, created in one step.

    Built in a temporary directory next to ``path`` and renamed into place
    (`dist_hess.atomic.replacing`), so that a process killed while creating it
    leaves ``path`` as it was, never a half-made group. A URL is created in place.
    """
    if "://" in str(path):
        _fill(_open(path, "w"), attrs, n_params)
        return
    with replacing(path) as staging:
        _fill(_open(staging, "w"), attrs, n_params)


def _fill(group, attrs: dict, n_params: int) -> None:
    group.attrs.put(attrs)
    for name in SLOTS:
        group.create_array(name, shape=(n_params,), dtype="float64",
                           chunks=(max(1, n_params),), overwrite=True)


class CheckpointWriter:
    """Writes `CheckpointState`-shaped snapshots to ``path`` after every iteration."""

    def __init__(self, path, *, method: str, strategy: dict, globalization: str, model: dict,
                 data: dict | None = None, options: dict | None = None,
                 resume_slot: int | None = None):
        group = _open(path, "r")
        existing = {} if group is None else group.attrs.asdict()
        if existing and existing.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} exists and is not a dist_hess fit checkpoint; "
                             f"refusing to overwrite it")
        self.path = path
        self.n_params = int(model["n_params"])
        self.base = {"format": FORMAT, "method": method, "strategy": strategy,
                     "globalization": globalization, "model": model, "data": data,
                     "options": options}
        if resume_slot is None:                                 # fresh: no complete state
            _create(path, self.base, self.n_params)
        self.group = _open(path, "r+")
        self.slot = resume_slot

    def write(self, *, iteration: int, w: np.ndarray, radius, damping, strategy_state: dict,
              status, history: list[IterationRecord]) -> None:
        slot = 0 if self.slot is None else 1 - self.slot
        values, arrays = _split_state(strategy_state, self.base["method"])
        self.group[SLOTS[slot]][...] = np.asarray(w, dtype=float)
        for name, array in arrays.items():
            self._put_array(_array_name(slot, name), array)
        self.group.attrs.put({
            **self.base,
            "radius": None if radius is None else float(radius),
            "damping": None if damping is None else float(damping),
            "strategy_state": values,
            "strategy_arrays": sorted(arrays),
            "status": None if status is None else str(status),
            "history": [r.to_dict() for r in history],
            "slot": slot,
            "complete_iteration": int(iteration),
        })
        self.slot = slot

    def _put_array(self, name: str, array: np.ndarray) -> None:
        if name not in self.group or self.group[name].shape != array.shape \
                or self.group[name].dtype != array.dtype:
            self.group.create_array(name, shape=array.shape, dtype=array.dtype,
                                    chunks=tuple(max(1, n) for n in array.shape), overwrite=True)
        self.group[name][...] = array


def _array_name(slot: int, name: str) -> str:
    return f"strategy_{slot}_{name}"


def _split_state(strategy_state: dict, method: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON values and the numpy arrays of a strategy state (`StepStrategy.state_dict`)."""
    arrays = {name: value for name, value in strategy_state.items() if isinstance(value, np.ndarray)}
    values = {name: value for name, value in strategy_state.items() if name not in arrays}
    bad = [name for name in arrays if not (isinstance(name, str) and name.isidentifier())]
    if bad:
        raise ValueError(f"strategy {method!r}: state arrays need identifier names, got {bad}")
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"strategy {method!r}: its state must be JSON values or numpy arrays "
                         f"({err})") from err
    return values, arrays
