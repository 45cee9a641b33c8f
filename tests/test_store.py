"""The zarr store (DESIGN.md §5): layout, round trip, refusal of incomplete/foreign stores."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

import dist_hess as dh
from dist_hess.store import (FORMAT, begin_store, create_multipliers, open_store,
                             write_multipliers_block, write_store)

SPEC = {"inputs": 3,
        "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                   {"type": "dense", "units": 2, "activation": "identity", "sources": [1, 0]}],
        "loss": "squared", "penalty": {"type": "l2", "lambda": 0.01}}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def model():
    return dh.Model.from_dict(SPEC)


def _results(model, n=7, seed=0):
    rng = np.random.default_rng(seed)
    t = model.n_params
    row = [rng.normal(size=(s, d, d)) for s, d in model.layer_shapes]
    layer = [rng.normal(size=(s * d, s * d)) for s, d in model.layer_shapes]
    return dict(weights=rng.normal(size=t), value=1.25, gradient=rng.normal(size=t),
                curvature={("hessian", "row"): row, ("hessian", "layer"): layer,
                           ("gauss_newton", "full"): rng.normal(size=(t, t))},
                multipliers=[rng.normal(size=(n, s)) for s in model.sizes[1:]])


def test_write_then_open_round_trip(tmp_path, model):
    r = _results(model)
    path = tmp_path / "run.zarr"
    write_store(path, model, r["weights"], n_examples=7, value=r["value"], gradient=r["gradient"],
                curvature=r["curvature"], multipliers=r["multipliers"], chunk_rows=3,
                attrs={"iteration": np.int64(4)})
    store = open_store(path)
    assert store.model.to_dict() == model.to_dict()
    assert store.n_examples == 7 and store.value == 1.25
    assert store.attrs["iteration"] == 4
    np.testing.assert_array_equal(store.weights, r["weights"])
    np.testing.assert_array_equal(store.gradient, r["gradient"])
    assert store.curvatures == [("gauss_newton", "full"), ("hessian", "layer"), ("hessian", "row")]
    for got, want in zip(store.curvature("hessian", "row"), r["curvature"][("hessian", "row")]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(store.curvature("gauss_newton", "full"),
                                  r["curvature"][("gauss_newton", "full")])
    assert store.multiplier_layers == [1, 2]
    np.testing.assert_array_equal(np.asarray(store.multipliers(2)), r["multipliers"][1])
    with pytest.raises(KeyError, match="lagrangian:row"):
        store.curvature("lagrangian", "row")
    with pytest.raises(KeyError, match="layer 3"):
        store.multipliers(3)


def test_layout_matches_the_contract_with_plain_zarr(tmp_path, model):
    r = _results(model)
    path = tmp_path / "run.zarr"
    write_store(path, model, r["weights"], n_examples=7, value=r["value"], gradient=r["gradient"],
                curvature=r["curvature"], multipliers=r["multipliers"], chunk_rows=3)
    g = zarr.open_group(str(path), mode="r")
    assert g.metadata.zarr_format == 3
    assert g.attrs["format"] == FORMAT and g.attrs["complete"] is True
    assert g.attrs["n_examples"] == 7 and g.attrs["model"] == json.loads(json.dumps(model.to_dict()))
    t = model.n_params
    assert g["weights"].shape == (t,) and g["value"].shape == () and g["gradient"].shape == (t,)
    for k, (s, d) in enumerate(model.layer_shapes, start=1):
        assert g[f"curvature/hessian/row/layer_{k}"].shape == (s, d, d)
        assert g[f"curvature/hessian/layer/layer_{k}"].shape == (s * d, s * d)
        assert g[f"multipliers/layer_{k}"].shape == (7, s)
        assert g[f"multipliers/layer_{k}"].chunks == (3, s)
    assert g["curvature/gauss_newton/full"].shape == (t, t)


def test_nothing_is_pickled(tmp_path, model):
    r = _results(model)
    path = tmp_path / "run.zarr"
    write_store(path, model, r["weights"], n_examples=7, value=r["value"], gradient=r["gradient"],
                curvature=r["curvature"], multipliers=r["multipliers"])
    for root, _, files in os.walk(path):
        for name in files:
            if name == "zarr.json":
                meta = json.load(open(os.path.join(root, name)))
                if meta["node_type"] == "array":
                    assert meta["data_type"] == "float64"
                    assert all("pickle" not in json.dumps(c) for c in meta["codecs"])


def test_incomplete_store_is_refused(tmp_path, model):
    path = tmp_path / "half.zarr"
    group = begin_store(path, model, np.zeros(model.n_params), n_examples=5)
    create_multipliers(group, model.sizes[1:], n_examples=5, chunk_rows=5)
    write_multipliers_block(str(path), ["multipliers/layer_1"], 0, [np.ones((5, 4))])
    with pytest.raises(ValueError, match="incomplete"):
        open_store(path)


@pytest.mark.slow
def test_store_of_a_killed_writer_is_refused(tmp_path):
    path = tmp_path / "killed.zarr"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        import dist_hess as dh
        from dist_hess.store import begin_store, write_results
        model = dh.Model.from_dict({SPEC!r})
        group = begin_store({str(path)!r}, model, np.zeros(model.n_params), n_examples=3)
        write_results(group, value=1.0, gradient=np.zeros(model.n_params))
        os.kill(os.getpid(), signal.SIGKILL)      # dies before mark_complete
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert (path / "gradient").exists()
    with pytest.raises(ValueError, match="incomplete"):
        open_store(path)


def test_foreign_or_missing_stores_are_refused(tmp_path):
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["format"] = "something/2"
    with pytest.raises(ValueError, match="not a dist_hess store"):
        open_store(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a dist_hess store"):
        open_store(tmp_path / "plain")
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "missing.zarr")


def test_overwrite_only_replaces_dist_hess_stores(tmp_path, model):
    w = np.zeros(model.n_params)
    path = tmp_path / "run.zarr"
    write_store(path, model, w, n_examples=1, value=1.0)
    write_store(path, model, w + 1, n_examples=2, value=2.0)      # a store is replaced
    assert open_store(path).value == 2.0
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_store(precious, model, w, n_examples=1)
    assert (precious / "thesis.tex").exists()
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    foreign.attrs["format"] = "other"
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_store(tmp_path / "foreign.zarr", model, w, n_examples=1)


def test_open_store_is_read_only(tmp_path, model):
    path = tmp_path / "run.zarr"
    write_store(path, model, np.zeros(model.n_params), n_examples=1, value=1.0)
    store = dh.open_store(path)
    with pytest.raises(ValueError, match="read-only"):
        store.group["weights"][0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        store.group.attrs["complete"] = False
