"""Hessian-free training with subsampled curvature (issue 11).

- The per-shard operator (`ShardCurvature`): products and row-block diagonals equal the
  engine's `Model.hvp` / `Model.curvature` on every case of the table.
- The sampled curvature ``B_S = (n / n_S) sum_S B_i + pen''``: the full sample is ``B``
  (masked models included); a part of it is the scaled sum of its shards.
- `hf_cg` against its guarantees on matrices with chosen spectra.
- `ShardSchedule`: the same seed draws the same shards, disjoint within an epoch, every
  shard once per epoch; the state round-trips.
- `hessian-free` fits: exact final convergence to ``||g|| <= 1e-6 max(1, |E|)`` with the
  last steps exact Newton steps on all shards; a run resumed from its checkpoint ends
  bitwise where the uninterrupted one ends; on a 1- and a 2-worker cluster the same bits.
- `method="auto"`: the rule's choices, recorded in ``result.method``.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.distributed.sampled_curvature import LocalSampledCurvature
from dist_hess.engine.operator import ShardCurvature
from dist_hess.train import LocalObjective, fit, minimize
from dist_hess.train import auto
from dist_hess.train.globalization import parse_globalization
from dist_hess.train.hf_cg import hf_cg
from dist_hess.train.strategies import make_strategy
from dist_hess.train.subsample import ShardSchedule
from tests.cases import CASES, case_params
from tests.test_train_real import case


def _row_diagonals(model, w, X, Y, kind):
    rows = model.curvature(w, X, Y, kind=kind, structure="row")
    return np.concatenate([np.diagonal(r, axis1=1, axis2=2).ravel() for r in rows])


def _penalty_diagonal(model, w, kind="hessian"):
    return 0.0 if model.penalty is None else model.penalty.diagonal(model, w, kind)


def _penalty_product(model, w, v, kind="hessian"):
    return 0.0 if model.penalty is None else model.penalty.hvp(model, w, v, kind)


# ---------------------------------------------------------------- the operator

@pytest.mark.parametrize("case", case_params())
def test_shard_operator_equals_the_engine(case):
    model, w, X, Y = case.model(), case.w, case.X, case.Y
    op = ShardCurvature(model, w, X, Y, memory_budget=4096)    # several row chunks
    v = case.random_direction()
    value, gradient = model.value_and_gradient(w, X, Y)
    pen = 0.0 if model.penalty is None else model.penalty.value(model, w)
    np.testing.assert_allclose(op.value + pen, value, rtol=1e-12)
    for kind in ("hessian", "gauss_newton"):
        want = model.hvp(w, X, Y, v, kind=kind)
        got = op.product(v, kind) + _penalty_product(model, w, v, kind)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.max(np.abs(want)))
        want = _row_diagonals(model, w, X, Y, kind)
        got = op.diagonal(kind) + _penalty_diagonal(model, w, kind)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.max(np.abs(want)))


def test_sampled_curvature_scales_its_shards_and_is_exact_on_all_of_them():
    model, X, Y = case("wine_skip")
    w = model.init(seed=3)
    v = np.random.default_rng(0).normal(size=model.n_params)
    b = (0, 40, 90, 178)
    full = LocalSampledCurvature(model, w, X, Y, b, (0, 1, 2))
    assert full.complete
    for kind in ("hessian", "gauss_newton"):
        np.testing.assert_allclose(full.product(v, kind), model.hvp(w, X, Y, v, kind=kind),
                                   rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(full.diagonal("gauss_newton"),
                               _row_diagonals(model, w, X, Y, "gauss_newton"), rtol=1e-11)
    part = LocalSampledCurvature(model, w, X, Y, b, (0, 2))
    assert not part.complete and part.n_sample == 128
    rows = np.r_[0:40, 90:178]
    want = (178 / 128) * model.hvp(w, X[rows], Y[rows], v, kind="gauss_newton")
    want += (1 - 178 / 128) * _penalty_product(model, w, v, "gauss_newton")      # the penalty counted once
    np.testing.assert_allclose(part.product(v, "gauss_newton"), want, rtol=1e-11, atol=1e-11)


def test_sampled_curvature_of_a_pruned_model_is_the_engines():
    model, X, Y = case("breast_cancer")
    spec = model.to_dict()
    first = np.ones(model.layer_shapes[0], dtype=int)
    first[0, 3] = first[1, 10] = 0
    spec["layers"][0]["mask"] = first.tolist()                   # a layer mask (DESIGN.md)
    pruned = dh.Model.from_dict(spec)
    mask = pruned.mask
    assert mask is not None and (~mask).sum() == 2
    w = pruned.init(seed=1)
    v = np.random.default_rng(1).normal(size=model.n_params)
    sample = LocalSampledCurvature(pruned, w, X, Y, (0, len(X)), (0,))
    np.testing.assert_allclose(sample.product(v, "hessian"), pruned.hvp(w, X, Y, v),
                               rtol=1e-11, atol=1e-12)
    diagonal = sample.diagonal("gauss_newton")
    assert np.all(diagonal[~mask] == 1.0)


# ---------------------------------------------------------------- CG

def _spd(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    return (q * eigenvalues) @ q.T


def test_cg_reaches_the_damped_newton_step():
    B = _spd(np.logspace(-2, 2, 30))
    g = np.random.default_rng(1).normal(size=30)
    mu = 0.1
    result = hf_cg(lambda v: B @ v, g, mu, max_iter=200, tol=1e-10 * np.linalg.norm(g),
                   epsilon=0.0)
    assert result.case == "residual"
    want = np.linalg.solve(B + mu * np.eye(30), -g)
    np.testing.assert_allclose(result.last.x, want, rtol=1e-8)
    phis = [it.phi for it in result.iterates]
    assert all(b <= a + 1e-12 * abs(a) for a, b in zip(phis, phis[1:]))   # phi falls
    x = result.last.x
    assert np.isclose(result.last.model, g @ x + 0.5 * x @ B @ x, rtol=1e-10)


def test_cg_warm_start_is_taken_only_when_it_beats_the_origin():
    B = _spd(np.linspace(1, 10, 20))
    g = np.random.default_rng(2).normal(size=20)
    exact = np.linalg.solve(B, -g)
    good = hf_cg(lambda v: B @ v, g, 0.0, max_iter=1, x0=0.9 * exact)
    assert good.warm_started and good.last.phi < -0.9 * 0.5 * g @ -exact * 0.9
    bad = hf_cg(lambda v: B @ v, g, 0.0, max_iter=1, x0=-10 * exact)
    assert not bad.warm_started


def test_cg_stops_on_negative_curvature_with_a_descent_iterate():
    B = _spd(np.r_[-1.0, np.linspace(0.5, 3, 9)])
    g = np.random.default_rng(3).normal(size=10)
    result = hf_cg(lambda v: B @ v, g, 0.0, max_iter=100)
    assert result.case == "negative_curvature"
    assert result.last.phi <= 0.0


def test_cg_progress_test_stops_before_max_iter():
    B = _spd(np.logspace(-6, 3, 300))
    g = np.random.default_rng(4).normal(size=300)
    result = hf_cg(lambda v: B @ v, g, 0.0, max_iter=3000, preconditioner=np.ones(300))
    assert result.case == "progress" and result.products < 3000


# ---------------------------------------------------------------- the sample schedule

def test_schedule_is_seeded_rotating_and_resumable():
    draws = [ShardSchedule(10, size=3, seed=7) for _ in range(2)]
    first = [draws[0].draw() for _ in range(9)]
    assert first == [draws[1].draw() for _ in range(9)]          # same seed, same shards
    assert first != [ShardSchedule(10, size=3, seed=8).draw() for _ in range(9)]
    for epoch in range(3):                                       # 3 disjoint draws per epoch
        shards = [s for d in first[3 * epoch:3 * epoch + 3] for s in d]
        assert len(set(shards)) == 9 and all(list(d) == sorted(d) for d in first)
    saved = ShardSchedule(10, size=3, seed=7)
    for _ in range(4):
        saved.draw()
    restored = ShardSchedule(10, size=1, seed=0)
    restored.load_state_dict(saved.state_dict())
    assert [restored.draw() for _ in range(5)] == first[4:9]
    saved.grow(2.0)
    assert saved.size == 6
    saved.grow(2.0)
    assert saved.complete and saved.draw() == tuple(range(10))


# ---------------------------------------------------------------- fits

def _problem(n=1200):
    """A 6-8-3 tanh network, softmax, on data labelled by a teacher of the same shape."""
    spec = {"inputs": 6, "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                    {"type": "dense", "units": 3, "activation": "identity"}],
            "loss": "softmax_cross_entropy", "penalty": {"type": "l2", "lambda": 0.1}}
    model = dh.Model.from_dict(spec)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6))
    Y = np.argmax(model.predict(model.init(seed=1) * 3, X, output="raw"), axis=1)
    return model, X, Y


def _hessian_free(model, X, Y, **limits):
    strategy = make_strategy("hessian-free")
    rule = parse_globalization(None, strategy.globalizations)
    objective = LocalObjective(model, X, Y, chunk_size=100)            # 12 shards
    records = []

    def callback(w, record):
        records.append(dict(strategy.last_info))

    result = minimize(objective, strategy, rule, relative_gtol=True, callback=callback, **limits)
    return result, records


def test_converges_exactly_with_exact_newton_steps_at_the_end():
    model, X, Y = _problem()
    result, records = _hessian_free(model, X, Y, max_iter=300)
    assert result.status == "gtol", result.message
    assert result.gradient_norm <= 1e-6 * max(1.0, abs(result.value))
    assert records[0]["sample_shards"] == 2 and records[0]["kind"] == "gauss_newton"
    assert records[-1]["sample_shards"] == 12 and records[-1]["kind"] == "hessian"
    H = model.curvature(result.w, X, Y, kind="hessian", structure="full")
    eigenvalues = np.linalg.eigvalsh(H)
    assert eigenvalues[0] > -1e-8 * eigenvalues[-1]               # a minimum (one flat direction)


def _no_seconds(history):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history]


def test_resumed_run_ends_bitwise_where_the_uninterrupted_one_ends(tmp_path):
    model, X, Y = _problem(600)
    limits = dict(max_iter=40, gtol=1e-8)
    straight, _ = _hessian_free(model, X, Y, **limits)
    path = tmp_path / "hf.zarr"
    _hessian_free(model, X, Y, checkpoint=path, **{**limits, "max_iter": 9})
    resumed, _ = _hessian_free(model, X, Y, checkpoint=path, **limits)
    np.testing.assert_array_equal(resumed.w, straight.w)
    assert _no_seconds(resumed.history) == _no_seconds(straight.history)


def test_options_are_checked():
    with pytest.raises(ValueError, match="sample_fraction"):
        make_strategy("hessian-free", options={"sample_fraction": 0})
    with pytest.raises(ValueError, match="kind"):
        make_strategy("hessian-free", kind="lagrangian")
    with pytest.raises(ValueError, match="structure"):
        make_strategy("hessian-free", structure="row")


# ---------------------------------------------------------------- auto

@pytest.mark.parametrize(("t", "method"), [(10, "newton"), (auto.NEWTON_MAX_PARAMS, "newton"),
                                           (auto.NEWTON_MAX_PARAMS + 1, "block-newton"),
                                           (auto.BLOCK_MAX_PARAMS, "block-newton"),
                                           (auto.BLOCK_MAX_PARAMS + 1, "lbfgs")])
def test_auto_rule(t, method):
    for distributed in (False, True):
        choice = auto.choose(t, 1000, distributed=distributed)
        assert choice.method == method and str(t) in choice.reason


def test_auto_is_the_default_and_records_the_method_used():
    model, X, Y = case("breast_cancer")
    result = fit(model, X, Y)
    assert result.method == "newton" and result.converged
    assert result.gradient_norm <= 1e-6 * max(1.0, abs(result.value))
    named = fit(model, X, Y, method="newton")
    np.testing.assert_array_equal(result.w[:0], named.w[:0])
    assert fit(model, X, Y, method="auto").method == "newton"


@pytest.mark.slow
def fits_on_one_and_two_workers(inspect=None, **options):
    """``fit`` of `_problem(600)` on 12 shards on a 1- and a 2-worker LocalCluster;
    ``inspect(client)`` runs after each fit, while its cluster is up."""
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    from dist_hess.distributed.cluster import BLAS_ENV

    model, X, Y = _problem(600)
    Xd, Yd = da.from_array(X, chunks=(50, -1)), da.from_array(Y, chunks=50)     # 12 shards
    results = []
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", env=dict(BLAS_ENV)) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            results.append(fit(model, Xd, Yd, client=client, **options))
            if inspect is not None:
                inspect(client)
    return results


def test_same_bits_on_one_and_two_workers():
    one, two = fits_on_one_and_two_workers(method="hessian-free", max_iter=25, gtol=1e-10)
    assert one.n_iter == two.n_iter == 25
    np.testing.assert_array_equal(one.w, two.w)
    assert _no_seconds(one.history) == _no_seconds(two.history)
