"""dh.evaluate on a real cluster: a scheduler and workers started as subprocesses
with Dask's own command line (``dask scheduler`` / ``dask worker``) on loopback.

Checked against the single-process engine (1e-12 relative) and against each
other bit for bit: the reduction tree is fixed by the chunks and split_every, so
the number of workers, their completion order and a worker dying mid-run must
not change a single bit.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, futures_of, get_task_stream

import dist_hess as dh
from dist_hess.distributed import cluster as embedded
from dist_hess.distributed import persist_data
from tests.distributed_support import (CASE_IDS, CURVATURES, SHARDINGS, START_TIMEOUT,
                                       ProcessCluster, assert_bitwise_equal, assert_close,
                                       assert_matches_reference, problem, reference)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def process_cluster(tmp_path_factory):
    pc = ProcessCluster(str(tmp_path_factory.mktemp("dask-cluster")))
    try:
        pc.start_scheduler()
        for name in ("worker-a", "worker-b"):
            pc.start_worker(name)
        yield pc
    finally:
        pc.close()


@pytest.fixture(scope="module")
def client(process_cluster):
    with Client(process_cluster.address, timeout=START_TIMEOUT, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=START_TIMEOUT)
        yield c


def _worker_address(client, name):
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        if info["name"] == name:
            return address
    raise KeyError(name)


# ---------------------------------------------------------------- exactness

@pytest.mark.parametrize("n_shards", sorted(SHARDINGS))
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_matches_the_single_process_engine(client, case_id, n_shards):
    model, w, X, Y = problem(case_id)
    v = np.random.default_rng(2).normal(size=model.n_params)
    ref = reference(model, w, X, Y, hvp=(("hessian", v),), multipliers=True)
    Xd = da.from_array(X, chunks=(SHARDINGS[n_shards], -1))
    for split_every in (2, 3, 8):
        ev = dh.evaluate(model, w, Xd, Y, curvature=CURVATURES, hvp=v, multipliers=True,
                         client=client, split_every=split_every)
        assert_matches_reference(ev, ref, hvp=1)
        for got, want in zip(ev.multipliers, ref["multipliers"]):
            assert_close(got, want, what="multipliers")
    ev = dh.evaluate(model, w, Xd, Y, directional=(v, 3), client=client)
    assert_close(ev.directional, model.directional_derivatives(w, X, Y, v, 3), what="directional")


def test_bitwise_identical_across_worker_counts(client):
    model, w, X, Y = problem("skip_1_0_fanout", n=200)
    kwargs = dict(curvature=CURVATURES, chunk_size=9, split_every=3)
    both = dh.evaluate(model, w, X, Y, client=client, **kwargs)
    with dask.annotate(workers=[_worker_address(client, "worker-b")], allow_other_workers=False):
        one = dh.evaluate(model, w, X, Y, client=client, **kwargs)
    in_process = dh.evaluate(model, w, X, Y, client=None, **kwargs)
    assert_bitwise_equal(both, one)
    assert_bitwise_equal(both, in_process)
    assert_matches_reference(both, reference(model, w, X, Y))


def test_penalty_bitwise_identical_on_the_cluster_and_in_process(client):
    """Every penalty kind is added once, after the reduction: the workers' sums and the
    in-process loop over the same shards give the same bits (value, gradient, every
    structure, both curvature-vector products, order-4 directional derivatives)."""
    model, w, X, Y = problem("penalty_list_layers", n=120)
    v = np.random.default_rng(3).normal(size=model.n_params)
    kwargs = dict(curvature=CURVATURES, hvp=[("hessian", v), ("gauss_newton", v)], chunk_size=9,
                  split_every=3)
    on_cluster = dh.evaluate(model, w, X, Y, client=client, **kwargs)
    in_process = dh.evaluate(model, w, X, Y, client=None, **kwargs)
    assert_bitwise_equal(on_cluster, in_process)
    for a, b in zip(on_cluster.hvp, in_process.hvp):
        np.testing.assert_array_equal(a, b)
    assert_matches_reference(on_cluster, reference(model, w, X, Y, hvp=(("hessian", v), ("gauss_newton", v))),
                             hvp=2)
    directional = [dh.evaluate(model, w, X, Y, directional=(v, 4), chunk_size=9, split_every=3,
                               client=c).directional for c in (client, None)]
    np.testing.assert_array_equal(directional[0], directional[1])


def test_store_written_by_the_workers(client, tmp_path):
    model, w, X, Y = problem("rbf_full_ce_skip", n=90)
    Xd = da.from_array(X, chunks=(15, -1))
    with get_task_stream(client) as stream:
        ev = dh.evaluate(model, w, Xd, Y, curvature=["hessian:row", "gauss_newton:full"],
                         multipliers=True, store=tmp_path / "run.zarr", client=client)
    store = dh.open_store(tmp_path / "run.zarr")
    assert any("shard-" in str(t["key"]) for t in stream.data), "no shard ran on the cluster"
    assert store.value == ev.value
    for k, want in enumerate(model.multipliers(w, X, Y), start=1):
        assert store.group[f"multipliers/layer_{k}"].chunks[0] == 15
        assert_close(store.multipliers(k).compute(), want, what=f"multipliers {k}")
    assert_close(store.curvature("gauss_newton", "full"),
                 model.curvature(w, X, Y, "gauss_newton", "full"), what="full")


# ---------------------------------------------------------------- how the client is found

def test_address_string_and_current_client(client, process_cluster):
    model, w, X, Y = problem("quadratic_multi_source", n=30)
    by_address = dh.evaluate(model, w, X, Y, curvature="hessian", chunk_size=8,
                             client=process_cluster.address)
    with client.as_current(), get_task_stream(client) as stream:
        current = dh.evaluate(model, w, X, Y, curvature="hessian", chunk_size=8)
    assert any("shard-" in str(t["key"]) for t in stream.data), "did not run on the current client"
    assert_bitwise_equal(by_address, current)
    embedded.close_clients()        # closes the client connected by address


def test_persisted_data_stays_on_the_workers(client):
    model, w, X, Y = problem("skip_1_0_fanout", n=80)
    Xp, Yp = persist_data(X, Y, client, chunk_size=10)
    shards = futures_of(Xp) + futures_of(Yp)
    assert len(shards) == 16
    first = dh.evaluate(model, w, Xp, Yp, curvature="hessian", client=client)
    second = dh.evaluate(model, w + 0.01, Xp, Yp, curvature="hessian", client=client)
    assert all(client.who_has(shards).values()), "persisted shards left the workers"
    assert_matches_reference(first, reference(model, w, X, Y), curvature=[("hessian", "row")])
    assert_matches_reference(second, reference(model, w + 0.01, X, Y),
                             curvature=[("hessian", "row")])


# ---------------------------------------------------------------- failures

def test_worker_killed_mid_computation(client, process_cluster, tmp_path):
    spec = {"inputs": 8, "loss": "squared",
            "layers": [{"type": "dense", "units": 16, "activation": "tanh"},
                       {"type": "dense", "units": 16, "activation": "tanh", "sources": [1, 0]},
                       {"type": "dense", "units": 3, "activation": "identity"}]}
    model = dh.Model.from_dict(spec)
    w = model.init(seed=1)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(12_000, 8)), rng.normal(size=(12_000, 3))
    kwargs = dict(curvature="hessian:full", multipliers=True, chunk_size=300, split_every=4)
    clean = dh.evaluate(model, w, X, Y, client=client, **kwargs)

    process_cluster.start_worker("victim")
    client.wait_for_workers(3, timeout=START_TIMEOUT)
    victim = _worker_address(client, "victim")
    killed = threading.Event()

    def kill_after_first_results():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            held = client.has_what().get(victim, ())
            if any("shard-" in str(key) for key in held):
                process_cluster.kill("victim")
                killed.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_after_first_results, daemon=True)
    watcher.start()
    result = dh.evaluate(model, w, X, Y, client=client, store=tmp_path / "killed.zarr", **kwargs)
    finished_at_kill = killed.is_set()
    watcher.join(timeout=10)
    assert finished_at_kill, "the victim was not killed while the evaluation ran"
    assert_bitwise_equal(result, clean)
    store = dh.open_store(tmp_path / "killed.zarr")          # complete
    np.testing.assert_array_equal(store.curvature("hessian", "full"), clean.curvature)
    for k, want in enumerate(clean.multipliers, start=1):
        np.testing.assert_array_equal(store.multipliers(k).compute(), want)


def test_unreachable_scheduler_is_a_clear_error_not_a_hang():
    model, w, X, Y = problem("skip_1_0_fanout", n=10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                      # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="could not reach the Dask scheduler"):
        dh.evaluate(model, w, X, Y, client=f"tcp://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - start < 15


# ---------------------------------------------------------------- the embedded default

def test_embedded_local_cluster_for_large_problems(monkeypatch):
    model, w, X, Y = problem("skip_1_0_fanout", n=50)
    monkeypatch.setattr(embedded, "IN_PROCESS_WORK", 0)     # "large" from the first example
    assert embedded.current_client() is None
    try:
        ev = dh.evaluate(model, w, X, Y, curvature="hessian", chunk_size=10)
        local = embedded._embedded["client"]
        blas = local.run(lambda: {k: os.environ.get(k) for k in embedded.BLAS_ENV})
        assert all(env == embedded.BLAS_ENV for env in blas.values())
        assert all(info["nthreads"] == 1
                   for info in local.scheduler_info(n_workers=-1)["workers"].values())
        again = dh.evaluate(model, w, X, Y, curvature="hessian", chunk_size=10)
        assert embedded._embedded["client"] is local          # reused, not restarted
    finally:
        embedded.close_clients()
    monkeypatch.setattr(embedded, "IN_PROCESS_WORK", 10**12)
    in_process = dh.evaluate(model, w, X, Y, curvature="hessian", chunk_size=10)
    assert_bitwise_equal(ev, again)
    assert_bitwise_equal(ev, in_process)
    assert_matches_reference(ev, reference(model, w, X, Y), curvature=[("hessian", "row")])


def test_tls_security_is_passed_through():
    from distributed import LocalCluster, Security

    security = Security.temporary()
    model, w, X, Y = problem("skip_1_0_fanout", n=20)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, security=security,
                      dashboard_address=":0") as tls_cluster:
        assert tls_cluster.scheduler_address.startswith("tls://")
        try:
            ev = dh.evaluate(model, w, X, Y, client=tls_cluster.scheduler_address,
                             security=security, chunk_size=5)
        finally:
            embedded.close_clients()
    assert_matches_reference(ev, reference(model, w, X, Y), curvature=[])
