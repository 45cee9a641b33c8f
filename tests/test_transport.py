"""Numpy data reach the workers without a graph that holds them (slow: a real cluster).

`persist_data` writes each shard once to a temporary file that the workers read (every
worker runs on this machine), so no large graph is sent (distributed warns above 10 MB)
and the scheduler holds no copy; evaluations equal the in-process engine; the files go
when the arrays do. `ShardPool` calls equal the engine too.
"""
from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.distributed import persist_data
from dist_hess.distributed.cluster import BLAS_ENV
from dist_hess.distributed.shard_pool import ShardPool
from dist_hess.distributed.transport import workers_are_local

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

SPEC = {"inputs": 300, "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                                  {"type": "dense", "units": 3, "activation": "identity"}],
        "loss": "softmax_cross_entropy", "penalty": {"type": "l2", "lambda": 0.5}}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", env=dict(BLAS_ENV)) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


def test_numpy_data_are_read_by_the_workers_not_sent_in_a_graph(client):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6000, 300)), rng.integers(0, 3, size=6000)   # 14 MB of X
    model = dh.Model.from_dict(SPEC)
    w = model.init(seed=1)
    assert workers_are_local(client)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # "Sending large graph" is a warning
        Xp, Yp = persist_data(X, Y, client, chunk_size=1000)
        got = dh.evaluate(model, w, Xp, Yp, client=client)
    assert Xp.chunks[0] == (1000,) * 6
    value, gradient = model.value_and_gradient(w, X, Y)
    assert got.value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(got.gradient, gradient, rtol=1e-10, atol=1e-12)
    directory = Xp._dist_hess_files.directory
    assert sorted(os.listdir(directory))[:2] == ["X_0.npy", "X_1.npy"]
    del Xp, Yp, got
    gc.collect()
    assert not os.path.exists(directory)


def _value_gradient_equals_the_engine(pool, model, w, X, Y) -> float:
    """Assert the pool's value and gradient (plus the penalty) equal the engine's; the value."""
    value, gradient = pool.value_gradient(model, w)
    pen = model.penalty
    want_value, want_gradient = model.value_and_gradient(w, X, Y)
    assert value + pen.value(model, w) == pytest.approx(want_value, rel=1e-12)
    np.testing.assert_allclose(gradient + pen.gradient(model, w), want_gradient,
                               rtol=1e-10, atol=1e-12)
    return value


def test_shard_pool_sums_equal_the_engine(client):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(900, 300)), rng.integers(0, 3, size=900)
    model = dh.Model.from_dict(SPEC)
    w = model.init(seed=2)
    pool = ShardPool(client, X, Y, chunk_size=200)                        # 5 shards
    assert pool.n_shards == 5 and pool.rows((0, 4)) == 300
    value = _value_gradient_equals_the_engine(pool, model, w, X, Y)
    pen = model.penalty
    assert pool.value(model, w) == pytest.approx(value, rel=1e-12)
    v = rng.normal(size=model.n_params)
    remote = pool.curvature(model, w, (1, 3))
    products = remote.shard_products(v, "hessian")
    rows = np.r_[200:400, 600:800]
    want = model.hvp(w, X[rows], Y[rows], v) - pen.hvp(model, w, v)
    np.testing.assert_allclose(products[0] + products[1], want, rtol=1e-10, atol=1e-12)
    remote.release()
    pool.close()


def test_shards_are_spread_evenly_and_large_vectors_go_as_one_key(client, monkeypatch):
    """Shard i of S on worker floor(i W / S); w and v whose copies to the tasks exceed
    SHIP_BYTES go as one key per call (not carried by each task), and the sums still
    equal the engine."""
    from dist_hess.distributed import shard_pool

    spec = dict(SPEC, layers=[{"type": "dense", "units": 32, "activation": "tanh"},
                              {"type": "dense", "units": 3, "activation": "identity"}])
    model = dh.Model.from_dict(spec)
    assert 2 * model.n_params * 8 <= shard_pool.SHIP_BYTES          # 9,731 parameters
    monkeypatch.setattr(shard_pool, "SHIP_BYTES", model.n_params * 8 + 1)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(500, 300)), rng.integers(0, 3, size=500)
    w = model.init(seed=4)
    pool = ShardPool(client, X, Y, chunk_size=100)                        # 5 shards
    groups = pool.groups(range(pool.n_shards))
    assert sorted(len(shards) for _, shards in groups) == [2, 3]
    assert isinstance(pool._shipped((w, 1))[0], np.ndarray)          # one copy: inside
    assert isinstance(pool._shipped((w, 1), copies=2)[0], distributed.Future)
    _value_gradient_equals_the_engine(pool, model, w, X, Y)
    pen = model.penalty
    v = rng.normal(size=model.n_params)
    remote = pool.curvature(model, w, (0, 4))
    products = remote.shard_products(v, "gauss_newton")
    rows = np.r_[0:100, 400:500]
    want = (model.hvp(w, X[rows], Y[rows], v, kind="gauss_newton")
            - pen.hvp(model, w, v))
    np.testing.assert_allclose(products[0] + products[1], want, rtol=1e-10, atol=1e-12)
    remote.release()
    pool.close()


def _allocator_tuned():
    from dist_hess import runtime
    return runtime._worker_tuned


def test_worker_tasks_tune_the_allocator_and_the_message_logs_stay_short(client):
    """A nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns glibc's
    adaptive thresholds off; a dist_hess task sets them once per worker process
    (`dist_hess.runtime.tune_worker_allocator`). The client's and the in-process
    scheduler's debugging logs of recent messages keep at most MESSAGE_LOG_LENGTH
    messages (they kept every vector sent, 1,000 messages per stream)."""
    from dist_hess.distributed.cluster import MESSAGE_LOG_LENGTH

    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(400, 300)), rng.integers(0, 3, size=400)
    pool = ShardPool(client, X, Y, chunk_size=100)
    pool.value_gradient(model, model.init(seed=0))
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
    assert all(client.run(_allocator_tuned).values())
    streams = [client.scheduler_comm, *client.cluster.scheduler.stream_comms.values()]
    assert all(s.recent_message_log.maxlen <= MESSAGE_LOG_LENGTH for s in streams)
    pool.close()
