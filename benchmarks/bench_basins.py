"""Which local minimum: each method against scipy's L-BFGS-B from many starts.

    python -m benchmarks.bench_basins                  # 6 networks x 6 starts (about 2 minutes)
    python -m benchmarks.bench_basins --seeds 20 --max-iter 500

Networks are not convex, so "a loss at least as low as L-BFGS-B from the same start"
is a property of the start, not of a method. This benchmark measures how often it
holds. For each small network on a scikit-learn data set (inputs standardised, L2
penalty) and each start ``Model.init(seed)``, it runs scipy's ``L-BFGS-B`` (defaults,
value and gradient from ``model.value_and_gradient``) and every method of ``dh.fit``
(defaults, ``max_iter`` as given), and counts per method: runs that reached
``||grad E|| < 1e-6``; runs that ended at or below L-BFGS-B's loss (relative 1e-8);
runs that ended in the same minimum (relative 1e-5); seconds and iterations in all.
"""
from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

METHODS = ("newton", "newton-cg", "block-newton", "lm")


def _dense(units, activation):
    return {"type": "dense", "units": units, "activation": activation}


# name: (data set, hidden layer, outputs, loss, L2 lambda)
CASES = {
    "diabetes 10-8-1 tanh": ("diabetes", _dense(8, "tanh"), 1, "squared", 1e-2),
    "diabetes 10-3-1 tanh": ("diabetes", _dense(3, "tanh"), 1, "squared", 1e-1),
    "breast_cancer 30-4-1 tanh": ("breast_cancer", _dense(4, "tanh"), 1, "binary_cross_entropy", 1e-2),
    "iris 4-5-3 tanh": ("iris", _dense(5, "tanh"), 3, "softmax_cross_entropy", 1e-2),
    "wine 13-4-3 tanh": ("wine", _dense(4, "tanh"), 3, "softmax_cross_entropy", 1e-1),
    "iris 4-3-3 logistic": ("iris", _dense(3, "logistic"), 3, "softmax_cross_entropy", 1e-1),
}


def model_and_data(name):
    import dist_hess as dh
    from dist_hess.datasets import load_sklearn

    data, hidden, outputs, loss, lam = CASES[name]
    X, Y = load_sklearn(data)
    spec = {"inputs": X.shape[1], "layers": [hidden, _dense(outputs, "identity")], "loss": loss,
            "penalty": {"type": "l2", "lambda": lam}}
    return dh.Model.from_dict(spec), X, Y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="starts per network (seeds 0..N-1)")
    parser.add_argument("--max-iter", type=int, default=500, help="max_iter of dh.fit")
    parser.add_argument("--verbose", action="store_true", help="one line per network and start")
    args = parser.parse_args(argv)
    from scipy.optimize import minimize

    import dist_hess as dh

    totals = {m: {"converged": 0, "at_or_below": 0, "same": 0, "seconds": 0.0, "iterations": 0}
              for m in METHODS}
    per_case = {}
    runs = 0
    for name in CASES:
        model, X, Y = model_and_data(name)
        per_case[name] = {m: 0 for m in METHODS}
        for seed in range(args.seeds):
            w0 = model.init(seed=seed)
            ref = minimize(lambda w: model.value_and_gradient(w, X, Y), w0, jac=True, method="L-BFGS-B")
            runs += 1
            line = [f"{name} seed {seed}: L-BFGS-B {ref.fun:.7g}"]
            for method in METHODS:
                start = time.perf_counter()
                result = dh.fit(model, X, Y, w0=w0, method=method, max_iter=args.max_iter)
                t = totals[method]
                t["seconds"] += time.perf_counter() - start
                t["iterations"] += result.n_iter
                t["converged"] += result.gradient_norm < 1e-6
                below = result.value <= ref.fun + 1e-8 * abs(ref.fun)
                t["at_or_below"] += below
                per_case[name][method] += below
                t["same"] += abs(result.value - ref.fun) <= 1e-5 * abs(ref.fun)
                line.append(f"{method} {result.value:.7g}{'' if below else ' (higher)'}")
            if args.verbose:
                print(", ".join(line), flush=True)

    print(f"\n{len(CASES)} networks x {args.seeds} starts = {runs} runs per method, "
          f"max_iter={args.max_iter}\n")
    print("| method | reached gtol 1e-6 | at or below L-BFGS-B | same minimum | iterations | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, t in totals.items():
        print(f"| `{method}` | {t['converged']}/{runs} | {t['at_or_below']}/{runs} | {t['same']}/{runs} "
              f"| {t['iterations']} | {t['seconds']:.1f} |")
    print("\nat or below L-BFGS-B, per network (out of %d starts):\n" % args.seeds)
    print("| network | " + " | ".join(f"`{m}`" for m in METHODS) + " |")
    print("|---|" + "---:|" * len(METHODS))
    for name, counts in per_case.items():
        print(f"| {name} | " + " | ".join(str(counts[m]) for m in METHODS) + " |")


if __name__ == "__main__":
    main()
