"""Small networks over many starts: each method of dh.fit against L-BFGS-B and scikit-learn.

    python -m benchmarks.bench_basins                      # 9 networks x 8 starts, every method
    python -m benchmarks.bench_basins --networks iris,wine --methods newton,lm --starts 4
    python -m benchmarks.bench_basins --json basins.json   # also write every run
    python -m benchmarks.bench_basins --networks rbf --methods default --starts 32 --maxcor 5,20

Networks are not convex: which local minimum a fit reaches depends on its start, so a
method is judged over many starts. For each network (bundled scikit-learn data, inputs
standardised, L2 penalty) and each start ``w0 = model.init(seed=s)``, ``s < starts``,
the benchmark runs, one after the other from the same ``w0``:

- scipy's ``L-BFGS-B`` fed ``model.value_and_gradient`` (``gtol=1e-10``, ``ftol=0``: it
  runs until its line search can no longer decrease ``E``);
- scikit-learn's ``MLPRegressor`` / ``MLPClassifier(solver="lbfgs")`` where the network
  is one it can express (dense layers, no skip connection, one hidden activation), with
  ``alpha`` equal to our L2 ``lambda`` (the same minimisers: scikit-learn minimises
  ``E / n``; docs/sklearn.md), started from ``w0`` (written into ``coefs_`` /
  ``intercepts_``, then ``warm_start``) with its defaults otherwise (``tol=1e-4`` on
  the gradient of ``E/n``, ``max_iter=200`` raised to 15000), its loss measured as
  our ``E`` at its weights;
- ``dh.fit`` with each method (its defaults, ``max_iter`` as given);
- with ``--maxcor 5,20``, L-BFGS-B again with those memories (scipy's default is 10):
  the yardstick of chance, since which minimum a start reaches depends on the path,
  and L-BFGS-B against itself shows how far a median over the starts moves without
  any method being better (docs/training.md).

Per network and solver it reports: starts converged (``||grad E|| <= 1e-6 max(1, |E|)``
at the end), the median and the best final ``E``, the number of distinct minima among
the converged starts (`dist_hess.train.starts.group_minima`: values within
``1e-6 max(1, |E|)`` are one minimum), the total seconds of the starts and their ratio
to L-BFGS-B's. BLAS runs on one thread; timings on a busy machine are noisy, compare
ratios within one run (``--repeat R`` times every fit ``R`` times and keeps the fastest).
"""
from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

METHODS = ("newton", "newton-cg", "block-newton", "lm")
REFERENCE = "L-BFGS-B"
SKLEARN = "sklearn-lbfgs"
#: ``||grad E|| <= CONVERGED * max(1, |E|)``: a start converged.
CONVERGED = 1e-6
MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


def _dense(units, activation, sources=None):
    layer = {"type": "dense", "units": units, "activation": activation}
    if sources is not None:
        layer["sources"] = sources
    return layer


@dataclass(frozen=True)
class Network:
    """A benchmark network: a bundled data set and a model (an example file or a spec)."""

    name: str
    data: str
    example: str | None = None        # examples/models/<example>
    layers: tuple = ()
    loss: str = ""
    penalty: float = 0.0

    def spec(self, n_inputs: int) -> dict:
        if self.example is not None:
            return json.loads((MODELS / self.example).read_text())
        return {"inputs": n_inputs, "layers": list(self.layers), "loss": self.loss,
                "penalty": {"type": "l2", "lambda": self.penalty}}


NETWORKS = (
    Network("diabetes 10-16-1 (example)", "diabetes", "diabetes.json"),
    Network("breast cancer 30-8-1 (example)", "breast_cancer", "breast_cancer.json"),
    Network("digits 64-16-10 (example)", "digits", "digits.json"),
    Network("rbf 10-8(rbf)+skip-1 (example)", "diabetes", "rbf.json"),
    Network("skip 10-6-6-1 (example)", "diabetes", "skip.json"),
    Network("iris 4-5-3", "iris", layers=(_dense(5, "tanh"), _dense(3, "identity")),
            loss="softmax_cross_entropy", penalty=0.01),
    Network("wine 13-8-3 skip", "wine", layers=(_dense(8, "tanh"), _dense(3, "identity", [1, 0])),
            loss="softmax_cross_entropy", penalty=0.5),
    Network("breast cancer 30-6-1", "breast_cancer",
            layers=(_dense(6, "tanh"), _dense(1, "identity")), loss="binary_cross_entropy",
            penalty=1.0),
    Network("diabetes 10-12-1", "diabetes", layers=(_dense(12, "tanh"), _dense(1, "identity")),
            loss="squared", penalty=1.0),
)


def model_and_data(network: Network):
    import dist_hess as dh
    from dist_hess.datasets import load_sklearn

    X, Y = load_sklearn(network.data)
    return dh.Model.from_dict(network.spec(X.shape[1])), X, Y


@dataclass
class Run:
    value: float
    gradient_norm: float
    seconds: float
    iterations: int

    @property
    def converged(self) -> bool:
        return self.gradient_norm <= CONVERGED * max(1.0, abs(self.value))


def _timed(function, repeat: int):
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - start)
    return out, best


def run_lbfgs(model, X, Y, w0, repeat, maxcor: int = 10) -> Run:
    from scipy.optimize import minimize

    result, seconds = _timed(lambda: minimize(
        lambda w: model.value_and_gradient(w, X, Y), w0, jac=True, method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 0.0, "maxiter": 15000, "maxfun": 30000,
                 "maxcor": maxcor}), repeat)
    value, gradient = model.value_and_gradient(result.x, X, Y)
    return Run(float(value), float(np.linalg.norm(gradient)), seconds, int(result.nit))


def sklearn_matches(model) -> bool:
    """A dense chain (no skip connection) with one hidden activation scikit-learn has,
    an identity output and an L2 penalty (or none)."""
    hidden = model.layers[:-1]
    if not hidden or any(layer.propagation.type != "dense" for layer in model.layers):
        return False
    if any(tuple(layer.sources) != (layer.index - 1,) for layer in model.layers):
        return False
    acts = {layer.activation.name for layer in hidden}
    penalty = model.penalty.to_dict() if model.penalty is not None else {"type": "l2", "lambda": 0.0}
    return (len(acts) == 1 and acts <= {"tanh", "logistic", "relu", "identity"}
            and model.layers[-1].activation.name == "identity"
            and penalty.get("type") == "l2" and np.ndim(penalty.get("lambda")) == 0)


def run_sklearn(model, X, Y, w0, repeat) -> Run | None:
    """scikit-learn's L-BFGS MLP from ``w0`` (module docstring); ``None`` if it cannot express ``model``."""
    if not sklearn_matches(model):
        return None
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from dist_hess.sklearn import from_sklearn

    hidden = tuple(layer.units for layer in model.layers[:-1])
    alpha = 0.0 if model.penalty is None else float(model.penalty.to_dict()["lambda"])
    loss = model.loss.name
    cls = MLPRegressor if loss == "squared" else MLPClassifier
    target = Y if loss != "softmax_cross_entropy" else np.asarray(Y, dtype=int)

    def fit():
        mlp = cls(hidden_layer_sizes=hidden, activation=model.layers[0].activation.name,
                  solver="lbfgs", alpha=alpha, max_iter=1, warm_start=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(X, target)                       # sets the attributes; weights replaced below
            for k, W in enumerate(model.unpack(w0)):
                mlp.coefs_[k][...] = W[:, 1:].T
                mlp.intercepts_[k][...] = W[:, 0]
            mlp.set_params(max_iter=15000)
            mlp.fit(X, target)
        return mlp

    mlp, seconds = _timed(fit, repeat)
    theirs, w = from_sklearn(mlp)
    value, gradient = model.value_and_gradient(w, X, Y)
    return Run(float(value), float(np.linalg.norm(gradient)), seconds, int(mlp.n_iter_))


def run_fit(model, X, Y, w0, method, max_iter, repeat) -> Run:
    import dist_hess as dh

    kwargs = {} if method == "default" else {"method": method}
    result, seconds = _timed(lambda: dh.fit(model, X, Y, w0=w0, max_iter=max_iter, **kwargs), repeat)
    return Run(float(result.value), float(result.gradient_norm), seconds, int(result.n_iter))


def summarise(runs: list[Run]) -> dict:
    from dist_hess.train.starts import group_minima

    values = np.array([r.value for r in runs])
    converged = [r.value for r in runs if r.converged]
    return {"converged": len(converged), "starts": len(runs), "median": float(np.median(values)),
            "best": float(values.min()), "minima": len(group_minima(converged)),
            "seconds": float(sum(r.seconds for r in runs)),
            "iterations": int(sum(r.iterations for r in runs))}


def _cell(x, digits=7):
    return f"{x:.{digits}g}"


def table(results: dict, solvers: list[str]) -> str:
    """Markdown: one row per network and solver."""
    lines = ["| network | solver | converged | median E | best E | distinct minima | seconds "
             "| seconds / L-BFGS-B | median vs L-BFGS-B |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, per in results.items():
        ref = per[REFERENCE]
        for solver in solvers:
            s = per.get(solver)
            if s is None:
                continue
            ratio = s["seconds"] / ref["seconds"] if ref["seconds"] > 0 else math.nan
            verdict = "" if solver == REFERENCE else (
                "at or below" if s["median"] <= ref["median"] * (1 + 1e-9) else "higher")
            lines.append(f"| {name} | `{solver}` | {s['converged']}/{s['starts']} "
                         f"| {_cell(s['median'])} | {_cell(s['best'])} | {s['minima']} "
                         f"| {s['seconds']:.2f} | {ratio:.2f} | {verdict} |")
    return "\n".join(lines)


def headline(results: dict, solvers: list[str]) -> str:
    """Markdown: per solver, over all networks."""
    lines = ["| solver | networks with median at or below L-BFGS-B's | starts converged "
             "| total seconds / L-BFGS-B's | networks faster than L-BFGS-B |",
             "|---|---:|---:|---:|---:|"]
    ref_total = sum(per[REFERENCE]["seconds"] for per in results.values())
    for solver in solvers:
        rows = [(per[solver], per[REFERENCE]) for per in results.values() if solver in per]
        if not rows:
            continue
        at_or_below = sum(s["median"] <= r["median"] * (1 + 1e-9) for s, r in rows)
        faster = sum(s["seconds"] <= r["seconds"] for s, r in rows)
        converged = sum(s["converged"] for s, _ in rows)
        starts = sum(s["starts"] for s, _ in rows)
        total = sum(s["seconds"] for s, _ in rows) / sum(r["seconds"] for _, r in rows)
        lines.append(f"| `{solver}` | {at_or_below}/{len(rows)} | {converged}/{starts} "
                     f"| {total:.2f} | {faster}/{len(rows)} |")
    lines.append(f"\nL-BFGS-B: {ref_total:.1f} s over {len(results)} networks.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=8, help="starts per network (seeds 0..N-1)")
    parser.add_argument("--max-iter", type=int, default=1000, help="max_iter of dh.fit")
    parser.add_argument("--methods", default="default," + ",".join(METHODS),
                        help="dh.fit methods, comma-separated ('default': no method given)")
    parser.add_argument("--networks", default="",
                        help="comma-separated substrings of network names (default: all)")
    parser.add_argument("--maxcor", default="",
                        help="comma-separated L-BFGS-B memories to run besides scipy's 10")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's MLP")
    parser.add_argument("--repeat", type=int, default=1, help="time every fit R times, keep the fastest")
    parser.add_argument("--json", metavar="PATH", help="write every run and the summary as JSON")
    parser.add_argument("--verbose", action="store_true", help="one line per network and start")
    args = parser.parse_args(argv)

    from dist_hess.runtime import tune_allocator
    tune_allocator()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    wanted = [w.strip().lower() for w in args.networks.split(",") if w.strip()]
    networks = [n for n in NETWORKS if not wanted or any(w in n.name.lower() for w in wanted)]
    memories = {f"{REFERENCE} maxcor={k}": k for k in
                (int(m) for m in args.maxcor.split(",") if m.strip())}
    solvers = [REFERENCE, *memories] + ([] if args.no_sklearn else [SKLEARN]) + methods
    results, every = {}, {}
    began = time.perf_counter()
    for network in networks:
        model, X, Y = model_and_data(network)
        runs = {s: [] for s in solvers}
        for seed in range(args.starts):
            w0 = model.init(seed=seed)
            runs[REFERENCE].append(run_lbfgs(model, X, Y, w0, args.repeat))
            for name, maxcor in memories.items():
                runs[name].append(run_lbfgs(model, X, Y, w0, args.repeat, maxcor))
            if SKLEARN in runs:
                sk = run_sklearn(model, X, Y, w0, args.repeat)
                if sk is None:
                    del runs[SKLEARN]
                else:
                    runs[SKLEARN].append(sk)
            for method in methods:
                runs[method].append(run_fit(model, X, Y, w0, method, args.max_iter, args.repeat))
            if args.verbose:
                print(f"{network.name} seed {seed}: " + ", ".join(
                    f"{s} {r[-1].value:.7g}{'' if r[-1].converged else ' (not converged)'}"
                    for s, r in runs.items()), flush=True)
        results[network.name] = {s: summarise(r) for s, r in runs.items()}
        every[network.name] = {s: [r.__dict__ for r in rs] for s, rs in runs.items()}
        print(f"done: {network.name} (t = {model.n_params}, n = {X.shape[0]}) after "
              f"{time.perf_counter() - began:.0f} s", flush=True)

    print(f"\n{len(networks)} networks x {args.starts} starts, dh.fit max_iter={args.max_iter}, "
          f"one BLAS thread, {time.perf_counter() - began:.0f} s in all\n")
    print(table(results, solvers))
    print()
    print(headline(results, solvers))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": results, "runs": every}, indent=1))


if __name__ == "__main__":
    main()
