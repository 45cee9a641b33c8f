"""The fixed reduction tree over shards.

Floating-point addition is not associative, so the order in which partial sums
are added decides the last bits of the result. Here that order is fixed by the
shards' position and ``split_every`` alone, never by which task finishes first:

    level 0:  s_0  s_1  s_2  s_3  s_4          (split_every = 2)
    level 1:  (s_0+s_1)  (s_2+s_3)  s_4
    level 2:  ((s_0+s_1)+(s_2+s_3))  s_4
    level 3:  (((s_0+s_1)+(s_2+s_3))+s_4)

Each group of ``split_every`` consecutive nodes is folded left to right. The
same tree is run by the Dask graph (:func:`tree_groups`) and by the in-process
loop (:func:`tree_reduce`), so both give bitwise identical sums.

A worker that holds some of the leaves can fold every node of the tree whose leaves it
all holds (:func:`subtree_sums`: the largest such nodes, keyed by ``(level, index)``);
:func:`complete_tree` then folds the rest from the nodes of all workers. Each node is
the same fold of the same children wherever it is computed, so the root is bitwise
:func:`tree_reduce`'s whatever the workers held, and a worker holding a contiguous run
of ``split_every ** k`` aligned leaves sends one node instead of that many.
"""
from __future__ import annotations

import operator
from functools import reduce
from typing import Callable, Iterable, TypeVar

__all__ = ["DEFAULT_SPLIT_EVERY", "check_split_every", "tree_groups", "tree_reduce", "tree_sum",
           "subtree_sums", "complete_tree",
           "fold"]

T = TypeVar("T")

DEFAULT_SPLIT_EVERY = 4


def check_split_every(split_every: int | None) -> int:
    """Validate ``split_every`` (``None`` -> the default)."""
    if split_every is None:
        return DEFAULT_SPLIT_EVERY
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an integer >= 2, got {split_every!r}")
    return split_every


def tree_groups(n_leaves: int, split_every: int) -> list[list[range]]:
    """Levels of the tree: for each level above the leaves, the index ranges
    (into the level below) that are folded into one node."""
    if n_leaves < 1:
        raise ValueError("a reduction needs at least one leaf")
    levels = []
    width = n_leaves
    while width > 1:
        groups = [range(i, min(i + split_every, width)) for i in range(0, width, split_every)]
        levels.append(groups)
        width = len(groups)
    return levels


def fold(combine: Callable[[T, T], T], items: list[T]) -> T:
    """Left fold of one group: ``combine(combine(items[0], items[1]), items[2]) ...``."""
    return reduce(combine, items)


def tree_reduce(leaves: Iterable[T], combine: Callable[[T, T], T], split_every: int) -> T:
    """Reduce ``leaves`` (consumed lazily, in order) along the tree of :func:`tree_groups`.

    At most ``split_every`` pending nodes per level are held, so an in-process
    run keeps ``O(split_every * depth)`` partial sums alive, not one per shard.
    """
    pending: list[list[T]] = []          # pending[level] = nodes waiting for their group

    def push(level: int, node: T) -> None:
        if level == len(pending):
            pending.append([])
        pending[level].append(node)
        if len(pending[level]) == split_every:
            group, pending[level] = pending[level], []
            push(level + 1, fold(combine, group))

    count = 0
    for leaf in leaves:
        push(0, leaf)
        count += 1
    if count == 0:
        raise ValueError("a reduction needs at least one leaf")
    # Flush bottom-up: each level's leftover nodes are its last (partial) group.
    level = 0
    while True:
        if len(pending[level]) == 1 and not any(pending[level + 1:]):
            return pending[level][0]           # the root
        group, pending[level] = pending[level], []
        if group:
            push(level + 1, fold(combine, group))
        level += 1


def tree_sum(parts: Iterable[T], split_every: int = DEFAULT_SPLIT_EVERY) -> T:
    """``parts`` (arrays or numbers, in order) added along the tree of :func:`tree_reduce`."""
    return tree_reduce(iter(parts), operator.add, split_every)


def _add(a, b):
    """``a + b``, elementwise for tuples (a value and a gradient fold together)."""
    if isinstance(a, tuple):
        return tuple(x + y for x, y in zip(a, b))
    return a + b


def subtree_sums(leaves: dict[int, T], n_leaves: int, split_every: int = DEFAULT_SPLIT_EVERY,
                 combine: Callable[[T, T], T] = _add) -> dict[tuple[int, int], T]:
    """The largest nodes of the tree over ``n_leaves`` leaves whose leaves are all in
    ``leaves`` (leaf index -> value), each folded as :func:`tree_reduce` folds it:
    ``{(level, index): value}``, level 0 the leaves themselves."""
    have = {(0, int(i)): v for i, v in leaves.items()}
    for level, groups in enumerate(tree_groups(n_leaves, split_every), start=1):
        for index, group in enumerate(groups):
            children = [(level - 1, k) for k in group]
            if all(c in have for c in children):
                have[(level, index)] = fold(combine, [have.pop(c) for c in children])
    return have


def complete_tree(nodes: dict[tuple[int, int], T], n_leaves: int,
                  split_every: int = DEFAULT_SPLIT_EVERY,
                  combine: Callable[[T, T], T] = _add) -> T:
    """The root of the tree from ``nodes`` that cover every leaf once (the union of the
    workers' :func:`subtree_sums`): a node given is used as it is, the others are folded
    from their children, bottom-up."""
    have = dict(nodes)
    levels = tree_groups(n_leaves, split_every)
    for level, groups in enumerate(levels, start=1):
        for index, group in enumerate(groups):
            children = [(level - 1, k) for k in group]
            # a node whose children are not all there is covered by a given ancestor
            if (level, index) not in have and all(c in have for c in children):
                have[(level, index)] = fold(combine, [have.pop(c) for c in children])
    return have[(len(levels), 0)]
