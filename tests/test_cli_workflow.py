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


# ---------------------------------------------------------------- predict

def test_predict_intervals_are_the_ols_prediction_intervals(linear_store, capsys):
    tmp, model, w, X, y = linear_store
    X_new = np.random.default_rng(1).normal(size=(7, 3))
    header = "a,b,c,target"                               # a target column kept in the file
    np.savetxt(tmp / "new.csv", np.c_[X_new, np.zeros(7)], delimiter=",", header=header,
               comments="", fmt="%.17g")
    assert main(["predict", str(tmp / "run.zarr"), str(tmp / "new.csv"), "--target", "target",
                 "--interval", "0.9", "--train-data", str(tmp / "train.npz"),
                 "--out", str(tmp / "pred.csv")]) == 0
    assert "gauss_newton:full" in capsys.readouterr().out
    got = np.genfromtxt(tmp / "pred.csv", delimiter=",", names=True)
    assert got.dtype.names == ("y", "y_lower", "y_upper", "y_se")
    Z, Zn = np.c_[np.ones(80), X], np.c_[np.ones(7), X_new]
    s2 = np.sum((y - Z @ w) ** 2) / (80 - 4)
    var_mean = s2 * np.einsum("na,ab,nb->n", Zn, np.linalg.inv(Z.T @ Z), Zn)
    half = special.ndtri(0.95) * np.sqrt(var_mean + s2)
    np.testing.assert_allclose(got["y"], Zn @ w, rtol=1e-12)
    np.testing.assert_allclose(got["y_se"], np.sqrt(var_mean), rtol=1e-8)
    np.testing.assert_allclose(got["y_lower"], Zn @ w - half, rtol=1e-8)
    np.testing.assert_allclose(got["y_upper"], Zn @ w + half, rtol=1e-8)

    # a store holding the full Hessian needs no data: Sigma from it (for OLS, H = G = Z'Z)
    dh.evaluate(model, w, X, y, curvature="hessian", structure="full", store=str(tmp / "h.zarr"))
    assert main(["predict", str(tmp / "h.zarr"), str(tmp / "new.csv"), "--target", "target",
                 "--interval", "0.9", "--out", str(tmp / "h.csv")]) == 0
    assert "from hessian:full" in capsys.readouterr().out
    np.testing.assert_allclose(np.loadtxt(tmp / "h.csv", delimiter=",", skiprows=1),
                               np.loadtxt(tmp / "pred.csv", delimiter=",", skiprows=1), rtol=1e-9)


def test_predict_without_the_curvature_says_what_to_give(linear_store, capsys):
    tmp, *_ = linear_store
    argv = ["predict", str(tmp / "run.zarr"), str(tmp / "train.npz"), "--out", str(tmp / "p.npy")]
    assert main(argv + ["--interval", "0.95"]) == 1
    err = capsys.readouterr().err
    assert "no gauss_newton:full curvature (it has hessian:row)" in err and "--train-data" in err
    assert not (tmp / "p.npy").exists()
    assert main(argv + ["--interval", "0.95", "--kind", "hessian", "--structure", "row"]) == 0
    assert "(block-diagonal: an approximation" in capsys.readouterr().out
    assert np.load(tmp / "p.npy").shape == (80, 4)


def test_predict_classifier_mean_raw_and_label(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = np.argmax(X @ [[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]] + rng.normal(size=(60, 3)), axis=1)
    model = dh.Model.from_dict(SOFTMAX)
    w = dh.fit(model, X, y, method="newton").w
    dh.evaluate(model, w, X, y, store=str(tmp_path / "c.zarr"))
    np.save(tmp_path / "X.npy", X)
    store, data = str(tmp_path / "c.zarr"), str(tmp_path / "X.npy")
    for output, want, columns in (("mean", model.predict(w, X), ["p_0", "p_1", "p_2"]),
                                  ("raw", model.predict(w, X, output="raw"),
                                   ["raw_0", "raw_1", "raw_2"]),
                                  ("label", np.argmax(model.predict(w, X), axis=1)[:, None],
                                   ["label"])):
        out = str(tmp_path / f"{output}.csv")
        assert main(["predict", store, data, "--output", output, "--out", out]) == 0
        with open(out) as f:
            assert f.readline().strip().split(",") == columns
        np.testing.assert_allclose(np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2), want,
                                   rtol=1e-15, atol=1e-16)
    capsys.readouterr()
    assert main(["predict", store, data, "--interval", "0.9", "--out", out]) == 1
    assert "--interval is for regression" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--out", "p.txt"], "must end in .npy or .csv"),
    (["--out", "missing/p.csv"], "no directory"),
    (["--out", "p.csv", "--output", "label"], "--output label is for classifiers"),
])
def test_predict_refuses_bad_requests_in_one_line(linear_store, monkeypatch, capsys, args,
                                                  fragment):
    tmp, *_ = linear_store
    monkeypatch.chdir(tmp)
    assert main(["predict", "run.zarr", "train.npz", *args]) == 1
    assert fragment in capsys.readouterr().err


def test_predict_names_a_csv_with_extra_columns(linear_store, capsys):
    tmp, _, _, X, y = linear_store
    np.savetxt(tmp / "d.csv", np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    assert main(["predict", str(tmp / "run.zarr"), str(tmp / "d.csv"),
                 "--out", str(tmp / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert "the model reads 3 columns" in err and "--target" in err


# ---------------------------------------------------------------- prune

def test_prune_writes_the_path_into_the_store_and_the_chosen_model(linear_store, capsys):
    tmp, model, w, X, y = linear_store
    before = dh.open_store(tmp / "run.zarr")
    weights, attrs = before.weights, before.attrs
    assert main(["prune", str(tmp / "run.zarr"), str(tmp / "train.npz"),
                 "--out", str(tmp / "pruned.zarr")]) == 0
    printed = capsys.readouterr().out
    assert "L1.0 <- x2" in printed and "wrote the pruning path into" in printed

    store = dh.open_store(tmp / "run.zarr")
    reference = prune(model, X, y, w).to_dict()
    assert store.attrs["pruning_path"] == json.loads(json.dumps(reference))
    assert [s["removed"] for s in reference["steps"]] == [[], [3]]     # x2's weight only
    np.testing.assert_array_equal(store.weights, weights)              # the fit is untouched
    assert {k: v for k, v in store.attrs.items() if k != "pruning_path"} == attrs
    pruned = dh.open_store(tmp / "pruned.zarr")
    assert pruned.weights[3] == 0.0 and pruned.attrs["pruning_path"] == store.attrs["pruning_path"]
    np.testing.assert_allclose(pruned.weights[:3], np.linalg.lstsq(
        np.c_[np.ones(80), X[:, :2]], y, rcond=None)[0], rtol=1e-9)


def test_prune_refuses_other_data_and_a_validation_criterion_without_data(linear_store, capsys):
    tmp, _, _, X, y = linear_store
    np.savez(tmp / "short.npz", X=X[:50], Y=y[:50])
    assert main(["prune", str(tmp / "run.zarr"), str(tmp / "short.npz")]) == 1
    assert "DATA has 50 examples" in capsys.readouterr().err
    assert main(["prune", str(tmp / "run.zarr"), str(tmp / "train.npz"),
                 "--criterion", "validation"]) == 1
    assert "needs --validation" in capsys.readouterr().err
    assert "pruning_path" not in dh.open_store(tmp / "run.zarr").attrs


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
def test_fit_prune_predict_report_as_a_newcomer_runs_them(tmp_path):
    """The README's workflow on a small tanh network, every step a real command."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 3))
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.3 * rng.normal(size=90)
    np.savez(tmp_path / "d.npz", X=X, Y=y)
    (tmp_path / "m.json").write_text(json.dumps({
        "inputs": 3, "loss": "squared", "penalty": {"type": "l2", "lambda": 0.01},
        "layers": [{"type": "dense", "units": 2, "activation": "tanh"},
                   {"type": "dense", "units": 1, "activation": "identity"}]}))
    fit = _run(["fit", "m.json", "d.npz", "--method", "newton", "--workers", "2",
                "--out", "run.zarr"], tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "dashboard: http://" in fit.stdout and "|grad|" in fit.stdout

    pruned = _run(["prune", "run.zarr", "d.npz", "--max-steps", "2", "--out", "pruned.zarr"],
                  tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert "pruning path (criterion wald" in pruned.stdout
    assert "pruning_path" in dh.open_store(tmp_path / "run.zarr").attrs

    pred = _run(["predict", "pruned.zarr", "d.npz", "--interval", "0.95", "--out", "p.csv"],
                tmp_path)
    assert pred.returncode == 0, pred.stderr
    got = np.genfromtxt(tmp_path / "p.csv", delimiter=",", names=True)
    chosen = dh.open_store(tmp_path / "pruned.zarr")
    np.testing.assert_allclose(got["y"], chosen.model.predict(chosen.weights, X)[:, 0],
                               rtol=1e-12)
    assert np.all(got["y_lower"] < got["y"]) and np.all(got["y"] < got["y_upper"])

    report = _run(["analyze", "run.zarr", "--data", "d.npz", "--report", "rep"], tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    for section in ("Fit history", "Laplace predictive intervals", "Pruning path"):
        assert f"<h2>{section}</h2>" in page
    for image in ("fit_history.png", "laplace.png", "pruning.png"):
        assert f"src='{image}'" in page and (tmp_path / "rep" / image).exists()


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
