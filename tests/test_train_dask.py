"""`fit` on Dask (`DaskObjective`) against the same fit in process, on a real network.

These tests need the derivative engine and `dist_hess.distributed.evaluate`; they use
an in-process ``distributed.Client`` (threads), so they stay fast.
"""
from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("dist_hess.engine.sums")

import dist_hess as dh  # noqa: E402
import dist_hess.distributed as dh_distributed  # noqa: E402
from dist_hess.train import DaskObjective, LocalObjective, fit  # noqa: E402
from dist_hess.train.driver import minimize  # noqa: E402
from dist_hess.train.globalization import parse_globalization  # noqa: E402
from dist_hess.train.objective import make_objective  # noqa: E402
from dist_hess.train.strategies import make_strategy  # noqa: E402

SPEC = {"inputs": 3,
        "layers": [{"type": "dense", "units": 3, "activation": "tanh"},
                   {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}],
        "loss": "squared",
        "penalty": {"type": "l2", "lambda": 0.01}}


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=":0") as c:
        yield c


def regression_problem():
    """A 3-3-1 tanh network with a skip connection on 48 noisy examples (also tests/test_train_starts.py)."""
    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 3))
    Y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(48)
    return model, X, Y


@pytest.fixture(scope="module")
def problem():
    return regression_problem()


def as_dask(X, Y, rows=13):                       # uneven shards: 13, 13, 13, 9
    return da.from_array(X, chunks=(rows, -1)), da.from_array(Y, chunks=rows)


def local_fit(model, X, Y, *, method, globalization=None, options=None, **limits):
    """The same fit in this process (the module's client is current, so ``fit`` with
    numpy data would run on it: DESIGN.md §3, ``client=None``)."""
    strategy = make_strategy(method, options=options)
    rule = parse_globalization(globalization, strategy.globalizations)
    return minimize(LocalObjective(model, X, Y), strategy, rule, **limits)


def test_objective_choice(problem, client):
    model, X, Y = problem
    # numpy data and client=None: the current client (this module's), as dh.evaluate does
    assert isinstance(make_objective(model, X, Y), DaskObjective)
    Xd, Yd = as_dask(X, Y)
    on_dask = make_objective(model, Xd, Yd)
    assert isinstance(on_dask, DaskObjective)
    assert distributed.futures_of(on_dask.X)             # persisted on the workers
    assert isinstance(make_objective(model, X, Y, client=client), DaskObjective)


@pytest.mark.parametrize(("method", "globalization"), [
    ("newton", None), ("newton-cg", None), ("block-newton", "trust-region"),
    ("block-newton", "damping"), ("lm", None)],
    ids=["newton", "newton-cg", "block-newton", "block-newton-damping", "lm"])
def test_dask_iterates_match_the_local_ones(problem, client, method, globalization):
    model, X, Y = problem
    w0 = model.init(seed=1)
    Xd, Yd = as_dask(X, Y)
    local = local_fit(model, X, Y, w0=w0, method=method, globalization=globalization, max_iter=6)
    remote = fit(model, Xd, Yd, w0=w0, method=method, globalization=globalization, max_iter=6,
                 client=client)
    assert remote.n_iter == local.n_iter
    assert [r.accepted for r in remote.history] == [r.accepted for r in local.history]
    # sums in another order differ in the last bits; CG carries that a little further
    np.testing.assert_allclose(remote.w, local.w, rtol=1e-7, atol=1e-9)
    assert remote.value == pytest.approx(local.value, rel=1e-10)


def test_dask_fit_converges_to_the_least_squares_solution(client):
    """A linear network (one identity layer, squared loss) is linear regression: lstsq."""
    model = dh.Model.from_dict({"inputs": 3, "layers": [
        {"type": "dense", "units": 1, "activation": "identity"}], "loss": "squared"})
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3))
    Y = X @ [1.0, -2.0, 0.5] + 0.3 + 0.1 * rng.standard_normal(40)
    Xd, Yd = as_dask(X, Y)
    result = fit(model, Xd, Yd, method="lm", max_iter=50, client=client)
    assert result.converged and result.gradient_norm < 1e-6
    Z = np.hstack([np.ones((40, 1)), X])
    np.testing.assert_allclose(result.w, np.linalg.lstsq(Z, Y, rcond=None)[0], rtol=1e-8)


def test_one_evaluate_call_per_trial_point(problem, client, monkeypatch):
    """Value, gradient and the strategy's curvature come from one pass over the data; the
    preconditioned CG of block-newton adds one pass per Hessian-vector product."""
    model, X, Y = problem
    calls = []
    real = dh_distributed.evaluate

    def counting(*args, **kwargs):
        calls.append((kwargs.get("curvature"), kwargs.get("hvp") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(dh_distributed, "evaluate", counting)
    Xd, Yd = as_dask(X, Y)
    result = fit(model, Xd, Yd, method="block-newton", max_iter=5, client=client,
                 options={"solver": "block"})
    assert len(calls) == result.n_iter + 1
    assert set(calls) == {("hessian", False)}

    calls.clear()
    result = fit(model, Xd, Yd, method="block-newton", max_iter=5, client=client)
    passes = [c for c in calls if not c[1]]
    assert len(passes) == result.n_iter + 1 and set(passes) == {("hessian", False)}
    assert set(calls) - set(passes) == {(None, True)}
