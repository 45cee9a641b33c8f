"""How the driver turns the ratio ``rho = actual / predicted reduction`` into decisions.

One interface, `Globalization`, three rules; the driver (`dist_hess.train.driver`) holds
one number for the rule, its *knob* (the trust-region radius or the damping ``mu``),
and asks the rule four things about it:

=====================================  ================================================
``start() -> knob``                    the knob of the first iteration
``accept(ratio) -> bool``              take the trial step or not
``update(knob, ratio, step) -> knob``  the knob of the next iteration
``stalled(knob, w, step) -> str|None`` why the knob can no longer move ``w``, if so
=====================================  ================================================

``step`` is a `TrialStep`: the step's Euclidean length, its length in the rule's norm
and whether it reached the trust-region boundary. ``knob`` names the field the value
goes to in the strategy's `State`, the `IterationRecord` and the checkpoint
(``"radius"`` or ``"damping"``; `knob_fields` gives both, the unused one ``None``).

- `TrustRegion`: accept when ``rho > eta``; shrink the radius to a quarter of the step
  when ``rho < 1/4``, double it (up to ``max_radius``) when ``rho > 3/4`` and the step
  reached the boundary (Nocedal & Wright alg. 4.1; shrinking from ``||p||`` rather than
  the radius, as Conn, Gould & Toint §17.1 allow, so an interior step that failed is
  not retried unchanged). The radius is measured in the norm the strategy reports
  with its step (``||p||_M`` for a preconditioned solver).
- `Damping`: accept when ``rho > eta`` (default 0: any decrease), then divide the
  damping ``mu`` by ten, else multiply it by ten (MATLAB ``trainlm``: ``mu = 1e-3``,
  ``mu_dec = 0.1``, ``mu_inc = 10``, ``mu_max = 1e10``).
- `Monotone`: accept when ``rho > eta``; no knob (``None``): the strategy adapts its
  own damping (``hessian-free``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

__all__ = ["Globalization", "TrialStep", "TrustRegion", "Damping", "Monotone", "KNOBS",
           "parse_globalization"]

EPS = np.finfo(float).eps
#: The knobs a rule may hold, as named in `State`, `IterationRecord` and checkpoints.
KNOBS = ("radius", "damping")


@dataclass(frozen=True)
class TrialStep:
    """What a rule needs to know about a trial step ``p``: ``length`` ``||p||``
    (Euclidean), ``norm`` its length in the trust region's norm (``||p||_M`` for a
    preconditioned strategy, else ``length``), ``hits_boundary`` whether the strategy
    stopped on the trust-region boundary."""

    length: float
    norm: float
    hits_boundary: bool = False

    @property
    def metric_scale(self) -> float:
        """Euclidean length per unit of the rule's norm along this step (1 if ``norm`` is 0)."""
        return self.length / self.norm if self.norm > 0.0 else 1.0


class Globalization(ABC):
    """Base of the rules: see the module docstring for the four questions.

    Subclasses are frozen dataclasses of their parameters (``to_dict`` lists them), an
    acceptance threshold ``eta`` among them, and keep no state of their own: the driver
    holds the knob and checkpoints it.
    """

    name: ClassVar[str]
    knob: ClassVar[str]

    @abstractmethod
    def start(self) -> float:
        """The knob of the first iteration."""

    def accept(self, ratio: float) -> bool:
        """Take the trial step when ``ratio > eta``."""
        return ratio > self.eta

    @abstractmethod
    def update(self, knob: float, ratio: float, step: TrialStep) -> float:
        """The knob after a trial step with reduction ratio ``ratio``."""

    @abstractmethod
    def stalled(self, knob: float, w: np.ndarray, step: TrialStep) -> str | None:
        """A sentence saying why ``knob`` can no longer move ``w``, or ``None``."""

    def knob_fields(self, knob: float | None) -> dict[str, float | None]:
        """``{"radius": ..., "damping": ...}`` with ``knob`` under this rule's name."""
        return {name: knob if name == self.knob else None for name in KNOBS}

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class TrustRegion(Globalization):
    """Trust-region radius rule (N&W alg. 4.1)."""

    initial_radius: float = 1.0
    max_radius: float = 1e4
    eta: float = 0.1

    name = "trust-region"
    knob = "radius"

    def __post_init__(self):
        if not 0 < self.initial_radius <= self.max_radius:
            raise ValueError("need 0 < initial_radius <= max_radius")
        if not 0 <= self.eta < 0.25:
            raise ValueError(f"eta must lie in [0, 1/4), got {self.eta}")

    def start(self) -> float:
        return float(self.initial_radius)

    def update(self, knob: float, ratio: float, step: TrialStep) -> float:
        radius = knob
        if ratio < 0.25:
            return 0.25 * min(radius, step.norm) if step.norm > 0 else 0.25 * radius
        if ratio > 0.75 and step.hits_boundary:
            return min(2.0 * radius, self.max_radius)
        return radius

    def stalled(self, knob: float, w: np.ndarray, step: TrialStep) -> str | None:
        """The radius, as a Euclidean length along ``step``, is below the spacing of
        floats around ``w``."""
        if knob * step.metric_scale <= 4.0 * EPS * max(1.0, float(np.max(np.abs(w), initial=0.0))):
            return f"trust-region radius {knob:.3g} cannot move the weights"
        return None


@dataclass(frozen=True)
class Damping(Globalization):
    """Levenberg-Marquardt damping schedule (MATLAB ``trainlm``)."""

    initial: float = 1e-3
    increase: float = 10.0
    decrease: float = 0.1
    maximum: float = 1e10
    minimum: float = 1e-20
    eta: float = 0.0

    name = "damping"
    knob = "damping"

    def __post_init__(self):
        if not 0 < self.minimum <= self.initial <= self.maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        if not (self.increase > 1 and 0 < self.decrease < 1):
            raise ValueError("need increase > 1 and 0 < decrease < 1")

    def start(self) -> float:
        return float(self.initial)

    def update(self, knob: float, ratio: float, step: TrialStep) -> float:
        if self.accept(ratio):
            return max(knob * self.decrease, self.minimum)
        return knob * self.increase

    def stalled(self, knob: float, w: np.ndarray, step: TrialStep) -> str | None:
        if knob > self.maximum:
            return f"damping {knob:.3g} above its maximum {self.maximum:g}"
        return None


@dataclass(frozen=True)
class Monotone(Globalization):
    """Accept when ``rho > eta`` (default 0: any decrease of ``E``); no knob of its own.

    For a strategy that adapts its own damping (`dist_hess.train.hessian_free`: Martens'
    damping follows the ratio of the CG solution, not of the backtracked step the driver
    sees); the knob is always ``None`` and the rule never stalls.
    """

    eta: float = 0.0

    name = "monotone"
    knob = "damping"

    def __post_init__(self):
        if not 0 <= self.eta < 1:
            raise ValueError(f"eta must lie in [0, 1), got {self.eta}")

    def start(self) -> None:
        return None

    def update(self, knob, ratio: float, step: TrialStep) -> None:
        return None

    def stalled(self, knob, w: np.ndarray, step: TrialStep) -> str | None:
        return None


RULES: dict[str, type[Globalization]] = {cls.name: cls for cls in (TrustRegion, Damping, Monotone)}


def parse_globalization(value, allowed: tuple) -> Globalization:
    """``None`` (the method's default, ``allowed[0]``), a name, or a `Globalization`.

    ``allowed`` lists what a strategy supports (`StepStrategy.globalizations`): names, or
    rules standing for their name with the parameters the strategy starts from when the
    rule is given by name or not at all (``lm``: ``Damping(initial=1.0)``).
    """
    defaults = {}
    for a in allowed:
        defaults[a if isinstance(a, str) else a.name] = RULES[a]() if isinstance(a, str) else a
    names = list(defaults)
    if value is None:
        return defaults[names[0]]
    if isinstance(value, str):
        if value not in defaults:
            raise ValueError(f"globalization {value!r} is not available here; choose from {names}")
        return defaults[value]
    if isinstance(value, Globalization):
        if value.name not in defaults:
            raise ValueError(f"globalization {value.name!r} is not available here; "
                             f"choose from {names}")
        return value
    raise TypeError(f"globalization must be None, a name or a Globalization (TrustRegion, "
                    f"Damping, Monotone), got {value!r}")
