"""Helpers shared by the Dask-layer tests (imported explicitly, not a conftest).

The oracle here is the single-process engine: ``shard_sums`` over all the data
and ``finalize`` (docs/internals.md); the distributed result must match it to
1e-12 relative, block by block.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from dist_hess.engine import Request, finalize, shard_sums
from tests.cases import CASES_BY_ID

#: Architectures the Dask tests run on: a skip connection with fan-out and a
#: penalty, rbf + softmax with integer labels, a quadratic layer.
CASE_IDS = ("skip_1_0_fanout", "rbf_full_ce_skip", "quadratic_multi_source")

#: Every kind and structure at least once, so each key travels packed.
CURVATURES = (("hessian", "row"), ("gauss_newton", "layer"), ("lagrangian", "full"),
              ("hessian", "full"))

#: Uneven shardings of 60 examples, with a one-row shard.
SHARDINGS = {1: (60,), 3: (23, 1, 36), 7: (9, 1, 14, 5, 11, 13, 7)}


def problem(case_id: str, n: int = 60, seed: int = 0):
    """``(model, w, X, Y)``: a case's architecture on ``n`` fresh examples."""
    case = CASES_BY_ID[case_id]
    model = case.model()
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, model.inputs))
    units, loss = model.sizes[-1], model.loss.name
    if loss == "softmax_cross_entropy":
        Y = rng.integers(0, units, size=n)
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, size=(n, units)).astype(np.float64)
    else:
        Y = rng.normal(size=(n, units))
    return model, case.make_w(0), X, Y


def reference(model, w, X, Y, curvature=CURVATURES, hvp=(), multipliers=False) -> dict:
    req = Request(curvature=tuple(curvature), hvp=tuple(hvp), multipliers=multipliers)
    return finalize(model, w, shard_sums(model, w, X, Y, req), req)


def assert_close(got, want, rtol=1e-12, what=""):
    """Max error relative to the largest entry of ``want`` (entries near zero in a
    block are judged on the block's scale)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


def assert_matches_reference(ev, ref, curvature=CURVATURES, hvp=0):
    assert ev.n_examples == ref["n"]
    assert_close(ev.value, ref["value"], what="value")
    assert_close(ev.gradient, ref["gradient"], what="gradient")
    for kind, structure in curvature:
        got, want = ev.curvature_of(kind, structure), ref[f"curvature/{kind}/{structure}"]
        if structure == "full":
            assert_close(got, want, what=f"{kind}:{structure}")
        else:
            assert len(got) == len(want)
            for k, (g, w) in enumerate(zip(got, want), start=1):
                assert_close(g, w, what=f"{kind}:{structure} layer {k}")
    for i in range(hvp):
        got = ev.hvp if not isinstance(ev.hvp, list) else ev.hvp[i]
        assert_close(got, ref[f"hvp/{i}"], what=f"hvp {i}")


def assert_bitwise_equal(a, b):
    """Two Evaluations hold exactly the same numbers."""
    assert a.value == b.value
    np.testing.assert_array_equal(a.gradient, b.gradient)
    assert a.blocks.keys() == b.blocks.keys()
    for key in a.blocks:
        x, y = a.blocks[key], b.blocks[key]
        for xi, yi in zip(x if isinstance(x, list) else [x], y if isinstance(y, list) else [y]):
            assert np.array_equal(xi, yi), f"{key} differs"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 90.0


class ProcessCluster:
    """A scheduler and workers, each a ``python -m dask ...`` subprocess in its own
    session (so one ``killpg`` ends it and anything it started)."""

    def __init__(self, directory):
        self.directory = directory
        self.scheduler_file = os.path.join(directory, "scheduler.json")
        self.env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = None

    def _spawn(self, name, args):
        log = open(os.path.join(self.directory, f"{name}.log"), "wb")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "dask", *args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.directory)
        log.close()
        return self.procs[name]

    def start_scheduler(self):
        # --idle-timeout / --death-timeout: orphans end themselves should pytest die hard.
        proc = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                         "--no-dashboard", "--scheduler-file", self.scheduler_file,
                                         "--idle-timeout", "600"])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self.log('scheduler')}")
            try:
                with open(self.scheduler_file) as f:
                    self.address = json.load(f)["address"]
                return self.address
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                time.sleep(0.1)
        raise TimeoutError(f"no scheduler file after {START_TIMEOUT} s: {self.log('scheduler')}")

    def start_worker(self, name):
        self._spawn(name, ["worker", "--scheduler-file", self.scheduler_file, "--nthreads", "1",
                           "--host", "127.0.0.1", "--no-dashboard", "--no-nanny", "--name", name,
                           "--memory-limit", "0", "--death-timeout", "60"])

    def kill(self, name, sig=signal.SIGKILL):
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def log(self, name):
        with open(os.path.join(self.directory, f"{name}.log"), "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def close(self):
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            if name in self.procs:
                self.kill(name, signal.SIGTERM)
