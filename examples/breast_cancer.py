"""Binary classification: a 30-8-1 tanh network, logistic loss, on breast cancer data.

    python examples/breast_cancer.py

Trains with the default method, ``block-newton``: truncated CG on exact Hessian-vector
products, preconditioned by the exact Hessian's row blocks (one block per unit), with
the trust region in the preconditioner's norm. Holds out a fifth of the examples.
Command line (on all 569 examples):

    dist-hess fit examples/models/breast_cancer.json sklearn:breast_cancer --out bc.zarr
"""
from pathlib import Path

import numpy as np

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train.report import score

MODEL = Path(__file__).parent / "models" / "breast_cancer.json"


def main():
    X, Y = load_sklearn("breast_cancer")     # Y: 0 malignant, 1 benign
    order = np.random.default_rng(0).permutation(len(Y))
    test, train = order[: len(Y) // 5], order[len(Y) // 5:]
    model = dh.Model.from_json(MODEL)
    result = dh.fit(model, X[train], Y[train], method="block-newton", max_iter=300)
    print(result)
    print(f"{result.message}; {result.n_iter} iterations in {result.seconds:.2f} s")
    for part, rows in (("training", train), ("held-out", test)):
        name, value = score(model, result.w, X[rows], Y[rows])
        print(f"{part} {name}: {value:.4f} ({len(rows)} examples)")


if __name__ == "__main__":
    main()
