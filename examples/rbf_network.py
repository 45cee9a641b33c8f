"""A radial-basis-function network (the paper's §4.3) on the diabetes data.

    python examples/rbf_network.py

Layer 1 has 8 Gaussian units ``x_j = exp(-a_j / 2)``, ``a_j = exp(beta_j) ||x - mu_j||^2``
(centres ``mu_j`` and log-widths ``beta_j`` are trained); the output reads the RBF
units and, by a skip connection, the inputs (a linear part). Trained by ``newton``
(exact Hessian) and by ``block-newton`` from the same start. Command line:

    dist-hess fit examples/models/rbf.json sklearn:diabetes --method newton --out rbf.zarr
"""
from pathlib import Path

import numpy as np

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train.report import score

MODEL = Path(__file__).parent / "models" / "rbf.json"


def main():
    X, Y = load_sklearn("diabetes")
    model = dh.Model.from_json(MODEL)
    w0 = model.init(seed=0)
    for method in ("newton", "block-newton"):
        result = dh.fit(model, X, Y, w0=w0, method=method, max_iter=400)
        name, value = score(model, result.w, X, Y)
        print(f"{method:>12}: {result.status}, {result.n_iter} iterations, {result.seconds:.2f} s, "
              f"loss {result.value:.8g}, gradient norm {result.gradient_norm:.1e}, {name} {value:.4f}")
    widths = np.exp(-0.5 * model.unpack(result.w)[0][:, -1])
    print("RBF widths exp(-beta/2):", np.array2string(widths, precision=3))


if __name__ == "__main__":
    main()
