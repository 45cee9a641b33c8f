"""``dist-hess`` command line: one subcommand per task.

Each subcommand is one ``add_<name>_command(subparsers)`` function that
declares its options and sets ``run=<function>``; :func:`build_parser` calls
them all. Add a subcommand by writing its pair of functions and listing the
first in :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

import numpy as np

__all__ = ["main", "build_parser", "load_data", "COMMANDS"]

_CURVATURE_KINDS = ("hessian", "gauss_newton", "lagrangian")
_STRUCTURES = ("row", "layer", "full")


class CommandError(Exception):
    """A user error in a subcommand: reported as one line, exit status 1."""


# ---------------------------------------------------------------- data files

def _load_csv(path: str, target: list[str] | None):
    import csv

    if not target:
        raise CommandError(f"{path}: a CSV file needs --target naming the target column(s)")
    with open(path, newline="") as f:
        header = [name.strip() for name in next(csv.reader(f))]
    missing = [t for t in target if t not in header]
    if missing:
        raise CommandError(f"{path}: no column(s) {missing} in the header {header}")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise CommandError(f"{path}: every value after the header row must be a number "
                           f"({err})") from None
    if table.shape[1] != len(header):
        raise CommandError(f"{path}: the header has {len(header)} columns, the rows "
                           f"{table.shape[1]}")
    y_cols = [header.index(t) for t in target]
    x_cols = [i for i in range(len(header)) if i not in y_cols]
    Y = table[:, y_cols]
    return table[:, x_cols], (Y[:, 0] if Y.shape[1] == 1 else Y)


def load_data(path: str, target: list[str] | None = None):
    """``(X, Y)`` from ``.npz`` (arrays X, Y), ``.csv`` (header row; ``target``
    names the Y columns, the rest are X), a zarr group (arrays X, Y, read lazily), or a
    data set bundled with scikit-learn, ``sklearn:NAME`` (diabetes, breast_cancer, digits, ...)."""
    from .train.datasets import is_sklearn_name, load_sklearn
    if is_sklearn_name(path):
        return load_sklearn(path)
    if path.endswith(".npz"):
        with np.load(path) as data:
            missing = {"X", "Y"} - set(data.files)
            if missing:
                raise CommandError(f"{path}: needs arrays X and Y, found {sorted(data.files)}")
            return data["X"], data["Y"]
    if path.endswith(".csv"):
        return _load_csv(path, target)
    if os.path.isdir(path):
        import zarr
        try:
            group = zarr.open_group(path, mode="r")
        except Exception as err:  # noqa: BLE001 -- report any unreadable directory the same way
            raise CommandError(f"{path}: not a zarr group ({err})") from None
        missing = [name for name in ("X", "Y") if name not in group]
        if missing:
            raise CommandError(f"{path}: the zarr group needs arrays X and Y (missing {missing})")
        return group["X"], group["Y"]
    raise CommandError(f"{path}: unknown data format; expected a .npz file, a .csv file "
                       f"or a zarr group directory")


def _integer_labels(model, Y):
    """CSV values are floats; class labels of a softmax model become integers."""
    if model.loss.name == "softmax_cross_entropy" and isinstance(Y, np.ndarray) and Y.ndim == 1:
        if not np.all(Y == np.round(Y)):
            raise CommandError("softmax_cross_entropy targets must be integer class labels")
        return Y.astype(np.int64)
    return Y


# ---------------------------------------------------------------- derivatives

def curvature_arg(text: str) -> tuple[str, str]:
    """``KIND[:STRUCTURE]`` on the command line -> ``(kind, structure)`` (structure ``row``
    by default); shared by ``dist-hess derivatives`` and ``dist-hess fit``."""
    kind, _, structure = text.partition(":")
    structure = structure or "row"
    if kind not in _CURVATURE_KINDS or structure not in _STRUCTURES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KIND[:STRUCTURE] with KIND one of {', '.join(_CURVATURE_KINDS)} "
            f"and STRUCTURE one of {', '.join(_STRUCTURES)} (e.g. hessian:row)")
    return kind, structure


def _curvature_spec(text: str) -> str:
    """``dist-hess derivatives --curvature``: ``"kind:structure"`` (`curvature_arg`)."""
    return ":".join(curvature_arg(text))


def int_at_least(minimum: int):
    """An argparse ``type``: an integer ``>= minimum``, with a one-line error otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = int_at_least(1)


_DERIVATIVES_EXAMPLES = """\
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


def add_derivatives_command(subparsers) -> None:
    p = subparsers.add_parser(
        "derivatives",
        help="value, gradient, curvature and multipliers of a model on a data set -> zarr store",
        description=textwrap.dedent("""\
            Compute the exact value E(W) = sum_i g_i + penalty, its gradient and,
            on request, curvature blocks and the per-example multipliers of a
            model at given weights, data-parallel on Dask, and write them to a
            zarr store."""),
        epilog=_DERIVATIVES_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.json",
                   help="the network as JSON (DESIGN.md section 1), e.g. model.json")
    p.add_argument("data", metavar="DATA",
                   help="the examples: a .npz file with arrays X and Y, a .csv file with a "
                        "header row (name the target column with --target), or a zarr group "
                        "directory with arrays X and Y, e.g. data.npz")
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
    p.add_argument("--target", action="append", metavar="COL",
                   help="for a .csv DATA: the target column name(s); repeat or separate with "
                        "commas for several outputs, e.g. --target price. The other columns "
                        "are the inputs")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR",
                       help="address of a running Dask scheduler, e.g. "
                            "--scheduler tcp://10.0.0.5:8786 (see cluster/README.md)")
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="start N local worker processes (one thread each) for this run, "
                            "e.g. --workers 4. Without --scheduler or --workers: in-process "
                            "for small problems, one worker per core for large ones")
    p.add_argument("--chunk-size", type=_positive_int, metavar="N",
                   help="examples (rows) per shard, e.g. --chunk-size 10000 (default: the "
                        "zarr chunks, or up to 32 balanced shards for in-memory data)")
    p.add_argument("--split-every", type=int, metavar="K",
                   help="how many partial sums each node of the reduction tree adds, e.g. "
                        "--split-every 8 (default 4). The result's last bits depend on it, "
                        "never on the number of workers")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up connecting to --scheduler after this many seconds (default 10)")
    tls = p.add_argument_group("TLS (for tls:// scheduler addresses, see cluster/README.md)")
    tls.add_argument("--tls-ca-file", metavar="PEM", help="certificate authority, e.g. ca.pem")
    tls.add_argument("--tls-cert", metavar="PEM", help="this client's certificate, e.g. client.pem")
    tls.add_argument("--tls-key", metavar="PEM", help="this client's private key, e.g. client.key")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(run=run_derivatives)


def _client(args, work: int):
    from .distributed.cluster import resolve_client, tls_security
    return resolve_client(args.scheduler, n_workers=args.workers, work=work,
                          security=tls_security(args.tls_ca_file, args.tls_cert, args.tls_key),
                          connect_timeout=args.timeout)


def run_derivatives(args) -> int:
    from . import Model
    from .distributed import evaluate

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    model = Model.from_json(args.model)
    targets = [t.strip() for item in (args.target or []) for t in item.split(",") if t.strip()]
    X, Y = load_data(args.data, targets)
    Y = _integer_labels(model, Y)
    if args.weights:
        w = np.load(args.weights)
    else:
        w = model.init(seed=args.seed)
        say(f"no --weights: using the model's initial weights (seed {args.seed})")
    client = _client(args, work=X.shape[0] * model.n_params)
    if client is None:
        say("running in-process (small problem; use --workers N for a local cluster)")
    else:
        say(f"Dask scheduler: {client.scheduler.address}")
        say(f"dashboard: {client.dashboard_link}")
    result = evaluate(model, w, X, Y, curvature=args.curvature or None,
                      multipliers=args.multipliers, store=args.out, client=client,
                      split_every=args.split_every, chunk_size=args.chunk_size,
                      progress=not args.quiet)
    print(f"wrote {args.out}: {result.n_examples} examples, value {result.value:.12g}, "
          f"gradient norm {np.linalg.norm(result.gradient):.6g}"
          + (f", curvature {', '.join(args.curvature)}" if args.curvature else "")
          + (", multipliers" if args.multipliers else ""))
    return 0


# ---------------------------------------------------------------- entry point

def add_analyze_command(subparsers) -> None:
    from .analysis.cli import add_analyze_parser
    add_analyze_parser(subparsers)


#: One ``add_<name>_command(subparsers)`` per subcommand, in --help order.
def add_fit_command(subparsers) -> None:
    from .train.cli import add_fit_parser
    add_fit_parser(subparsers)


COMMANDS = [add_fit_command, add_derivatives_command, add_analyze_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dist-hess",
        description="Exact derivatives of feed-forward neural networks, data-parallel on Dask. "
                    "Run 'dist-hess COMMAND --help' for a command's options and examples.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .runtime import tune_allocator
    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, ValueError, ConnectionError, FileNotFoundError) as err:
        print(f"dist-hess {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
