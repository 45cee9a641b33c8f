"""How the driver turns the ratio ``rho = actual / predicted reduction`` into decisions.

Two rules, both used only by the driver (`dist_hess.train.driver`):

- `TrustRegion`: accept when ``rho > eta``; shrink the radius to a quarter of the step
  when ``rho < 1/4``, double it (up to ``max_radius``) when ``rho > 3/4`` and the step
  reached the boundary (Nocedal & Wright alg. 4.1; shrinking from ``||p||`` rather than
  the radius, as Conn, Gould & Toint §17.1 allow, so an interior step that failed is
  not retried unchanged).
- `Damping`: accept when ``rho > eta`` (default 0: any decrease), then divide the
  damping ``mu`` by ten, else multiply it by ten (MATLAB ``trainlm``: ``mu = 1e-3``,
  ``mu_dec = 0.1``, ``mu_inc = 10``, ``mu_max = 1e10``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TrustRegion", "Damping", "parse_globalization"]

EPS = np.finfo(float).eps


@dataclass(frozen=True)
class TrustRegion:
    """Trust-region radius rule (N&W alg. 4.1)."""

    initial_radius: float = 1.0
    max_radius: float = 1e4
    eta: float = 0.1

    name = "trust-region"

    def __post_init__(self):
        if not 0 < self.initial_radius <= self.max_radius:
            raise ValueError("need 0 < initial_radius <= max_radius")
        if not 0 <= self.eta < 0.25:
            raise ValueError(f"eta must lie in [0, 1/4), got {self.eta}")

    def start(self) -> float:
        """The radius of the first iteration."""
        return float(self.initial_radius)

    def accept(self, ratio: float) -> bool:
        return ratio > self.eta

    def update(self, radius: float, ratio: float, step_norm: float, hits_boundary: bool) -> float:
        if ratio < 0.25:
            return 0.25 * min(radius, step_norm) if step_norm > 0 else 0.25 * radius
        if ratio > 0.75 and hits_boundary:
            return min(2.0 * radius, self.max_radius)
        return radius

    def stalled(self, radius: float, w: np.ndarray) -> bool:
        """A radius below the spacing of floats around ``w`` cannot move it."""
        return radius <= 4.0 * EPS * max(1.0, float(np.max(np.abs(w), initial=0.0)))

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Damping:
    """Levenberg-Marquardt damping schedule (MATLAB ``trainlm``)."""

    initial: float = 1e-3
    increase: float = 10.0
    decrease: float = 0.1
    maximum: float = 1e10
    minimum: float = 1e-20
    eta: float = 0.0

    name = "damping"

    def __post_init__(self):
        if not 0 < self.minimum <= self.initial <= self.maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        if not (self.increase > 1 and 0 < self.decrease < 1):
            raise ValueError("need increase > 1 and 0 < decrease < 1")

    def start(self) -> float:
        """The damping of the first iteration."""
        return float(self.initial)

    def accept(self, ratio: float) -> bool:
        return ratio > self.eta

    def update(self, damping: float, accepted: bool) -> float:
        if accepted:
            return max(damping * self.decrease, self.minimum)
        return damping * self.increase

    def stalled(self, damping: float) -> bool:
        return damping > self.maximum

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


def parse_globalization(value, allowed: tuple[str, ...]):
    """``None`` (the method's default, ``allowed[0]``), a name, or a `TrustRegion`/`Damping`."""
    if value is None:
        value = allowed[0]
    if isinstance(value, str):
        if value not in allowed:
            raise ValueError(f"globalization {value!r} is not available here; choose from {list(allowed)}")
        return TrustRegion() if value == "trust-region" else Damping()
    if isinstance(value, (TrustRegion, Damping)):
        if value.name not in allowed:
            raise ValueError(f"globalization {value.name!r} is not available here; "
                             f"choose from {list(allowed)}")
        return value
    raise TypeError(f"globalization must be None, a name or TrustRegion/Damping, got {value!r}")
