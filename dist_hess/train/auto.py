"""``method="auto"``: which step strategy `dist_hess.fit` uses, from ``t``, ``n`` and the cluster.

The rule (docs/training.md, "Which method: auto"):

=======================================  ==============================  =====================
when                                     method                          why
=======================================  ==============================  =====================
``t <= NEWTON_MAX_PARAMS``               ``newton``                      the full Hessian
                                         ``reuse_curvature``             (``t x t``) costs less
                                                                         than a few products
``t <= BLOCK_MAX_PARAMS``                ``block-newton``                row blocks fit, CG
                                         ``reuse_preconditioner``        preconditioned by them
otherwise                                ``lbfgs``                       no block fits and a
                                         (exact Newton-CG steps          product costs about a
                                         near the minimum)               gradient (see below)
=======================================  ==============================  =====================

The small-network branches (the first two) belong to the small-network benchmark
(``benchmarks/bench_basins.py``); the last one to ``benchmarks/bench_train_scale.py``.
At ``t = 101,770`` (784-128-10) a Hessian-vector product costs about one gradient, and
Newton-CG (``hessian-free``, subsampled or on all rows) made less progress per second
than L-BFGS from the points of the L-BFGS path that were tried (docs/training.md,
"Training at scale"); ``lbfgs`` hands over to exact Newton-CG steps near the minimum,
where they converge quadratically.
Whether a cluster is used does not change the choice today: every method runs on
either (`dist_hess.train.objective.make_objective` decides where), and
``hessian-free``'s products go to the workers that hold the shards.

``newton``'s Hessian costs 15 to 20 gradients at ``t`` of 150 to 200 and is three
quarters of an iteration; ``auto`` keeps it after successful steps (``ratio >= 1/4``,
`dist_hess.train.strategies.REUSE_RATIO`), which cut the 8-start time on breast cancer
30-6-1 by a third (docs/training.md). At ``t = 1210`` (digits 64-16-10) a full Hessian
costs about 0.1 s at one thread and ``newton`` took 4 to 10 times block-newton's time;
block-newton keeps its row blocks (the preconditioner) the same way, which cut its
3-start time there from 30 s to 9.6 s.

`choose` returns the method and its options; `dist_hess.fit` records the method in
``FitResult.method`` (never ``"auto"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AUTO", "Choice", "choose", "NEWTON_MAX_PARAMS", "BLOCK_MAX_PARAMS"]

AUTO = "auto"
#: Largest ``t`` for which ``auto`` takes ``newton`` (one ``t x t`` Hessian per iteration).
NEWTON_MAX_PARAMS = 1_000
#: Largest ``t`` for which ``auto`` takes ``block-newton``: the row blocks
#: (``sum_k s_k d_k^2`` numbers) and their eigendecompositions stay cheap next to a
#: product at this size (docs/training.md, "Training at scale").
BLOCK_MAX_PARAMS = 20_000


@dataclass(frozen=True)
class Choice:
    """The method ``auto`` picked, its ``options`` and one sentence saying why."""

    method: str
    options: dict = field(default_factory=dict)
    reason: str = ""


def choose(n_params: int, n_examples: int | None, *, distributed: bool) -> Choice:
    """The rule of the module docstring for a model with ``n_params`` parameters and
    ``n_examples`` rows (``None`` when unknown), on a cluster or not."""
    t = int(n_params)
    where = "on the cluster" if distributed else "in this process"
    if t <= NEWTON_MAX_PARAMS:
        return Choice("newton", {"reuse_curvature": True},
                      f"t = {t} <= {NEWTON_MAX_PARAMS}: the exact Hessian, kept after successful "
                      f"steps ({where})")
    if t <= BLOCK_MAX_PARAMS:
        return Choice("block-newton", {"reuse_preconditioner": True},
                      f"t = {t} <= {BLOCK_MAX_PARAMS}: row-block preconditioned Newton-CG, "
                      f"the blocks kept after successful steps ({where})")
    return Choice("lbfgs", {}, f"t = {t} > {BLOCK_MAX_PARAMS}: L-BFGS on the exact gradient, "
                               f"exact Newton-CG steps near the minimum ({where})")
