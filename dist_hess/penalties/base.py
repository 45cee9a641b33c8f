"""The penalty protocol: one penalty kind as a function of one layer's weights.

The model's penalty is a sum of terms ``pen(W) = sum_k lambda_k phi(W^k)`` over the
layers a term applies to (:mod:`.terms`), so a kind states ``phi`` for **one layer
at lambda = 1**, and nothing couples two layers (DESIGN §1: the paper's block
structure across layers holds for the penalty term).  Each method gets the layer's
weight matrix ``W`` ``(s, d)`` (row ``j`` = unit ``j``, the model's layout) and
``mask`` ``(s, d)`` booleans, ``True`` on the entries ``phi`` sees: the penalised
parameters (``Propagation.penalty_mask``: all but the dense bias column) that are
not pruned.  Entries where ``mask`` is false must not enter ``phi``: their
gradient, Hessian rows and Taylor terms are zero.

==================  ==============================================  ==========================
method              what                                            returns
==================  ==============================================  ==========================
``value``           ``phi(W)``                                      float
``gradient``        ``d phi / dW``                                  ``(s, d)``
``hessian``         ``d2 phi / dW2`` over the layer's ``t_k = s d``  :class:`.LayerHessian` or
                    flat row-major parameters                       ``(t_k, t_k)`` array
``hvp``             ``d2 phi / dW2 [V]`` (optional)                 ``(s, d)``
``taylor``          ``c_0..c_p`` of ``phi(W + t V)`` (optional)     ``(p + 1,)``
``row_tensor``      ``d^p phi / dW_j^p`` for rows ``j`` (optional)  ``(R,) + (d,) * p`` or
                                                                    ``None`` (zero)
``gauss_newton``    the term's positive semi-definite curvature     like ``hessian``
                    (optional; see below)
==================  ==============================================  ==========================

Defaults: ``hvp`` from ``hessian``; ``taylor`` to order 2 from ``value``,
``gradient`` and ``hvp`` (a kind that is not quadratic gives ``taylor`` for
directional derivatives of order 3 and more); ``row_tensor`` to order 2 from
``gradient`` and ``hessian``.

**Gauss-Newton rule.** ``kind="gauss_newton"`` is documented positive
semi-definite, so it adds the projection of each term's layer Hessian onto the
positive semi-definite cone (negative eigenvalues set to zero): the Hessian itself
for a ``convex = True`` kind (l2, norm), ``max(phi'', 0)`` entry by entry for a
separable one whose Hessian is diagonal (weight elimination), and by default a
dense eigendecomposition otherwise.  ``hessian`` and ``lagrangian`` add the true
Hessian.  docs/theory.md states the rule.

A user kind subclasses :class:`Penalty`, sets ``type`` (its JSON name),
``extra_keys`` (its JSON options, passed to ``__init__`` as keywords, returned by
``options()``) and ``convex``, and registers itself with
:func:`dist_hess.penalties.register_penalty`; ``"lambda"`` and ``"layers"`` are
handled for every kind.  Worked example: docs/extending.md.
"""
from __future__ import annotations

import math

import numpy as np

from .hessian import LayerHessian, as_layer_hessian

__all__ = ["Penalty", "LayerHessian"]


class Penalty:
    """Base class of a penalty kind ``phi`` (one layer, lambda = 1).  Subclasses set ``type``."""

    type: str = ""
    #: JSON keys this kind accepts besides ``type``, ``lambda`` and ``layers``.
    extra_keys: tuple[str, ...] = ()
    #: True when ``phi`` is convex (its Hessian positive semi-definite everywhere):
    #: ``gauss_newton`` then adds the Hessian itself.
    convex: bool = False

    def __init__(self, **options):
        if options:
            raise ValueError(f"penalty type {self.type!r} takes no options {sorted(options)}")

    def options(self) -> dict:
        """The kind's JSON options (``extra_keys``) for ``to_dict``."""
        return {}

    # -- the function (a user implements these) ---------------------------------------
    def value(self, W, mask) -> float:
        raise NotImplementedError

    def gradient(self, W, mask) -> np.ndarray:
        raise NotImplementedError

    def hessian(self, W, mask):
        """:class:`LayerHessian` or a dense ``(t_k, t_k)`` array."""
        raise NotImplementedError

    # -- optional, with generic defaults ------------------------------------------------
    def hvp(self, W, mask, V) -> np.ndarray:
        return as_layer_hessian(self.hessian(W, mask), W.shape).matvec(V)

    def gauss_newton(self, W, mask) -> LayerHessian:
        """The PSD part of the Hessian: itself when ``convex``, else its projection."""
        H = as_layer_hessian(self.hessian(W, mask), W.shape)
        return H if self.convex else H.psd_part()

    def gauss_newton_hvp(self, W, mask, V) -> np.ndarray:
        if self.convex:
            return self.hvp(W, mask, V)
        return as_layer_hessian(self.gauss_newton(W, mask), W.shape).matvec(V)

    def taylor(self, W, mask, V, order: int) -> np.ndarray:
        """Taylor coefficients ``c_0..c_order`` of ``phi(W + t V)`` (``D^p = p! c_p``).

        The default knows orders 0, 1, 2 (``phi``, ``<phi', V>``, ``<V, phi'' V> / 2``).
        """
        if order > 2:
            raise NotImplementedError(
                f"penalty type {self.type!r} has no taylor(): directional derivatives of "
                f"order {order} > 2 need the Taylor coefficients of phi(W + t V)")
        terms = [self.value(W, mask)]
        if order >= 1:
            terms.append(float(np.sum(self.gradient(W, mask) * V)))
        if order >= 2:
            terms.append(0.5 * float(np.sum(V * self.hvp(W, mask, V))))
        return np.array(terms)

    def row_tensor(self, W, mask, rows, order: int):
        """``d^p phi / dW_j^p`` for each row ``j`` in ``rows``: ``(R,) + (d,) * p``, or ``None`` (zero).

        The default knows ``p = 1`` (gradient rows) and ``p = 2`` (row blocks of ``hessian``).
        """
        rows = np.asarray(rows, dtype=int)
        if order == 1:
            return self.gradient(W, mask)[rows]
        if order == 2:
            s, d = W.shape
            H = as_layer_hessian(self.hessian(W, mask), W.shape)
            return H.add_rows(np.zeros((s, d, d)))[rows]
        raise NotImplementedError(
            f"penalty type {self.type!r} has no row_tensor() of order {order}")

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"<{self.type} penalty{': ' + options if options else ''}>"


def factorial_scale(coefficients) -> np.ndarray:
    """Taylor coefficients ``c_p`` -> derivatives ``p! c_p``."""
    c = np.asarray(coefficients, dtype=float)
    return c * np.array([math.factorial(p) for p in range(len(c))], dtype=float)
