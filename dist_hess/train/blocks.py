"""Block-diagonal curvature over the flat parameter vector, and its eigensystem.

Layout (DESIGN.md §1, contract): layer ``k`` is an ``(s_k, d_k)`` matrix stored row-major
at ``layer_slices[k]``, so row ``j`` of layer ``k`` covers the flat indices
``layer_slices[k].start + j*d_k ... + d_k`` and every row block, layer block and the
full matrix is a *contiguous* diagonal block. A `BlockGroup` is a run of equal blocks:

- ``row``   -> one group per layer: ``s_k`` blocks of size ``d_k``;
- ``layer`` -> one group per layer: 1 block of size ``t_k = s_k d_k``;
- ``full``  -> one group: 1 block of size ``t``.

Index letters: ``m`` block in a group, ``a, b`` positions inside a block, ``e`` eigenpair.
A group's sub-vector is ``v[start:stop].reshape(m, size)``, so every operation is one
batched ``einsum`` or ``np.linalg.eigh`` per group.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..curvature import STRUCTURES

__all__ = ["BlockGroup", "BlockDiagonal", "BlockEigensystem", "block_groups",
           "split_blocks", "join_blocks"]



@dataclass(frozen=True)
class BlockGroup:
    """``n_blocks`` consecutive diagonal blocks of size ``size`` starting at flat index ``start``."""

    start: int
    n_blocks: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.n_blocks * self.size

    def split(self, v: np.ndarray) -> np.ndarray:
        """``v[start:stop]`` as ``(n_blocks, size)``: row ``m`` is block ``m``'s sub-vector."""
        return v[self.start:self.stop].reshape(self.n_blocks, self.size)


def block_groups(structure: str, layer_slices, row_sizes=None, n_params: int | None = None):
    """The groups of ``structure`` for a model with ``layer_slices``.

    ``row_sizes``: ``d_k`` per layer, needed for ``row``. ``n_params`` defaults to the end
    of the last slice.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; known: {list(STRUCTURES)}")
    layer_slices = list(layer_slices)
    t = layer_slices[-1].stop if n_params is None else int(n_params)
    if structure == "full":
        return (BlockGroup(0, 1, t),)
    if structure == "layer":
        return tuple(BlockGroup(s.start, 1, s.stop - s.start) for s in layer_slices)
    if row_sizes is None or len(row_sizes) != len(layer_slices):
        raise ValueError("row structure needs the row size d_k of every layer")
    groups = []
    for k, (s, d) in enumerate(zip(layer_slices, row_sizes)):
        t_k = s.stop - s.start
        if d <= 0 or t_k % d:
            raise ValueError(f"layer {k} has {t_k} parameters, not a whole number of rows of {d}")
        groups.append(BlockGroup(s.start, t_k // d, int(d)))
    return tuple(groups)


def _check_cover(groups, n_params: int) -> None:
    position = 0
    for g in groups:
        if g.start != position:
            raise ValueError(f"blocks do not tile the parameter vector: gap or overlap at {position}")
        position = g.stop
    if position != n_params:
        raise ValueError(f"blocks cover {position} parameters, the model has {n_params}")


def split_blocks(v: np.ndarray, groups) -> list[np.ndarray]:
    """The flat vector ``v (t,)`` as one ``(n_blocks, size)`` array per group (views)."""
    return [g.split(v) for g in groups]


def join_blocks(parts, groups, n_params: int) -> np.ndarray:
    """Assemble a flat ``(t,)`` vector from per-block pieces, the inverse of `split_blocks`.

    ``parts[i]`` has shape ``(n_blocks, size)`` of ``groups[i]``; e.g. for row blocks,
    ``parts[k][j]`` is the step for row ``j`` of layer ``k`` and lands at
    ``layer_slices[k].start + j*d_k ... + d_k``.
    """
    out = np.zeros(n_params)
    for g, part in zip(groups, parts, strict=True):
        out[g.start:g.stop] = np.asarray(part, dtype=float).reshape(-1)
    return out


class BlockDiagonal:
    """A symmetric block-diagonal matrix: one ``(n_blocks, size, size)`` stack per group."""

    def __init__(self, groups, matrices, n_params: int):
        self.groups = tuple(groups)
        self.matrices = [np.asarray(m, dtype=float) for m in matrices]
        self.n_params = int(n_params)
        _check_cover(self.groups, self.n_params)
        for g, m in zip(self.groups, self.matrices, strict=True):
            if m.shape != (g.n_blocks, g.size, g.size):
                raise ValueError(f"block stack has shape {m.shape}, expected "
                                 f"{(g.n_blocks, g.size, g.size)}")

    @classmethod
    def from_curvature(cls, curvature, structure: str, layer_slices, n_params: int):
        """Wrap a model's ``curvature(..., structure=structure)`` (DESIGN.md §2 contract).

        ``row``: list of ``(s_k, d_k, d_k)``; ``layer``: list of ``(t_k, t_k)``;
        ``full``: ``(t, t)``.
        """
        if structure == "full":
            full = np.asarray(curvature, dtype=float)
            return cls(block_groups("full", layer_slices, n_params=n_params), [full[None]], n_params)
        if structure == "layer":
            stacks = [np.asarray(c, dtype=float)[None] for c in curvature]
            return cls(block_groups("layer", layer_slices, n_params=n_params), stacks, n_params)
        if structure == "row":
            stacks = [np.asarray(c, dtype=float) for c in curvature]
            sizes = [c.shape[-1] for c in stacks]
            return cls(block_groups("row", layer_slices, sizes, n_params), stacks, n_params)
        raise ValueError(f"unknown structure {structure!r}; known: {list(STRUCTURES)}")

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``B v`` with ``B`` the block-diagonal matrix."""
        parts = [np.einsum("mab,mb->ma", m, part)
                 for m, part in zip(self.matrices, split_blocks(v, self.groups))]
        return join_blocks(parts, self.groups, self.n_params)

    def to_dense(self) -> np.ndarray:
        """The ``(t, t)`` matrix (for tests and small problems)."""
        out = np.zeros((self.n_params, self.n_params))
        for g, m in zip(self.groups, self.matrices):
            for i in range(g.n_blocks):
                lo = g.start + i * g.size
                out[lo:lo + g.size, lo:lo + g.size] = m[i]
        return out

    def eigh(self) -> "BlockEigensystem":
        """Eigen-decomposition of every block (batched ``np.linalg.eigh`` per group)."""
        values, vectors = [], []
        for m in self.matrices:
            lam, q = np.linalg.eigh(0.5 * (m + np.swapaxes(m, -1, -2)))
            values.append(lam)
            vectors.append(q)
        return BlockEigensystem(self.groups, values, vectors, self.n_params)


class BlockEigensystem:
    """``B = blockdiag(Q_m diag(lambda_m) Q_m')``, with coordinates in the eigenbasis.

    ``to_coefficients(v)`` gives ``c = Q' v`` as a flat ``(t,)`` vector (group by group,
    block by block, eigenpair by eigenpair, each block's eigenvalues ascending) and
    ``from_coefficients(c)`` gives ``Q c`` back. ``Q`` is orthogonal, so norms are equal
    in both coordinates and a trust region can be solved in the eigenbasis.

    With positive eigenvalues it is a preconditioner (`dist_hess.train.subproblem.Preconditioner`):
    ``matvec(v) = B v`` and ``solve(r) = B^{-1} r``, block by block.
    """

    def __init__(self, groups, eigenvalues, eigenvectors, n_params: int):
        self.groups = tuple(groups)
        self.eigenvalue_blocks = [np.asarray(v, dtype=float) for v in eigenvalues]
        self.eigenvectors = [np.asarray(q, dtype=float) for q in eigenvectors]
        self.n_params = int(n_params)
        self._flat = np.concatenate([v.reshape(-1) for v in self.eigenvalue_blocks])

    @property
    def eigenvalues(self) -> np.ndarray:
        """All eigenvalues, flat ``(t,)``, in coefficient order."""
        return self._flat

    def with_eigenvalues(self, eigenvalue_blocks) -> "BlockEigensystem":
        """The same eigenvectors with modified eigenvalues (one ``(n_blocks, size)`` per group)."""
        return BlockEigensystem(self.groups, eigenvalue_blocks, self.eigenvectors, self.n_params)

    def to_coefficients(self, v: np.ndarray) -> np.ndarray:
        parts = [np.einsum("mae,ma->me", q, part)
                 for q, part in zip(self.eigenvectors, split_blocks(v, self.groups))]
        return join_blocks(parts, self.groups, self.n_params)

    def from_coefficients(self, c: np.ndarray) -> np.ndarray:
        parts = [np.einsum("mae,me->ma", q, part)
                 for q, part in zip(self.eigenvectors, split_blocks(c, self.groups))]
        return join_blocks(parts, self.groups, self.n_params)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``B v = Q diag(lambda) Q' v``."""
        return self.from_coefficients(self.eigenvalues * self.to_coefficients(v))

    def solve(self, r: np.ndarray) -> np.ndarray:
        """``B^{-1} r = Q diag(1/lambda) Q' r`` (every eigenvalue must be positive)."""
        return self.from_coefficients(self.to_coefficients(r) / self.eigenvalues)
