"""Two shapes of Jacobian the engine contracts with.

Index letters: ``n`` example, ``j`` unit of this layer (``s`` of them), ``c`` a
row parameter (``d`` per row), ``r`` an input of the layer (its sources
concatenated), ``q`` a free direction index, ``T`` a flattened block index.

* Input Jacobians ``J[n, j, r] = dP_j/du_r``: :class:`SharedJacobian` when the
  same ``(s, r)`` matrix serves every example (dense layers: the weights),
  :class:`ExampleJacobian` otherwise.  ``apply`` and ``transpose_apply`` take the
  ``columns`` of ``u`` they act on (the backward passes carry no input columns).
* Parameter gradients ``G[n, j, c] = dP_j/dW_jc``: :class:`SharedParamGrad` when
  every unit sees the same features ``phi[n, c]`` (dense: ``z = [1, u]``;
  quadratic: monomials), :class:`UnitParamGrad` otherwise (rbf).
* Mixed second derivatives applied to input directions,
  ``M[n, j, c, q] = delta[n, j] sum_r d2P_j/dW_jc du_r D[n, r, q]``:
  :class:`SharedMixed` when ``d2P_j/dW_j du`` is the same for every unit
  (``dphi/du``, layers linear in their weights), :class:`UnitMixed` otherwise.

The shared forms turn every contraction into a BLAS-3 product over examples;
each form says so with its ``shared`` flag, and generic code asks the object
(``unit(j)``, ``layer_gram``...) rather than its class.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SharedJacobian", "ExampleJacobian", "SharedParamGrad", "UnitParamGrad",
           "SharedMixed", "UnitMixed", "weighted_gram"]


class SharedJacobian:
    """``J[n] = M`` for every example; ``M`` is ``(s, r)``."""

    def __init__(self, M):
        self.M = M

    def apply(self, du, columns=slice(None)):   # (n, r[columns]) -> (n, s)
        return du @ self.M[:, columns].T

    def apply_many(self, D):              # (n, r, q) -> (n, s, q)
        return np.matmul(self.M, D)

    def transpose_apply(self, delta, columns=slice(None)):   # (n, s) -> (n, r[columns])
        M = self.M[:, columns]
        if M.shape[0] == 1:               # one unit: an outer product, no GEMM
            return delta * M
        return delta @ M

    def sandwich(self, Q):                # (n, s, s) -> (n, r, r): J' Q J
        n, s, _ = Q.shape
        r = self.M.shape[1]
        QM = (Q.reshape(n * s, s) @ self.M).reshape(n, s, r)           # Q J
        return (QM.transpose(0, 2, 1).reshape(n * r, s) @ self.M).reshape(n, r, r)

    def sandwich_diag(self, Q):           # (n, s, s) -> (n, r): diag(J' Q J)
        n, s, _ = Q.shape
        QM = (Q.reshape(n * s, s) @ self.M).reshape(n, s, -1)
        return np.einsum("njr,jr->nr", QM, self.M)

    def right(self, C):                   # (n, q, s) -> (n, q, r): C J
        return np.matmul(C, self.M)


class ExampleJacobian:
    """A Jacobian per example: ``A`` is ``(n, s, r)``."""

    def __init__(self, A):
        self.A = A

    def apply(self, du, columns=slice(None)):
        return np.einsum("njr,nr->nj", self.A[:, :, columns], du)

    def apply_many(self, D):
        return np.matmul(self.A, D)

    def transpose_apply(self, delta, columns=slice(None)):
        return np.einsum("njr,nj->nr", self.A[:, :, columns], delta)

    def sandwich(self, Q):
        return np.matmul(np.matmul(self.A.transpose(0, 2, 1), Q), self.A)

    def sandwich_diag(self, Q):
        return np.einsum("njr,njr->nr", np.matmul(Q, self.A), self.A)

    def right(self, C):
        return np.matmul(C, self.A)


def weighted_gram(Z, q, out=None):
    """``sum_n q[n] z_n z_n'`` for ``Z`` ``(n, d)``, accumulated into ``out``: one GEMM over examples."""
    G = (Z * q[:, None]).T @ Z
    if out is None:
        return G
    out += G
    return out


def symmetrize_upper(U):
    """Fill the lower triangle of ``U`` (last two axes) from the upper one."""
    lower = np.tril(np.ones(U.shape[-2:], dtype=bool), -1)
    return np.where(lower, np.swapaxes(U, -1, -2), U)


class SharedParamGrad:
    """``G[n, j, c] = phi[n, c]`` for every unit ``j``; ``phi`` is ``(n, d)``."""

    shared = True

    def __init__(self, phi, s):
        self.phi = phi
        self.s = s

    def unit(self, j):                    # (n, d): G[:, j, :]
        return self.phi

    def gradient_sum(self, delta):        # (n, s) -> (s, d): sum_n delta_nj phi_n
        return delta.T @ self.phi

    def jvp(self, V):                     # (s, d) -> (n, s)
        return self.phi @ V.T

    def row_gram(self, q, out=None):
        """``sum_n q[n, j] phi_n phi_n'`` for each unit, added to ``out`` ``(s, d, d)``; upper triangles exact.

        Units go in groups, one GEMM ``phi' [q_j phi]_j`` per group (wide GEMMs for
        small ``d``); for large ``d`` the columns go in strips and each strip only
        meets the rows above it, so about ``(b+1)/(2b)`` of the flops of a full Gram.
        """
        phi = self.phi
        n, d = phi.shape
        if out is None:
            out = np.zeros((self.s, d, d))
        strips = max(1, d // 160)
        bounds = np.linspace(0, d, strips + 1).astype(int)
        width = int(np.max(np.diff(bounds)))
        group = int(max(1, min(self.s, (4 * 2**20) // max(n * width, 1))))
        for start in range(0, self.s, group):
            stop = min(self.s, start + group)
            g = stop - start
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                A = (q[:, start:stop, None] * phi[:, None, lo:hi]).reshape(n, g * (hi - lo))
                R = (phi[:, :hi].T @ A).reshape(hi, g, hi - lo)
                for i, j in enumerate(range(start, stop)):
                    out[j][:hi, lo:hi] += R[:, i, :]
        return out

    def layer_gram(self, Q, out):
        """``sum_n G_n' Q_n G_n`` added to the upper block triangle of ``out`` ``(s d, s d)``:
        per unit ``j`` one GEMM ``phi' [Q_jJ phi]_{J >= j}``."""
        phi = self.phi
        n, d = phi.shape
        for j in range(self.s):
            R = (Q[:, j, j:, None] * phi[:, None, :]).reshape(n, (self.s - j) * d)
            out[j * d:(j + 1) * d, j * d:] += phi.T @ R
        return out

    def row_diagonal(self, q):            # (n, s) -> (s, d): sum_n q[n, j] phi[n, c]^2
        """The diagonals of the row grams: ``diag(sum_n q[n, j] phi_n phi_n')`` per unit."""
        phi = self.phi
        return q.T @ (phi * phi)

    def left_expand(self, Q):             # (n, s, q) -> (n, s, d, q): Q[n,j,q] G[n,j,c]
        return Q[:, :, None, :] * self.phi[:, None, :, None]

    def right_contract(self, L):          # (n, T, s) -> (T, s, d): sum_n L[n,T,j] phi[n,c]
        n, T, s = L.shape
        return (L.reshape(n, T * s).T @ self.phi).reshape(T, s, -1)


class UnitParamGrad:
    """A gradient per example and unit: ``G`` is ``(n, s, d)``."""

    shared = False

    def __init__(self, G):
        self.G = G
        self.s = G.shape[1]

    def unit(self, j):
        return self.G[:, j, :]

    def gradient_sum(self, delta):
        return np.einsum("nj,njc->jc", delta, self.G)

    def jvp(self, V):
        return np.einsum("njc,jc->nj", self.G, V)

    def row_gram(self, q, out=None):
        blocks = np.einsum("nj,nja,njb->jab", q, self.G, self.G)
        if out is None:
            return blocks
        out += blocks
        return out

    def layer_gram(self, Q, out):
        """``sum_n G_n' Q_n G_n`` added to ``out`` ``(s d, s d)`` (every entry)."""
        out += np.einsum("njJ,nja,nJb->jaJb", Q, self.G, self.G).reshape(out.shape)
        return out

    def row_diagonal(self, q):
        return np.einsum("nj,njc->jc", q, self.G * self.G)

    def left_expand(self, Q):
        return Q[:, :, None, :] * self.G[:, :, :, None]

    def right_contract(self, L):
        return np.einsum("nTj,njc->Tjc", L, self.G)


class SharedMixed:
    """``M[n, j, c, q] = delta[n, j] F[n, c, q]``: the same ``F = dphi/du . D`` ``(n, d, q)`` for every unit."""

    shared = True

    def __init__(self, F, delta):
        self.F, self.delta = F, delta

    def unit(self, j):                    # (n, d, q)
        return self.delta[:, j, None, None] * self.F


class UnitMixed:
    """``M`` ``(n, s, d, q)`` as computed."""

    shared = False

    def __init__(self, M):
        self.M = M

    def unit(self, j):
        return self.M[:, j]
