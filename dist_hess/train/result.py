"""What `fit` returns: a status, a message, the final iterate and a per-iteration history.

Everything here round-trips through plain JSON (``to_dict`` / ``from_dict``) so that a
checkpoint can store it without pickling (STYLE.md habit 6).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum

import numpy as np

__all__ = ["Status", "IterationRecord", "Minimum", "FitResult"]


class Status(str, Enum):
    """Why `fit` stopped. A ``str`` subclass: ``result.status == "gtol"`` works."""

    GTOL = "gtol"                # gradient norm <= gtol: converged
    FTOL = "ftol"                # relative decrease of an accepted step <= ftol: converged
    MAX_ITER = "max_iter"        # iteration limit reached
    MAX_TIME = "max_time"        # wall-clock limit reached
    STALLED = "stalled"          # radius or step too small / damping too large to make progress
    CALLBACK = "callback"        # the callback asked to stop

    def __str__(self) -> str:
        return self.value

    @property
    def converged(self) -> bool:
        return self in (Status.GTOL, Status.FTOL)


def _json_float(x):
    """A float for JSON: ``None`` for absent or non-finite values (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class IterationRecord:
    """One iteration of the driver: one step tried, accepted or not.

    ``value`` and ``gradient_norm`` are at the iterate *after* the iteration (unchanged
    when the step was rejected); ``radius`` / ``damping`` are the values the step was
    computed with (``None`` for the globalisation not in use); ``ratio`` is actual over
    predicted reduction; ``seconds`` is the wall time of the iteration.
    """

    iteration: int
    value: float
    gradient_norm: float
    step_norm: float
    ratio: float | None
    accepted: bool
    radius: float | None = None
    damping: float | None = None
    seconds: float = 0.0

    @property
    def step_length(self) -> float:
        """The Euclidean length of the trial step (``step_norm``)."""
        return self.step_norm

    def __getitem__(self, name: str):
        """``record["value"]`` as well as ``record.value`` (every field, ``step_length``)."""
        if name in _RECORD_KEYS:
            return getattr(self, name)
        raise KeyError(f"{name!r}; an iteration record has {sorted(_RECORD_KEYS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("value", "gradient_norm", "step_norm", "ratio", "radius", "damping", "seconds"):
            d[name] = _json_float(d[name])
        d["iteration"] = int(self.iteration)
        d["accepted"] = bool(self.accepted)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "IterationRecord":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown iteration record fields {sorted(unknown)}")
        return cls(**d)


_RECORD_KEYS = frozenset(f.name for f in fields(IterationRecord)) | {"step_length"}


@dataclass(frozen=True)
class Minimum:
    """One distinct minimum found by a multi-start fit (``fit(..., starts=...)``).

    ``value`` ``E`` there (the lowest among the starts that reached it); ``starts`` the
    indices of the converged starts whose final values lie within the grouping
    tolerance of it (`dist_hess.train.starts.distinct_minima`), so ``count`` is how
    many reached it; ``min_eigenvalue`` the smallest eigenvalue of the exact Hessian
    at the lowest of them (positive at a strict local minimum; about zero along an
    exactly flat direction; negative at a saddle point), ``None`` if not computed.
    """

    value: float
    starts: tuple[int, ...]
    min_eigenvalue: float | None = None

    @property
    def count(self) -> int:
        return len(self.starts)

    def to_dict(self) -> dict:
        return {"value": _json_float(self.value), "count": self.count,
                "starts": [int(i) for i in self.starts],
                "min_eigenvalue": _json_float(self.min_eigenvalue)}


@dataclass
class FitResult:
    """Outcome of `dist_hess.fit`.

    ``w`` the final weights ``(t,)``; ``value`` ``E(w)``; ``gradient`` and its 2-norm
    ``gradient_norm``; ``n_iter`` iterations done (all calls together when resumed from
    a checkpoint; rejected steps count); ``converged`` true when ``status`` is ``gtol``
    or ``ftol``; ``message`` a sentence saying why it stopped; ``history`` one
    `IterationRecord` per iteration; ``method`` the step strategy; ``seconds`` the wall
    time of this call.

    A multi-start fit (``fit(..., starts=...)``) returns the best start's result with
    ``start`` its index, ``starts`` every start's result in order (each as
    ``fit(w0=that start)`` returns it) and ``minima`` the distinct minima found, lowest
    first (`Minimum`); a single fit leaves the three ``None``.
    """

    w: np.ndarray
    value: float
    gradient: np.ndarray
    gradient_norm: float
    n_iter: int
    status: Status
    message: str
    method: str
    history: list[IterationRecord] = field(default_factory=list)
    seconds: float = 0.0
    start: int | None = None
    starts: list["FitResult"] | None = None
    minima: list[Minimum] | None = None

    @property
    def converged(self) -> bool:
        return Status(self.status).converged

    # scipy.optimize.OptimizeResult's names, for code written against scipy
    x = property(lambda self: self.w, doc="``w`` (scipy's name)")
    fun = property(lambda self: self.value, doc="``value`` (scipy's name)")
    jac = property(lambda self: self.gradient, doc="``gradient`` (scipy's name)")
    nit = property(lambda self: self.n_iter, doc="``n_iter`` (scipy's name)")
    success = property(lambda self: self.converged, doc="``converged`` (scipy's name)")

    def __repr__(self) -> str:
        starts = "" if self.starts is None else (
            f", start={self.start} of {len(self.starts)}, distinct minima={len(self.minima or [])}")
        return (f"FitResult(method={self.method!r}, status={str(self.status)!r}, "
                f"converged={self.converged}, n_iter={self.n_iter}, value={self.value:.6g}, "
                f"gradient_norm={self.gradient_norm:.3g}{starts})")
