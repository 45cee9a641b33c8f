"""Which shards the curvature of an iteration is computed on: a seeded, rotating subsample.

The rows of the data are split into ``S`` shards whose boundaries depend on ``n`` only
(`dist_hess.distributed.data.as_shards`), so a subsample named by shard indices is the
same set of rows on any cluster. `ShardSchedule` hands out ``size`` distinct shards per
draw, walking through a permutation of ``0..S-1`` drawn from ``numpy.random.default_rng
([seed, epoch])``: consecutive draws are disjoint windows of that permutation, a new
epoch (a new permutation) starts when the current one has fewer than ``size`` shards
left, so every shard is used once per epoch (Byrd, Chin, Neveitt & Nocedal 2011 rotate
their Hessian sample the same way). ``size`` only grows (`grow`), up to all ``S`` shards,
when the draw is all the data and the step an exact Newton step.

The whole state is two integers and the seed (`state_dict`), so a resumed run draws the
same shards as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["ShardSchedule"]


class ShardSchedule:
    """Seeded rotation over ``n_shards`` shards, ``size`` per draw (see the module docstring)."""

    def __init__(self, n_shards: int, *, size: int, seed: int = 0):
        if isinstance(n_shards, bool) or int(n_shards) < 1:
            raise ValueError(f"n_shards must be an integer >= 1, got {n_shards!r}")
        self.n_shards = int(n_shards)
        self.seed = int(seed)
        self.size = min(self.n_shards, max(1, int(size)))
        self.position = 0                     # shards handed out so far, epoch padding included

    @property
    def complete(self) -> bool:
        """Every draw is all the shards."""
        return self.size == self.n_shards

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_shards)

    def draw(self) -> tuple[int, ...]:
        """The next ``size`` shards of the rotation, in increasing order (the summation order)."""
        if self.complete:
            return tuple(range(self.n_shards))
        epoch, offset = divmod(self.position, self.n_shards)
        if offset + self.size > self.n_shards:           # too few left in this epoch
            epoch, offset = epoch + 1, 0
        shards = self._permutation(epoch)[offset:offset + self.size]
        self.position = epoch * self.n_shards + offset + self.size
        return tuple(sorted(int(s) for s in shards))

    def grow(self, factor: float) -> None:
        """``size <- min(S, ceil(factor * size))`` (``factor > 1``)."""
        if not factor > 1:
            raise ValueError(f"the growth factor must be > 1, got {factor!r}")
        self.size = min(self.n_shards, math.ceil(factor * self.size))

    def state_dict(self) -> dict:
        return {"n_shards": self.n_shards, "seed": self.seed, "size": self.size,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n_shards"]) != self.n_shards:
            raise ValueError(f"the checkpoint's sample schedule has {state['n_shards']} shards, "
                             f"the data have {self.n_shards}")
        self.seed, self.size, self.position = (int(state["seed"]), int(state["size"]),
                                               int(state["position"]))
