"""dist_hess: exact derivatives of feed-forward neural networks, data-parallel on Dask.

Public API (the contract in DESIGN.md §3)::

    import dist_hess as dh
    model = dh.Model.from_dict(spec)
    w = model.init(seed=0)
    model.value(w, X, Y); model.gradient(w, X, Y)
    model.curvature(w, X, Y, kind="hessian", structure="row")
    dh.evaluate(model, w, X, Y, curvature="hessian", store="run.zarr")
    dh.fit(model, X, Y, method="newton")
    dh.wald_table("run.zarr")
"""
from .model import Model

__all__ = ["Model", "evaluate", "fit", "open_store", "wald_table"]
__version__ = "0.1.0"


def __getattr__(name):
    # Heavier pieces (Dask, zarr, scipy optimisers) load on first use.
    if name == "evaluate":
        from .distributed import evaluate
        return evaluate
    if name == "open_store":
        from .store import open_store
        return open_store
    if name == "fit":
        from .train import fit
        return fit
    if name == "wald_table":
        from .analysis import wald_table
        return wald_table
    raise AttributeError(f"module 'dist_hess' has no attribute {name!r}")
