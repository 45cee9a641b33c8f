"""``dist-hess derivatives``: argument parsing and data loading in-process (fast),
the real command as a subprocess checked with plain zarr (slow)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from dist_hess.cli import build_parser, main
from dist_hess.datasets import load_data
from tests.distributed_support import assert_close, problem, reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def files(tmp_path):
    """model.json, w.npy and the data as .npz, .csv (target 'y') and a zarr group."""
    model, w, X, Y = problem("skip_1_0_fanout", n=40)
    (tmp_path / "model.json").write_text(model.to_json())
    np.save(tmp_path / "w.npy", w)
    np.savez(tmp_path / "data.npz", X=X, Y=Y)
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["y0", "y1"])
    np.savetxt(tmp_path / "data.csv", np.hstack([X, Y]), delimiter=",", header=header,
               comments="", fmt="%.17g")
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(16, X.shape[1]))
    group.create_array("Y", data=Y, chunks=(16, Y.shape[1]))
    return tmp_path, (model, w, X, Y)


def _check_store(path, model, w, X, Y):
    """The store against the engine, read with zarr alone."""
    g = zarr.open_group(str(path), mode="r")
    assert g.attrs["format"] == "dist_hess/1" and g.attrs["complete"] is True
    assert g.attrs["n_examples"] == X.shape[0]
    assert g.attrs["model"] == json.loads(json.dumps(model.to_dict()))
    ref = reference(model, w, X, Y, curvature=(("hessian", "row"), ("gauss_newton", "full")))
    np.testing.assert_array_equal(g["weights"][...], w)
    assert_close(g["value"][...], ref["value"], what="value")
    assert_close(g["gradient"][...], ref["gradient"], what="gradient")
    for k, want in enumerate(ref["curvature/hessian/row"], start=1):
        assert_close(g[f"curvature/hessian/row/layer_{k}"][...], want, what=f"row block {k}")
    assert_close(g["curvature/gauss_newton/full"][...], ref["curvature/gauss_newton/full"],
                 what="full")
    for k, want in enumerate(model.multipliers(w, X, Y), start=1):
        assert_close(g[f"multipliers/layer_{k}"][...], want, what=f"multipliers {k}")


ARGS = ["--weights", "w.npy", "--curvature", "hessian:row", "--curvature", "gauss_newton:full",
        "--multipliers", "--quiet"]


@pytest.mark.parametrize("data, extra", [("data.npz", []), ("data.csv", ["--target", "y0,y1"]),
                                         ("data.zarr", ["--chunk-size", "10"])],
                         ids=["npz", "csv", "zarr"])
def test_derivatives_in_process(files, data, extra, monkeypatch, capsys):
    tmp, prob = files
    monkeypatch.chdir(tmp)
    assert main(["derivatives", "model.json", data, "--out", "out.zarr", *ARGS, *extra]) == 0
    assert "wrote out.zarr: 40 examples" in capsys.readouterr().out
    model = prob[0]
    if data.endswith(".csv"):          # the header names the model's inputs and outputs
        model = model.with_names(["x0", "x1"], ["y0", "y1"])
    _check_store(tmp / "out.zarr", model, *prob[1:])


def test_parser_options():
    args = build_parser().parse_args(
        ["derivatives", "m.json", "d.npz", "--out", "o.zarr", "--curvature", "hessian",
         "--curvature", "lagrangian:full", "--workers", "3", "--split-every", "5",
         "--target", "a", "--target", "b"])
    assert args.curvature == ["hessian:row", "lagrangian:full"]
    assert args.workers == 3 and args.split_every == 5 and args.target == ["a", "b"]
    assert args.run.__name__ == "run_derivatives"


@pytest.mark.parametrize("bad", [["--curvature", "fisher"], ["--curvature", "hessian:diag"],
                                 ["--workers", "0"], ["--scheduler", "x", "--workers", "2"]])
def test_parser_rejects(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["derivatives", "m.json", "d.npz", "--out", "o.zarr", *bad])
    assert exc.value.code == 2


def test_load_data_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", A=np.zeros(2))
    with pytest.raises(Exception, match="needs arrays X and Y"):
        load_data(str(tmp_path / "bad.npz"))
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="needs --target"):
        load_data(str(tmp_path / "d.csv"))
    with pytest.raises(Exception, match="no column"):
        load_data(str(tmp_path / "d.csv"), ["c"])
    X, Y = load_data(str(tmp_path / "d.csv"), ["b"])
    assert X.shape == (1, 1) and Y.shape == (1,)
    with pytest.raises(Exception, match="unknown data format"):
        load_data(str(tmp_path / "d.txt"))


def test_user_errors_are_one_line(files, monkeypatch, capsys):
    tmp, _ = files
    monkeypatch.chdir(tmp)
    np.save("short.npy", np.zeros(3))
    assert main(["derivatives", "model.json", "data.npz", "--out", "o.zarr", "--weights",
                 "short.npy", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dist-hess derivatives: error: weights must be a vector")


# ---------------------------------------------------------------- as a subprocess

def _run(args, cwd, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dist_hess", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_help_reads_for_a_newcomer(tmp_path):
    top = _run(["--help"], tmp_path)
    assert top.returncode == 0 and "derivatives" in top.stdout
    sub = _run(["derivatives", "--help"], tmp_path)
    assert sub.returncode == 0
    for option in ("--weights", "--curvature", "--multipliers", "--out", "--scheduler",
                   "--workers", "--chunk-size", "--split-every", "--target", "examples:"):
        assert option in sub.stdout


@pytest.mark.slow
def test_derivatives_subprocess_with_local_workers(files):
    tmp, prob = files
    proc = _run(["derivatives", "model.json", "data.npz", "--out", "out.zarr", "--workers", "2",
                 "--chunk-size", "7", *ARGS[:-1]], tmp)
    assert proc.returncode == 0, proc.stderr
    assert "dashboard:" in proc.stderr and "Dask scheduler: tcp://" in proc.stderr
    assert "wrote out.zarr" in proc.stdout
    _check_store(tmp / "out.zarr", *prob)


@pytest.mark.slow
def test_unreachable_scheduler_fails_fast(files):
    import socket
    tmp, _ = files
    with socket.socket() as s:           # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run(["derivatives", "model.json", "data.npz", "--out", "o.zarr", "--quiet",
                 "--scheduler", f"tcp://127.0.0.1:{port}", "--timeout", "2"], tmp, timeout=60)
    assert proc.returncode == 1
    assert "could not reach the Dask scheduler" in proc.stderr
    assert not (tmp / "o.zarr").exists()
