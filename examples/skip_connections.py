"""Skip connections: a 10-6-6-1 tanh network where every layer also reads all earlier ones.

    python examples/skip_connections.py

Layer 2 reads layers 1 and 0 (the inputs), the output reads layers 2, 1 and 0
(``"sources"`` in examples/models/skip.json). The exact Hessian couples the rows of
different layers through those connections; ``block-newton`` keeps that coupling in
its Hessian-vector products and uses the row blocks only to precondition. All four
methods from the same start:

    dist-hess fit examples/models/skip.json sklearn:diabetes --method block-newton --out skip.zarr
"""
from pathlib import Path

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train.report import score

MODEL = Path(__file__).parent / "models" / "skip.json"


def main():
    X, Y = load_sklearn("diabetes")
    model = dh.Model.from_json(MODEL)
    print(model, "sources:", [layer["sources"] for layer in model.to_dict()["layers"]])
    w0 = model.init(seed=0)
    for method in ("newton", "newton-cg", "block-newton", "lm"):
        result = dh.fit(model, X, Y, w0=w0, method=method, max_iter=500)
        name, value = score(model, result.w, X, Y)
        print(f"{method:>12}: {result.status}, {result.n_iter:3d} iterations, {result.seconds:6.2f} s, "
              f"loss {result.value:.8g}, gradient norm {result.gradient_norm:.1e}, {name} {value:.4f}")


if __name__ == "__main__":
    main()
