"""``method="lbfgs"``: L-BFGS on the exact gradient, exact Newton-CG steps at the end (issue 11).

- Every accepted step meets Armijo's condition; the first trial is at most of length one.
- The hand-over: once ``||g|| <= newton_gtol max(1, |E|)`` the steps are damped exact
  Newton-CG steps on all rows, and the run ends at ``||g|| <= 1e-6 max(1, |E|)`` at a
  minimum (the Hessian there positive semi-definite); ``newton_gtol=0`` never hands over.
- One value+gradient pass per trial point (the driver asks for both at once).
- A run resumed from its checkpoint, in either phase, ends bitwise where the
  uninterrupted one ends; the same bits in this process's shard order on a 1- and a
  2-worker cluster.
- Options are checked with errors that name them.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.train import LocalObjective, minimize
from dist_hess.train.globalization import parse_globalization
from dist_hess.train.lbfgs import ARMIJO
from dist_hess.train.strategies import make_strategy
from tests.test_train_hessian_free import _problem, fits_on_one_and_two_workers


def _lbfgs(model, X, Y, options=None, objective=None, **limits):
    strategy = make_strategy("lbfgs", options=options)
    rule = parse_globalization(None, strategy.globalizations)
    objective = objective or LocalObjective(model, X, Y, chunk_size=100)        # 12 shards
    records = []

    def callback(w, record):
        records.append(dict(strategy.last_info))

    result = minimize(objective, strategy, rule, relative_gtol=True, callback=callback, **limits)
    return result, records, strategy


def _no_seconds(history):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history]


class _Counting(LocalObjective):
    """Counts passes over the data."""

    passes = 0

    def value(self, w):
        if "value" not in self._cache.at(w):
            type(self).passes += 1
        return super().value(w)

    def gradient(self, w):
        if "gradient" not in self._cache.at(w):
            type(self).passes += 1
        return super().gradient(w)

    def value_and_gradient(self, w):
        entry = self._cache.at(w)
        if "value" not in entry or "gradient" not in entry:
            type(self).passes += 1
        return super().value_and_gradient(w)


def test_accepted_steps_meet_armijo_and_the_first_step_is_short():
    model, X, Y = _problem(600)
    result, records, _ = _lbfgs(model, X, Y, options={"newton_gtol": 0}, max_iter=60, gtol=0.0,
                                ftol=0.0)
    assert records[0]["pairs"] == 0 and records[0]["alpha"] * result.history[0].step_norm <= 1.0
    accepted = [r for r in result.history if r.accepted]
    assert len(accepted) > 40
    # the driver's ratio is (E - E(w + p)) / (-g'p), with its round-off guard
    assert all(r.ratio >= ARMIJO for r in accepted)
    assert all(r.ratio < ARMIJO for r in result.history if not r.accepted)
    assert all(rec["phase"] == "lbfgs" for rec in records)
    assert max(rec["pairs"] for rec in records) == 10
    values = [r.value for r in accepted]
    assert all(b < a for a, b in zip(values, values[1:]))


def test_hands_over_to_exact_newton_and_converges_exactly():
    model, X, Y = _problem()
    result, records, _ = _lbfgs(model, X, Y, options={"newton_gtol": 0.03}, max_iter=400,
                                gtol=1e-6)
    assert result.status == "gtol", result.message
    assert result.gradient_norm <= 1e-6 * max(1.0, abs(result.value))
    phases = [rec["phase"] for rec in records]
    switch = phases.index("newton")
    assert set(phases[switch:]) == {"newton"} and switch > 100
    assert len(phases) - switch < 30                     # quadratic convergence there
    assert records[-1]["kind"] == "hessian" and records[-1]["sample_shards"] == 12
    H = model.curvature(result.w, X, Y, kind="hessian", structure="full")
    eigenvalues = np.linalg.eigvalsh(H)
    assert eigenvalues[0] > -1e-8 * eigenvalues[-1]


def test_newton_steps_finish_faster_than_lbfgs_alone():
    model, X, Y = _problem()
    with_newton, _, _ = _lbfgs(model, X, Y, max_iter=2000, gtol=1e-8)
    alone, _, _ = _lbfgs(model, X, Y, options={"newton_gtol": 0}, max_iter=2000, gtol=1e-8)
    assert with_newton.status == "gtol" and with_newton.gradient_norm <= 1e-8 * abs(with_newton.value)
    assert with_newton.n_iter < alone.n_iter


def test_one_pass_over_the_data_per_trial_point():
    model, X, Y = _problem(600)
    _Counting.passes = 0
    objective = _Counting(model, X, Y, chunk_size=100)
    result, _, _ = _lbfgs(model, X, Y, options={"newton_gtol": 0}, objective=objective,
                          max_iter=30, gtol=0.0, ftol=0.0)
    assert _Counting.passes == result.n_iter + 2          # + the start's value and gradient


def test_negative_curvature_hands_back_to_lbfgs_with_a_lower_threshold():
    model, X, Y = _problem(600)
    result, records, strategy = _lbfgs(model, X, Y, {"newton_gtol": 0.3}, max_iter=80,
                                       gtol=1e-9)
    phases = "".join("N" if rec["phase"] == "newton" else "l" for rec in records)
    back = [i for i, rec in enumerate(records) if rec.get("handed_back")]
    assert phases.startswith("lllN") and back and phases[back[0] + 1] == "l"
    assert records[back[0]]["case"] == "negative_curvature" or records[back[0]]["kind"] != "hessian"
    assert strategy.state_dict()["threshold"] == pytest.approx(0.03)
    assert result.status == "gtol" and phases.endswith("N")


@pytest.mark.parametrize("stop", [2, 6, 30], ids=["in-lbfgs", "in-newton", "handed-back"])
def test_resumed_run_ends_bitwise_where_the_uninterrupted_one_ends(tmp_path, stop):
    model, X, Y = _problem(600)
    options = {"newton_gtol": 0.3}            # L-BFGS, Newton, L-BFGS again, Newton
    limits = dict(max_iter=80, gtol=1e-9)
    straight, records, _ = _lbfgs(model, X, Y, options, **limits)
    path = tmp_path / "lbfgs.zarr"
    _lbfgs(model, X, Y, options, checkpoint=path, **{**limits, "max_iter": stop})
    resumed, _, _ = _lbfgs(model, X, Y, options, checkpoint=path, **limits)
    np.testing.assert_array_equal(resumed.w, straight.w)
    assert _no_seconds(resumed.history) == _no_seconds(straight.history)


def test_same_bits_on_one_and_two_workers():
    def short_logs(client):                     # distributed's message log kept short
        assert client.scheduler_comm.recent_message_log.maxlen <= 10

    one, two = fits_on_one_and_two_workers(short_logs, method="lbfgs", max_iter=40, gtol=1e-9,
                                           options={"newton_gtol": 0.3})
    assert one.n_iter == two.n_iter == 40
    np.testing.assert_array_equal(one.w, two.w)
    assert _no_seconds(one.history) == _no_seconds(two.history)


def test_auto_takes_lbfgs_above_the_block_size():
    spec = {"inputs": 200, "layers": [{"type": "dense", "units": 100, "activation": "tanh"},
                                      {"type": "dense", "units": 1, "activation": "identity"}],
            "loss": "squared", "penalty": {"type": "l2", "lambda": 1.0}}
    model = dh.Model.from_dict(spec)                                   # t = 20,201
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 200))
    Y = np.tanh(X[:, :1])
    result = dh.fit(model, X, Y, max_iter=5)
    assert result.method == "lbfgs" and result.n_iter == 5


def test_options_are_checked():
    with pytest.raises(ValueError, match="memory"):
        make_strategy("lbfgs", options={"memory": 0})
    with pytest.raises(ValueError, match="newton_gtol"):
        make_strategy("lbfgs", options={"newton_gtol": -1})
    with pytest.raises(ValueError, match="structure"):
        make_strategy("lbfgs", structure="row")
    with pytest.raises(TypeError, match="lbfgs"):
        make_strategy("lbfgs", options={"radius": 1})
