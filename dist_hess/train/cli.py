"""``dist-hess fit``: train a network with a Newton-type method and write a zarr store.

Two functions plug into the ``dist-hess`` command line (`dist_hess.cli`):
`add_fit_parser(subparsers)` declares the subcommand and `run_fit(args)` runs it.
``python -m dist_hess.train.cli fit ...`` runs the same subcommand on its own.

The store is the evaluation store of DESIGN.md §5 at the final weights (weights,
value, gradient, the exact Hessian's row blocks and any ``--curvature`` asked for) with
the fit's outcome in the attribute ``fit`` (method, status, message, iterations, the
history of every iteration).
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time

import numpy as np

__all__ = ["add_fit_parser", "run_fit", "main"]

METHODS = ("newton", "newton-cg", "block-newton", "lm")
_STRUCTURES = ("row", "layer", "full")

_EXAMPLES = """\
examples:
  # a 10-16-1 tanh network on scikit-learn's diabetes data, exact Newton, in-process
  dist-hess fit examples/models/diabetes.json sklearn:diabetes --method newton --out diabetes.zarr

  # the default method (block Newton: CG preconditioned by the Hessian's row blocks)
  # on 4 local worker processes, checkpointing every iteration
  dist-hess fit examples/models/digits.json sklearn:digits --workers 4 \\
      --checkpoint digits-ckpt.zarr --out digits.zarr

  # a CSV file whose column "price" is the target, on a running Dask cluster
  dist-hess fit model.json houses.csv --target price --scheduler tcp://10.0.0.5:8786 --out run.zarr

DATA is a .npz file (arrays X, Y), a .csv file (header row; --target names the target
columns), a zarr group (arrays X, Y), or a data set that ships with scikit-learn:
sklearn:diabetes, sklearn:breast_cancer, sklearn:digits, sklearn:iris, sklearn:wine
(inputs standardised; diabetes' target standardised too).
Read the result with dist_hess.open_store("run.zarr"); the fit history is in its
attrs["fit"].
"""


from ..cli import curvature_arg, int_at_least  # noqa: E402  (option parsers shared by every subcommand)


class FitCommandError(ValueError):
    """A user error: reported as one line, exit status 1."""


_positive_int = int_at_least(1)
_non_negative_int = int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_fit_parser(subparsers) -> argparse.ArgumentParser:
    """Declare ``fit`` on an ``argparse`` subparsers object; sets ``run=run_fit``."""
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
                   help="where to write the zarr store (an existing dist_hess store is replaced)")
    p.add_argument("--method", choices=METHODS, default="block-newton",
                   help="newton: exact Hessian, exact trust-region steps (t up to a few "
                        "thousand); newton-cg: Steihaug-CG on exact Hessian-vector products; "
                        "block-newton (default): CG preconditioned by the exact Hessian's row "
                        "blocks, the scalable choice; lm: Levenberg-Marquardt on the "
                        "Gauss-Newton matrix, switching to the exact Hessian near a minimum")
    p.add_argument("--structure", choices=_STRUCTURES,
                   help="blocks used by block-newton (default row) or lm (default full)")
    p.add_argument("--max-iter", type=_non_negative_int, default=500, metavar="N",
                   help="at most N iterations, rejected trial steps included (default 500)")
    p.add_argument("--gtol", type=_non_negative_float, default=1e-6, metavar="G",
                   help="stop when the gradient norm is at most G (default 1e-6)")
    p.add_argument("--max-time", type=_non_negative_float, metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="zarr group written after every iteration; rerunning the same command "
                        "resumes from it")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, model.init(seed) (default 0)")
    p.add_argument("--weights", metavar="W.npy", help="start from these weights instead")
    p.add_argument("--target", action="append", metavar="COL",
                   help="for a .csv DATA: the target column(s); repeat or separate by commas")
    p.add_argument("--curvature", action="append", type=curvature_arg, default=[],
                   metavar="KIND[:STRUCTURE]",
                   help="extra curvature to store at the final weights (hessian:row always is), "
                        "e.g. --curvature hessian:full")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR",
                       help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="start N local worker processes for this run. Without --scheduler "
                            "or --workers: in-process for small problems, a local cluster "
                            "(one worker per core) for large ones")
    p.add_argument("--quiet", action="store_true", help="only the final summary")
    p.set_defaults(run=run_fit)
    return p


# ---------------------------------------------------------------- running

def _load(args, model):
    from .datasets import is_sklearn_name, load_dataset, load_sklearn

    targets = [t.strip() for item in (args.target or []) for t in item.split(",") if t.strip()]
    if is_sklearn_name(args.data):
        X, Y = load_sklearn(args.data)
    else:
        X, Y = load_dataset(args.data, targets)
    if model.loss.name == "softmax_cross_entropy" and isinstance(Y, np.ndarray) and Y.ndim == 1:
        if not np.all(Y == np.round(Y)):
            raise FitCommandError("softmax_cross_entropy targets must be integer class labels")
        Y = Y.astype(np.int64)
    return X, Y


def _client(args, work: int):
    from dist_hess.distributed.cluster import resolve_client
    return resolve_client(args.scheduler, n_workers=args.workers, work=work)


def _as_local_or_dask(X, Y, client):
    """In-memory numpy when running in-process; dask arrays (lazy) for a cluster."""
    if client is None:
        return np.asarray(X), np.asarray(Y)
    import dask.array as da

    def lazy(a):
        if isinstance(a, (np.ndarray, da.Array)):
            return a
        return da.from_zarr(a) if hasattr(a, "chunks") and hasattr(a, "store") else np.asarray(a)
    return lazy(X), lazy(Y)


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
    return {"fit": {
        "method": result.method, "status": str(result.status), "message": result.message,
        "converged": bool(result.converged), "n_iter": int(result.n_iter),
        "value": float(result.value), "gradient_norm": float(result.gradient_norm),
        "seconds": float(result.seconds), "data": args.data, "seed": int(args.seed),
        "gtol": float(args.gtol), "max_iter": int(args.max_iter),
        "history": [r.to_dict() for r in result.history],
    }}


def run_fit(args) -> int:
    """Run ``dist-hess fit`` from parsed arguments; returns the exit status (0: converged or
    stopped by a limit, the store written; errors raise)."""
    import dist_hess as dh
    from dist_hess.store import write_store

    out = sys.stdout
    say = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    model = dh.Model.from_json(args.model)
    X, Y = _load(args, model)
    n = int(np.shape(X)[0])
    if args.weights:
        w0 = np.load(args.weights)
    else:
        w0 = model.init(seed=args.seed)
    client = _client(args, work=n * model.n_params)
    X, Y = _as_local_or_dask(X, Y, client)
    where = "in-process" if client is None else f"Dask scheduler {client.scheduler.address}"
    say(f"{args.data}: {n} examples; model {model!r}; method {args.method}; {where}")
    if args.checkpoint:
        say(f"checkpoint: {args.checkpoint} (rerun the same command to resume)")

    start = time.perf_counter()
    result = dh.fit(model, X, Y, w0=w0, method=args.method, client=client,
                    max_iter=args.max_iter, gtol=args.gtol, max_time=args.max_time,
                    checkpoint=args.checkpoint, structure=args.structure,
                    callback=None if args.quiet else _progress_printer(out))

    curvature = [("hessian", "row")] + [c for c in args.curvature if c != ("hessian", "row")]
    final = dh.evaluate(model, result.w, X, Y, curvature=[f"{k}:{s}" for k, s in curvature],
                        client=client)
    write_store(args.out, model, result.w, n_examples=n, value=final.value,
                gradient=final.gradient, curvature=final.blocks, attrs=_fit_attrs(result, args))
    seconds = time.perf_counter() - start
    print(f"{result.method}: {result.status} after {result.n_iter} iterations in {seconds:.2f} s: "
          f"{result.message}", flush=True)
    fitted = ""
    if client is None:
        from .report import score
        name, value = score(model, result.w, X, Y)
        fitted = f", training {name} {value:.4f}"
    print(f"final loss {result.value:.12g}, gradient norm {result.gradient_norm:.3e}{fitted}; "
          f"wrote {args.out} (weights, value, gradient, "
          f"{', '.join(f'{k}:{s}' for k, s in curvature)}, attrs['fit'])", flush=True)
    if not math.isfinite(result.value):
        return 1
    return 0


# ---------------------------------------------------------------- stand-alone entry point

def main(argv: list[str] | None = None) -> int:
    """``python -m dist_hess.train.cli fit ...``: the same as ``dist-hess fit ...``."""
    from ..cli import main as dist_hess_main
    return dist_hess_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
