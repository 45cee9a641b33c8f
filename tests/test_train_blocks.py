"""Block-diagonal curvature over the flat parameter vector (DESIGN.md §1 layout)."""
from __future__ import annotations

import numpy as np
import pytest

from dist_hess.train.blocks import (BlockDiagonal, BlockGroup, block_groups, join_blocks,
                                    split_blocks)
from dist_hess.train.strategies import positive_definite_eigenvalues
from tests.test_train_problems import AnalyticModel, Quadratic

SHAPES = [(3, 4), (2, 5), (1, 3)]             # (s_k, d_k): t = 12 + 10 + 3 = 25


def random_symmetric(t, seed=0):
    a = np.random.default_rng(seed).standard_normal((t, t))
    return a + a.T


@pytest.fixture
def model():
    t = sum(s * d for s, d in SHAPES)
    return Quadratic(random_symmetric(t), np.zeros(t), shapes=SHAPES)


def test_row_groups_follow_the_row_major_layout(model):
    groups = block_groups("row", model.layer_slices, [d for _, d in SHAPES])
    assert groups == (BlockGroup(0, 3, 4), BlockGroup(12, 2, 5), BlockGroup(22, 1, 3))
    # row j of layer k is W^k[j, :] of the unpacked (s_k, d_k) matrix
    w = np.arange(model.n_params, dtype=float)
    for (s, d), sl, part in zip(SHAPES, model.layer_slices, split_blocks(w, groups)):
        np.testing.assert_array_equal(part, w[sl].reshape(s, d))


def test_join_blocks_assembles_a_step_from_row_pieces(model):
    groups = block_groups("row", model.layer_slices, [d for _, d in SHAPES])
    parts = [np.full((s, d), 10.0 * k) + np.arange(s)[:, None] for k, (s, d) in enumerate(SHAPES)]
    flat = join_blocks(parts, groups, model.n_params)
    for k, (s, d) in enumerate(SHAPES):
        start = model.layer_slices[k].start
        for j in range(s):
            np.testing.assert_array_equal(flat[start + j * d:start + (j + 1) * d], 10.0 * k + j)
    for a, b in zip(split_blocks(flat, groups), parts):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("structure", ["row", "layer", "full"])
def test_block_diagonal_is_the_masked_full_matrix(model, structure):
    w = np.zeros(model.n_params)
    H = model.curvature(w, None, None, structure="full")
    blocks = BlockDiagonal.from_curvature(model.curvature(w, None, None, structure=structure),
                                          structure, model.layer_slices, model.n_params)
    mask = np.zeros_like(H, dtype=bool)
    for g in blocks.groups:
        for i in range(g.n_blocks):
            lo = g.start + i * g.size
            mask[lo:lo + g.size, lo:lo + g.size] = True
    dense = blocks.to_dense()
    np.testing.assert_array_equal(dense, np.where(mask, H, 0.0))
    v = np.random.default_rng(1).standard_normal(model.n_params)
    np.testing.assert_allclose(blocks.matvec(v), dense @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("structure", ["row", "layer"])
def test_eigensystem_round_trips_and_diagonalises(model, structure):
    w = np.zeros(model.n_params)
    blocks = BlockDiagonal.from_curvature(model.curvature(w, None, None, structure=structure),
                                          structure, model.layer_slices, model.n_params)
    eig = blocks.eigh()
    v = np.random.default_rng(2).standard_normal(model.n_params)
    c = eig.to_coefficients(v)
    np.testing.assert_allclose(np.linalg.norm(c), np.linalg.norm(v))
    np.testing.assert_allclose(eig.from_coefficients(c), v, atol=1e-12)
    np.testing.assert_allclose(eig.from_coefficients(eig.eigenvalues * c), blocks.matvec(v),
                               atol=1e-10)


def test_blocks_must_tile_the_vector():
    with pytest.raises(ValueError, match="cover"):
        BlockDiagonal([BlockGroup(0, 2, 2)], [np.zeros((2, 2, 2))], 5)
    with pytest.raises(ValueError, match="shape"):
        BlockDiagonal([BlockGroup(0, 2, 2)], [np.zeros((2, 3, 3))], 4)
    with pytest.raises(ValueError, match="whole number of rows"):
        block_groups("row", [slice(0, 5)], [2])


def test_positive_definite_shift_keeps_definite_blocks_and_lifts_the_others():
    values = [np.array([[-3.0, 1.0, 4.0], [0.5, 1.0, 2.0], [0.0, 0.0, 0.0]])]
    shifted, shifts = positive_definite_eigenvalues(values, min_curvature_ratio=1e-3)
    np.testing.assert_array_equal(shifted[0][1], values[0][1])          # already definite
    assert shifts[0][0] == pytest.approx(3.0 + 4e-3)                     # -lambda_min + floor
    np.testing.assert_allclose(shifted[0][0] - values[0][0], shifts[0][0])
    assert np.all(shifted[0] > 0)
    absolute, _ = positive_definite_eigenvalues(values, modification="absolute",
                                                min_curvature_ratio=1e-3)
    np.testing.assert_allclose(absolute[0][0], [3.0, 1.0, 4.0])


def test_global_floor_lifts_nearly_flat_blocks_relative_to_the_largest_eigenvalue():
    values = [np.array([[1e-6, 2e-6, 4e-6], [1.0, 50.0, 100.0]])]      # a flat and a stiff block
    local, _ = positive_definite_eigenvalues(values, modification="absolute", min_curvature_ratio=1e-3)
    np.testing.assert_allclose(local[0][0], values[0][0])                # each block on its own scale
    lifted, _ = positive_definite_eigenvalues(values, modification="absolute", min_curvature_ratio=1e-3,
                                              min_global_curvature_ratio=1e-2)
    np.testing.assert_allclose(lifted[0][0], [1.0, 1.0, 1.0])             # 1e-2 * 100
    np.testing.assert_allclose(lifted[0][1], values[0][1])


def test_analytic_model_layout_matches_the_contract():
    m = AnalyticModel(SHAPES)
    assert m.n_params == 25
    assert [(s.start, s.stop) for s in m.layer_slices] == [(0, 12), (12, 22), (22, 25)]
