"""The propagation protocol (DESIGN §1, seed §2.1): ``a^k = P^k(u; W^k)``.

A propagation maps the layer's input ``u`` (its sources' outputs concatenated,
``(n, r)``) and its weight matrix ``W`` (``(s, d)``: row ``j`` holds unit ``j``'s
``d`` parameters and only unit ``j`` reads it) to pre-activations ``a``
``(n, s)``.  Everything the engine computes (gradients, multipliers, row, layer
and full curvature blocks, Hessian-vector products) is built from five
per-example tensors:

==================  ===================================  ==================
method              tensor                               shape
==================  ===================================  ==================
``value``           ``a_j = P_j(u; W_j)``                ``(n, s)``
``param_grad``      ``dP_j/dW_jc``                       ``(n, s, d)``
``input_jac``       ``dP_j/du_r``                        ``(n, s, r)``
``param_hess``      ``d2P_j/dW_jc dW_jc'`` or ``None``   ``(n, s, d, d)``
``input_hess``      ``d2P_j/du_r du_r'`` or ``None``     ``(n, s, r, r)``
``mixed_hess``      ``d2P_j/dW_jc du_r`` or ``None``     ``(n, s, d, r)``
==================  ===================================  ==================

``None`` means identically zero.  A user-defined propagation subclasses
:class:`Propagation`, implements those methods, and registers itself with
:func:`dist_hess.layers.register_layer`; the contractions below have generic
defaults built from the tensors.  Built-in layers override the contractions
(BLAS-3, no per-example tensor) and return the shared Jacobian forms of
:mod:`dist_hess.layers.jacobians`.

Everything generic code needs to know about a layer type is asked of its
propagation (never of its class): the layout (``n_row_params``,
``penalty_mask``, ``column_labels``, ``input_columns``), whether it is linear in
its weights (``linear_in_weights``: ``a_j = W_j . phi(u)``, see
:mod:`.features`), the Jacobian forms (``param_grad_op``, ``input_jac_op``,
``mixed_apply_op``) and the Taylor mode (``taylor``, ``taylor_leading``).

Minimal example (a "scaled dot product" unit ``a_j = exp(W_j0) * (W_j1: . u)``)
is in ``docs/extending.md`` and ``tests/test_extending.py``.
"""
from __future__ import annotations

import numpy as np

from ..taylor import to_last, to_leading
from .jacobians import ExampleJacobian, UnitMixed, UnitParamGrad

__all__ = ["Propagation"]


class Propagation:
    """Base class of a layer's propagation.  Subclasses set ``type`` (the JSON name)."""

    type: str = ""
    #: JSON keys this propagation accepts besides type/units/activation/sources.
    extra_keys: tuple[str, ...] = ()
    #: True when every propagation reads exactly one source.
    single_source: bool = False
    #: True for ``a_j = W_j . phi(u)`` (:class:`dist_hess.layers.features.FeatureLayer`):
    #: ``d2P/dW2 = 0``, ``features(u)`` gives ``phi``; row tensors of any order need it.
    linear_in_weights: bool = False

    def __init__(self, units: int, n_inputs: int, **options):
        self.units = int(units)
        self.n_inputs = int(n_inputs)
        if options:
            raise ValueError(f"layer type {self.type!r} takes no options {sorted(options)}")

    # -- layout -------------------------------------------------------------
    @property
    def n_row_params(self) -> int:
        """``d``: parameters per unit (row of ``W``)."""
        raise NotImplementedError

    def options(self) -> dict:
        """Extra JSON keys (beyond type/units/activation/sources) for ``to_dict``."""
        return {}

    def penalty_mask(self) -> np.ndarray:
        """``(d,)`` booleans: which row parameters the penalties see (all by default)."""
        return np.ones(self.n_row_params, dtype=bool)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Initial ``(s, d)`` weights."""
        return rng.normal(scale=1.0 / np.sqrt(max(self.n_row_params, 1)),
                          size=(self.units, self.n_row_params))

    def column_labels(self, inputs: list[str]) -> list[str]:
        """What each of the ``d`` row parameters is, given the labels of the ``r`` inputs
        (parameter names in tables: ``dist_hess.analysis.groups``)."""
        return [f"w{c}" for c in range(self.n_row_params)]

    def input_columns(self, r: int) -> list[int] | None:
        """Row columns whose weights multiply input ``r`` (all zero: the unit ignores it),
        or ``None`` when the input does not enter through weights that can be zero."""
        return None

    # -- the tensors (a user implements these) -------------------------------
    def value(self, W, u):
        raise NotImplementedError

    def param_grad(self, W, u):
        """``(n, s, d)`` array, or a :mod:`jacobians` object."""
        raise NotImplementedError

    def input_jac(self, W, u):
        """``(n, s, r)`` array, or a :mod:`jacobians` object."""
        raise NotImplementedError

    def param_hess(self, W, u):
        return None

    def input_hess(self, W, u):
        return None

    def mixed_hess(self, W, u):
        return None

    # -- wrapped forms the engine uses ----------------------------------------
    def param_grad_op(self, W, u):
        G = self.param_grad(W, u)
        return UnitParamGrad(G) if isinstance(G, np.ndarray) else G

    def input_jac_op(self, W, u):
        J = self.input_jac(W, u)
        return ExampleJacobian(J) if isinstance(J, np.ndarray) else J

    def mixed_apply_op(self, W, u, delta, D):
        """:meth:`mixed_apply` as a :mod:`jacobians` object (per unit: ``(n, d, q)``), or ``None``."""
        M = self.mixed_apply(W, u, delta, D)
        return None if M is None else UnitMixed(M)

    # -- second-order contractions (generic defaults from the tensors) --------
    def param_hess_sum(self, W, u, delta):
        """``sum_n delta[n, j] d2P_j/dW_j^2``: ``(s, d, d)``, or ``None`` when zero."""
        H = self.param_hess(W, u)
        return None if H is None else np.einsum("nj,njab->jab", delta, H)

    def param_hess_vp(self, W, u, delta, V):
        """``sum_n delta[n, j] d2P_j/dW_j^2 V_j``: ``(s, d)``, or ``None``."""
        H = self.param_hess(W, u)
        return None if H is None else np.einsum("nj,njab,jb->ja", delta, H, V)

    def input_hess_sum(self, W, u, delta):
        """``sum_j delta[n, j] d2P_j/du^2``: ``(n, r, r)``, or ``None``."""
        H = self.input_hess(W, u)
        return None if H is None else np.einsum("nj,njab->nab", delta, H)

    def input_hess_vp(self, W, u, delta, du):
        """``sum_j delta[n, j] d2P_j/du^2 du[n]``: ``(n, r)``, or ``None``."""
        H = self.input_hess(W, u)
        return None if H is None else np.einsum("nj,njab,nb->na", delta, H, du)

    def mixed_apply(self, W, u, delta, D):
        """``delta[n, j] sum_r d2P_j/dW_jc du_r D[n, r, q]``: ``(n, s, d, q)``, or ``None``."""
        H = self.mixed_hess(W, u)
        return None if H is None else np.einsum("nj,njcr,nrq->njcq", delta, H, D)

    def mixed_apply_sum(self, W, u, delta, du):
        """``sum_n delta[n, j] sum_r d2P_j/dW_jc du_r du[n, r]``: ``(s, d)``, or ``None``."""
        M = self.mixed_apply(W, u, delta, du[:, :, None])
        return None if M is None else M[..., 0].sum(axis=0)

    def mixed_transpose_apply(self, W, u, delta, V):
        """``sum_{j,c} delta[n, j] d2P_j/dW_jc du_r V[j, c]``: ``(n, r)``, or ``None``."""
        H = self.mixed_hess(W, u)
        return None if H is None else np.einsum("nj,njcr,jc->nr", delta, H, V)

    # -- the same on the columns of ``u`` that move (curvature-vector products) --
    def mixed_apply_sum_columns(self, W, u, delta, du, columns):
        """:meth:`mixed_apply_sum` for a tangent ``du`` ``(n, r[columns])`` of the columns
        ``columns`` of ``u`` (zero in the others): ``(s, d)``, or ``None``."""
        return self.mixed_apply_sum(W, u, delta, full_width(du, columns, u.shape[1]))

    def mixed_transpose_apply_columns(self, W, u, delta, V, columns):
        """Columns ``columns`` of :meth:`mixed_transpose_apply`: ``(n, r[columns])``, or ``None``."""
        M = self.mixed_transpose_apply(W, u, delta, V)
        return None if M is None else M[:, columns]

    def input_hess_vp_columns(self, W, u, delta, du, columns):
        """Columns ``columns`` of :meth:`input_hess_vp` for a tangent ``du`` of those
        columns (zero in the others): ``(n, r[columns])``, or ``None``."""
        M = self.input_hess_vp(W, u, delta, full_width(du, columns, u.shape[1]))
        return None if M is None else M[:, columns]

    # -- Taylor mode (DESIGN §6) ---------------------------------------------
    def taylor(self, W, V, u_series):
        """Taylor coefficients of ``P(u(t); W + t V)``: ``u_series`` ``(n, r, p+1)`` -> ``(n, s, p+1)``."""
        raise NotImplementedError(f"layer type {self.type!r} has no Taylor propagation")

    def taylor_leading(self, W, V, u, P, a0=None):
        """:meth:`taylor` in the leading-axis layout of :mod:`dist_hess.taylor`:
        ``u`` ``(L, n, r)`` (possibly short) -> ``(L', n, s)``; ``V=None`` holds the weights
        fixed; ``a0`` is ``P(u_0; W)`` when already known (the default ignores it)."""
        if V is None:
            V = np.zeros_like(W)
        return to_leading(self.taylor(W, V, to_last(u, P)))

    def __repr__(self):
        return f"<{self.type} layer: {self.units} units, {self.n_inputs} inputs>"


def full_width(du, columns, r):
    """``du`` ``(n, r[columns])`` as an ``(n, r)`` tangent of ``u``, zero outside ``columns``."""
    if du.shape[1] == r:
        return du
    full = np.zeros((du.shape[0], r))
    full[:, columns] = du
    return full
