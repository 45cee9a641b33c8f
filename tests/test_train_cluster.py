"""`fit` on a real multi-process Dask cluster equals the same fit in this process (slow).

Two single-threaded worker processes on loopback (``LocalCluster(processes=True)``);
the data are sharded unevenly along examples and persisted on the workers once. The
reduction adds the shards' sums in another order than the in-process engine, so
the first iterations agree to rounding (same accepted steps, values to 1e-10), and
both runs end at the same minimum.
"""
from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("dist_hess.engine.sums")

import dist_hess as dh  # noqa: E402
from dist_hess.train import LocalObjective  # noqa: E402
from dist_hess.train.driver import minimize  # noqa: E402
from dist_hess.train.globalization import parse_globalization  # noqa: E402
from dist_hess.train.strategies import make_strategy  # noqa: E402
from tests.test_train_real import case  # noqa: E402

pytestmark = pytest.mark.slow

FIRST = 8
BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def in_process(model, X, Y, method, **limits):
    strategy = make_strategy(method)
    rule = parse_globalization(None, strategy.globalizations)
    return minimize(LocalObjective(model, X, Y), strategy, rule, **limits)


def test_multiprocess_cluster_fit_equals_the_in_process_fit():
    # (not a softmax case: moving all output biases together leaves E unchanged, and
    # rounding alone then decides how far the iterates drift along that flat direction)
    model, X, Y = case("breast_cancer")
    w0 = model.init(seed=0)
    methods = ("block-newton", "newton")
    local = {m: in_process(model, X, Y, m, w0=w0, max_iter=100) for m in methods}
    first = {m: in_process(model, X, Y, m, w0=w0, max_iter=FIRST) for m in methods}
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=":0", env=BLAS_ENV) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        Xd = da.from_array(X, chunks=(150, -1))            # shards of 150, 150, 150, 119
        Yd = da.from_array(Y, chunks=150)
        for method in methods:
            # the first iterations step for step ...
            got = dh.fit(model, Xd, Yd, w0=w0, method=method, max_iter=FIRST, client=client)
            want = first[method]
            assert [r.accepted for r in got.history] == [r.accepted for r in want.history]
            np.testing.assert_allclose([r.value for r in got.history],
                                       [r.value for r in want.history], rtol=1e-10)
            np.testing.assert_allclose(got.w, want.w, rtol=1e-7, atol=1e-9)
            # ... and the same minimum at the end (a decision near a threshold, e.g. the
            # CG iteration where the residual crosses its tolerance, may flip on the way)
            got = dh.fit(model, Xd, Yd, w0=w0, method=method, max_iter=100, client=client)
            want = local[method]
            assert got.converged and want.converged
            assert got.value == pytest.approx(want.value, rel=1e-10)
            np.testing.assert_allclose(got.w, want.w, rtol=1e-5, atol=1e-6)
