"""The curvature of a shard subsample, scaled to the whole data: ``B_S v`` and ``diag(B_S)``.

For a subsample ``S`` of the shards holding ``n_S`` of the ``n`` rows,

    B_S = (n / n_S) sum_{i in S} B_i + pen''(w)

(Byrd, Chin, Neveitt & Nocedal 2011, eq. 1.4, with sums instead of means), an unbiased
estimate of the curvature ``B = sum_i B_i + pen''`` when ``S`` is drawn uniformly; ``S``
all shards gives ``B`` itself. ``B_i`` is the exact Hessian of ``g_i`` or its
Gauss-Newton matrix (`dist_hess.engine.operator`). A pruned model gets
``P B_S P + (I - P)`` like every other curvature (`dist_hess.engine.finalize`).

The per-shard operators live where the shard is: in this process (`LocalSampledCurvature`)
or on the Dask workers (`PooledSampledCurvature`, from a
`dist_hess.distributed.shard_pool.ShardPool`); both add the shards' results along the
same fixed tree, so the result does not depend on where they ran.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..engine import Request, finalize
from ..engine.operator import ShardCurvature
from .tree import tree_sum

__all__ = ["SampledCurvature", "LocalSampledCurvature", "PooledSampledCurvature"]


class SampledCurvature(ABC):
    """``B_S`` at ``w`` for the shards ``shards`` (see the module docstring)."""

    def __init__(self, model, w, shards, n_examples: int, n_sample: int):
        self.model = model
        self.w = np.asarray(w, dtype=float)
        self.shards = tuple(shards)
        self.n_examples, self.n_sample = int(n_examples), int(n_sample)
        self.scale = self.n_examples / self.n_sample
        self.products = 0

    @property
    def complete(self) -> bool:
        """The sample is all the data (``B_S = B``)."""
        return self.n_sample == self.n_examples

    @abstractmethod
    def _product_sum(self, v: np.ndarray, kind: str) -> np.ndarray:
        """``sum_{i in S} B_i v`` along the fixed tree over the shards."""

    @abstractmethod
    def _diagonal_sum(self, kind: str) -> np.ndarray:
        """``sum_{i in S} diag(B_i)`` along the same tree."""

    def product(self, v: np.ndarray, kind: str) -> np.ndarray:
        """``B_S v`` ``(t,)``."""
        v = np.asarray(v, dtype=float)
        self.products += 1
        total = self.scale * self._product_sum(v, kind)
        request = Request(value=False, gradient=False, hvp=((kind, v),))
        return finalize(self.model, self.w, {"hvp/0": total}, request)["hvp/0"]

    def diagonal(self, kind: str = "gauss_newton") -> np.ndarray:
        """``diag(B_S)`` ``(t,)``: the diagonals of the row blocks, penalty included."""
        d = self.scale * self._diagonal_sum(kind)
        model = self.model
        if model.penalty is not None:
            d = d + model.penalty.diagonal(model, self.w, kind)
        mask = getattr(model, "mask", None)
        if mask is not None:
            d = np.where(mask, d, 1.0)
        return d

    def release(self) -> None:
        """Free the per-shard operators (their forward caches)."""


class LocalSampledCurvature(SampledCurvature):
    """The shard operators in this process, on ``X[b_i:b_{i+1}]`` for each shard ``i``."""

    def __init__(self, model, w, X, Y, boundaries, shards, *, memory_budget=None):
        b = boundaries
        super().__init__(model, w, shards, b[-1], sum(b[i + 1] - b[i] for i in shards))
        self._ops = [ShardCurvature(model, w, X[b[i]:b[i + 1]], Y[b[i]:b[i + 1]],
                                    memory_budget=memory_budget) for i in self.shards]

    def _product_sum(self, v, kind):
        return tree_sum(op.product(v, kind) for op in self._ops)

    def _diagonal_sum(self, kind):
        return tree_sum(op.diagonal(kind) for op in self._ops)

    def release(self):
        self._ops = []


class PooledSampledCurvature(SampledCurvature):
    """The shard operators on the Dask workers that hold the shards (`ShardPool.curvature`)."""

    def __init__(self, model, w, pool, shards):
        super().__init__(model, w, shards, pool.n_examples, pool.rows(shards))
        self._remote = pool.curvature(model, w, self.shards)

    def _product_sum(self, v, kind):
        return self._remote.product_sum(v, kind)

    def _diagonal_sum(self, kind):
        return self._remote.diagonal_sum(kind)

    def release(self):
        self._remote.release()
