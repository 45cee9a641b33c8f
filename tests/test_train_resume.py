"""A resume is the same run: a checkpoint refuses other data and other options, saying
what differs, and accepts the same data however they are given, split or placed."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.datasets import load_sklearn
from dist_hess.train import TrustRegion, fit

SPEC = {"inputs": 10, "loss": "squared", "penalty": {"type": "l2", "lambda": 1.0},
        "layers": [{"type": "dense", "units": 3, "activation": "tanh"},
                   {"type": "dense", "units": 1, "activation": "identity"}]}


@pytest.fixture(scope="module")
def diabetes():
    X, Y = load_sklearn("diabetes")
    return dh.Model.from_dict(SPEC), X, Y


def records(result):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in result.history]


def test_other_data_are_refused_saying_what_differs(diabetes, tmp_path):
    model, X, Y = diabetes
    Y = np.round(10 * Y)                 # whole numbers: the same data as integers below
    path = tmp_path / "fit.zarr"
    fit(model, X, Y, method="newton", max_iter=2, checkpoint=path)
    with pytest.raises(ValueError) as err:
        fit(model, X[:400], Y[:400], method="newton", checkpoint=path)
    assert "was written for data X of shape (442, 10) (float64, hash " in str(err.value)
    assert "these data have X of shape (400, 10)" in str(err.value)
    with pytest.raises(ValueError, match=r"X of shape \(442, 10\) \(float64, hash [0-9a-f]{16}\)"):
        fit(model, X[::-1], Y[::-1], method="newton", checkpoint=path)     # the rows reordered
    Y2 = Y.copy()
    Y2[17] += 1e-6
    with pytest.raises(ValueError) as err:
        fit(model, X, Y2, method="newton", checkpoint=path)
    assert "data Y of shape (442,)" in str(err.value) and "X of shape" not in str(err.value)

    # the same numbers as lists, integers where they are whole: the same data, the same run
    resumed = fit(model, X.tolist(), [int(y) for y in Y], method="newton", max_iter=8,
                  checkpoint=path)
    straight = fit(model, X, Y, method="newton", max_iter=8)
    assert records(resumed) == records(straight)
    np.testing.assert_array_equal(resumed.w, straight.w)


def test_other_options_are_refused_naming_them(diabetes, tmp_path):
    model, X, Y = diabetes
    path = tmp_path / "fit.zarr"
    base = dict(method="block-newton", options={"max_cg_iter": 20})
    fit(model, X, Y, max_iter=2, checkpoint=path, **base)
    for change, named in [
            (dict(gtol=1e-9), "gtol: 1e-06 in the checkpoint, 1e-09 now"),
            (dict(ftol=0.0), "ftol: 1e-14 in the checkpoint, 0.0 now"),
            (dict(options={"max_cg_iter": 30}), "strategy.max_cg_iter: 20 in the checkpoint, 30 now"),
            (dict(options={"max_cg_iter": 20, "solver": "lanczos"}), "strategy.solver: 'cg'"),
            (dict(structure="layer"), "strategy.structure: 'row' in the checkpoint, 'layer' now"),
            (dict(kind="gauss_newton"), "strategy.kind: 'hessian'"),
            (dict(globalization=TrustRegion(initial_radius=2.0)),
             "globalization.initial_radius: 1.0 in the checkpoint, 2.0 now"),
            (dict(memory_budget=2**20), "evaluation.memory_budget: 268435456 in the checkpoint")]:
        with pytest.raises(ValueError, match="was written with other options") as err:
            fit(model, X, Y, checkpoint=path, **{**base, **change})
        assert named in str(err.value)
    resumed = fit(model, X, Y, max_iter=6, max_time=1e6, checkpoint=path, **base)
    straight = fit(model, X, Y, max_iter=6, **base)
    assert records(resumed) == records(straight)


@pytest.mark.slow
def test_on_a_cluster_the_same_data_in_other_shards_resume_and_other_data_do_not(diabetes,
                                                                                  tmp_path):
    """Started in process on numpy; resumed on two worker processes from dask chunks of 50
    rows and from a zarr array chunked by 128 (the hash is taken on the workers, one task per
    block); refused there when one value differs."""
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    import zarr

    model, X, Y = diabetes
    path = tmp_path / "fit.zarr"
    fit(model, X, Y, method="newton", max_iter=2, checkpoint=path)
    stored = zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, chunks=(128, 10),
                               dtype="float64")
    stored[...] = X
    X2 = X.copy()
    X2[300, 4] = np.nextafter(X2[300, 4], 1.0)
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(ValueError, match="was written for data X of shape"):
            fit(model, da.from_array(X2, chunks=(50, 10)), Y, method="newton",
                checkpoint=path, client=client)
        chunked = fit(model, da.from_array(X, chunks=(50, 10)), Y, method="newton",
                      max_iter=4, checkpoint=path, client=client)
        from_zarr = fit(model, stored, Y, method="newton", max_iter=6, checkpoint=path,
                        client=client)
    assert chunked.n_iter == 4 and from_zarr.n_iter == 6
    assert records(from_zarr)[:4] == records(chunked)


@pytest.mark.slow
def test_the_command_line_refuses_a_resume_with_other_data(tmp_path):
    model = tmp_path / "model.json"
    dh.Model.from_dict(SPEC).to_json(model)
    X, Y = load_sklearn("diabetes")
    for name, rows in (("all.csv", slice(None)), ("part.csv", slice(0, 400))):
        np.savetxt(tmp_path / name, np.column_stack([X[rows], Y[rows]]), delimiter=",",
                   header=",".join([f"x{i}" for i in range(10)] + ["y"]), comments="")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def run(data, max_iter):
        return subprocess.run(
            [sys.executable, "-m", "dist_hess", "fit", str(model), data, "--target", "y",
             "--method", "newton", "--max-iter", str(max_iter), "--checkpoint", "fit.zarr",
             "--out", "run.zarr", "--quiet"],
            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)

    assert run("all.csv", 2).returncode == 0
    refused = run("part.csv", 5)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "X of shape (442, 10)" in lines[0] \
        and "these data have X of shape (400, 10)" in lines[0], refused.stderr
    assert run("all.csv", 5).returncode == 0
