"""``dist-hess prune``: backward pruning of a stored fit, the path written into the store.

`add_command(subparsers)` declares the subcommand (``run=run_prune``) and
`run_prune(args)` runs it: `dist_hess.analysis.prune` from the store's model and weights
on ``DATA`` (remove the least significant weight or unit, refit, repeat, stop by the
criterion), then the path goes into the store's ``attrs["pruning_path"]``
(`dist_hess.store.update_attrs`: the store's weights and arrays are left as they are),
where ``dist-hess analyze --report`` shows it. ``--out`` also writes the chosen model to
a store of its own (`PruningPath.save`: weights, value, gradient, the full Hessian, the
mask in the model JSON), which ``predict`` and ``analyze`` read like any other.

Pruning runs in this process: each step inverts the Hessian of the free parameters
(docs/analysis.md, "Pruning").
"""
from __future__ import annotations

import argparse
import sys
import textwrap

import numpy as np

from ..analysis import model_from_dict, prune
from ..store import check_writable, open_store, update_attrs
from ..train import STRATEGIES
from .options import add_target_option, float_at_least, int_at_least, load_examples

__all__ = ["add_command", "run_prune"]

_EXAMPLES = """\
examples:
  # remove weights while the least significant has Wald p-value > 0.05 (the default)
  dist-hess prune diabetes.zarr sklearn:diabetes

  # whole hidden units, while BIC decreases; the chosen model to its own store
  dist-hess prune run.zarr train.csv --target price --unit --criterion bic --out pruned.zarr

  # at most 10 removals ranked by OBS saliency, stopped by the loss on held-out data
  dist-hess prune run.zarr train.npz --criterion validation --validation held_out.npz \\
      --rank obs --max-steps 10

  # then the report with the pruning path
  dist-hess analyze run.zarr --data train.npz --report report/

DATA must be the examples the store was fitted on (same formats as for fit).
"""


def add_command(subparsers) -> None:
    """Declare ``prune`` on an ``argparse`` subparsers object; sets ``run``."""
    p = subparsers.add_parser(
        "prune",
        help="backward pruning (Wald, BIC or validation stopping, OBS/OBD ranking) of a stored "
             "fit; the path is written into the store",
        description=textwrap.dedent("""\
            Backward pruning of the network in RUN.zarr: remove the least significant
            weight (or hidden unit), move the others by the Optimal Brain Surgeon update,
            refit, and repeat until the criterion stops it. One line per removal; the
            whole path is written into RUN.zarr (attrs["pruning_path"]) for the report,
            and the chosen model into --out when given."""),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", metavar="RUN.zarr", help="a dist_hess store, e.g. run.zarr")
    p.add_argument("data", metavar="DATA",
                   help="the training examples of the store, e.g. sklearn:diabetes")
    add_target_option(p)
    p.add_argument("--criterion", choices=("wald", "bic", "validation"), default="wald",
                   help="wald (default): remove while the least significant candidate has "
                        "p-value > --threshold; bic: while BIC decreases; validation: while "
                        "the loss on --validation decreases")
    p.add_argument("--threshold", type=float_at_least(0), default=0.05, metavar="P",
                   help="the p-value threshold of --criterion wald (default 0.05)")
    p.add_argument("--validation", metavar="DATA",
                   help="held-out examples for --criterion validation (--target applies)")
    p.add_argument("--unit", action="store_true",
                   help="remove whole hidden units (incoming row and outgoing weights, by "
                        "their joint Wald test) instead of single weights")
    p.add_argument("--rank", choices=("wald", "obs", "obd"), default="wald",
                   help="which candidate goes first: wald (default, the largest p-value), obs "
                        "or obd (the smallest Optimal Brain Surgeon / Damage saliency)")
    p.add_argument("--covariance", choices=("hessian", "sandwich"), default="hessian",
                   help="of the Wald tests (default: the inverse Hessian)")
    p.add_argument("--structure", choices=("full", "layer", "row"), default="full",
                   help="full (default) or block-diagonal Hessian for the tests and the OBS "
                        "update (an approximation)")
    p.add_argument("--max-steps", type=int_at_least(1), metavar="N",
                   help="at most N removals (default: until the criterion stops)")
    p.add_argument("--method", choices=tuple(STRATEGIES), default="newton",
                   help="how each refit minimises (default newton; see dist-hess fit --help)")
    p.add_argument("--max-iter", type=int_at_least(1), metavar="N",
                   help="at most N iterations per refit (default: fit's)")
    p.add_argument("--out", metavar="PRUNED.zarr",
                   help="also write the chosen model to this store (weights, value, gradient, "
                        "the full Hessian, the mask in the model JSON)")
    p.add_argument("--quiet", action="store_true", help="only the final path")
    p.set_defaults(run=run_prune)


def _check_data(store, model, w, X, Y) -> None:
    """Refuse data of another size than the store's; warn when the objective differs."""
    n = int(np.shape(X)[0])
    if n != store.n_examples:
        raise ValueError(f"DATA has {n} examples but {store.path} was computed on "
                         f"{store.n_examples}: pass the examples it was fitted on")
    if store.value is not None:
        value = model.value(w, X, Y)
        if not np.isclose(value, store.value, rtol=1e-8, atol=0.0):
            print(f"warning: E(w) on DATA is {value:.12g}, the store holds {store.value:.12g}: "
                  f"is DATA the data the store was fitted on?", file=sys.stderr)


def run_prune(args) -> int:
    """Run ``dist-hess prune`` from parsed arguments; returns the exit status."""
    if args.criterion == "validation" and not args.validation:
        raise ValueError("--criterion validation needs --validation DATA (held-out examples)")
    store = open_store(args.store)
    check_writable(store.path)           # the path goes into it: refuse now, not at the end
    if args.out:
        check_writable(args.out)
    model = model_from_dict(store.attrs["model"])
    w = store.weights
    X, Y = load_examples(args, model)
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    _check_data(store, model, w, X, Y)
    X_val = Y_val = None
    if args.validation:
        X_val, Y_val = load_examples(args, model, data=args.validation)
        X_val, Y_val = np.asarray(X_val, dtype=np.float64), np.asarray(Y_val)
    if not args.quiet:
        print(f"pruning {store.path}: criterion {args.criterion}, {'units' if args.unit else 'weights'}"
              f" ranked by {args.rank}, refits by {args.method}; one line per removal (step, "
              f"free parameters, loss, BIC, validation loss, p-value, removed)", flush=True)
    fit_options = {} if args.max_iter is None else {"max_iter": args.max_iter}
    path = prune(model, X, Y, w, criterion=args.criterion, threshold=args.threshold,
                 X_val=X_val, Y_val=Y_val, method=args.method, max_steps=args.max_steps,
                 unit=args.unit, rank=args.rank, covariance=args.covariance,
                 structure=args.structure, fit_options=fit_options, verbose=not args.quiet)
    print(path.to_text())
    update_attrs(store.path, {"pruning_path": path.to_dict()})
    print(f"wrote the pruning path into {store.path} (attrs['pruning_path']; "
          f"dist-hess analyze {store.path} --report DIR shows it)")
    if args.out:
        path.save(args.out, X, Y)
        print(f"wrote the chosen model (step {path.best}, {path.steps[path.best].n_free} free "
              f"parameters) to {args.out}")
    return 0
