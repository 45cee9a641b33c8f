"""The package's import graph, read statically from its source: no cycle, and the command
line (`dist_hess.cli`) on top, imported by nothing below it.

An edge ``a -> b`` means an ``import`` statement in ``a`` (at module level or inside a
function: a lazy import is a dependency all the same) executes module ``b``: the named
module, the packages above it that ``a`` is not itself inside (Python runs an importing
module's own packages first, whatever it imports), and for ``from p import name`` the
submodule ``p.name`` when there is one, else ``p`` itself.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import dist_hess

PACKAGE_DIR = os.path.dirname(os.path.abspath(dist_hess.__file__))
ROOT = os.path.dirname(PACKAGE_DIR)
CLI = "dist_hess.cli"
#: What the command line stands on: the shared options and the data loaders import no
#: command-line module (besides the ``dist_hess.cli`` package Python runs first).
LOWER_FLOOR = ("dist_hess.cli.options", "dist_hess.datasets")


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].endswith("__init__.py")


def _packages_above(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package modules that executing ``node`` inside ``module`` runs."""
    inside = _packages_above(module) | ({module} if _is_package(module) else set())
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
        targets = set().union(*({name} | _packages_above(name) for name in named))
        return {t for t in targets if t in MODULES and t not in inside}
    if node.level:
        base = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module
    targets = {p for p in _packages_above(source) | {source} if p not in inside}
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        targets.add(sub if sub in MODULES else source)     # a name read from `source`
    return {t for t in targets if t in MODULES and t != module}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        graph[module] = set().union(set(), *(
            _imported(module, node) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, ..., a]``, or ``None`` (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _is_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".") or module == "dist_hess.__main__"


def test_the_checker_sees_a_cycle_and_the_graph_is_read():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = _graph()
    assert "dist_hess.distributed.cluster" in graph["dist_hess.distributed.data"]
    assert "dist_hess.cli.options" in graph["dist_hess.cli.fit"]
    assert "dist_hess.distributed" in graph["dist_hess.train.objective"]      # lazy, counted


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_command_line_is_the_top_floor():
    graph = _graph()
    below = {module: sorted(filter(_is_cli, targets)) for module, targets in graph.items()
             if not _is_cli(module) or module in LOWER_FLOOR}
    offenders = {module: cli for module, cli in below.items() if cli}
    assert offenders == {}, f"modules below the command line that import it: {offenders}"


def test_every_subcommand_is_one_module_in_COMMANDS():
    from dist_hess.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [c.__name__.rpartition(".")[2] for c in COMMANDS]
    for command in COMMANDS:
        assert sub.choices[command.__name__.rpartition(".")[2]].get_default("run").__module__ \
            == command.__name__


def test_import_dist_hess_loads_no_dask_zarr_or_command_line():
    code = ("import sys, dist_hess; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dask', 'distributed', 'zarr', 'sklearn'}), 'dist_hess.cli' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.split() == ["[]", "False"]


def test_an_in_process_fit_loads_no_dask_or_zarr():
    # (issue 12: a first small fit used to spend a second importing them)
    code = ("import sys, numpy as np, dist_hess as dh\n"
            "X = np.random.default_rng(0).standard_normal((40, 3)); Y = X[:, 0] ** 2\n"
            "model = dh.Model.from_dict({'inputs': 3, 'loss': 'squared', 'layers': ["
            "{'type': 'dense', 'units': 2, 'activation': 'tanh'},"
            "{'type': 'dense', 'units': 1, 'activation': 'identity'}]})\n"
            "dh.fit(model, X, Y, method='newton', max_iter=5)\n"
            "dh.fit(model, X, Y, method='newton', starts=2, max_iter=5)\n"
            "dh.fit(model, X, Y, max_iter=5)\n"                   # auto
            "dh.fit(model, X, Y, method='hessian-free', starts=2, max_iter=5)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dask', 'distributed', 'zarr', 'sklearn'}))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.split() == ["[]"]
