"""Pieces of the Dask layer that need no engine and no cluster: packing, the tree."""
import numpy as np
import pytest

from dist_hess.distributed.packing import (pack_sums, pack_symmetric, packed_side,
                                           unpack_sums, unpack_symmetric)
from dist_hess.distributed.tree import (check_split_every, complete_tree, subtree_sums, tree_groups,
                                       tree_reduce, tree_sum)


def _symmetric(rng, *shape):
    a = rng.normal(size=shape)
    return a + np.swapaxes(a, -1, -2)


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (3, 4, 4), (2, 1, 1), (0, 3, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_pack_unpack_round_trip(shape):
    a = _symmetric(np.random.default_rng(0), *shape)
    p = pack_symmetric(a)
    d = shape[-1]
    assert p.shape == shape[:-2] + (d * (d + 1) // 2,)
    np.testing.assert_array_equal(unpack_symmetric(p), a)


def test_packed_layout_is_row_major_upper_triangle():
    a = np.arange(16.0).reshape(4, 4)
    a = np.triu(a) + np.triu(a, 1).T
    iu = np.triu_indices(4)
    np.testing.assert_array_equal(pack_symmetric(a), a[iu])


def test_unpack_mirrors_the_upper_triangle():
    a = np.arange(9.0).reshape(3, 3)              # not symmetric: the lower part is ignored
    np.testing.assert_array_equal(unpack_symmetric(pack_symmetric(a)), np.triu(a) + np.triu(a, 1).T)


def test_pack_rejects_non_square_and_bad_lengths():
    with pytest.raises(ValueError, match="square"):
        pack_symmetric(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="triangular"):
        packed_side(4)


def test_pack_sums_packs_curvature_only():
    rng = np.random.default_rng(1)
    sums = {"n": 3, "value": 1.5, "gradient": rng.normal(size=6),
            "curvature/hessian/row": [_symmetric(rng, 2, 3, 3)],
            "curvature/gauss_newton/full": _symmetric(rng, 6, 6),
            "hvp/0": rng.normal(size=6), "multipliers": [rng.normal(size=(3, 2))]}
    packed = pack_sums(sums)
    assert packed["curvature/hessian/row"][0].shape == (2, 6)
    assert packed["curvature/gauss_newton/full"].shape == (21,)
    assert packed["multipliers"] is sums["multipliers"]
    back = unpack_sums({k: v for k, v in packed.items() if k != "multipliers"})
    for key in ("gradient", "curvature/gauss_newton/full", "hvp/0"):
        np.testing.assert_array_equal(back[key], sums[key])
    np.testing.assert_array_equal(back["curvature/hessian/row"][0], sums["curvature/hessian/row"][0])


# ---------------------------------------------------------------- the tree

@pytest.mark.parametrize("split_every", [2, 3, 4, 7])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 16, 17, 50])
def test_streaming_reduce_follows_the_static_tree(n, split_every):
    # Combine that records the exact order of additions as a string.
    got = tree_reduce((str(i) for i in range(n)), lambda a, b: f"({a}+{b})", split_every)
    level = [str(i) for i in range(n)]
    for groups in tree_groups(n, split_every):
        new = []
        for g in groups:
            acc = level[g[0]]
            for j in list(g)[1:]:
                acc = f"({acc}+{level[j]})"
            new.append(acc)
        level = new
    assert got == level[0]


def test_tree_groups_shape():
    assert tree_groups(1, 4) == []
    assert tree_groups(5, 2) == [[range(0, 2), range(2, 4), range(4, 5)],
                                 [range(0, 2), range(2, 3)],
                                 [range(0, 2)]]


def test_tree_reduce_sums_numbers_in_tree_order():
    values = [1e16, 1.0, -1e16, 1.0]
    # ((1e16 + 1) + (-1e16 + 1)) with split_every=2, not a left fold over all four
    assert tree_reduce(values, lambda a, b: a + b, 2) == (1e16 + 1.0) + (-1e16 + 1.0)


def test_split_every_validation():
    assert check_split_every(None) == 4
    for bad in (1, 0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="split_every"):
            check_split_every(bad)
    with pytest.raises(ValueError, match="at least one leaf"):
        tree_reduce([], lambda a, b: a + b, 2)


@pytest.mark.parametrize("split_every", [2, 3, 4])
def test_partial_trees_on_workers_give_the_sum_bitwise(split_every):
    """Workers fold the nodes of the tree whose leaves they hold (any assignment, runs or
    scattered); the client completes it: bitwise the in-process tree sum."""
    rng = np.random.default_rng(7)
    for n in range(1, 34):
        leaves = [rng.standard_normal(4) * 10.0 ** rng.integers(-9, 9, 4) for _ in range(n)]
        pairs = [(float(x[0]), x) for x in leaves]
        want = tree_sum(leaves, split_every)
        for trial in range(4):
            workers = int(rng.integers(1, 5))
            owner = (rng.integers(0, workers, n) if trial % 2
                     else np.minimum(np.arange(n) * workers // n, workers - 1))
            nodes, pair_nodes = {}, {}
            for k in range(workers):
                mine = [i for i in range(n) if owner[i] == k]
                nodes.update(subtree_sums({i: leaves[i] for i in mine}, n, split_every))
                pair_nodes.update(subtree_sums({i: pairs[i] for i in mine}, n, split_every))
            np.testing.assert_array_equal(complete_tree(nodes, n, split_every), want)
            value, vector = complete_tree(pair_nodes, n, split_every)
            np.testing.assert_array_equal(vector, want)
            assert value == tree_sum([p[0] for p in pairs], split_every)


def test_an_aligned_run_of_leaves_is_one_node():
    assert list(subtree_sums({i: 1.0 for i in range(4)}, 8)) == [(1, 0)]
    assert list(subtree_sums({i: 1.0 for i in range(16, 32)}, 32)) == [(2, 1)]
    assert sorted(subtree_sums({i: 1.0 for i in range(5)}, 9)) == [(0, 4), (1, 0)]
