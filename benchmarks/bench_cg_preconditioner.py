"""CG iterations per selected-parameter solve, by preconditioner (docs/analysis.md).

``dh.wald_table(..., parameters=..., solver="cg")`` solves ``H x_q = e_q`` by
preconditioned CG (dist_hess.analysis.selected). This counts the iterations to a
relative residual of 1e-10 with the layer blocks, the row blocks and no
preconditioner, on the diabetes 10-16-1 fit (exact Newton from seed 0) and on the
t = 1017 network of tests/test_analysis_inference.py. Iteration counts, not timings:
they do not depend on the machine's load.

    python -m benchmarks.bench_cg_preconditioner
"""
from __future__ import annotations

import warnings

import numpy as np

import dist_hess as dh
from dist_hess.analysis import selected
from dist_hess.analysis.source import resolve
from dist_hess.datasets import load_sklearn
from tests.test_analysis_inference import teacher_network


class _Identity:
    def solve(self, R):
        return R.copy()


def iterations(source, parameters) -> dict:
    fitted = resolve(source)
    B = np.zeros((fitted.model.n_params, len(parameters)))
    B[parameters, np.arange(len(parameters))] = 1.0
    out = {}
    for name, pc in [("layer", selected.BlockPreconditioner(fitted, structure="layer")),
                     ("row", selected.BlockPreconditioner(fitted, structure="row")),
                     ("none", _Identity())]:
        products = selected.CurvatureProducts(fitted)
        X, its, _ = selected.conjugate_gradients(products, pc, B, max_iter=5000)
        residual = np.linalg.norm(products(X) - B, axis=0).max()
        out[name] = (its.tolist(), float(residual))
    return out


def main():
    warnings.simplefilter("ignore")
    model = dh.Model.from_json("examples/models/diabetes.json")
    X, y = load_sklearn("diabetes")
    w = dh.fit(model, X, y, method="newton", w0=model.init(seed=0)).w
    for name, (its, res) in iterations((model, w, X, y), [0, 50, 150, 190]).items():
        print(f"diabetes 10-16-1  {name:5s}  iterations {its}  max residual {res:.1e}")
    model, w, X, y = teacher_network()
    for name, (its, res) in iterations((model, w, X, y), [3, 800, model.n_params - 1]).items():
        print(f"t = 1017 network  {name:5s}  iterations {its}  max residual {res:.1e}")


if __name__ == "__main__":
    main()
