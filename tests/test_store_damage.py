"""Damaged stores are refused, naming the array and chunk, never read back as numbers (issue 13).

Real stores written by ``dh.evaluate``, damaged on disk the way a full disk, a
killed copy or a hand edit damages them: a chunk deleted or truncated, an
attribute edited, an array removed. Each is refused by ``open_store`` or, for the
arrays read lazily (curvature, multipliers), when read: one ``DamagedStoreError``
(a ``ValueError``) that names the array and the chunk.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.store import (DamagedStoreError, add_curvature, open_store, update_attrs,
                             write_store)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"inputs": 3, "loss": "squared",
        "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                   {"type": "dense", "units": 2, "activation": "identity", "sources": [1, 0]}]}
N = 40


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A store with weights, value, gradient, row blocks, the full Hessian and multipliers
    in chunks of 10 rows."""
    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(N, 3)), rng.normal(size=(N, 2))
    path = tmp_path_factory.mktemp("stores") / "good.zarr"
    dh.evaluate(model, model.init(seed=0), X, Y, curvature=["hessian:row", "hessian:full"],
                multipliers=True, store=path, chunk_size=10)
    np.savez(path.parent / "data.npz", X=X, Y=Y)
    return path


@pytest.fixture
def copy(good, tmp_path):
    path = tmp_path / "copy.zarr"
    shutil.copytree(good, path)
    return path


def _read_everything(path):
    store = open_store(path)
    store.curvature("hessian", "row")
    store.curvature("hessian", "full")
    for k in store.multiplier_layers:
        store.multipliers(k).compute()


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _edit_attrs(path, edit):
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta))


def test_the_good_store_reads_back(good):
    _read_everything(good)


def test_every_array_is_checksummed_and_has_no_usable_fill_value(good):
    for root, _, files in os.walk(good):
        if "zarr.json" in files:
            meta = json.loads(open(os.path.join(root, "zarr.json")).read())
            if meta["node_type"] == "array":
                assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"], root
                assert meta["fill_value"] == "NaN", root


CHUNKS = [("weights", "weights/c/0", "(0,)"),
          ("value", "value/c", "()"),
          ("gradient", "gradient/c/0", "(0,)"),
          ("curvature/hessian/row/layer_1", "curvature/hessian/row/layer_1/c/0/0/0", "(0, 0, 0)"),
          ("curvature/hessian/full", "curvature/hessian/full/c/0/0", "(0, 0)"),
          ("multipliers/layer_1", "multipliers/layer_1/c/2/0", "(2, 0)")]
CHUNK_IDS = [name for name, _, _ in CHUNKS]


@pytest.mark.parametrize(("name", "key", "chunk"), CHUNKS, ids=CHUNK_IDS)
def test_a_deleted_chunk_is_refused_on_open(copy, name, key, chunk):
    os.remove(copy / key)
    with pytest.raises(DamagedStoreError,
                       match=f"chunk {re.escape(chunk)} of array '{name}' is missing"):
        open_store(copy)


@pytest.mark.parametrize(("name", "key", "chunk"), CHUNKS, ids=CHUNK_IDS)
def test_a_truncated_chunk_is_one_error_naming_the_array(copy, name, key, chunk):
    _truncate(copy / key)
    with pytest.raises(DamagedStoreError,
                       match=f"chunk {re.escape(chunk)} of array '{name}' fails its checksum"
                       ) as caught:
        _read_everything(copy)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_curvature_and_multipliers_are_checked_when_read_not_only_on_open(copy):
    store = open_store(copy)
    lazy = store.multipliers(2)
    _truncate(copy / "curvature/hessian/full/c/0/0")
    os.remove(copy / "multipliers/layer_2/c/1/0")
    with pytest.raises(DamagedStoreError, match="array 'curvature/hessian/full'"):
        store.curvature("hessian", "full")
    with pytest.raises(DamagedStoreError,
                       match=r"chunk \(1, 0\) of array 'multipliers/layer_2' is missing"):
        lazy.compute()
    assert np.all(np.isfinite(lazy[:10].compute()))          # the other chunks still read


@pytest.mark.parametrize("edit", [
    pytest.param(lambda a: a.update(n_examples=a["n_examples"] + 1), id="n_examples"),
    pytest.param(lambda a: a["model"].update(loss="binary_cross_entropy"), id="model-loss"),
    pytest.param(lambda a: a["model"]["layers"][0].update(activation="relu"), id="model-layer"),
])
def test_edited_attributes_are_refused(copy, edit):
    attrs = json.loads((copy / "zarr.json").read_text())["attributes"]
    _edit_attrs(copy, edit)
    changed = [k for k, v in json.loads((copy / "zarr.json").read_text())["attributes"].items()
               if attrs[k] != v]
    with pytest.raises(DamagedStoreError, match=f"attribute '{changed[0]}' differs from the "
                                                f"checksum"):
        open_store(copy)


def test_update_attrs_keeps_the_checksums_true(tmp_path):
    model = dh.Model.from_dict(SPEC)
    path = write_store(tmp_path / "run.zarr", model, np.zeros(model.n_params), n_examples=5,
                       value=1.0, attrs={"fit": {"status": "gtol"}})
    update_attrs(path, {"fit": {"status": "edited"}, "note": [1, 2]})   # covered, new
    attrs = open_store(path).attrs
    assert attrs["fit"] == {"status": "edited"} and attrs["note"] == [1, 2]
    _edit_attrs(tmp_path / "run.zarr", lambda a: a.update(fit={"status": "by hand"}))
    with pytest.raises(DamagedStoreError, match="attribute 'fit' differs"):
        open_store(path)


def test_curvature_added_later_is_required_too(copy):
    t = dh.Model.from_dict(SPEC).n_params
    add_curvature(copy, {("gauss_newton", "full"): np.eye(t)})
    np.testing.assert_array_equal(open_store(copy).curvature("gauss_newton", "full"), np.eye(t))
    shutil.rmtree(copy / "curvature/gauss_newton/full")
    with pytest.raises(DamagedStoreError, match="array 'curvature/gauss_newton/full' is missing"):
        open_store(copy)


def test_shapes_are_checked_against_the_model_and_n_examples(copy):
    """Without the checksums (a store of an older writer), multiplier rows still have to be
    ``n_examples``."""
    _edit_attrs(copy, lambda a: (a.pop("integrity"), a.update(n_examples=N + 1)))
    with pytest.raises(DamagedStoreError, match=r"array 'multipliers/layer_1' has shape "
                                                r"\(40, 4\) .* expected \(41, 4\)"):
        open_store(copy)


def test_a_removed_array_is_refused(copy):
    shutil.rmtree(copy / "curvature/hessian/row/layer_2")
    with pytest.raises(DamagedStoreError,
                       match="array 'curvature/hessian/row/layer_2' is missing"):
        open_store(copy)


def test_unreadable_metadata_is_refused(copy):
    _truncate(copy / "zarr.json")
    with pytest.raises(DamagedStoreError, match="zarr.json cannot be read"):
        open_store(copy)


def test_analysis_refuses_a_damaged_store_instead_of_printing_zeros(copy):
    os.remove(copy / "weights/c/0")
    with pytest.raises(DamagedStoreError, match="array 'weights'"):
        dh.wald_table(copy)


def test_chunks_equal_to_the_fill_value_or_zero_are_written(tmp_path):
    model = dh.Model.from_dict(SPEC)
    t = model.n_params
    path = write_store(tmp_path / "zeros.zarr", model, np.zeros(t), n_examples=5, value=0.0,
                       gradient=np.full(t, np.nan),
                       curvature={("gauss_newton", "full"): np.zeros((t, t))},
                       multipliers=[np.zeros((5, 4)), np.full((5, 2), np.nan)], chunk_rows=2)
    store = open_store(path)
    assert store.value == 0.0 and np.all(np.isnan(store.gradient))
    np.testing.assert_array_equal(store.curvature("gauss_newton", "full"), 0.0)
    np.testing.assert_array_equal(store.multipliers(1).compute(), 0.0)


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "options", "named"), [
    ("curvature/hessian/full/c/0/0", [],
     "chunk (0, 0) of array 'curvature/hessian/full' is missing"),
    ("multipliers/layer_1/c/2/0", ["--covariance", "sandwich"],
     "chunk (2, 0) of array 'multipliers/layer_1' fails its checksum"),
], ids=["deleted-full", "truncated-multipliers"])
def test_dist_hess_analyze_prints_one_line(copy, good, damage, options, named):
    if damage.startswith("curvature"):
        os.remove(copy / damage)
    else:
        _truncate(copy / damage)
    proc = subprocess.run([sys.executable, "-m", "dist_hess", "analyze", str(copy),
                           "--data", str(good.parent / "data.npz"), *options],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("dist-hess analyze: error:")
    assert named in proc.stderr
