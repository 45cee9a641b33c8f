"""Fit checkpoints in zarr v3: resume, refusal of mismatches, interrupted writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import zarr

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train import TrustRegion, fit, minimize, read_checkpoint
from dist_hess.train.checkpoint import FORMAT
from dist_hess.train.objective import LocalObjective
from dist_hess.train.strategies import Step, StepStrategy, make_strategy
from tests.test_train_problems import PROBLEMS, Rosenbrock

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [("newton", None), ("newton-cg", None), ("block-newton", "trust-region"),
            ("block-newton", "damping"), ("lm", None)]
VARIANT_IDS = [m if g is None else f"{m}-{g}" for m, g in VARIANTS]


def without_seconds(history):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history]


@pytest.mark.parametrize(("method", "globalization"), VARIANTS, ids=VARIANT_IDS)
def test_resume_continues_from_the_stored_iteration(tmp_path, method, globalization):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    kwargs = dict(method=method, globalization=globalization)
    first = fit(model, X, Y, max_iter=3, checkpoint=path, **kwargs)
    assert first.status == "max_iter" and first.n_iter == 3
    stored = read_checkpoint(path)
    assert stored.iteration == 3 and stored.method == method
    np.testing.assert_array_equal(stored.w, first.w)

    resumed = fit(model, X, Y, max_iter=300, checkpoint=path, **kwargs)
    assert resumed.converged and resumed.n_iter > 3
    assert [r.iteration for r in resumed.history] == list(range(1, resumed.n_iter + 1))
    assert without_seconds(resumed.history[:3]) == without_seconds(first.history)

    straight = fit(model, X, Y, max_iter=300, **kwargs)          # the same run, uninterrupted
    assert without_seconds(resumed.history) == without_seconds(straight.history)
    np.testing.assert_array_equal(resumed.w, straight.w)
    assert read_checkpoint(path).status == str(resumed.status)


def rbf_network():
    """Two Gaussian RBF units and a linear skip on 200 diabetes rows, where `lm`'s hybrid
    goes from Gauss-Newton to the Hessian at iteration 12 and back at 18."""
    X, Y = load_sklearn("diabetes")
    spec = {"inputs": 10, "loss": "squared", "penalty": {"type": "l2", "lambda": 1.0},
            "layers": [{"type": "rbf", "units": 2, "metric": "isotropic", "activation": "gaussian"},
                       {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}]}
    return dh.Model.from_dict(spec), X[:200], Y[:200]


def test_lm_resumed_in_either_phase_is_the_uninterrupted_run(tmp_path):
    """The hybrid's phase and counters travel in the checkpoint (strategy_state): stopped
    while counting towards the switch, in the Hessian phase, or after going back, the
    resumed run ends bitwise where the uninterrupted one ends."""
    model, X, Y = rbf_network()
    straight = fit(model, X, Y, method="lm", max_iter=300)
    assert straight.converged
    for stop, phase, count in [(7, "gauss_newton", 2), (10, "hessian", 0), (18, "gauss_newton", 1)]:
        path = tmp_path / f"stop{stop}.zarr"
        fit(model, X, Y, method="lm", max_iter=stop, checkpoint=path)
        stored = read_checkpoint(path).strategy_state
        assert (stored["phase"], stored["count"]) == (phase, count)
        resumed = fit(model, X, Y, method="lm", max_iter=300, checkpoint=path)
        assert (resumed.value, resumed.n_iter, resumed.status) == \
            (straight.value, straight.n_iter, straight.status)
        np.testing.assert_array_equal(resumed.w, straight.w)
        assert without_seconds(resumed.history) == without_seconds(straight.history)


class CountingCurvature(LocalObjective):
    """A local objective that counts its curvature evaluations."""

    calls = 0

    def curvature(self, w, kind, structure):
        self.calls += 1
        return super().curvature(w, kind, structure)


@pytest.mark.parametrize(("method", "option", "held"),
                         [("newton", "reuse_curvature", "curvature"),
                          ("block-newton", "reuse_preconditioner", "eigenvectors_0")])
def test_a_strategy_holding_its_curvature_evaluates_fewer_and_resumes_bitwise(
        tmp_path, method, option, held):
    """``newton(reuse_curvature=True)``, ``block-newton(reuse_preconditioner=True)``: fewer
    curvature evaluations than accepted iterates, and what is held travels in the
    checkpoint, so a run stopped anywhere resumes to the same bits."""
    model, X, Y = rbf_network()
    options = {option: True}
    objective = CountingCurvature(model, X, Y)
    straight = minimize(objective, make_strategy(method, options=options), TrustRegion(),
                        max_iter=300)
    accepted = sum(r.accepted for r in straight.history)
    assert straight.converged and objective.calls < accepted
    straight = fit(model, X, Y, method=method, options=options, max_iter=300)
    for stop in (2, 7, 12):
        path = tmp_path / f"stop{stop}.zarr"
        fit(model, X, Y, method=method, options=options, max_iter=stop, checkpoint=path)
        assert isinstance(read_checkpoint(path).strategy_state[held], np.ndarray)
        resumed = fit(model, X, Y, method=method, options=options, max_iter=300, checkpoint=path)
        np.testing.assert_array_equal(resumed.w, straight.w)
        assert without_seconds(resumed.history) == without_seconds(straight.history)


class Remembering(StepStrategy):
    """Steepest descent plus half the previous step, cut to the trust region: each step
    depends on the last one (as a warm start does), an array kept in `state_dict`."""

    name, globalizations = "remembering", ("trust-region",)

    def __init__(self):
        self.previous, self.steps = None, 0

    def solve(self, state):
        d = -state.gradient if self.previous is None else 0.5 * self.previous - state.gradient
        scale = min(1.0, state.radius / float(np.linalg.norm(d)))
        p = scale * d
        H = state.curvature("hessian", "full")
        self.previous, self.steps = p, self.steps + 1
        return Step(p, -float(state.gradient @ p + 0.5 * p @ H @ p), scale < 1.0)

    def state_dict(self):
        return {"steps": self.steps, **({} if self.previous is None else {"previous": self.previous})}

    def load_state_dict(self, saved):
        self.steps, self.previous = saved["steps"], saved.get("previous")


def test_strategy_state_arrays_are_zarr_arrays_and_resume_bitwise(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    run = lambda max_iter, **kw: minimize(LocalObjective(model, X, Y), Remembering(),  # noqa: E731
                                          TrustRegion(), max_iter=max_iter, **kw)
    straight = run(40)
    path = tmp_path / "fit.zarr"
    run(15, checkpoint=path)
    attrs = zarr.open_group(path, mode="r").attrs.asdict()
    assert attrs["strategy_state"] == {"steps": 15} and attrs["strategy_arrays"] == ["previous"]
    assert read_checkpoint(path).strategy_state["previous"].shape == (model.n_params,)
    resumed = run(40, checkpoint=path)
    np.testing.assert_array_equal(resumed.w, straight.w)
    assert without_seconds(resumed.history) == without_seconds(straight.history)


def test_a_strategy_without_state_refuses_a_stored_one():
    strategy = make_strategy("newton")
    assert strategy.state_dict() == {}
    strategy.load_state_dict({})
    with pytest.raises(ValueError, match="keeps no state"):
        strategy.load_state_dict({"phase": "hessian"})
    with pytest.raises(ValueError, match="phase"):
        make_strategy("lm").load_state_dict({"phase": "newton", "count": 0, "last": None})


def test_resuming_a_finished_run_does_nothing_more(tmp_path):
    model, X, Y = PROBLEMS["logistic_regression"]
    path = tmp_path / "fit.zarr"
    done = fit(model, X, Y, method="newton", checkpoint=path)
    again = fit(model, X, Y, method="newton", checkpoint=path)
    assert again.status == "gtol" and again.n_iter == done.n_iter
    np.testing.assert_array_equal(again.w, done.w)


def test_resume_with_another_method_or_model_is_refused(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    fit(model, X, Y, method="newton", max_iter=2, checkpoint=path)
    with pytest.raises(ValueError, match="method 'newton'"):
        fit(model, X, Y, method="newton-cg", checkpoint=path)
    other, X6, Y6 = PROBLEMS["rosenbrock6"]
    with pytest.raises(ValueError, match="another model"):
        fit(other, X6, Y6, method="newton", checkpoint=path)
    fit(model, X, Y, method="block-newton", checkpoint=tmp_path / "b.zarr", max_iter=1)
    with pytest.raises(ValueError, match="globalization"):
        fit(model, X, Y, method="block-newton", globalization="damping",
            checkpoint=tmp_path / "b.zarr")


def test_an_interrupted_weight_write_leaves_the_previous_state(tmp_path):
    """Killed after writing the next slot's weights but before the attributes: the
    attributes still name the complete slot, and resuming ignores the torn one."""
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    fit(model, X, Y, method="newton", max_iter=4, checkpoint=path)
    group = zarr.open_group(path, mode="r+")
    slot = group.attrs["slot"]
    group[f"weights_{1 - slot}"][...] = np.full(model.n_params, np.nan)   # the torn write
    resumed = fit(model, X, Y, method="newton", max_iter=300, checkpoint=path)
    straight = fit(model, X, Y, method="newton", max_iter=300)
    np.testing.assert_array_equal(resumed.w, straight.w)
    assert resumed.n_iter == straight.n_iter


def test_unreadable_metadata_is_reported(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    fit(model, X, Y, method="newton", max_iter=2, checkpoint=path)
    meta = path / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(ValueError, match="interrupted"):
        fit(model, X, Y, method="newton", checkpoint=path)


def test_a_group_without_a_complete_iteration_starts_afresh(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    zarr.open_group(path, mode="w").attrs.put({"format": FORMAT})
    assert read_checkpoint(path) is None
    result = fit(model, X, Y, method="newton", max_iter=2, checkpoint=path)
    assert result.n_iter == 2 and read_checkpoint(path).iteration == 2


def test_something_else_is_not_overwritten(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "other.zarr"
    zarr.open_group(path, mode="w").attrs.put({"format": "dist_hess/1"})
    with pytest.raises(ValueError, match="not a dist_hess fit checkpoint"):
        fit(model, X, Y, method="newton", checkpoint=path)


def test_a_non_empty_directory_is_not_taken_over(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a zarr v3 group"):
        fit(model, X, Y, method="newton", checkpoint=tmp_path / "results")


def test_checkpoint_is_plain_arrays_and_json(tmp_path):
    model, X, Y = PROBLEMS["rosenbrock2"]
    path = tmp_path / "fit.zarr"
    result = fit(model, X, Y, method="lm", max_iter=5, checkpoint=path)
    meta = json.loads((path / "zarr.json").read_text())
    attrs = meta["attributes"]
    assert meta["zarr_format"] == 3 and attrs["format"] == FORMAT
    assert attrs["complete_iteration"] == 5 and len(attrs["history"]) == 5
    assert attrs["method"] == "lm" and attrs["globalization"] == "damping"
    assert attrs["damping"] == pytest.approx(read_checkpoint(path).damping)
    assert attrs["radius"] is None and attrs["strategy_state"]["phase"] == "gauss_newton"
    assert attrs["model"]["spec"] == model.to_dict()
    group = zarr.open_group(path, mode="r")
    weights = group[f"weights_{attrs['slot']}"]
    assert weights.dtype == np.float64 and weights.shape == (model.n_params,)
    np.testing.assert_array_equal(weights[...], result.w)
    text = "".join(p.read_text(errors="ignore") for p in path.rglob("zarr.json"))
    assert "pickle" not in text.lower()


CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}]
    from tests.test_train_problems import Rosenbrock
    from dist_hess.train import fit
    fit(Rosenbrock(), None, None, method="newton", checkpoint={path!r}, max_iter=1000,
        callback=lambda w, record: time.sleep(0.05))
""")


@pytest.mark.slow
def test_resume_after_the_process_is_killed(tmp_path):
    path = str(tmp_path / "fit.zarr")
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), path=path)],
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    try:
        while True:
            assert child.poll() is None, "the child finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint progress"
            try:
                state = read_checkpoint(path)
            except ValueError:                    # caught mid-creation
                state = None
            if state is not None and state.iteration >= 5:
                break
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    stored = read_checkpoint(path)
    assert stored.iteration >= 5
    resumed = fit(Rosenbrock(), None, None, method="newton", checkpoint=path, max_iter=1000)
    straight = fit(Rosenbrock(), None, None, method="newton", max_iter=1000)
    assert resumed.converged
    assert [r.iteration for r in resumed.history] == list(range(1, resumed.n_iter + 1))
    assert without_seconds(resumed.history[:stored.iteration]) == without_seconds(stored.history)
    assert without_seconds(resumed.history) == without_seconds(straight.history)
    np.testing.assert_array_equal(resumed.w, straight.w)


CREATING_CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}]
    from tests.test_train_problems import Rosenbrock
    from dist_hess.train.checkpoint import CheckpointWriter, model_fingerprint
    from dist_hess.train.strategies import make_strategy
    import zarr  # noqa: F401  (loaded before the clock starts)
    config, fingerprint = make_strategy("newton").config(), model_fingerprint(Rosenbrock())
    print("ready", flush=True)
    for i in range(100_000):                    # nothing but creating checkpoints
        CheckpointWriter({directory!r} + f"/fit-{{i}}.zarr", method="newton", strategy=config,
                         globalization="trust-region", model=fingerprint)
""")


@pytest.mark.slow
def test_checkpoint_creation_killed_early_then_rerun_works(tmp_path):
    """A process that does nothing but create checkpoints is SIGKILLed at several moments,
    so the kill lands inside a creation: a rerun of the fit on the checkpoint that was
    being created (and on the one before) works and ends where an uninterrupted fit ends."""
    straight = fit(Rosenbrock(), None, None, method="newton", max_iter=1000)
    for trial, delay in enumerate((0.05, 0.13, 0.31, 0.57, 0.89)):
        directory = tmp_path / f"trial-{trial}"
        directory.mkdir()
        child = subprocess.Popen([sys.executable, "-c", CREATING_CHILD.format(
                                  repo=str(REPO), directory=str(directory))],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
            os.kill(child.pid, 9)
        finally:
            child.kill()
            child.wait(timeout=60)
        made = sorted(directory.glob("fit-*.zarr"), key=lambda p: int(p.stem.split("-")[1]))
        assert made, "the child was killed before it created any checkpoint"
        for path in made[-2:]:
            resumed = fit(Rosenbrock(), None, None, method="newton", checkpoint=path,
                          max_iter=1000)
            np.testing.assert_array_equal(resumed.w, straight.w)
            assert without_seconds(resumed.history) == without_seconds(straight.history)
