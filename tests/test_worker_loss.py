"""A worker SIGKILLed at any moment of ``dh.evaluate`` or ``dh.fit`` (issue 13).

On a 2-worker LocalCluster whose nannies restart a killed worker, one worker is
killed at many offsets into a loop of evaluations (and into fits): every result
must be bitwise the uninterrupted one, and nothing may hang or raise. The weights
reach the tasks as a key of the graph (no broadcast, whose replication to a dead
worker could be retried forever). On a cluster left with no worker at all, the
call ends with a clear ``RuntimeError`` after ``NO_WORKER_TIMEOUT`` seconds.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import dist_hess as dh
from dist_hess.distributed import cluster as cluster_module
from dist_hess.distributed import persist_data, shard_pool
from tests.distributed_support import START_TIMEOUT, ProcessCluster, assert_bitwise_equal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = {"inputs": 6, "loss": "squared",
        "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                   {"type": "dense", "units": 8, "activation": "tanh", "sources": [1, 0]},
                   {"type": "dense", "units": 2, "activation": "identity"}]}
#: Seconds from the start of a loop of evaluations to the kill: they land in every
#: phase of a call (graph submission, shard tasks, the reduction, the gather).
OFFSETS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.17, 0.25, 0.35, 0.5)


@pytest.fixture(scope="module")
def client():
    # A LocalCluster closes a nanny whose worker has been gone for lost-worker-timeout
    # (15 s): under load a restart can take longer, and the nanny must stay.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         env=dict(cluster_module.BLAS_ENV), dashboard_address=":0",
                         silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=START_TIMEOUT)
        yield c


def _problem(n):
    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(4)
    return model, model.init(seed=2), rng.normal(size=(n, 6)), rng.normal(size=(n, 2))


def _kill_one_worker_after(client, seconds, which):
    """SIGKILL the process of worker ``which % 2`` (by name) in ``seconds``, from a timer."""
    pids = client.run(os.getpid)
    names = {info["name"]: address
             for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}
    victim = pids[names[sorted(names)[which % len(names)]]]
    timer = threading.Timer(seconds, os.kill, (victim, signal.SIGKILL))
    timer.start()
    return timer


def test_evaluate_survives_a_worker_killed_at_many_moments(client, tmp_path):
    model, w, X, Y = _problem(1200)
    Xp, Yp = persist_data(X, Y, client, chunk_size=150)
    options = dict(curvature="hessian:row", multipliers=True, split_every=3, client=client)
    clean = dh.evaluate(model, w, Xp, Yp, **options)
    clean_multipliers = [np.asarray(m) for m in clean.multipliers]
    calls = 0
    for i, offset in enumerate(OFFSETS):
        timer = _kill_one_worker_after(client, offset, i)
        after = 0
        while timer.is_alive() or after < 2:     # until the kill, then two more
            after += not timer.is_alive()
            calls += 1                           # every other call writes a store
            store = tmp_path / f"run-{i}.zarr" if calls % 2 or after == 2 else None
            got = dh.evaluate(model, w, Xp, Yp, store=store, **options)
            assert_bitwise_equal(got, clean)
            for g, want in zip(got.multipliers, clean_multipliers):
                np.testing.assert_array_equal(np.asarray(g), want)
        client.wait_for_workers(2, timeout=START_TIMEOUT)       # the nanny's restart
    for i in range(len(OFFSETS)):
        stored = dh.open_store(tmp_path / f"run-{i}.zarr")
        np.testing.assert_array_equal(stored.gradient, clean.gradient)


@pytest.mark.parametrize("method, keyed", [("block-newton", False), ("hessian-free", False),
                                           ("hessian-free", True)],
                         ids=["block-newton", "hessian-free", "hessian-free-vectors-as-keys"])
def test_fit_survives_a_worker_killed_at_many_moments(client, method, keyed, monkeypatch):
    if keyed:     # w and every product's vector go as keys of their own, as above SHIP_BYTES
        monkeypatch.setattr(shard_pool, "SHIP_BYTES", 0)
    model, w, X, Y = _problem(2000)
    X = da.from_array(X, chunks=(250, -1))
    options = dict(method=method, max_iter=15, gtol=0.0, ftol=0.0, client=client)
    clean = dh.fit(model, X, Y, w0=w, **options)
    for i, offset in enumerate((0.2, 0.7)):
        timer = _kill_one_worker_after(client, offset, i)
        got = dh.fit(model, X, Y, w0=w, **options)
        timer.join()
        np.testing.assert_array_equal(got.w, clean.w)
        assert got.n_iter == clean.n_iter and got.value == clean.value
        client.wait_for_workers(2, timeout=START_TIMEOUT)


def test_no_worker_left_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_module, "NO_WORKER_TIMEOUT", 3.0)
    monkeypatch.setattr(cluster_module, "WORKER_POLL_INTERVAL", 0.2)
    pc = ProcessCluster(str(tmp_path))
    try:
        pc.start_scheduler()
        pc.start_worker("only")                       # no nanny: nothing restarts it
        with Client(pc.address, timeout=START_TIMEOUT, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=START_TIMEOUT)
            model, w = dh.Model.from_dict(SPEC), dh.Model.from_dict(SPEC).init(seed=0)
            rng = da.random.default_rng(0)                # made on the worker
            Xp, Yp = persist_data(rng.normal(size=(200_000, 6), chunks=(2_000, 6)),
                                  rng.normal(size=(200_000, 2), chunks=(2_000, 2)), c)
            c.wait_for_workers(1, timeout=START_TIMEOUT)
            killer = threading.Timer(0.3, pc.kill, ("only",))
            killer.start()
            with pytest.raises(RuntimeError, match="has had no worker for 3 s"):
                dh.evaluate(model, w, Xp, Yp, curvature="hessian:full", client=c)
            killer.join()
    finally:
        pc.close()
