"""dh.evaluate without a cluster: the in-process loop and dask's local schedulers.

Same shards, same tree as on a cluster, so these fast tests already pin the
reduction's numbers; tests/test_distributed_cluster.py repeats the key ones on
real worker processes.
"""
import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import dist_hess as dh
from dist_hess.distributed import cluster
from dist_hess.distributed.evaluate import curvature_specs
from tests.distributed_support import (CASE_IDS, CURVATURES, SHARDINGS, assert_bitwise_equal,
                                       assert_close, assert_matches_reference, problem, reference)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """These tests must never start or find a cluster."""
    monkeypatch.setattr(cluster, "embedded_client", _fail_embedded)
    assert cluster.current_client() is None


def _fail_embedded(*args, **kwargs):
    raise AssertionError("an in-process test tried to start the embedded cluster")


@pytest.mark.parametrize("split_every", [2, 3, 8])
@pytest.mark.parametrize("n_shards", sorted(SHARDINGS))
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_uneven_shards_match_the_single_process_engine(case_id, n_shards, split_every):
    model, w, X, Y = problem(case_id)
    v = np.random.default_rng(1).normal(size=model.n_params)
    rows = SHARDINGS[n_shards]
    with dask.config.set(scheduler="sync"):
        ev = dh.evaluate(model, w, da.from_array(X, chunks=(rows, -1)), Y, curvature=CURVATURES,
                         hvp=[("hessian", v), ("gauss_newton", v)], split_every=split_every)
    ref = reference(model, w, X, Y, hvp=(("hessian", v), ("gauss_newton", v)))
    assert_matches_reference(ev, ref, hvp=2)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_numpy_loop_and_dask_graph_give_the_same_bits(case_id):
    model, w, X, Y = problem(case_id)
    loop = dh.evaluate(model, w, X, Y, curvature=CURVATURES, chunk_size=7, split_every=3)
    with dask.config.set(scheduler="sync"):
        graph = dh.evaluate(model, w, da.from_array(X, chunks=(7, -1)), Y, curvature=CURVATURES,
                            split_every=3)
    with dask.config.set(scheduler="threads", num_workers=4):    # another completion order
        threads = dh.evaluate(model, w, da.from_array(X, chunks=(7, -1)), da.from_array(Y, 7),
                              curvature=CURVATURES, split_every=3)
    assert_bitwise_equal(loop, graph)
    assert_bitwise_equal(loop, threads)


def test_default_is_in_process_for_small_problems():
    model, w, X, Y = problem("skip_1_0_fanout")
    ev = dh.evaluate(model, w, X, Y, curvature="hessian")
    assert_matches_reference(ev, reference(model, w, X, Y), curvature=[("hessian", "row")])
    assert cluster._embedded == {}


def test_one_client_resolution_decides_in_process_or_cluster(monkeypatch):
    assert cluster.resolve_client(None, work=cluster.IN_PROCESS_WORK - 1) is None
    for needs_a_cluster in ({"work": cluster.IN_PROCESS_WORK}, {}, {"n_workers": 2}):
        with pytest.raises(AssertionError, match="tried to start the embedded cluster"):
            cluster.resolve_client(None, **needs_a_cluster)           # work=None: persist_data
    with pytest.raises(ValueError, match="cannot be combined with client"):
        cluster.resolve_client("tcp://127.0.0.1:1", n_workers=2)
    with pytest.raises(ValueError, match="positive number of worker processes"):
        cluster.resolve_client(None, n_workers=0)
    with pytest.raises(TypeError, match="client must be"):
        cluster.resolve_client(3, work=0)
    assert cluster.tls_security() is None


def test_multipliers_returned_in_memory():
    model, w, X, Y = problem("skip_1_0_fanout")
    ev = dh.evaluate(model, w, X, Y, multipliers=True, chunk_size=11)
    want = model.multipliers(w, X, Y)
    assert len(ev.multipliers) == len(want)
    for got, ref in zip(ev.multipliers, want):
        assert isinstance(got, np.ndarray)
        assert_close(got, ref, what="multipliers")


def test_store_written_region_by_region(tmp_path):
    model, w, X, Y = problem("rbf_full_ce_skip")
    path = tmp_path / "run.zarr"
    with dask.config.set(scheduler="sync"), pytest.warns(UserWarning, match="chunks of 1 rows"):
        ev = dh.evaluate(model, w, da.from_array(X, chunks=(SHARDINGS[7], -1)), Y,
                         curvature=["hessian:row", "gauss_newton:full"], multipliers=True,
                         store=path)
    assert ev.store == str(path)
    store = dh.open_store(path)
    assert store.n_examples == 60 and store.value == ev.value
    np.testing.assert_array_equal(store.gradient, ev.gradient)
    np.testing.assert_array_equal(store.curvature("gauss_newton", "full"),
                                  ev.curvatures["gauss_newton"])
    for got, want in zip(store.curvature("hessian", "row"), ev.curvatures["hessian"]):
        np.testing.assert_array_equal(got, want)
    # one zarr chunk never straddles two shards: gcd of the boundaries (9, 10, 24, ...) is 1
    group = zarr.open_group(str(path), mode="r")
    assert group["multipliers/layer_1"].chunks[0] == 1
    for k, want in enumerate(model.multipliers(w, X, Y), start=1):
        assert isinstance(ev.multipliers[k - 1], da.Array)
        assert_close(store.multipliers(k).compute(), want, what=f"multipliers {k}")
        assert not np.isnan(group[f"multipliers/layer_{k}"][...]).any()


def test_regular_chunks_give_chunk_aligned_store(tmp_path):
    model, w, X, Y = problem("skip_1_0_fanout")
    dh.evaluate(model, w, X, Y, multipliers=True, chunk_size=16, store=tmp_path / "r.zarr")
    assert zarr.open_group(str(tmp_path / "r.zarr"))["multipliers/layer_2"].chunks[0] == 16


def test_zarr_inputs_are_read_shard_by_shard(tmp_path):
    model, w, X, Y = problem("quadratic_multi_source")
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(13, X.shape[1]))
    group.create_array("Y", data=Y, chunks=(13, Y.shape[1]))
    with dask.config.set(scheduler="sync"):
        ev = dh.evaluate(model, w, group["X"], group["Y"], curvature=CURVATURES)
        again = dh.evaluate(model, w, group["X"], group["Y"], curvature=CURVATURES, chunk_size=20)
    ref = reference(model, w, X, Y)
    assert_matches_reference(ev, ref)
    assert_matches_reference(again, ref)


def test_evaluation_views():
    model, w, X, Y = problem("skip_1_0_fanout", n=10)
    plain = dh.evaluate(model, w, X, Y)
    assert plain.curvature is None and plain.curvatures == {} and plain.multipliers is None
    one = dh.evaluate(model, w, X, Y, curvature="gauss_newton", structure="layer")
    assert one.curvature is one.curvatures["gauss_newton"] is one.curvature_of("gauss_newton", "layer")
    both = dh.evaluate(model, w, X, Y, curvature=["hessian", "hessian:full"])
    assert both.curvatures["hessian"] is both.curvature_of("hessian", "row")
    with pytest.raises(AttributeError, match="several curvatures"):
        both.curvature
    with pytest.raises(KeyError, match="lagrangian:row"):
        both.curvature_of("lagrangian")
    single = dh.evaluate(model, w, X, Y, hvp=np.ones(model.n_params))
    assert_close(single.hvp, model.hvp(w, X, Y, np.ones(model.n_params)), what="hvp")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_directional_derivatives_over_shards_match_the_oracle(case_id):
    from tests import oracle
    model, w, X, Y = problem(case_id, n=24)
    v = np.random.default_rng(5).normal(size=model.n_params)
    Xd = da.from_array(X, chunks=(7, -1))
    ev = dh.evaluate(model, w, Xd, Y, directional=(v, 4), split_every=2)
    want = oracle.directional_derivatives(model.to_dict(), w, X, Y, v, 4)
    assert_close(ev.directional, want, rtol=1e-10, what="directional")
    assert ev.directional[0] == pytest.approx(ev.value, rel=1e-13)
    assert ev.directional[1] == pytest.approx(ev.gradient @ v, rel=1e-10)
    assert dh.evaluate(model, w, X, Y).directional is None


def test_curvature_specs():
    assert curvature_specs(None) == ()
    assert curvature_specs("hessian") == (("hessian", "row"),)
    assert curvature_specs("hessian", "full") == (("hessian", "full"),)
    assert curvature_specs(("gauss_newton", "layer")) == (("gauss_newton", "layer"),)
    assert curvature_specs(["hessian", "lagrangian:full", ("hessian", "row")]) == (
        ("hessian", "row"), ("lagrangian", "full"))
    with pytest.raises(ValueError, match="unknown curvature kind"):
        curvature_specs("fisher")
    with pytest.raises(ValueError, match="unknown curvature structure"):
        curvature_specs("hessian:diag")


def test_bad_inputs_are_refused_clearly():
    model, w, X, Y = problem("skip_1_0_fanout", n=12)
    with pytest.raises(ValueError, match="chunked along its columns"):
        dh.evaluate(model, w, da.from_array(X, chunks=(6, 1)), Y)
    with pytest.raises(ValueError, match="chunked along its columns"):
        dh.evaluate(model, w, X, da.from_array(Y, chunks=(6, 1)))
    with pytest.raises(ValueError, match="12 examples .* Y has 11"):
        dh.evaluate(model, w, X, Y[:11])
    with pytest.raises(ValueError, match="columns but the model has"):
        dh.evaluate(model, w, X[:, :1], Y)
    with pytest.raises(ValueError, match="weights must be a vector"):
        dh.evaluate(model, w[:-1], X, Y)
    with pytest.raises(ValueError, match="split_every"):
        dh.evaluate(model, w, X, Y, split_every=1)
    with pytest.raises(ValueError, match="chunk_size"):
        dh.evaluate(model, w, X, Y, chunk_size=0)
    with pytest.raises(ValueError, match="hvp kind"):
        dh.evaluate(model, w, X, Y, hvp=[("lagrangian", w)])
    with pytest.raises(ValueError, match="order must be an integer"):
        dh.evaluate(model, w, X, Y, directional=(w, -1))
    with pytest.raises(ValueError, match="v must be a vector of length"):
        dh.evaluate(model, w, X, Y, directional=(w[:-1], 2))
    with pytest.raises(TypeError, match="pair"):
        dh.evaluate(model, w, X, Y, directional=w)
    with pytest.raises(ValueError, match="no examples"):
        dh.evaluate(model, w, X[:0], Y[:0])
    with pytest.raises(TypeError, match="client must be"):
        dh.evaluate(model, w, X, Y, client=3)
