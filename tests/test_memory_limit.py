"""The memory limit (dist_hess.memory): results and dense linear algebra over it are
refused before anything is allocated, naming the size and the way out.

Every refusal here is of an object of gigabytes built from a few rows of data (``t``
large, ``n`` tiny); ``tracemalloc`` (which sees numpy's buffers) shows that the refused
call allocated no more than a few megabytes. The limit is set explicitly in every test,
so that they do not depend on the machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import dist_hess as dh
from dist_hess.analysis import NotAMinimumWarning, spectra
from dist_hess.analysis.covariance import covariance
from dist_hess.analysis.source import resolve
from dist_hess.memory import (DEFAULT_FRACTION, ENV, MemoryLimitError, machine_memory,
                              memory_limit, parse_size, set_memory_limit)
from dist_hess.store import write_store

#: What a refused call may allocate: the data, the weights and the check itself.
SMALL = 32 * 2**20


def mlp(inputs: int, hidden: int) -> dh.Model:
    return dh.Model.from_dict({"inputs": inputs, "layers": [
        {"type": "dense", "units": hidden, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "identity"}]})


def data(model, n: int = 3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, model.inputs)), rng.normal(size=n)


def refused(call, *phrases, standard=True):
    """Run ``call``; it must raise MemoryLimitError naming every phrase (and, if
    ``standard``, check_allocation's wording), allocating < SMALL."""
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError) as err:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMALL, f"the refused call allocated {peak / 2**20:.0f} MiB"
    message = str(err.value)
    for phrase in ("over the memory limit", "refused before allocating") * standard + phrases:
        assert phrase in message, message
    assert isinstance(err.value, ValueError) and isinstance(err.value, MemoryError)
    return message


@pytest.fixture
def limit(monkeypatch):
    """Set DIST_HESS_MEMORY_LIMIT for one test."""
    set_memory_limit()
    return lambda value: monkeypatch.setenv(ENV, value)


def test_the_limit_is_read_from_the_setter_the_environment_or_the_machine(limit, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert memory_limit() == int(DEFAULT_FRACTION * machine_memory())
    limit("16GiB")
    assert memory_limit() == 16 * 2**30
    set_memory_limit("500MB")
    try:
        assert memory_limit() == 500 * 10**6
        set_memory_limit(None)
        assert memory_limit() is None
    finally:
        set_memory_limit()
    assert memory_limit() == 16 * 2**30
    assert parse_size("25%") == int(0.25 * machine_memory())
    assert parse_size("none") is None and parse_size("1.5 KiB") == 1536
    for bad in ("lots", "-1GB", "0", "200%"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_full_and_layer_curvature_refused_before_a_block_is_built(limit, tmp_path):
    """t = 102,001: the full matrix would be 2 x 77.5 GiB (numpy used to fail with
    'Unable to allocate'), the layer blocks 2 x 76 GiB."""
    limit("8GiB")
    model = mlp(100, 1000)
    w, (X, Y) = model.init(0), data(model)
    full = refused(lambda: model.curvature(w, X, Y, structure="full"),
                   "full 102,001 x 102,001 hessian", "155.0 GiB", "structure='row' or 'layer'",
                   "method='block-newton'", "method='newton-cg'", f"{ENV}=8GiB")
    assert "Hessian-vector products" in full
    refused(lambda: model.curvature(w, X, Y, kind="gauss_newton", structure="layer"),
            "layer blocks (the largest 101,000 x 101,000", "structure='row'")
    store = tmp_path / "run.zarr"
    refused(lambda: dh.evaluate(model, w, X, Y, curvature="hessian:full", store=store),
            "full 102,001 x 102,001")
    assert not store.exists()                       # refused before the store was begun
    refused(lambda: dh.evaluate(model, w, X, Y, curvature="hessian:full",
                                memory_limit="1GiB"), "(the memory_limit argument)")
    rows = model.curvature(w, X, Y, structure="row")          # row blocks: 11 MB, computed
    assert [r.shape for r in rows] == [(1000, 101, 101), (1, 1001, 1001)]


def test_gathered_multipliers_refused_unless_a_store_takes_them(limit, tmp_path):
    """n = 200,000 rows: 12.8 MB of multipliers gathered, over a 4 MiB limit; with a store
    the shards write them and each holds a few hundred kB."""
    limit("4MiB")
    model = mlp(2, 3)
    w, (X, Y) = model.init(0), data(model, 200_000)
    message = refused(lambda: dh.evaluate(model, w, X, Y, multipliers=True),
                      "multipliers of 200,000 examples", "store=PATH")
    assert "12.2 MiB" in message
    result = dh.evaluate(model, w, X, Y, multipliers=True, store=tmp_path / "run.zarr")
    assert result.multipliers[0].shape == (200_000, 3)
    np.testing.assert_allclose(np.asarray(result.multipliers[1][:5]),
                               model.multipliers(w, X[:5], Y[:5])[1], rtol=1e-12)


def test_newton_refused_before_the_hessian_and_its_factorisation(limit):
    """t = 14,101: newton holds 5 copies of the 1.6 GB matrix (8 GB); the engine alone would
    hold two and pass a 4 GiB limit, so the strategy refuses first."""
    limit("4GiB")
    model = mlp(139, 100)
    X, Y = data(model)
    for method, structure, phrases in [
            ("newton", None, ("method 'newton' at t = 14,101", "5 copies",
                              "method='block-newton'", "method='newton-cg'")),
            ("lm", "full", ("method 'lm' at t = 14,101", "structure='row' or 'layer'")),
            ("block-newton", "layer", ("largest block 14,000 x 14,000", "structure='row'"))]:
        refused(lambda: dh.fit(model, X, Y, method=method, structure=structure, max_iter=1),
                *phrases)
    result = dh.fit(model, X, Y, method="block-newton", max_iter=1,      # row blocks fit
                    options={"max_cg_iter": 5})
    assert result.n_iter == 1


def test_covariance_and_dense_spectra_refused_or_done_by_lanczos(limit, tmp_path):
    """t = 361: a pseudo-inverse holds 6 x 1 MB, over a 2 MiB limit."""
    model = mlp(10, 30)
    w, (X, Y) = model.init(0), data(model, 400)
    store = tmp_path / "run.zarr"
    ev = dh.evaluate(model, w, X, Y, curvature=["hessian:full", "hessian:row", "hessian:layer"])
    write_store(store, model, w, n_examples=400, value=ev.value, gradient=ev.gradient,
                curvature=ev.blocks)
    limit("2MiB")
    # the analysis' covariance budget is the memory limit when that is lower
    refused(lambda: dh.wald_table((model, w, X, Y)), "full 361 x 361 covariance",
            "(the memory limit, dist_hess.memory)", "parameters=[...]", "structure='row'",
            standard=False)
    refused(lambda: covariance(resolve((model, w, X, Y)), structure="layer"), "pseudo-inverse",
            "largest block 330 x 330", "structure='row' or 'layer'")
    refused(lambda: spectra(str(store), structures=("full",)), "dense spectrum of the full 361",
            "pass data=(X, Y)")
    by_lanczos = spectra(str(store), structures=("full",), data=(X, Y), k=2)
    assert by_lanczos.full.method == "lanczos"
    assert any("memory limit" in note for note in by_lanczos.notes)
    with warnings.catch_warnings():                 # not a minimum: the weights are random
        warnings.simplefilter("ignore", NotAMinimumWarning)
        assert dh.wald_table((model, w, X, Y), structure="row").std_error.shape == (361,)


def test_a_dense_row_tensor_is_refused_with_the_packed_form_as_the_way_out(limit):
    limit("1GiB")
    model = mlp(49, 2)
    w, (X, Y) = model.init(0), data(model)
    refused(lambda: model.row_tensor(w, X, Y, layer=1, row=0, order=6),
            "order-6 row tensor of layer 1", "packed=True")


@pytest.mark.slow
def test_the_command_line_refuses_before_training(tmp_path):
    """``dist-hess fit --curvature hessian:full --memory-limit``: one line, exit status 1,
    before the first iteration and before any store."""
    model = tmp_path / "model.json"
    mlp(4, 3).to_json(model)
    rng = np.random.default_rng(0)
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.column_stack([rng.normal(size=(30, 4)), rng.normal(size=30)]),
               delimiter=",", header="a,b,c,d,y", comments="")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "dist_hess", "fit", str(model), str(csv), "--target", "y",
         "--curvature", "hessian:full", "--memory-limit", "4KiB", "--out",
         str(tmp_path / "run.zarr")], capture_output=True, text=True, env=env, timeout=600,
        cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "full 19 x 19 hessian" in lines[0] and "4.0 KiB" in lines[0]
    assert "loss" not in proc.stdout and not (tmp_path / "run.zarr").exists()
