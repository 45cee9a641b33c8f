"""``dist-hess predict``, ``dist-hess prune`` and the checks ``dist-hess fit`` makes before
training: in-process through `dist_hess.cli.main` on real stores (fast); the whole
fit -> prune -> predict -> analyze --report chain and a refused ``--out`` as
subprocesses (slow). OLS gives the closed form of the predictive interval."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special

import dist_hess as dh
from dist_hess.analysis import prune
from dist_hess.cli import main
from dist_hess.store import check_writable, update_attrs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LINEAR = {"inputs": 3, "loss": "squared",
          "layers": [{"type": "dense", "units": 1, "activation": "identity"}]}
SOFTMAX = {"inputs": 2, "loss": "softmax_cross_entropy", "penalty": {"type": "l2", "lambda": 0.1},
           "layers": [{"type": "dense", "units": 3, "activation": "identity"}]}


def ols(n=80, seed=0):
    """``y = 1 + 2 x0 - x1 + 0 x2 + noise``: input 2 is irrelevant."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, 1.0 + X @ [2.0, -1.0, 0.0] + rng.normal(scale=0.5, size=n)


@pytest.fixture
def linear_store(tmp_path):
    """A stored OLS fit (value, gradient, hessian:row, as `dist-hess fit` stores) and its data."""
    X, y = ols()
    model = dh.Model.from_dict(LINEAR)
    w = np.linalg.lstsq(np.c_[np.ones(len(y)), X], y, rcond=None)[0]
    dh.evaluate(model, w, X, y, curvature="hessian", structure="row",
                store=str(tmp_path / "run.zarr"))
    np.savez(tmp_path / "train.npz", X=X, Y=y)
    return tmp_path, model, w, X, y


# ---------------------------------------------------------------- store checks

def test_check_writable_refuses_what_a_store_write_would_and_update_attrs_keeps_the_rest(
        linear_store):
    tmp, *_ = linear_store
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("keep me")
    (tmp / "afile").write_text("")
    (tmp / "empty").mkdir()
    for bad, fragment in ((tmp / "foreign", "not a dist_hess store"),
                          (tmp / "afile" / "run.zarr", "is a file"),
                          (tmp / "afile", "not a dist_hess store")):
        with pytest.raises(ValueError, match=fragment):
            check_writable(bad)
    for good in (tmp / "run.zarr", tmp / "empty", tmp / "new" / "deeper" / "run.zarr"):
        assert check_writable(good) == str(good)
    assert not (tmp / "new").exists() and (tmp / "foreign" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="contract attributes"):
        update_attrs(tmp / "run.zarr", {"complete": False})
    update_attrs(tmp / "run.zarr", {"note": {"a": np.float64(1.5)}})
    store = dh.open_store(tmp / "run.zarr")
    assert store.attrs["note"] == {"a": 1.5} and store.attrs["complete"] is True


def test_fit_refuses_a_bad_out_before_reading_the_data(tmp_path, capsys):
    (tmp_path / "m.json").write_text(json.dumps(LINEAR))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("precious")
    # the data do not exist: reading them would fail with another message
    assert main(["fit", str(tmp_path / "m.json"), str(tmp_path / "nothing.npz"),
                 "--out", str(tmp_path / "foreign")]) == 1
    captured = capsys.readouterr()
    assert "refusing to overwrite" in captured.err and "|grad|" not in captured.out


# ---------------------------------------------------------------- as subprocesses

def _run(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "dist_hess", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_fit_refuses_an_unwritable_out_before_any_iteration(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(LINEAR))
    (tmp_path / "afile").write_text("")
    np.savez(tmp_path / "d.npz", X=np.ones((5, 3)), Y=np.ones(5))
    proc = _run(["fit", "m.json", "d.npz", "--method", "newton", "--out", "afile/run.zarr"],
                tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("dist-hess fit: error: cannot write a store at 'afile/run.zarr'")
    assert "|grad|" not in proc.stdout and "examples" not in proc.stdout


@pytest.mark.slow
def test_the_dask_dashboard_serves_its_status_page():
    """bokeh (a dependency) in the version distributed wants: the page is the dashboard,
    not 'Dask needs bokeh>=...'."""
    import urllib.request

    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        with urllib.request.urlopen(client.dashboard_link, timeout=60) as response:
            page = response.read().decode()
    assert "Dask needs bokeh" not in page and "<title>Dask" in page
