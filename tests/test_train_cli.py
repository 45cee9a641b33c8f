"""``dist-hess fit`` (`dist_hess.cli.fit`) and the bundled data sets (`dist_hess.datasets`).

In-process through a small argparse (fast); the real command as a subprocess writing a
store that `dist_hess.open_store` reads (slow).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

import dist_hess as dh
from dist_hess import datasets
from dist_hess.cli import main
from dist_hess.cli.fit import add_command as add_fit_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "examples", "models")

SPEC = {"inputs": 4, "layers": [{"type": "dense", "units": 3, "activation": "tanh"},
                                {"type": "dense", "units": 3, "activation": "identity", "sources": [1, 0]}],
        "loss": "softmax_cross_entropy", "penalty": {"type": "l2", "lambda": 0.1}}


def parse(argv):
    parser = argparse.ArgumentParser(prog="dist-hess")
    add_fit_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


# ---------------------------------------------------------------- data sets

@pytest.mark.parametrize(("name", "shape", "dtype", "classes"), [
    ("diabetes", (442, 10), np.float64, None), ("breast_cancer", (569, 30), np.float64, 2),
    ("digits", (1797, 64), np.int64, 10), ("iris", (150, 4), np.int64, 3),
    ("wine", (178, 13), np.int64, 3)])
def test_bundled_data_sets_are_standardised(name, shape, dtype, classes):
    X, Y = datasets.load_sklearn(f"sklearn:{name}")
    assert X.shape == shape and Y.shape == (shape[0],) and Y.dtype == dtype
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    scale = X.std(axis=0)
    np.testing.assert_allclose(scale[scale > 0], 1.0, rtol=1e-12)      # digits: blank pixels are 0
    if classes is None:
        assert Y.mean() == pytest.approx(0.0, abs=1e-12) and Y.std() == pytest.approx(1.0)
    else:
        assert set(np.unique(Y)) == set(range(classes))
    np.testing.assert_array_equal(datasets.load_sklearn(name)[0], X)     # prefix optional


def test_unknown_data_set_names_the_known_ones():
    with pytest.raises(ValueError, match="sklearn:diabetes"):
        datasets.load_sklearn("sklearn:mnist")


def test_other_data_go_to_the_cli_loader(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "d.npz", X=X, Y=np.ones(4))
    got, _ = datasets.load_data(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(got, X)
    assert not datasets.is_sklearn_name(str(tmp_path / "d.npz"))


# ---------------------------------------------------------------- in process

def test_fit_parser_defaults_and_choices():
    args = parse(["fit", "m.json", "sklearn:iris", "--out", "r.zarr"])
    assert (args.method, args.max_iter, args.gtol, args.seed) == ("auto", 500, 1e-6, 0)
    assert args.checkpoint is None and args.scheduler is None and args.workers is None
    for bad in (["--method", "sgd"], ["--max-iter", "-1"], ["--workers", "0"],
                ["--scheduler", "tcp://x:1", "--workers", "2"], ["--curvature", "hessian:diag"]):
        with pytest.raises(SystemExit):
            parse(["fit", "m.json", "d.npz", "--out", "r.zarr", *bad])


def test_fit_takes_the_shared_cluster_and_tls_options():
    args = parse(["fit", "m.json", "sklearn:iris", "--out", "r.zarr", "--scheduler", "tls://h:1",
                  "--timeout", "2.5", "--tls-ca-file", "ca.pem", "--tls-cert", "c.pem",
                  "--tls-key", "c.key"])
    assert (args.scheduler, args.timeout) == ("tls://h:1", 2.5)
    assert (args.tls_ca_file, args.tls_cert, args.tls_key) == ("ca.pem", "c.pem", "c.key")
    assert parse(["fit", "m.json", "d.npz", "--out", "r.zarr"]).timeout == 10.0


@pytest.mark.parametrize("method", ["newton", "block-newton"])
def test_fit_writes_a_store_with_the_history(tmp_path, capsys, method):
    (tmp_path / "model.json").write_text(json.dumps(SPEC))
    out = tmp_path / "run.zarr"
    status = main(["fit", str(tmp_path / "model.json"), "sklearn:iris", "--method", method,
                   "--out", str(out), "--curvature", "gauss_newton:full", "--seed", "1"])
    assert status == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if "|grad|" in line]
    assert lines and all("loss" in line and "radius" in line and " s" in line for line in lines)
    assert "gtol" in printed and f"wrote {out}" in printed

    store = dh.open_store(out)
    model = dh.Model.from_dict(SPEC)
    X, Y = datasets.load_sklearn("iris")
    fit = store.attrs["fit"]
    assert fit["method"] == method and fit["status"] == "gtol" and fit["converged"]
    assert fit["n_iter"] == len(fit["history"]) == len(lines)
    assert store.n_examples == 150 and store.value == pytest.approx(fit["value"], rel=1e-12)
    reference = dh.fit(model, X, Y, w0=model.init(seed=1), method=method, max_iter=200)
    np.testing.assert_allclose(store.weights, reference.w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(store.gradient, model.gradient(store.weights, X, Y), rtol=1e-12)
    assert np.linalg.norm(store.gradient) < 1e-6
    for got, want in zip(store.curvature("hessian", "row"),
                         model.curvature(store.weights, X, Y, structure="row")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert ("gauss_newton", "full") in store.curvatures


def test_fit_with_starts_stores_every_start_and_the_minima_and_the_report_shows_them(
        tmp_path, capsys):
    from dist_hess.analysis import write_report

    (tmp_path / "model.json").write_text(json.dumps(SPEC))
    out = tmp_path / "run.zarr"
    argv = ["fit", str(tmp_path / "model.json"), "sklearn:iris", "--method", "newton",
            "--starts", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("start ") >= 3 and "distinct minima over 3 starts" in printed
    fit = dh.open_store(out).attrs["fit"]
    model = dh.Model.from_dict(SPEC)
    X, Y = datasets.load_sklearn("iris")
    want = dh.fit(model, X, Y, method="newton", starts=3)
    assert fit["start"] == want.start == fit["seed"]
    assert [s["value"] for s in fit["starts"]] == [r.value for r in want.starts]
    assert fit["minima"] == [m.to_dict() for m in want.minima]
    np.testing.assert_array_equal(dh.open_store(out).weights, want.w)
    index = write_report(str(out), str(tmp_path / "report"), plots=False)
    page = open(index).read()
    assert "Distinct minima over 3 starts" in page
    assert f"{want.minima[0].value:.10g}" in page
    with pytest.raises(SystemExit):                      # one way to choose the start
        parse(["fit", "m.json", "d.npz", "--out", "r.zarr", "--starts", "2", "--seed", "1"])


def test_fit_reads_csv_with_a_target_and_resumes_from_a_checkpoint(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2))
    y = X @ [1.0, -2.0] + 0.5
    np.savetxt(tmp_path / "d.csv", np.c_[X, y], delimiter=",", header="a,b,price", comments="")
    (tmp_path / "m.json").write_text(json.dumps({"inputs": 2, "layers": [
        {"type": "dense", "units": 1, "activation": "identity"}], "loss": "squared"}))
    argv = ["fit", str(tmp_path / "m.json"), str(tmp_path / "d.csv"), "--target", "price",
            "--method", "lm", "--out", str(tmp_path / "r.zarr"),
            "--checkpoint", str(tmp_path / "ckpt.zarr"), "--quiet"]
    assert main(argv + ["--max-iter", "1"]) == 0
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "|grad|" not in printed and "gtol" in printed
    store = dh.open_store(tmp_path / "r.zarr")
    np.testing.assert_allclose(store.weights, [0.5, 1.0, -2.0], atol=1e-8)
    assert store.attrs["fit"]["history"][0]["iteration"] == 1        # resumed: history kept


def test_fit_reports_user_errors_in_one_line(tmp_path, capsys):
    (tmp_path / "m.json").write_text(json.dumps(SPEC))
    assert main(["fit", str(tmp_path / "m.json"), "sklearn:nope", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dist-hess fit: error:") and "sklearn:iris" in err


# ---------------------------------------------------------------- as a subprocess

@pytest.mark.slow
def test_fit_command_by_subprocess_writes_a_readable_store(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dist_hess", "fit", os.path.join(MODELS, "breast_cancer.json"),
         "sklearn:breast_cancer", "--method", "newton", "--out", "bc.zarr"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gtol" in proc.stdout and "wrote bc.zarr" in proc.stdout
    store = dh.open_store(tmp_path / "bc.zarr")
    assert store.attrs["fit"]["converged"] and np.linalg.norm(store.gradient) < 1e-6
    named = dh.Model.from_json(os.path.join(MODELS, "breast_cancer.json")).with_names(
        *datasets.data_names("sklearn:breast_cancer"))        # the data set's names go in
    assert store.model.to_dict() == named.to_dict()
    X, Y = datasets.load_sklearn("breast_cancer")
    assert store.value == pytest.approx(store.model.value(store.weights, X, Y), rel=1e-12)
    assert zarr.open_group(str(tmp_path / "bc.zarr"), mode="r").attrs["complete"] is True


@pytest.mark.slow
def test_fit_command_reaches_a_tls_scheduler(tmp_path):
    """``dist-hess fit --scheduler tls://... --tls-*`` trains on a TLS-only cluster."""
    from distributed import LocalCluster, Security

    security = Security.temporary()
    (tmp_path / "ca.pem").write_text(security.tls_ca_file)
    (tmp_path / "client.pem").write_text(security.tls_client_cert)
    (tmp_path / "client.key").write_text(security.tls_client_key)
    (tmp_path / "model.json").write_text(json.dumps(SPEC))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, security=security,
                      dashboard_address=":0") as tls_cluster:
        address = tls_cluster.scheduler_address
        assert address.startswith("tls://")
        proc = subprocess.run(
            [sys.executable, "-m", "dist_hess", "fit", "model.json", "sklearn:iris",
             "--method", "newton", "--out", "tls.zarr", "--scheduler", address, "--timeout", "30",
             "--tls-ca-file", "ca.pem", "--tls-cert", "client.pem", "--tls-key", "client.key"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"Dask scheduler {address}" in proc.stdout and "gtol" in proc.stdout
    store = dh.open_store(tmp_path / "tls.zarr")
    X, Y = datasets.load_sklearn("iris")
    assert store.attrs["fit"]["converged"] and np.linalg.norm(store.gradient) < 1e-6
    np.testing.assert_allclose(store.gradient, store.model.gradient(store.weights, X, Y),
                               rtol=1e-10, atol=1e-12)
