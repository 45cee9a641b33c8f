"""Regression: a 10-16-1 tanh network on scikit-learn's diabetes data, exact Newton.

    python examples/diabetes.py

The same fit from the command line (writes the zarr store diabetes.zarr):

    dist-hess fit examples/models/diabetes.json sklearn:diabetes --method newton --out diabetes.zarr

``newton`` uses the full exact Hessian (193 x 193 here) and solves each trust-region
subproblem exactly, so it converges quadratically once near a minimum.
"""
from pathlib import Path

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train.report import score

MODEL = Path(__file__).parent / "models" / "diabetes.json"


def main():
    X, Y = load_sklearn("diabetes")          # inputs and target standardised
    model = dh.Model.from_json(MODEL)
    result = dh.fit(model, X, Y, method="newton", max_iter=300, gtol=1e-8)
    name, value = score(model, result.w, X, Y)
    print(result)
    print(f"{result.message}; {result.n_iter} iterations in {result.seconds:.2f} s")
    print(f"loss {result.value:.10g}, training {name} {value:.4f}")
    tail = [f"{r.gradient_norm:.1e}" for r in result.history if r.accepted][-4:]
    print("gradient norms of the last accepted steps (quadratic convergence):", ", ".join(tail))


if __name__ == "__main__":
    main()
