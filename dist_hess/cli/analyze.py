"""``dist-hess analyze``: Wald tests, joint tests, spectra and the HTML report of a store.

`add_command(subparsers)` declares the subcommand (``run=run_analyze``) and
`run_analyze(args)` runs it: `dist_hess.analysis` on the store; what the store lacks is
computed from ``--data``, on the cluster that the shared cluster options name.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import warnings

from ..analysis.report import write_report
from ..analysis.source import resolve
from ..analysis.spectra import spectra
from ..analysis.wald import wald_table
from ..curvature import HVP_KINDS
from ..store import open_store
from .options import (add_cluster_options, add_target_option, comma_separated,
                      examples_and_client, int_at_least, named_model)

__all__ = ["add_command", "run_analyze"]

_EXAMPLES = """\
examples:
  # the Wald table of a stored fit: exact standard errors from the full Hessian
  # (stored by dist-hess fit up to 2000 parameters; else computed from --data)
  dist-hess analyze run.zarr --data data.npz

  # too many parameters for the full matrix: exact standard errors of some of them
  # (conjugate gradients on Hessian-vector products), as JSON
  dist-hess analyze run.zarr --data data.npz --parameters layer:3 \\
      --parameters "L1.0 <- x2" --format json

  # an HTML report with plots and tables, computing what the store lacks from the data
  dist-hess analyze run.zarr --data data.npz --report report/

  # sandwich standard errors (per-example gradients from the stored multipliers and X),
  # a joint test that input 3 is irrelevant, tables as CSV and JSON files
  dist-hess analyze run.zarr --data data.npz --covariance sandwich \\
      --group input:3 --csv wald.csv --json wald.json
"""


def add_command(subparsers) -> None:
    """Declare ``analyze`` on an ``argparse`` subparsers object; sets ``run``."""
    p = subparsers.add_parser(
        "analyze",
        help="standard errors, Wald tests, spectra and an HTML report of a stored fit",
        description=textwrap.dedent("""\
            Statistical analysis of a fit stored by 'dist-hess derivatives' or training:
            standard errors and Wald tests of every weight from the inverse Hessian or
            the sandwich, joint Wald tests of inputs, units and layers, eigenvalues of
            the curvature blocks, and an HTML report with plots. What the store holds
            is read; what it lacks is computed from --data when given."""),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", metavar="STORE", help="a dist_hess zarr store, e.g. run.zarr")
    p.add_argument("--data", metavar="DATA",
                   help="the examples the store was computed on (.npz with X and Y, .csv with "
                        "--target, a zarr group or sklearn:NAME): needed for the sandwich and "
                        "for curvature the store lacks, computed where the cluster options "
                        "below say")
    add_target_option(p)
    p.add_argument("--covariance", choices=("hessian", "sandwich"), default="hessian",
                   help="inverse Hessian (default; times s^2 = RSS/(n-p) for squared loss) or "
                        "the sandwich H^-1 (sum g_i g_i') H^-1")
    p.add_argument("--structure", choices=("full", "layer", "row"), default="full",
                   help="full (default): the exact covariance of the fit, computed from --data "
                        "when the store lacks the full Hessian; layer/row: the inverses of the "
                        "diagonal blocks, an APPROXIMATION (labelled so)")
    p.add_argument("--parameters", action="append", metavar="P",
                   help="report these parameters only (repeat, or separate by commas): flat "
                        "indices, names as in the table (\"L1.3 <- x2\"), or groups layer:K, "
                        "unit:K:J, input:I. Beyond the memory budget of the full matrix their "
                        "exact standard errors come from conjugate gradients (needs --data)")
    p.add_argument("--memory-budget", type=_bytes, metavar="BYTES",
                   help="bytes the full covariance may take, e.g. 8G (default 2G: t up to "
                        "6,688); over it the full matrix is refused and --parameters is needed")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text",
                   help="what is printed: the summary in statsmodels' layout (text, default), "
                        "or the table as CSV or JSON")
    p.add_argument("--kind", choices=HVP_KINDS, default="hessian",
                   help="the curvature standing for the information matrix (default hessian)")
    p.add_argument("--group", action="append", default=[], metavar="GROUP",
                   help="a joint Wald test; repeat for several: input:I (all weights of input "
                        "I), unit:K:J (incoming row of unit J of layer K), unit:K:J:out (and "
                        "its outgoing weights), layer:K")
    p.add_argument("--save", action="store_true",
                   help="write curvature computed from --data back into the store")
    p.add_argument("--csv", metavar="FILE", help="write the Wald table as CSV")
    p.add_argument("--json", metavar="FILE", help="write the Wald table as JSON")
    p.add_argument("--spectra", action="store_true",
                   help="print the eigenvalue summary of the row, layer and full blocks")
    p.add_argument("--report", metavar="DIR",
                   help="write DIR/index.html with plots (matplotlib) and CSV/JSON tables")
    p.add_argument("--no-plots", action="store_true",
                   help="with --report: tables only, no matplotlib plots")
    p.add_argument("--max-rows", type=int_at_least(0), default=None, metavar="N",
                   help="print at most N rows of the Wald table")
    add_cluster_options(p)
    p.set_defaults(run=run_analyze)


def _bytes(text: str) -> int:
    """``BYTES`` with an optional binary suffix K, M, G or T (``8G`` = 8 GiB)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(body[-1:], 1)
    try:
        value = float(body[:-1] if body[-1:] in units else body) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 2G)") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes, got {text}")
    return int(value)


def _parameters(args):
    """``--parameters`` as a list of indices and names (or ``None``)."""
    if not args.parameters:
        return None
    items = comma_separated(args.parameters)
    return [int(p) if p.lstrip("-").isdigit() else p for p in items]


def run_analyze(args) -> int:
    """Run ``dist-hess analyze`` from parsed arguments; returns the exit status."""
    store = open_store(args.store)
    data, client = examples_and_client(args, store.model) if args.data else (None, None)
    fitted = resolve(store, data=data, client=client, save=args.save)
    if args.data:                        # a store written without names takes the data's
        fitted.model = named_model(args, fitted.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = wald_table(fitted, covariance=args.covariance, structure=args.structure,
                               kind=args.kind, parameters=_parameters(args),
                               memory_budget=args.memory_budget)
        except LookupError as err:
            raise ValueError(f"{err} (on the command line: --data DATA)") from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    joint = [table.joint_wald(group) for group in args.group]
    if args.format == "json":
        document = table.to_dict()
        document["joint_tests"] = [test.to_dict() for test in joint]
        print(json.dumps(document, indent=1))
    elif args.format == "csv":
        print(table.to_csv(), end="")
        for test in joint:
            print(test, file=sys.stderr)
    else:
        print(table.summary(max_rows=args.max_rows))
        for test in joint:
            print(test)
    if args.csv:
        table.to_csv(args.csv)
    if args.json:
        table.to_json(args.json)
    if args.spectra:
        print(spectra(fitted, kind=args.kind).to_text(),
              file=sys.stdout if args.format == "text" else sys.stderr)
    if args.report:
        index = write_report(fitted, args.report, covariance=args.covariance,
                             structure=args.structure, kind=args.kind, plots=not args.no_plots)
        print(f"wrote {index}", file=sys.stdout if args.format == "text" else sys.stderr)
    return 0
