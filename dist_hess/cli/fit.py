"""``dist-hess fit``: train a network with a Newton-type method and write a zarr store.

`add_command(subparsers)` declares the subcommand (``run=run_fit``) and `run_fit(args)`
runs it: `dist_hess.fit`, then one `dist_hess.evaluate` at the final weights.

The store is the evaluation store of DESIGN.md §5 at the final weights (weights,
value, gradient, the exact Hessian's row blocks, its full matrix when the model has at
most :data:`FULL_HESSIAN_MAX_PARAMS` parameters, and any ``--curvature`` asked for) with
the fit's outcome in the attribute ``fit`` (method, status, message, iterations, the
history of every iteration; with ``--starts``, every start's outcome and the distinct
minima found, ``minima``). With the full Hessian stored, ``dist-hess analyze`` prints
the exact standard errors without the data.
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time

import numpy as np

from ..curvature import STRUCTURES
from ..datasets import PREFIX, SKLEARN_DATASETS
from ..distributed import evaluate
from ..engine import Request
from ..engine.footprint import check_request, result_items
from ..memory import fits
from ..model import Model
from ..store import check_writable, write_store
from ..train import STRATEGIES, fit
from ..train.report import score
from .options import (add_cluster_options, add_target_option, client_from_args, curvature_arg,
                      dashboard_link, float_at_least, int_at_least, load_examples,
                      named_model)

__all__ = ["add_command", "run_fit"]

#: The ``--method`` choices: ``auto`` and every registered step strategy.
METHODS = ("auto", *STRATEGIES)
#: The store holds the full Hessian (8 t^2 bytes: 32 MB at this size) up to this many parameters.
FULL_HESSIAN_MAX_PARAMS = 2000

_EXAMPLES = """\
examples:
  # a 10-16-1 tanh network on scikit-learn's diabetes data, exact Newton, in-process
  dist-hess fit examples/models/diabetes.json sklearn:diabetes --method newton --out diabetes.zarr

  # the default method (auto: chosen from the network's size) on 4 local worker
  # processes, checkpointing every iteration
  dist-hess fit examples/models/digits.json sklearn:digits --workers 4 \\
      --checkpoint digits-ckpt.zarr --out digits.zarr

  # a CSV file whose column "price" is the target, on a running Dask cluster
  dist-hess fit model.json houses.csv --target price --scheduler tcp://10.0.0.5:8786 --out run.zarr

DATA is a .npz file (arrays X, Y), a .csv file (header row; --target names the target
columns), a zarr group (arrays X, Y), or a data set that ships with scikit-learn:
{bundled}
(inputs standardised; diabetes' target standardised too).
Read the result with dist_hess.open_store("run.zarr"); the fit history is in its
attrs["fit"].
""".format(bundled=", ".join(PREFIX + name for name in SKLEARN_DATASETS))


def add_command(subparsers) -> None:
    """Declare ``fit`` on an ``argparse`` subparsers object; sets ``run``."""
    p = subparsers.add_parser(
        "fit",
        help="train a network with Newton's method, block Newton, Newton-CG or "
             "Levenberg-Marquardt -> zarr store",
        description=textwrap.dedent("""\
            Minimise E(W) = sum_i g_i + penalty over the weights of a network with a
            second-order method using exact derivatives, printing one line per
            iteration, then write the final weights, value, gradient and exact
            curvature to a zarr store."""),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.json",
                   help="the network as JSON (DESIGN.md section 1), e.g. examples/models/diabetes.json")
    p.add_argument("data", metavar="DATA",
                   help="the examples: sklearn:NAME, a .npz file, a .csv file or a zarr group "
                        "(see below), e.g. sklearn:diabetes")
    p.add_argument("--out", required=True, metavar="RUN.zarr",
                   help="where to write the zarr store (an existing dist_hess store is replaced; "
                        "anything else there, or a parent that cannot be written, is refused "
                        "before training starts)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto (default): chosen from the number of parameters t by the rule "
                        "in docs/training.md; newton: exact Hessian, exact trust-region steps "
                        "(t up to a few thousand); newton-cg: Steihaug-CG on exact "
                        "Hessian-vector products; block-newton: CG preconditioned by the exact "
                        "Hessian's row blocks; lm: Levenberg-Marquardt on the Gauss-Newton "
                        "matrix, switching to the exact Hessian near a minimum; hessian-free: "
                        "damped Newton-CG with curvature from a rotating subsample of shards; "
                        "lbfgs: L-BFGS on the exact gradient, exact Newton-CG steps near the "
                        "minimum (auto's choice for t > 20,000)")
    p.add_argument("--structure", choices=STRUCTURES,
                   help="blocks used by block-newton (default row) or lm (default full)")
    p.add_argument("--max-iter", type=int_at_least(0), default=500, metavar="N",
                   help="at most N iterations, rejected trial steps included (default 500)")
    p.add_argument("--gtol", type=float_at_least(0), default=1e-6, metavar="G",
                   help="stop when the gradient norm is at most G (default 1e-6), times "
                        "max(1, |E|) under --method auto")
    p.add_argument("--max-time", type=float_at_least(0), metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="zarr group written after every iteration; rerunning the same command "
                        "resumes from it")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--seed", type=int, default=0,
                       help="seed of the initial weights, model.init(seed) (default 0)")
    start.add_argument("--weights", metavar="W.npy", help="start from these weights instead")
    start.add_argument("--starts", type=int_at_least(1), metavar="K",
                       help="multi-start: K fits from model.init(seed), seed 0..K-1 (in parallel "
                            "on the workers of a cluster), keeping the lowest converged loss; "
                            "the store records every start and the distinct minima found "
                            "(value, how many starts reached it, the smallest Hessian "
                            "eigenvalue there); --checkpoint is then a directory")
    add_target_option(p)
    p.add_argument("--curvature", action="append", type=curvature_arg, default=[],
                   metavar="KIND[:STRUCTURE]",
                   help=f"extra curvature to store at the final weights (hessian:row always is, "
                        f"and hessian:full when the model has at most "
                        f"{FULL_HESSIAN_MAX_PARAMS} parameters), e.g. --curvature gauss_newton:row")
    add_cluster_options(p)
    p.add_argument("--quiet", action="store_true", help="only the final summary")
    p.set_defaults(run=run_fit)


# ---------------------------------------------------------------- running

def _format_knob(record) -> str:
    if record.radius is not None:
        return f"radius {record.radius:9.3e}"
    if record.damping is not None:
        return f"damping {record.damping:8.2e}"
    return ""


def _progress_printer(out):
    def callback(w, record):
        ok = "" if record.accepted else "  (rejected)"
        print(f"{record.iteration:5d}  loss {record.value:.10g}  |grad| {record.gradient_norm:9.3e}"
              f"  |step| {record.step_norm:9.3e}  {_format_knob(record)}"
              f"  {record.seconds:7.3f} s{ok}", file=out, flush=True)
        return None
    return callback


def _fit_attrs(result, args) -> dict:
    fit_attrs = {
        "method": result.method, "status": str(result.status), "message": result.message,
        "converged": bool(result.converged), "n_iter": int(result.n_iter),
        "value": float(result.value), "gradient_norm": float(result.gradient_norm),
        "seconds": float(result.seconds), "data": args.data,
        "seed": int(args.seed if result.start is None else result.start),
        "gtol": float(args.gtol), "max_iter": int(args.max_iter),
        "history": [r.to_dict() for r in result.history],
    }
    if result.starts is not None:                     # --starts: every start, the minima
        fit_attrs["start"] = int(result.start)
        fit_attrs["starts"] = [{"seed": i, "status": str(r.status), "value": float(r.value),
                                "gradient_norm": float(r.gradient_norm), "n_iter": int(r.n_iter),
                                "seconds": float(r.seconds)} for i, r in enumerate(result.starts)]
        fit_attrs["minima"] = [m.to_dict() for m in result.minima]
    return {"fit": fit_attrs}


def minima_table(minima: list[dict], n_starts: int) -> str:
    """The distinct minima of a multi-start fit as text (``attrs["fit"]["minima"]``)."""
    lines = [f"distinct minima over {n_starts} starts (converged starts only):",
             f"  {'value':>18} {'starts':>7} {'min Hessian eigenvalue':>23}  seeds"]
    for m in minima:
        eig = "-" if m["min_eigenvalue"] is None else f"{m['min_eigenvalue']:.4g}"
        lines.append(f"  {m['value']:18.10g} {m['count']:7d} {eig:>23}  "
                     f"{', '.join(str(i) for i in m['starts'])}")
    return "\n".join(lines)


def _stored_curvature(model, asked) -> list[tuple[str, str]]:
    """``hessian:row``, ``hessian:full`` when ``t <= FULL_HESSIAN_MAX_PARAMS`` and it fits the
    memory limit (`dist_hess.memory`), then ``asked``."""
    curvature = [("hessian", "row")]
    full = result_items(model, Request(curvature=(("hessian", "full"),)), 0)[0][0]
    if model.n_params <= FULL_HESSIAN_MAX_PARAMS and fits(full):
        curvature.append(("hessian", "full"))
    return curvature + [c for c in asked if c not in curvature]


def run_fit(args) -> int:
    """Run ``dist-hess fit`` from parsed arguments; returns the exit status (0: converged or
    stopped by a limit, the store written; errors raise)."""
    out = sys.stdout
    say = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    check_writable(args.out)              # a bad --out fails now, not after the training
    model = Model.from_json(args.model)
    X, Y = load_examples(args, model)
    model = named_model(args, model)
    n = int(np.shape(X)[0])
    starts = args.starts
    if args.weights:
        w0 = np.load(args.weights)
    else:
        w0 = None if starts else model.init(seed=args.seed)
    client = client_from_args(args, work=n * model.n_params)      # sets --memory-limit
    curvature = _stored_curvature(model, args.curvature)
    check_request(model, Request(curvature=tuple(curvature)), 0)    # the final store, before training
    if client is None:                                  # zarr arrays are read into memory
        X, Y = np.asarray(X), np.asarray(Y)
    where = "in-process" if client is None else f"Dask scheduler {client.scheduler.address}"
    say(f"{args.data}: {n} examples; model {model!r}; method {args.method}; {where}"
        + (f"; {starts} starts" if starts else ""))
    if client is not None:
        say(f"dashboard: {dashboard_link(client)}")
    if args.checkpoint:
        say(f"checkpoint: {args.checkpoint} (rerun the same command to resume)")

    start = time.perf_counter()
    progress = {"verbose": not args.quiet} if starts else \
        {"callback": None if args.quiet else _progress_printer(out)}
    result = fit(model, X, Y, w0=w0, method=args.method, starts=starts, client=client,
                 max_iter=args.max_iter, gtol=args.gtol, max_time=args.max_time,
                 checkpoint=args.checkpoint, structure=args.structure, **progress)

    final = evaluate(model, result.w, X, Y, curvature=[f"{k}:{s}" for k, s in curvature],
                     client=client)
    write_store(args.out, model, result.w, n_examples=n, value=final.value,
                gradient=final.gradient, curvature=final.blocks, attrs=_fit_attrs(result, args))
    seconds = time.perf_counter() - start
    if starts:
        print(minima_table([m.to_dict() for m in result.minima], starts), flush=True)
        print(f"best: start {result.start} (seed {result.start})", flush=True)
    print(f"{result.method}: {result.status} after {result.n_iter} iterations in {seconds:.2f} s: "
          f"{result.message}", flush=True)
    fitted = ""
    if client is None:
        name, value = score(model, result.w, X, Y)
        fitted = f", training {name} {value:.4f}"
    print(f"final loss {result.value:.12g}, gradient norm {result.gradient_norm:.3e}{fitted}; "
          f"wrote {args.out} (weights, value, gradient, "
          f"{', '.join(f'{k}:{s}' for k, s in curvature)}, attrs['fit'])", flush=True)
    if not math.isfinite(result.value):
        return 1
    return 0
