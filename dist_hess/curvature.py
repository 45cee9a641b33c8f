"""Curvature kinds and structures (DESIGN §2, *contract* names) and their checks.

* ``KINDS``: ``hessian`` (exact ``∇²E``), ``gauss_newton`` (generalised
  Gauss-Newton, positive semi-definite), ``lagrangian`` (the paper's eq. (10));
* ``HVP_KINDS``: the kinds with a curvature-vector product (forward-over-reverse,
  :mod:`dist_hess.engine.hvp`): ``hessian`` and ``gauss_newton``;
* ``STRUCTURES``: ``row`` (list over layers of ``(s_k, d_k, d_k)``), ``layer``
  (list of ``(t_k, t_k)``), ``full`` (``(t, t)``).

A leaf module: the model, the engine, the store, training and the command line
import these names from here.
"""
from __future__ import annotations

__all__ = ["KINDS", "HVP_KINDS", "STRUCTURES", "check_curvature", "check_hvp_kind"]

KINDS = ("hessian", "gauss_newton", "lagrangian")
HVP_KINDS = ("hessian", "gauss_newton")
STRUCTURES = ("row", "layer", "full")


def check_curvature(kind, structure) -> tuple[str, str]:
    """``(kind, structure)``, or a ``ValueError`` naming the unknown one."""
    if kind not in KINDS:
        raise ValueError(f"unknown curvature kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if structure not in STRUCTURES:
        raise ValueError(f"unknown curvature structure {structure!r}; "
                         f"known structures: {', '.join(STRUCTURES)}")
    return kind, structure


def check_hvp_kind(kind) -> str:
    """``kind`` if it has a curvature-vector product, else a ``ValueError``."""
    if kind not in HVP_KINDS:
        raise ValueError(f"hvp kind must be {' or '.join(repr(k) for k in HVP_KINDS)}, "
                         f"got {kind!r}")
    return kind
