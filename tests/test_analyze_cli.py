"""``dist-hess analyze`` and Python agree on the defaults: exact full-covariance standard
errors (issue 14 item 1), against OLS and logistic regression in closed form; the store
written by ``dist-hess fit`` holds the full Hessian for small ``t``; ``--format``,
``--parameters``, ``--memory-budget``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import expit

import dist_hess as dh
from dist_hess.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def linear(loss):
    return dh.Model.from_dict({"inputs": 3, "loss": loss, "layers": [
        {"type": "dense", "units": 1, "activation": "identity"}]})


def ols_case(tmp_path):
    rng = np.random.default_rng(21)
    X = rng.normal(size=(90, 3))
    y = 0.5 + X @ [1.0, 0.0, -0.7] + rng.normal(scale=0.6, size=90)
    Z = np.c_[np.ones(90), X]
    b = np.linalg.lstsq(Z, y, rcond=None)[0]
    s2 = np.sum((y - Z @ b) ** 2) / (90 - 4)
    se = np.sqrt(s2 * np.diag(np.linalg.inv(Z.T @ Z)))
    store = str(tmp_path / "ols.zarr")
    dh.evaluate(linear("squared"), b, X, y, curvature="hessian:row", store=store)  # rows only
    np.savez(tmp_path / "ols.npz", X=X, Y=y)
    return store, str(tmp_path / "ols.npz"), b, se


def test_ols_by_subprocess_with_the_defaults_is_the_closed_form(tmp_path):
    store, data, b, se = ols_case(tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "dist_hess", "analyze", store, "--data", data,
                          "--format", "json"], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    table = json.loads(run.stdout)
    assert table["structure"] == "full" and table["approximation"] is False
    got = [row["std_error"] for row in table["parameters"]]
    np.testing.assert_allclose(got, se, rtol=1e-10)
    # Python, same store and data, same defaults, same numbers
    with np.load(data) as arrays:
        python = dh.wald_table(store, data=(arrays["X"], arrays["Y"]))
    np.testing.assert_allclose(python.std_error, got, rtol=1e-12)


def test_logistic_fit_stores_the_full_hessian_and_analyze_needs_no_data(tmp_path, capsys):
    rng = np.random.default_rng(22)
    X = rng.normal(size=(300, 3))
    y = (rng.random(300) < expit(-0.2 + X @ [0.9, -0.4, 0.0])).astype(float)
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,label", comments="", fmt="%.17g")
    (tmp_path / "model.json").write_text(linear("binary_cross_entropy").to_json())
    store = str(tmp_path / "logit.zarr")
    assert main(["fit", str(tmp_path / "model.json"), str(csv), "--target", "label",
                 "--method", "newton", "--gtol", "1e-10", "--out", store, "--quiet"]) == 0
    assert ("hessian", "full") in dh.open_store(store).curvatures
    capsys.readouterr()
    assert main(["analyze", store, "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    w = dh.open_store(store).weights
    Z = np.c_[np.ones(300), X]
    p = expit(Z @ w)
    se = np.sqrt(np.diag(np.linalg.inv((Z.T * (p * (1 - p))) @ Z)))
    np.testing.assert_allclose([r["std_error"] for r in table["parameters"]], se, rtol=1e-8)
    np.testing.assert_allclose(dh.wald_table(store).std_error, se, rtol=1e-8)
    assert table["sigma2"] is None and table["covariance_type"].endswith("exact (full matrix)")
    assert main(["analyze", store]) == 0
    text = capsys.readouterr().out
    assert "Wald tests (inverse Hessian, exact)" in text and "P>|z|" in text


def test_format_csv_parameters_and_memory_budget(tmp_path, capsys):
    store, data, b, se = ols_case(tmp_path)
    assert main(["analyze", store, "--data", data, "--format", "csv",
                 "--parameters", "1,L1.0 <- x2", "--memory-budget", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [int(r["index"]) for r in rows] == [1, 3]
    np.testing.assert_allclose([float(r["std_error"]) for r in rows], se[[1, 3]], rtol=1e-9)
    assert all(r["covariance"] == "hessian full exact (cg)" for r in rows)
    assert main(["analyze", store, "--data", data, "--structure", "row", "--format", "csv"]) == 0
    assert "APPROXIMATION" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--memory-budget", "100"], "over the memory budget"),
    (["--parameters", "L9.0 <- x0"], "no parameter named"),
    (["--memory-budget", "lots"], None),
])
def test_analyze_errors_are_one_line(tmp_path, capsys, argv, message):
    store, data, _, _ = ols_case(tmp_path)
    if message is None:
        with pytest.raises(SystemExit):
            main(["analyze", store, "--data", data, *argv])
        assert "bytes" in capsys.readouterr().err
        return
    assert main(["analyze", store, "--data", data, *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_store_without_the_full_hessian_and_no_data_names_the_option(tmp_path, capsys):
    store, _, _, _ = ols_case(tmp_path)
    assert main(["analyze", store]) == 1
    assert "--data" in capsys.readouterr().err
