"""``dist-hess derivatives``: value, gradient, curvature and multipliers -> a zarr store.

`add_command(subparsers)` declares the subcommand (``run=run_derivatives``) and
`run_derivatives(args)` runs it: one `dist_hess.evaluate` call on the data, written to
the store of DESIGN.md §5.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

import numpy as np

from ..distributed import evaluate
from ..model import Model
from .options import (add_cluster_options, add_target_option, client_from_args, curvature_arg,
                      dashboard_link, int_at_least, load_examples, named_model)

__all__ = ["add_command", "run_derivatives"]


def _curvature_spec(text: str) -> str:
    """``--curvature``: ``"kind:structure"`` (`curvature_arg`)."""
    return ":".join(curvature_arg(text))


_EXAMPLES = """\
examples:
  # value, gradient and the exact Hessian's row blocks, on this machine
  dist-hess derivatives model.json data.npz --weights w.npy \\
      --curvature hessian:row --out run.zarr

  # two curvatures, the multipliers, on a running Dask cluster
  dist-hess derivatives model.json data.zarr --weights w.npy \\
      --curvature hessian:row --curvature gauss_newton:full --multipliers \\
      --scheduler tcp://10.0.0.5:8786 --out run.zarr

  # a CSV file whose column "price" is the target, 4 local worker processes
  dist-hess derivatives model.json houses.csv --target price --workers 4 --out run.zarr

Read the result in Python with dist_hess.open_store("run.zarr"), or with
zarr.open_group("run.zarr"): see DESIGN.md section 5 for the layout.
"""


def add_command(subparsers) -> None:
    """Declare ``derivatives`` on an ``argparse`` subparsers object; sets ``run``."""
    p = subparsers.add_parser(
        "derivatives",
        help="value, gradient, curvature and multipliers of a model on a data set -> zarr store",
        description=textwrap.dedent("""\
            Compute the exact value E(W) = sum_i g_i + penalty, its gradient and,
            on request, curvature blocks and the per-example multipliers of a
            model at given weights, data-parallel on Dask, and write them to a
            zarr store."""),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.json",
                   help="the network as JSON (DESIGN.md section 1), e.g. model.json")
    p.add_argument("data", metavar="DATA",
                   help="the examples: a .npz file with arrays X and Y, a .csv file with a "
                        "header row (name the target column with --target), a zarr group "
                        "directory with arrays X and Y, or sklearn:NAME, e.g. data.npz")
    p.add_argument("--out", required=True, metavar="OUT.zarr",
                   help="where to write the zarr store (an existing dist_hess store there is "
                        "replaced; anything else is refused), e.g. --out run.zarr")
    p.add_argument("--weights", metavar="W.npy",
                   help="the weights, a .npy vector of length n_params, e.g. --weights w.npy "
                        "(default: the model's random initialisation with --seed)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights when --weights is not given (default 0)")
    p.add_argument("--curvature", action="append", type=_curvature_spec, default=[],
                   metavar="KIND[:STRUCTURE]",
                   help="a curvature to compute; repeat for several. KIND: hessian (exact), "
                        "gauss_newton or lagrangian; STRUCTURE: row (per-unit blocks, the "
                        "default), layer (per-layer blocks) or full (t x t). "
                        "e.g. --curvature hessian:row --curvature gauss_newton:full")
    p.add_argument("--multipliers", action="store_true",
                   help="also store the multipliers e^k (one row per example and layer), "
                        "written by the workers chunk by chunk")
    add_target_option(p)
    p.add_argument("--chunk-size", type=int_at_least(1), metavar="N",
                   help="examples (rows) per shard, e.g. --chunk-size 10000 (default: the "
                        "zarr chunks, or up to 32 balanced shards for in-memory data)")
    p.add_argument("--split-every", type=int, metavar="K",
                   help="how many partial sums each node of the reduction tree adds, e.g. "
                        "--split-every 8 (default 4). The result's last bits depend on it, "
                        "never on the number of workers")
    add_cluster_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(run=run_derivatives)


def run_derivatives(args) -> int:
    """Run ``dist-hess derivatives`` from parsed arguments; returns the exit status."""
    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    model = Model.from_json(args.model)
    X, Y = load_examples(args, model)
    model = named_model(args, model)
    if args.weights:
        w = np.load(args.weights)
    else:
        w = model.init(seed=args.seed)
        say(f"no --weights: using the model's initial weights (seed {args.seed})")
    client = client_from_args(args, work=X.shape[0] * model.n_params)
    if client is None:
        say("running in-process (small problem; use --workers N for a local cluster)")
    else:
        say(f"Dask scheduler: {client.scheduler.address}")
        say(f"dashboard: {dashboard_link(client)}")
    result = evaluate(model, w, X, Y, curvature=args.curvature or None,
                      multipliers=args.multipliers, store=args.out, client=client,
                      split_every=args.split_every, chunk_size=args.chunk_size,
                      progress=not args.quiet)
    print(f"wrote {args.out}: {result.n_examples} examples, value {result.value:.12g}, "
          f"gradient norm {np.linalg.norm(result.gradient):.6g}"
          + (f", curvature {', '.join(args.curvature)}" if args.curvature else "")
          + (", multipliers" if args.multipliers else ""))
    return 0
