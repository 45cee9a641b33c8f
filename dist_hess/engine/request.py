"""What a shard computes: the :class:`Request` every caller of the engine builds.

The same request goes to every shard (:func:`dist_hess.engine.sums.shard_sums`)
and to :func:`dist_hess.engine.finalization.finalize` after the reduction, which
needs it for the penalty terms of curvature-vector products and directional
derivatives (they depend on ``v``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Request"]


@dataclass(frozen=True)
class Request:
    """What a shard computes.

    ``curvature``: tuple of ``(kind, structure)``; ``hvp``: tuple of ``(kind, v)``;
    ``directional``: ``(v, order)`` or ``None``; ``memory_budget``: bytes of
    per-example temporaries inside a shard (``None``: the engine's default,
    :data:`dist_hess.engine.budget.DEFAULT_MEMORY_BUDGET`); ``memory_limit``: bytes
    the results may occupy (`dist_hess.engine.footprint`; ``None``: the process's limit,
    `dist_hess.memory`; ``math.inf``: none), set by ``dh.evaluate`` so that its workers
    apply the client's limit.
    """
    value: bool = True
    gradient: bool = True
    curvature: tuple = ()
    multipliers: bool = False
    hvp: tuple = ()
    directional: tuple | None = None
    memory_budget: int | None = None
    memory_limit: float | None = None

    def __post_init__(self):
        budget = self.memory_budget
        if budget is not None and (isinstance(budget, bool)
                                   or not isinstance(budget, numbers.Integral) or budget < 1):
            raise ValueError(f"memory_budget must be a positive number of bytes or None, "
                             f"got {budget!r}")
        limit = self.memory_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Real)
                                  or not limit > 0):
            raise ValueError(f"memory_limit must be a positive number of bytes, math.inf or "
                             f"None, got {limit!r}")

    @property
    def order(self):
        """Highest derivative order of the forward cache: 0, 1 or 2 (a Gauss-Newton
        product needs no ``h''``)."""
        if self.curvature or any(kind != "gauss_newton" for kind, _ in self.hvp):
            return 2
        if self.hvp or self.gradient or self.multipliers:
            return 1
        return 0

    def projected(self, mask: np.ndarray) -> "Request":
        """The request with its directions (``hvp`` and ``directional`` ``v``) times ``mask``."""
        directional = self.directional
        if directional is not None:
            directional = (directional[0] * mask, directional[1])
        return replace(self, hvp=tuple((kind, v * mask) for kind, v in self.hvp),
                       directional=directional)
