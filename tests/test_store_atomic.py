"""Stores are replaced in one step, by one writer at a time (issue 13).

A store is written under a temporary name next to its path and renamed into
place: a failed or killed write leaves the previous store byte for byte as it
was, and a second writer of the same path gets a clear ``ValueError`` from the
lock file. Writers are real processes; kills are real SIGKILLs.
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.atomic import staging_pattern
from dist_hess.store import open_store, update_attrs, write_store

SPEC = {"inputs": 3, "loss": "squared",
        "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                   {"type": "dense", "units": 1, "activation": "identity"}]}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(n=40, seed=0):
    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(seed)
    return model, model.init(seed=seed), rng.normal(size=(n, 3)), rng.normal(size=n)


def _snapshot(path) -> dict:
    """Every file under ``path`` (relative name -> bytes)."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, path)] = open(full, "rb").read()
    return files


def _leftovers(path) -> list:
    return glob.glob(staging_pattern(path)) + glob.glob(os.path.join(
        os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.lock"))


@pytest.mark.parametrize("multipliers", [False, True], ids=["results", "with-multipliers"])
def test_a_failed_evaluate_leaves_the_previous_store_byte_identical(previous, multipliers):
    (model, w, X, Y), path, before = previous
    X[25, 1] = np.nan                                   # found by the shard that holds row 25
    with pytest.raises(ValueError, match="X"):
        dh.evaluate(model, w + 1, X, Y, curvature="hessian", multipliers=multipliers,
                    store=path, chunk_size=10)
    assert _snapshot(path) == before
    assert _leftovers(path) == []
    assert open_store(path).value is not None


def test_a_store_is_replaced_and_the_old_one_removed(tmp_path):
    model, w, X, Y = _problem()
    path = tmp_path / "run.zarr"
    first = dh.evaluate(model, w, X, Y, store=path)
    second = dh.evaluate(model, w + 0.5, X, Y, store=path)
    assert first.value != second.value and open_store(path).value == second.value
    assert sorted(os.listdir(tmp_path)) == ["run.zarr"]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import dist_hess as dh
    from dist_hess.store import begin_store, mark_complete, staged, write_results
    model = dh.Model.from_dict({spec!r})
    with staged({path!r}) as location:
        group = begin_store(location, model, np.zeros(model.n_params), n_examples=3)
        print("writing", flush=True)
        sys.stdin.readline()                       # the parent says when to finish
        write_results(group, value=7.0, gradient=np.zeros(model.n_params))
        mark_complete(group)
""")


def _writer(path):
    child = subprocess.Popen([sys.executable, "-c", WRITER.format(spec=SPEC, path=str(path))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": REPO}, text=True)
    assert child.stdout.readline().strip() == "writing", "the writer did not start"
    return child


@pytest.fixture
def previous(tmp_path):
    """``(problem, path, snapshot)`` of a good store at ``tmp_path / "run.zarr"``."""
    model, w, X, Y = _problem()
    path = tmp_path / "run.zarr"
    dh.evaluate(model, w, X, Y, multipliers=True, store=path)
    return (model, w, X, Y), path, _snapshot(path)


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_writes(previous):
    (model, w, X, Y), path, before = previous
    child = _writer(path)
    try:
        with pytest.raises(ValueError, match=f"another writer \\(pid {child.pid} on .*\\) is "
                                             f"writing it now"):
            dh.evaluate(model, w, X, Y, store=path)
        with pytest.raises(ValueError, match="another writer"):
            write_store(path, model, w, n_examples=1, value=1.0)
        with pytest.raises(ValueError, match="another writer"):
            update_attrs(path, {"note": "mine"})
        assert _snapshot(path) == before                  # still the first store, whole
        child.stdin.write("finish\n")
        child.stdin.flush()
        assert child.wait(timeout=120) == 0
    finally:
        child.kill()
    assert open_store(path).value == 7.0                  # the writer's store, complete
    assert _leftovers(path) == []
    dh.evaluate(model, w, X, Y, store=path)               # the lock is free again


@pytest.mark.slow
def test_a_killed_writer_leaves_the_previous_store_and_blocks_no_one(previous):
    (model, w, X, Y), path, before = previous
    child = _writer(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert _snapshot(path) == before
    assert _leftovers(path), "the killed writer left nothing behind to clean up"
    again = dh.evaluate(model, w + 1, X, Y, store=path)
    assert open_store(path).value == again.value
    assert _leftovers(path) == []


KILLED_EVALUATE = textwrap.dedent("""
    import numpy as np
    import dist_hess as dh
    model = dh.Model.from_dict({spec!r})
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(200_000, 3)), rng.normal(size=200_000)
    print("start", flush=True)
    dh.evaluate(model, model.init(seed=1), X, Y, curvature="hessian:full", multipliers=True,
                store={path!r}, chunk_size=5_000, client=None)
""")


@pytest.mark.slow
def test_an_evaluate_killed_mid_write_leaves_the_previous_store(previous):
    _, path, before = previous
    child = subprocess.Popen([sys.executable, "-c",
                              KILLED_EVALUATE.format(spec=SPEC, path=str(path))],
                             stdout=subprocess.PIPE, cwd=REPO, text=True,
                             env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert child.stdout.readline().strip() == "start"
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(staging_pattern(path), "multipliers", "layer_1",
                                          "c", "*")):     # workers are writing multipliers
            assert child.poll() is None, "the evaluation ended before it could be killed"
            assert time.monotonic() < deadline, "no multipliers written"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert _snapshot(path) == before
    assert open_store(path).value is not None
