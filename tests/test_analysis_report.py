"""Stores, the HTML report and ``dist-hess analyze`` (issue 4)."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import prune, spectra, write_report
from dist_hess.cli.analyze import add_command as add_analyze_parser

SPEC = {"inputs": 3, "loss": "squared", "penalty": {"type": "l2", "lambda": 0.01}, "layers": [
    {"type": "dense", "units": 2, "activation": "tanh"},
    {"type": "dense", "units": 1, "activation": "identity", "sources": [1, 0]}]}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = np.tanh(X[:, 0] - X[:, 1]) - np.tanh(X[:, 1] + X[:, 2]) + 0.2 * rng.normal(size=120)
    model = dh.Model.from_dict(SPEC)
    w = dh.fit(model, X, y, method="newton", max_iter=100).w
    return model, w, X, y


def analyze(argv):
    parser = argparse.ArgumentParser(prog="dist-hess")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *argv])
    return args.run(args)


def test_store_without_curvature_reads_what_it_has_and_computes_the_rest(tmp_path, fitted):
    model, w, X, y = fitted
    path = str(tmp_path / "bare.zarr")
    dh.evaluate(model, w, X, y, store=path)                       # value and gradient only
    with pytest.raises(LookupError, match="--curvature hessian:full"):
        dh.wald_table(path)
    table = dh.wald_table(path, data=(X, y), save=True)
    np.testing.assert_allclose(table.std_error, dh.wald_table((model, w, X, y)).std_error,
                               rtol=1e-12)
    assert ("hessian", "full") in dh.open_store(path).curvatures        # written back
    again = dh.wald_table(path)                                         # now without data
    np.testing.assert_allclose(again.std_error, table.std_error, rtol=1e-12)
    notes = spectra(dh.open_store(path), structures=("row", "full")).notes
    assert notes == []                    # row blocks cut from the stored full matrix


def test_report_of_a_stored_run(tmp_path, fitted):
    pytest.importorskip("matplotlib")
    model, w, X, y = fitted
    path = str(tmp_path / "run.zarr")
    dh.evaluate(model, w, X, y, curvature=["hessian:full"], multipliers=True, store=path)
    pruning = prune(model, X, y, w, criterion="bic", max_steps=1, fit_options={"max_iter": 40})
    index = write_report(path, str(tmp_path / "report"), data=X, pruning=pruning)
    html = open(index).read()
    assert "<img" in html and "Wald tests" in html and "Spectra" in html
    assert "pruning.png" in html
    pngs = [f for f in os.listdir(tmp_path / "report") if f.endswith(".png")]
    assert {"spectra_layers.png", "wald_z.png", "heatmap_full.png", "pruning.png"} <= set(pngs)
    for name in pngs:
        with open(tmp_path / "report" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = json.load(open(tmp_path / "report" / "wald.json"))
    assert len(table["parameters"]) == model.n_params
    assert open(tmp_path / "report" / "wald.csv").readline().startswith("index,name,layer")


def test_pruned_store_round_trips_and_the_command_reports_its_path(tmp_path, fitted, capsys):
    model, w, X, y = fitted
    path = prune(model, X, y, w, criterion="wald", max_steps=2, fit_options={"max_iter": 40})
    store = str(tmp_path / "pruned.zarr")
    path.save(store, X, y, multipliers=True)
    removed = [q for s in path.steps[1:] for q in s.removed]
    table = dh.wald_table(store)                      # the mask comes back from the JSON
    assert not table.free[removed].any() and table.free.sum() == model.n_params - 2
    layers = dh.open_store(store).attrs["model"]["layers"]
    assert any("mask" in layer for layer in layers)
    np.savez(tmp_path / "data.npz", X=X, Y=y)
    code = analyze([store, "--data", str(tmp_path / "data.npz"), "--covariance", "sandwich",
                    "--structure", "row", "--group", "input:2", "--group", "unit:1:0:out",
                    "--csv", str(tmp_path / "w.csv"), "--spectra",
                    "--report", str(tmp_path / "report"), "--no-plots"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Wald tests (sandwich" in out and "Wald test of input x2" in out
    assert "unit L1.0 (in and out)" in out and "layer 1 rows" in out
    assert os.path.exists(tmp_path / "w.csv")
    html = open(tmp_path / "report" / "index.html").read()
    assert "Pruning path" in html and "0 (pruned)" in html and "<img" not in html
    assert os.path.exists(tmp_path / "report" / "pruning.csv")


def test_report_shows_the_fit_history_and_laplace_intervals(tmp_path, fitted):
    """A store with ``attrs["fit"]`` (as ``dist-hess fit`` writes it): the history section
    and its CSV; with the data, the Laplace section against `laplace_predict`."""
    from dist_hess.analysis import laplace_predict
    from dist_hess.store import write_store
    model, w, X, y = fitted
    result = dh.fit(model, X, y, method="newton", w0=model.init(seed=0), max_iter=100)
    fit = {"method": result.method, "status": str(result.status), "message": result.message,
           "n_iter": result.n_iter, "history": [r.to_dict() for r in result.history]}
    path = str(tmp_path / "run.zarr")
    write_store(path, model, result.w, n_examples=len(y), value=result.value,
                gradient=model.gradient(result.w, X, y), attrs={"fit": fit})
    index = write_report(path, str(tmp_path / "rep"), data=(X, y), plots=False)
    page = open(index).read()
    assert "<h2>Fit history</h2>" in page and "<h2>Laplace predictive intervals</h2>" in page
    assert "gauss_newton:full" in page
    with open(tmp_path / "rep" / "fit_history.csv") as f:
        rows = f.read().splitlines()
    assert rows[0].startswith("iteration,value,gradient_norm") and len(rows) == result.n_iter + 1
    lap = open(tmp_path / "rep" / "laplace.csv").read().splitlines()
    pred = laplace_predict((model, result.w, X, y), X)
    lower, upper = pred.interval(0.95)
    values = dict(zip(lap[0].split(","), map(float, lap[1].split(","))))
    assert values["rows"] == len(y)
    assert values["median_se"] == pytest.approx(np.median(pred.standard_error), rel=1e-10)
    assert values["coverage"] == pytest.approx(np.mean((y >= lower[:, 0]) & (y <= upper[:, 0])))

    bare = write_report(path, str(tmp_path / "bare"), plots=False)     # no data: a note
    page = open(bare).read()
    assert "<h2>Laplace predictive intervals</h2>" not in page
    assert "Laplace predictive intervals need the training inputs" in page
