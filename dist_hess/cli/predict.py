"""``dist-hess predict``: predictions of a stored fit at new inputs, written to .npy or .csv.

`add_command(subparsers)` declares the subcommand (``run=run_predict``) and
`run_predict(args)` runs it: `dist_hess.Model.predict` at the store's weights and, with
``--interval``, Laplace predictive intervals (`dist_hess.analysis.laplace_predict`).

The file has one row per input row and these columns, in this order (the CSV header
names them; ``NAME`` is the model's ``output_names`` entry, else ``y`` for one output and
``y0``, ``y1``, ... for several, the class number for softmax):

- ``--output mean`` (default): squared loss ``NAME``; binary cross-entropy ``p_NAME`` =
  P(y = 1); softmax ``p_NAME`` per class, the class probabilities;
- ``--output raw``: ``raw_NAME``, the network output (the logits of a classifier);
- ``--output label``: ``label``, the predicted class (softmax: its number; binary: 0/1
  per output);
- with ``--interval L`` (regression): the means ``NAME``, then ``NAME_lower`` and
  ``NAME_upper`` (the predictive interval of level L, noise included), then ``NAME_se``
  (the standard error of the mean, from the parameters' uncertainty alone).
"""
from __future__ import annotations

import argparse
import textwrap

import numpy as np

from ..analysis.laplace import default_kind, laplace_predict
from ..analysis.source import resolve
from ..datasets import load_inputs
from ..store import open_store
from .options import (add_cluster_options, add_target_option, check_output_file,
                      examples_and_client, targets)

__all__ = ["add_command", "run_predict"]

_EXAMPLES = """\
examples:
  # the fitted values of the README's diabetes run, as CSV
  dist-hess predict diabetes.zarr sklearn:diabetes --out fitted.csv

  # new rows from a CSV whose column "price" is not an input, with 95% Laplace
  # predictive intervals; the Gauss-Newton matrix computed from the training data
  dist-hess predict run.zarr new.csv --target price --interval 0.95 \\
      --train-data train.csv --out pred.csv

  # class probabilities, or the predicted classes, of a classifier as .npy
  dist-hess predict digits.zarr sklearn:digits --out proba.npy
  dist-hess predict digits.zarr sklearn:digits --output label --out classes.npy

DATA is sklearn:NAME (its inputs), a .npy file (the input array), a .npz file (array X),
a .csv file (header row; every column is an input but those named by --target) or a
zarr group (array X).
"""


def add_command(subparsers) -> None:
    """Declare ``predict`` on an ``argparse`` subparsers object; sets ``run``."""
    p = subparsers.add_parser(
        "predict",
        help="predictions of a stored fit at new inputs (mean, raw output or class; Laplace "
             "predictive intervals for regression) -> .npy or .csv",
        description=textwrap.dedent("""\
            Evaluate the network of a store written by 'dist-hess fit' (or derivatives,
            or prune --out) at its weights on the rows of DATA and write the predictions
            to a .npy or .csv file. For regression, --interval adds Laplace predictive
            intervals: the output is N(f, J Sigma J' + s^2) with J the exact output
            Jacobian and Sigma = s^2 G^-1 (docs/analysis.md)."""),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", metavar="RUN.zarr", help="a dist_hess store, e.g. run.zarr")
    p.add_argument("data", metavar="DATA",
                   help="the inputs to predict at (see below), e.g. sklearn:diabetes or new.csv")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="where to write the predictions: a .npy or .csv file (replaced if it "
                        "exists), e.g. --out pred.csv")
    p.add_argument("--output", choices=("mean", "raw", "label"), default="mean",
                   help="mean (default): the loss's prediction, i.e. the output for "
                        "regression and class probabilities for classifiers; raw: the network "
                        "output (logits); label: the predicted class")
    add_target_option(p)
    laplace = p.add_argument_group(
        "Laplace predictive intervals (regression)",
        "The curvature G comes from the store, or from --train-data when the store lacks it\n"
        "(a store from dist-hess fit may hold only the Hessian's row blocks).")
    laplace.add_argument("--interval", type=_level, metavar="LEVEL",
                         help="add the predictive interval of this level, e.g. --interval 0.95")
    laplace.add_argument("--train-data", metavar="DATA",
                         help="the examples the store was fitted on (same formats as for fit; "
                              "--target names a CSV's target columns), to compute G")
    laplace.add_argument("--kind", choices=("gauss_newton", "hessian"),
                         help="G: the Gauss-Newton matrix (default when stored or with "
                              "--train-data) or the exact Hessian (the default otherwise, "
                              "when stored)")
    laplace.add_argument("--structure", choices=("full", "layer", "row"), default="full",
                         help="full (default) or block-diagonal Sigma from the layer or row "
                              "blocks of G (an approximation: no covariance between blocks)")
    add_cluster_options(p)
    p.set_defaults(run=run_predict)


def _level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(f"the level must be in (0, 1), e.g. 0.95; got {text}")
    return level


def output_names(model) -> list[str]:
    """The model's ``output_names``, else ``y`` / ``y0, y1, ...`` (class numbers for softmax)."""
    names, units = model.output_names, model.sizes[-1]
    if names is not None and len(names) == units:
        return list(names)
    if model.loss.name == "softmax_cross_entropy":
        return [str(o) for o in range(units)]
    return ["y"] if units == 1 else [f"y{o}" for o in range(units)]


def _columns(model, w, X, names, output):
    """``(values (n, columns), column names)`` of ``--output`` without intervals."""
    loss = model.loss.name
    if output == "raw":
        return model.predict(w, X, output="raw"), [f"raw_{name}" for name in names]
    if output == "label":
        if loss == "squared":
            raise ValueError("--output label is for classifiers; this model has squared loss")
        raw = model.predict(w, X, output="raw")
        if loss == "softmax_cross_entropy":
            return np.argmax(raw, axis=1)[:, None].astype(float), ["label"]
        return (raw > 0).astype(float), (["label"] if raw.shape[1] == 1
                                         else [f"label_{name}" for name in names])
    mean = model.predict(w, X)
    return mean, (names if loss == "squared" else [f"p_{name}" for name in names])


def run_predict(args) -> int:
    """Run ``dist-hess predict`` from parsed arguments; returns the exit status."""
    suffix = check_output_file(args.out, (".npy", ".csv"))
    store = open_store(args.store)
    model = store.model
    if args.interval is not None and model.loss.name != "squared":
        raise ValueError(f"--interval is for regression (squared loss); this model has "
                         f"{model.loss.name}: its --output mean is the class probabilities")
    if args.interval is not None and args.output != "mean":
        raise ValueError(f"--interval goes with --output mean, not --output {args.output}")
    X = np.asarray(load_inputs(args.data, targets(args)), dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.sizes[0]:
        raise ValueError(f"{args.data}: the inputs have shape {X.shape}, the model reads "
                         f"{model.sizes[0]} columns" + ("; name the columns that are not "
                                                        "inputs with --target"
                                                        if args.data.endswith(".csv") else ""))
    names = output_names(model)
    data, client = (examples_and_client(args, model, args.train_data) if args.train_data
                    else (None, None))
    fitted = resolve(store, data=data, client=client)
    note = ""
    if args.interval is None:
        values, columns = _columns(fitted.model, fitted.w, X, names, args.output)
    else:
        kind = args.kind or default_kind(fitted, args.structure)
        if not fitted.has_data and args.structure not in fitted.available(kind):
            have = ", ".join(f"{k}:{s}" for k, s in store.curvatures) or "none"
            raise ValueError(f"{args.store} holds no {kind}:{args.structure} curvature (it has "
                             f"{have}): give the training examples with --train-data DATA, "
                             f"or choose --kind/--structure among what it has")
        pred = laplace_predict(fitted, X, structure=args.structure, kind=kind)
        lower, upper = pred.interval(args.interval)
        values = np.hstack([pred.mean, lower, upper, pred.standard_error])
        columns = (names + [f"{n}_lower" for n in names] + [f"{n}_upper" for n in names]
                   + [f"{n}_se" for n in names])
        note = (f"; {args.interval:g} Laplace predictive intervals from "
                f"{pred.kind}:{pred.structure}"
                + ("" if pred.structure == "full" else
                   " (block-diagonal: an approximation, no covariance between blocks)")
                + f", noise s = {np.sqrt(pred.noise_variance):.6g}")
    if suffix == ".npy":
        np.save(args.out, values)
    else:
        np.savetxt(args.out, values, delimiter=",", header=",".join(columns), comments="",
                   fmt="%.17g")
    print(f"wrote {args.out}: {values.shape[0]} rows, columns {', '.join(columns)}{note}")
    return 0
