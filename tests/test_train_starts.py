"""Multi-start fits: ``fit(..., starts=...)`` is the single fit from every start, and the best.

In this process, on a checkpoint directory (resumed), and on a real two-process
``LocalCluster`` (slow tier): one task per start, each bitwise equal to the in-process
``fit(w0=that start)``, and data-parallel when the data do not fit one worker.
"""
from __future__ import annotations

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.train import starts as starts_module
from dist_hess.train.starts import best_start, group_minima, start_points
from tests.test_train_dask import SPEC, regression_problem

@pytest.fixture(scope="module")
def problem():
    return regression_problem()


def assert_same_fit(got, want):
    """Two results of the same fit: the same numbers, iteration for iteration."""
    assert got.status == want.status and got.n_iter == want.n_iter and got.method == want.method
    assert got.value == want.value
    np.testing.assert_array_equal(got.w, want.w)
    np.testing.assert_array_equal(got.gradient, want.gradient)
    strip = [{**r.to_dict(), "seconds": None} for r in got.history]
    assert strip == [{**r.to_dict(), "seconds": None} for r in want.history]


def test_each_start_is_the_single_fit_and_the_best_is_returned(problem):
    model, X, Y = problem
    result = dh.fit(model, X, Y, method="newton", starts=4, max_iter=200)
    assert len(result.starts) == 4
    for seed, got in enumerate(result.starts):
        assert_same_fit(got, dh.fit(model, X, Y, method="newton", w0=model.init(seed=seed),
                                    max_iter=200))
        assert got.starts is None and got.start is None
    values = [r.value for r in result.starts]
    assert all(r.converged for r in result.starts)
    assert result.start == int(np.argmin(values)) and result.value == min(values)
    np.testing.assert_array_equal(result.w, result.starts[result.start].w)
    # the distinct minima: every converged start in exactly one, lowest first, each a
    # minimum (positive smallest Hessian eigenvalue, the full matrix's)
    assert sorted(i for m in result.minima for i in m.starts) == [0, 1, 2, 3]
    assert [m.value for m in result.minima] == sorted(m.value for m in result.minima)
    assert result.minima[0].value == result.value
    for m in result.minima:
        H = model.curvature(result.starts[m.starts[0]].w, X, Y, kind="hessian", structure="full")
        assert m.min_eigenvalue == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-8)
        assert m.min_eigenvalue > 0
        assert m.to_dict()["count"] == m.count == len(m.starts)


def test_auto_and_hessian_free_starts_are_their_single_fits(problem):
    # auto resolves once (result.method names the method of every start, gtol relative
    # as in the single auto fit); hessian-free's seeded schedule restarts with each start
    model, X, Y = problem
    auto = dh.fit(model, X, Y, starts=2, max_iter=200)
    assert auto.method == "newton" and [r.method for r in auto.starts] == ["newton"] * 2
    for seed, got in enumerate(auto.starts):
        assert_same_fit(got, dh.fit(model, X, Y, w0=model.init(seed=seed), max_iter=200))
    free = dh.fit(model, X, Y, method="hessian-free", starts=2, max_iter=15)
    for seed, got in enumerate(free.starts):
        assert_same_fit(got, dh.fit(model, X, Y, method="hessian-free",
                                    w0=model.init(seed=seed), max_iter=15))


def test_a_list_of_starts_and_the_errors(problem):
    model, X, Y = problem
    w = [model.init(seed=7), model.init(seed=8)]
    result = dh.fit(model, X, Y, method="newton", starts=w, max_iter=200)
    assert_same_fit(result.starts[1], dh.fit(model, X, Y, method="newton", w0=w[1], max_iter=200))
    with pytest.raises(ValueError, match="not both"):
        dh.fit(model, X, Y, w0=w[0], starts=2)
    with pytest.raises(ValueError, match="positive number"):
        dh.fit(model, X, Y, starts=0)
    with pytest.raises(ValueError, match=r"starts\[1\] must have shape"):
        dh.fit(model, X, Y, starts=[w[0], w[0][:-1]])
    with pytest.raises(ValueError, match="empty"):
        dh.fit(model, X, Y, starts=[])
    with pytest.raises(TypeError, match="starts must be"):
        dh.fit(model, X, Y, starts=True)
    with pytest.raises(ValueError, match="callback"):
        dh.fit(model, X, Y, starts=2, callback=lambda w, r: None)
    with pytest.raises(ValueError, match="unknown method"):      # before any start runs
        dh.fit(model, X, Y, starts=2, method="nope")


def test_group_minima_and_best_start():
    assert group_minima([3.0, 1.0, 1.0 + 1e-9, 2.0]) == [(1, 2), (3,), (0,)]
    assert group_minima([100.0, 100.0 + 1e-5, 100.0 + 1e-3]) == [(0, 1), (2,)]
    assert group_minima([]) == []
    assert len(start_points(dh.Model.from_dict(SPEC), 3)) == 3


def test_best_start_prefers_converged_results(problem):
    model, X, Y = problem
    short = dh.fit(model, X, Y, method="newton", starts=3, max_iter=2)   # none converges
    assert not any(r.converged for r in short.starts) and short.minima == []
    assert short.value == min(r.value for r in short.starts)
    mixed = short.starts[:1] + [dh.fit(model, X, Y, method="newton", w0=model.init(seed=1))]
    assert best_start(mixed) == 1 or mixed[1].value <= mixed[0].value


def test_checkpoint_directory_resumes_every_start(problem, tmp_path):
    model, X, Y = problem
    path = tmp_path / "ckpt"
    whole = dh.fit(model, X, Y, method="newton", starts=2, max_iter=40)
    dh.fit(model, X, Y, method="newton", starts=2, max_iter=5, checkpoint=path)
    assert sorted(p.name for p in path.iterdir()) == ["start_0", "start_1"]
    resumed = dh.fit(model, X, Y, method="newton", starts=2, max_iter=40, checkpoint=path)
    for got, want in zip(resumed.starts, whole.starts):
        np.testing.assert_array_equal(got.w, want.w)
        assert got.n_iter == want.n_iter and got.status == want.status
    single = tmp_path / "single"
    dh.fit(model, X, Y, method="newton", max_iter=2, checkpoint=single)
    with pytest.raises(ValueError, match="zarr group"):
        dh.fit(model, X, Y, method="newton", starts=2, checkpoint=single)


@pytest.mark.slow
def test_on_a_local_cluster_one_task_per_start_and_data_parallel(problem, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from dist_hess.distributed.cluster import BLAS_ENV

    model, X, Y = problem
    wanted = [dh.fit(model, X, Y, method="newton", w0=model.init(seed=s), max_iter=200)
              for s in range(3)]
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=":0", env=BLAS_ENV) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        on_workers = dh.fit(model, X, Y, method="newton", starts=3, max_iter=200, client=client)
        for got, want in zip(on_workers.starts, wanted):
            assert_same_fit(got, want)            # bit for bit: the same fit, one BLAS thread
        assert [m.to_dict() for m in on_workers.minima] == \
            [m.to_dict() for m in dh.fit(model, X, Y, method="newton", starts=3,
                                         max_iter=200).minima]
        # data that do not fit one worker: data-parallel, each start as fit(w0, client)
        monkeypatch.setattr(starts_module, "WORKER_DATA_FRACTION", 0.0)
        memory_limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        assert all(m > 0 for m in memory_limits)
        parallel = dh.fit(model, X, Y, method="newton", starts=2, max_iter=200, client=client)
        single = dh.fit(model, X, Y, method="newton", w0=model.init(seed=1), max_iter=200,
                        client=client)
        assert_same_fit(parallel.starts[1], single)
        assert parallel.starts[1].value == pytest.approx(wanted[1].value, rel=1e-10)
        # hessian-free data-parallel: its objective sends direct shard tasks, as fit's does
        free = dh.fit(model, X, Y, method="hessian-free", starts=2, max_iter=10, client=client)
        assert_same_fit(free.starts[1], dh.fit(model, X, Y, method="hessian-free",
                                               w0=model.init(seed=1), max_iter=10, client=client))
