"""``dist-hess`` command line: one module per subcommand, the top floor of the package.

A subcommand is a module here with ``add_command(subparsers)``, which declares its
parser and options and sets ``run`` to the module's ``run_<name>(args) -> exit status``;
:data:`COMMANDS` lists the modules in ``--help`` order. What subcommands share (argparse types, the cluster and TLS options,
reading ``DATA``) is in `dist_hess.cli.options`, which imports no subcommand; the data
loaders themselves are in `dist_hess.datasets`, for Python users too. Nothing outside
this package imports it.

Add a subcommand by writing ``dist_hess/cli/<name>.py`` and listing it in
:data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import sys

from ..runtime import tune_allocator
from . import analyze, derivatives, fit, predict, prune

__all__ = ["main", "build_parser", "COMMANDS"]

#: The subcommand modules, in ``--help`` order.
COMMANDS = [fit, derivatives, analyze, prune, predict]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dist-hess",
        description="Exact derivatives of feed-forward neural networks, data-parallel on Dask. "
                    "Run 'dist-hess COMMAND --help' for a command's options and examples.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dist-hess ...`` (and ``python -m dist_hess ...``); returns the exit status. A user
    error (bad data, unreachable scheduler, missing file) is one line on stderr, status 1."""
    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, ConnectionError, FileNotFoundError) as err:
        print(f"dist-hess {args.command}: error: {err}", file=sys.stderr)
        return 1
