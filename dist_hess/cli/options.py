"""What the ``dist-hess`` subcommands share: argparse types, the cluster options, the data.

This module imports no subcommand and no other command-line module; every subcommand
module (`dist_hess.cli.fit`, ...) builds on it.

- argparse ``type`` parsers: `int_at_least`, `float_at_least`, `curvature_arg`;
- `add_cluster_options(parser)`: ``--scheduler ADDR | --workers N``, ``--timeout``, the
  TLS files and ``--memory-limit``, one set for every subcommand that computes;
  `client_from_args(args, work)` sets the memory limit (`dist_hess.memory`) and turns
  the rest into a client through `dist_hess.distributed.cluster.resolve_client`;
  `dashboard_link(client)` is the address of its dashboard for the status lines;
- `comma_separated(values)`: a repeatable option's items, split at commas;
- `add_target_option(parser)` and `load_examples(args, model)`: ``DATA`` and
  ``--target`` read by `dist_hess.datasets.load_data`, class labels made integers;
  `examples_and_client(args, model, data)`: those examples and the client to compute on;
- `check_output_file(path, suffixes)`: refuse an output file that could not be written,
  before the work (stores: `dist_hess.store.check_writable`);
- `named_model(args, model)`: the model with the data's column names.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..curvature import KINDS, STRUCTURES
from ..datasets import data_names, integer_labels, load_data
from ..distributed.cluster import DEFAULT_CONNECT_TIMEOUT, resolve_client, tls_security
from ..memory import ENV as MEMORY_LIMIT_ENV
from ..memory import parse_size
from ..store import check_directory_writable

__all__ = ["int_at_least", "float_at_least", "size_arg", "curvature_arg", "add_cluster_options",
           "client_from_args", "dashboard_link", "add_target_option", "comma_separated", "targets",
           "load_examples", "examples_and_client", "check_output_file", "named_model"]


# ---------------------------------------------------------------- argparse types

def _at_least(convert, what: str, minimum):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= minimum:                                   # NaN is refused too
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value
    return parse


def int_at_least(minimum: int):
    """An argparse ``type``: an integer ``>= minimum``, with a one-line error otherwise."""
    return _at_least(int, "an integer", minimum)


def float_at_least(minimum: float):
    """An argparse ``type``: a number ``>= minimum``, with a one-line error otherwise."""
    return _at_least(float, "a number", minimum)


def size_arg(text: str) -> str:
    """An argparse ``type``: a memory size as `dist_hess.memory.parse_size` reads it."""
    try:
        parse_size(text)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def curvature_arg(text: str) -> tuple[str, str]:
    """``KIND[:STRUCTURE]`` on the command line -> ``(kind, structure)`` (structure ``row``
    by default); shared by ``dist-hess derivatives`` and ``dist-hess fit``."""
    kind, _, structure = text.partition(":")
    structure = structure or "row"
    if kind not in KINDS or structure not in STRUCTURES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KIND[:STRUCTURE] with KIND one of {', '.join(KINDS)} "
            f"and STRUCTURE one of {', '.join(STRUCTURES)} (e.g. hessian:row)")
    return kind, structure


# ---------------------------------------------------------------- where the work runs

def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDR | --workers N``, ``--timeout SECONDS`` and ``--tls-*`` on ``parser``."""
    where = parser.add_argument_group(
        "cluster (where the work runs, see cluster/README.md)",
        "Without --scheduler or --workers: in-process for small problems, and a local\n"
        "cluster of one single-threaded worker process per core for large ones.")
    either = where.add_mutually_exclusive_group()
    either.add_argument("--scheduler", metavar="ADDR",
                        help="address of a running Dask scheduler, e.g. "
                             "--scheduler tcp://10.0.0.5:8786 (tls://... with the TLS options)")
    either.add_argument("--workers", type=int_at_least(1), metavar="N",
                        help="start N local worker processes (one thread each) for this run, "
                             "e.g. --workers 4")
    where.add_argument("--timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                       metavar="SECONDS",
                       help=f"give up connecting to --scheduler after this many seconds "
                            f"(default {DEFAULT_CONNECT_TIMEOUT:g})")
    where.add_argument("--memory-limit", type=size_arg, metavar="SIZE",
                       help=f"refuse, before starting, results and dense linear algebra "
                            f"larger than SIZE (e.g. 16GiB, 25%%, none; default "
                            f"${MEMORY_LIMIT_ENV}, else half this machine's memory)")
    tls = parser.add_argument_group("TLS (for tls:// scheduler addresses, see cluster/README.md)")
    tls.add_argument("--tls-ca-file", metavar="PEM", help="certificate authority, e.g. ca.pem")
    tls.add_argument("--tls-cert", metavar="PEM", help="this client's certificate, e.g. client.pem")
    tls.add_argument("--tls-key", metavar="PEM", help="this client's private key, e.g. client.key")


def client_from_args(args, work: int):
    """The client the `add_cluster_options` options ask for, or ``None`` (in-process);
    ``work`` is ``n * t`` for the default's in-process decision. ``--memory-limit``
    goes to the environment, where this process and the local workers read it."""
    if args.memory_limit is not None:
        os.environ[MEMORY_LIMIT_ENV] = args.memory_limit
    return resolve_client(args.scheduler, n_workers=args.workers, work=work,
                          security=tls_security(args.tls_ca_file, args.tls_cert, args.tls_key),
                          connect_timeout=args.timeout)


def dashboard_link(client) -> str:
    """The URL of the Dask dashboard of ``client``'s scheduler, or a phrase saying it
    serves none (a scheduler started with ``--no-dashboard``)."""
    try:
        link = client.dashboard_link
    except KeyError:                      # a remote scheduler without the dashboard service
        link = None
    return link or "none (the scheduler serves no dashboard)"


# ---------------------------------------------------------------- the data

def add_target_option(parser: argparse.ArgumentParser) -> None:
    """``--target COL`` (repeatable, or comma-separated): the target columns of a CSV."""
    parser.add_argument("--target", action="append", metavar="COL",
                        help="for a .csv DATA: the target column name(s); repeat or separate "
                             "with commas for several outputs, e.g. --target price. The other "
                             "columns are the inputs")


def comma_separated(values) -> list[str]:
    """The items of a repeatable option (``action="append"``), each split at commas,
    stripped, blanks dropped; ``None`` gives ``[]``."""
    return [v.strip() for item in (values or []) for v in item.split(",") if v.strip()]


def targets(args) -> list[str]:
    """The ``--target`` column names (`comma_separated`)."""
    return comma_separated(args.target)


def load_examples(args, model, data: str | None = None):
    """``(X, Y)`` from ``data`` (default ``args.data``) and ``--target``, with integer
    class labels for a softmax model (`dist_hess.datasets`)."""
    X, Y = load_data(args.data if data is None else data, targets(args))
    return X, integer_labels(model, Y)


def examples_and_client(args, model, data: str | None = None):
    """``((X, Y), client)``: `load_examples` and the client the cluster options name
    (`client_from_args`), whose scheduler and dashboard go to stderr."""
    X, Y = load_examples(args, model, data)
    client = client_from_args(args, work=int(X.shape[0]) * model.n_params)
    if client is not None:
        print(f"Dask scheduler: {client.scheduler.address}; dashboard: {dashboard_link(client)}",
              file=sys.stderr, flush=True)
    return (X, Y), client


def check_output_file(path: str, suffixes: tuple[str, ...]) -> str:
    """The suffix of ``path`` (one of ``suffixes``), after refusing with ``ValueError`` a
    path whose directory is missing or cannot take a new file
    (`dist_hess.store.check_directory_writable`), or that names a directory; an existing
    file is replaced."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        raise ValueError(f"{path}: the output must end in {' or '.join(suffixes)}")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(parent):
        raise ValueError(f"cannot write {path}: "
                         + ("it is a directory" if os.path.isdir(path)
                            else f"no directory {parent}"))
    check_directory_writable(parent, path)
    return suffix


def named_model(args, model):
    """``model`` with the input and output names of ``DATA`` (a CSV header, a bundled data
    set's feature and class names: `dist_hess.datasets.data_names`) where the model JSON
    gives none and their number fits; they go into the store with the model."""
    inputs, outputs = data_names(args.data, targets(args))
    for names, key in ((inputs, "input_names"), (outputs, "output_names")):
        if names is None or getattr(model, key) is not None:
            continue
        try:
            model = model.with_names(**{key: names})
        except ValueError:          # e.g. one label column for several class logits
            pass
    return model
