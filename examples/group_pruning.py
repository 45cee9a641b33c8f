"""Group pruning: the norm penalty drives whole hidden units to zero, OBS pruning removes them.

    python examples/group_pruning.py

The norm penalty ``lambda sum_k (sqrt(||W^k||^2 + e^2) - e)`` (the seed's §3 example
``lambda sum_k ||W^k||`` smoothed by ``e``) is a group lasso with one group per layer
(Yuan & Lin 2006): it puts a whole layer's penalised weights at (nearly) zero
together or leaves them all. Writing each hidden unit as its own one-unit layer
(skip connections are first-class: the output reads layers 1..8) makes each group one
unit's incoming weights, so the penalty switches units off. Then backward pruning
(`dist_hess.analysis.prune`, ``unit=True``: the unit's row and its outgoing weight)
ranks units by their OBS saliency (Hassibi & Stork 1993) from the exact Hessian,
removes them while their joint Wald test says they carry nothing (p > 0.05),
retraining after each removal. The same network with an L2 penalty keeps every unit.

A unit whose weights are all 0 leaves its bias without curvature (a flat direction of
the exact Hessian): pruning names it non-identifiable and removes it first.

Model file equivalent (for ``dist-hess fit``): layers 1..8 ``{"type": "dense",
"units": 1, "activation": "tanh", "sources": [0]}``, layer 9 ``{"type": "dense",
"units": 1, "activation": "identity", "sources": [1, ..., 8]}``, and the penalty below.
"""
import time

import numpy as np

import dist_hess as dh
from dist_hess.analysis import prune
from dist_hess.datasets import load_sklearn

UNITS = 8
HIDDEN = list(range(1, UNITS + 1))
GROUP = [{"type": "norm", "lambda": 5.0, "epsilon": 0.01, "layers": HIDDEN},
         {"type": "l2", "lambda": 0.1, "layers": [UNITS + 1]}]
RIDGE = {"type": "l2", "lambda": 0.1}


def spec(penalty):
    layers = [{"type": "dense", "units": 1, "activation": "tanh", "sources": [0]} for _ in HIDDEN]
    layers.append({"type": "dense", "units": 1, "activation": "identity", "sources": HIDDEN})
    return {"inputs": 10, "layers": layers, "loss": "squared", "penalty": penalty}


def unit_norms(model, w):
    """``||W^k||`` over each hidden unit's penalised (non-bias) incoming weights."""
    return np.array([np.linalg.norm(W[0, 1:]) for W in model.unpack(w)[:UNITS]])


def main():
    start = time.perf_counter()
    X, y = load_sklearn("diabetes")
    for name, penalty in (("l2 only", RIDGE), ("norm per unit", GROUP)):
        model = dh.Model.from_dict(spec(penalty))
        fit = dh.fit(model, X, y, w0=model.init(seed=0), method="newton", max_iter=500)
        norms = unit_norms(model, fit.w)
        print(f"{name:>14}: E = {fit.value:8.3f} ({fit.status}, {fit.n_iter} iterations); "
              f"incoming-weight norm of units 1..{UNITS}:")
        print(" " * 16 + " ".join(f"{x:7.4f}" for x in norms))
    print(f"\n{int(np.sum(norms < 1e-3))} of {UNITS} units are switched off by the norm penalty "
          f"(norm < 1e-3). Backward pruning of whole units, ranked by OBS saliency, "
          f"stopped by the joint Wald test:\n")
    path = prune(model, X, y, fit.w, unit=True, rank="obs", criterion="wald", threshold=0.05,
                 fit_options={"max_iter": 300})
    for step in path.steps[1:]:
        k = int(step.names[0].split(".")[0][1:])              # "L8.0 <- bias" -> 8
        why = ("non-identifiable (a flat direction: goes first)" if "non-identifiable" in step.note
               else f"Wald p = {step.p_value:.3g}, OBS saliency {step.saliency:.2e}")
        print(f"  removed unit {k} (norm {norms[k - 1]:.1e}): {why}; loss sum_i g_i {step.loss:.4f}, "
              f"{step.n_free} parameters left")
    best = path.steps[path.best]
    print(f"\n  stop: {path.stop_reason}")
    print(f"  kept: {best.n_free} of {model.n_params} parameters; loss {best.loss:.4f} "
          f"(before pruning {path.steps[0].loss:.4f}); {time.perf_counter() - start:.1f} s in all")


if __name__ == "__main__":
    main()
