"""Newton-type training: one driver loop, six step strategies.

``fit(model, X, Y, method=...)`` builds an `Objective` (in process, or on Dask), a step
strategy (`dist_hess.train.strategies`) and a globalisation rule (a `Globalization`:
`TrustRegion` or `Damping`), and runs the driver (`dist_hess.train.driver`), optionally
checkpointing to zarr after every iteration (`dist_hess.train.checkpoint`).
"""
from .checkpoint import read_checkpoint
from .driver import fit, minimize
from .hessian_free import HessianFree
from .lbfgs import LBFGS
from .globalization import Damping, Globalization, TrustRegion
from .objective import DaskObjective, LocalObjective, Objective
from .result import FitResult, IterationRecord, Status
from .strategies import STRATEGIES

__all__ = ["fit", "minimize", "FitResult", "IterationRecord", "Status", "TrustRegion", "Damping",
           "Globalization", "Objective", "LocalObjective", "DaskObjective", "read_checkpoint",
           "STRATEGIES", "HessianFree", "LBFGS"]
