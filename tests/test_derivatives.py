"""Every derivative of the engine against two oracles, over the whole case table.

1. The independent JAX reference (``tests/oracle.py``), at ``rtol = 1e-10``.
2. Finite differences of the engine's own value and gradient along random
   directions (``<g, v>`` and ``H v``), at ``1e-6``.

Plus the structural guarantees: the Hessian is symmetric, the Gauss-Newton
matrix positive semi-definite, and the three structures are slices of one matrix.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tests import oracle
from tests.cases import CASES_BY_ID, case_params
from tests.checks import assert_close, assert_psd, assert_symmetric, directional_difference

KINDS = ("hessian", "gauss_newton", "lagrangian")
STRUCTURES = ("row", "layer", "full")
RTOL = 1e-10
FD_RTOL = 1e-6


@functools.lru_cache(maxsize=None)
def model_for(case_id):
    return CASES_BY_ID[case_id].model()


def reference(case):
    return oracle.reference(case.spec, case.w, case.X, case.Y)


def reference_curvature(case, kind, structure):
    return oracle.blocks(case.spec, reference(case)[kind], structure)


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("case", case_params())
def test_parameter_layout(case):
    model = model_for(case.id)
    t = case.n_params
    assert model.n_params == t
    slices = list(model.layer_slices)
    assert [sl.indices(t) for sl in slices] == [sl.indices(t) for sl in oracle.layer_slices(case.spec)]


# --------------------------------------------------------------------------- against the JAX oracle


@pytest.mark.parametrize("case", case_params())
def test_value(case):
    w = case.w
    value = case.model().value(w, case.X, case.Y)
    assert np.ndim(value) == 0
    assert_close(float(value), reference(case)["value"], RTOL, what="value")
    np.testing.assert_array_equal(w, case.w, err_msg="value() modified w")


@pytest.mark.parametrize("case", case_params())
def test_gradient(case):
    w = case.w
    grad = model_for(case.id).gradient(w, case.X, case.Y)
    assert_close(np.asarray(grad), reference(case)["gradient"], RTOL, what="gradient")
    np.testing.assert_array_equal(w, case.w, err_msg="gradient() modified w")


@pytest.mark.parametrize("case", case_params())
def test_multipliers(case):
    es = model_for(case.id).multipliers(case.w, case.X, case.Y)
    assert_close(list(es), reference(case)["multipliers"], RTOL, what="multipliers")


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", case_params())
def test_curvature(case, kind, structure):
    got = model_for(case.id).curvature(case.w, case.X, case.Y, kind=kind, structure=structure)
    expected = reference_curvature(case, kind, structure)
    if structure != "full":
        got = list(got)
    assert_close(got, expected, RTOL, what=f"{kind}/{structure}")


@pytest.mark.parametrize("kind", ("hessian", "gauss_newton"))
@pytest.mark.parametrize("case", case_params())
def test_hvp(case, kind):
    model = model_for(case.id)
    for index in range(2):
        v = case.random_direction(index)
        got = model.hvp(case.w, case.X, case.Y, v, kind=kind)
        assert_close(np.asarray(got), reference(case)[kind] @ v, RTOL, what=f"hvp/{kind}")


# --------------------------------------------------------------------------- against finite differences


@pytest.mark.parametrize("case", case_params())
def test_gradient_matches_value_differences(case):
    model, w = model_for(case.id), case.w
    grad = np.asarray(model.gradient(w, case.X, case.Y))
    value = float(model.value(w, case.X, case.Y))
    for index in range(2):
        v = case.random_direction(index)
        fd = directional_difference(lambda w_: float(model.value(w_, case.X, case.Y)), w, v)
        bound = FD_RTOL * max(np.linalg.norm(grad), 1e-8 * abs(value), 1e-12)
        assert abs(fd - grad @ v) <= bound, f"direction {index}: fd {fd!r} vs <g, v> {grad @ v!r}"


@pytest.mark.parametrize("case", case_params())
def test_hessian_matches_gradient_differences(case):
    model, w = model_for(case.id), case.w
    H = np.asarray(model.curvature(w, case.X, case.Y, kind="hessian", structure="full"))
    for index in range(2):
        v = case.random_direction(index)
        fd = directional_difference(lambda w_: np.asarray(model.gradient(w_, case.X, case.Y)), w, v)
        scale = np.linalg.norm(H, 2)
        assert_close(H @ v, fd, FD_RTOL, scale=scale, atol_factor=FD_RTOL, what="H v vs fd")
        hv = np.asarray(model.hvp(w, case.X, case.Y, v, kind="hessian"))
        assert_close(hv, fd, FD_RTOL, scale=scale, atol_factor=FD_RTOL, what="hvp vs fd")
        u = case.random_direction(index + 10)
        assert abs(u @ hv - u @ fd) <= FD_RTOL * scale


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("case", case_params())
def test_hessian_symmetric(case):
    model = model_for(case.id)
    H = np.asarray(model.curvature(case.w, case.X, case.Y, kind="hessian", structure="full"))
    assert_symmetric(H, what="hessian/full")
    for k, block in enumerate(model.curvature(case.w, case.X, case.Y, kind="hessian", structure="row")):
        assert_symmetric(block, what=f"hessian/row layer {k + 1}")
    for k, block in enumerate(model.curvature(case.w, case.X, case.Y, kind="hessian", structure="layer")):
        assert_symmetric(block, what=f"hessian/layer layer {k + 1}")


@pytest.mark.parametrize("case", case_params())
def test_gauss_newton_positive_semidefinite(case):
    model = model_for(case.id)
    G = np.asarray(model.curvature(case.w, case.X, case.Y, kind="gauss_newton", structure="full"))
    assert_symmetric(G, what="gauss_newton/full")
    assert_psd(G, what="gauss_newton/full")
    for k, block in enumerate(model.curvature(case.w, case.X, case.Y, kind="gauss_newton", structure="row")):
        assert_psd(block, what=f"gauss_newton/row layer {k + 1}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", case_params())
def test_structures_are_slices_of_full(case, kind):
    """``row`` and ``layer`` are diagonal blocks of ``full`` (engine against itself)."""
    model = model_for(case.id)
    full = np.asarray(model.curvature(case.w, case.X, case.Y, kind=kind, structure="full"))
    for structure in ("row", "layer"):
        got = list(model.curvature(case.w, case.X, case.Y, kind=kind, structure=structure))
        assert_close(got, oracle.blocks(case.spec, full, structure), 1e-12, what=f"{kind}/{structure}")
