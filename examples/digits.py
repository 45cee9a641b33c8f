"""Multiclass: a 64-16-10 tanh network, softmax cross-entropy, on the 8x8 digits.

    python examples/digits.py

``block-newton`` (the default method) needs the exact Hessian's row blocks (16 blocks of
65 x 65 and 10 of 17 x 17 instead of the full 1210 x 1210 matrix) and a few
Hessian-vector products per iteration. Command line, on 2 local worker processes:

    dist-hess fit examples/models/digits.json sklearn:digits --workers 2 --out digits.zarr
"""
from pathlib import Path

import numpy as np

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train.report import score

MODEL = Path(__file__).parent / "models" / "digits.json"


def main():
    X, Y = load_sklearn("digits")            # Y: labels 0..9
    order = np.random.default_rng(0).permutation(len(Y))
    test, train = order[:297], order[297:]
    model = dh.Model.from_json(MODEL)
    result = dh.fit(model, X[train], Y[train], max_iter=400)
    print(result)
    print(f"{result.message}; {result.n_iter} iterations in {result.seconds:.2f} s")
    accepted = sum(1 for r in result.history if r.accepted)
    print(f"{accepted} accepted steps, loss {result.value:.8g}")
    for part, rows in (("training", train), ("held-out", test)):
        name, value = score(model, result.w, X[rows], Y[rows])
        print(f"{part} {name}: {value:.4f} ({len(rows)} examples)")


if __name__ == "__main__":
    main()
