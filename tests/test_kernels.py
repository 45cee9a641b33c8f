"""The engine's numeric shortcuts against the plain numpy they replace.

`dist_hess.rowwise` sums by BLAS matrix-vector products (another summation order:
equal to 1e-14) and takes the row maximum on a transposed copy (exact); the
finiteness check looks at the entries only when ``sum A^2`` is not finite, so values
whose squares overflow must still pass and every NaN or inf must still be named.
"""
from __future__ import annotations

import numpy as np
import pytest

from dist_hess.engine import Request
from dist_hess.losses import _check_finite
from dist_hess.rowwise import column_sums, row_max, row_sums


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 1), (442, 3), (300, 64), (50, 65), (20, 200)])
def test_rowwise_matches_numpy(shape):
    A = np.random.default_rng(0).normal(size=shape) * 10.0
    np.testing.assert_allclose(row_sums(A), A.sum(axis=1), rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(column_sums(A), A.sum(axis=0), rtol=1e-14, atol=1e-12)
    if shape[1]:
        np.testing.assert_array_equal(row_max(A), A.max(axis=1))


def test_row_max_of_a_non_contiguous_view():
    A = np.random.default_rng(1).normal(size=(40, 12))[::3, 1::2]
    np.testing.assert_array_equal(row_max(A), A.max(axis=1))


def test_finiteness_check_passes_values_whose_squares_overflow():
    _check_finite(np.array([1e200, -1e300, 2.0]), "w")
    _check_finite(np.full((3, 4), 1e160), "X")


@pytest.mark.parametrize("bad, index", [(np.nan, (1, 2)), (np.inf, (0, 0)), (-np.inf, (2, 3))])
def test_finiteness_check_names_the_first_bad_entry(bad, index):
    A = np.ones((3, 4))
    A[0, 1] = 1e300                 # an overflowing square before the bad entry
    A[index] = bad
    with pytest.raises(ValueError, match=rf"X contains NaN or inf \(first at index \({index[0]}, {index[1]}\)"):
        _check_finite(A, "X")


def test_a_gauss_newton_product_needs_no_second_derivatives():
    v = np.zeros(3)
    assert Request(value=False, gradient=False, hvp=(("gauss_newton", v),)).order == 1
    assert Request(value=False, gradient=False, hvp=(("hessian", v),)).order == 2
    assert Request(value=False, gradient=False, hvp=(("gauss_newton", v), ("hessian", v))).order == 2
