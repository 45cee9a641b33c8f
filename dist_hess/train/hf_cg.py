"""Conjugate gradients for the Hessian-free step (Martens 2010, §4; Martens & Sutskever 2012, §8).

Solves the damped Newton system ``(B + mu I) p = -g``, that is it minimises

    phi(p) = g'p + 1/2 p'(B + mu I) p,

by preconditioned CG with the three departures from textbook CG that make
Hessian-free optimisation work (Martens 2010, §4.5-4.7):

- **warm start**: the iteration starts from ``x0`` (the previous step, decayed), or from
  0 when ``phi(x0) >= 0``;
- **progress-based stopping**: after iteration ``i`` CG stops when ``phi_i < 0`` and
  ``(phi_i - phi_{i-k}) / phi_i < k * epsilon`` with ``k = max(10, i / 10)``
  (the relative decrease of ``phi`` over the last ``k`` iterations is too small to pay
  for more), or when the residual ``||(B + mu I) p + g|| <= tol`` (the forcing
  condition of inexact Newton, N&W eq. 7.3), or after ``max_iter`` products, or when a
  direction of non-positive curvature ``d'(B + mu I)d <= 0`` appears (possible only
  when ``B`` is the exact, indefinite Hessian): the current iterate is returned, and
  ``info["rayleigh"]`` holds ``d'(B + mu I)d / d'd <= 0`` for that direction (so the
  caller knows by how much ``mu`` fell short of making ``B + mu I`` positive definite);
- **saved iterates**: the iterates ``x_i`` at ``i = ceil(gamma^j)`` and the last one are
  returned with ``phi`` and the undamped model ``m(x) = g'x + 1/2 x'Bx = phi(x) -
  mu/2 ||x||^2``, so the caller can backtrack along them (Martens 2010, §4.6).

The preconditioner is a positive diagonal ``c`` (``M = diag(c)``; Martens uses
``c = (diag(B) + mu)^alpha``, ``alpha = 3/4``). All inner products are pairwise sums
(`numpy.add.reduce`), not BLAS, so the iterates do not depend on BLAS threading: the
same products give the same bits in any process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CGIterate", "CGResult", "hf_cg", "dot"]


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a'b`` by numpy's pairwise summation (independent of BLAS threads)."""
    return float(np.add.reduce(a * b))


@dataclass(frozen=True)
class CGIterate:
    """A saved CG iterate ``x`` after ``iteration`` products, with ``phi(x)`` and the undamped
    model ``m(x) = g'x + 1/2 x'Bx`` (``model``)."""

    iteration: int
    x: np.ndarray
    phi: float
    model: float


@dataclass
class CGResult:
    """``iterates`` saved in order (the last one is where CG stopped), why it stopped
    (``case``: ``progress`` | ``residual`` | ``max_iter`` | ``negative_curvature``), the
    number of products used and whether the warm start was taken."""

    iterates: list[CGIterate]
    case: str
    products: int
    warm_started: bool
    info: dict = field(default_factory=dict)

    @property
    def last(self) -> CGIterate:
        return self.iterates[-1]


def _save_points(gamma: float, max_iter: int) -> set[int]:
    points, j = set(), 0
    while True:
        i = math.ceil(gamma ** j)
        if i > max_iter:
            return points
        points.add(i)
        j += 1


def hf_cg(product, g: np.ndarray, damping: float, *, max_iter: int, tol: float = 0.0,
          preconditioner: np.ndarray | None = None, x0: np.ndarray | None = None,
          epsilon: float = 5e-4, min_iter: int = 1, gamma: float = 1.3) -> CGResult:
    """Minimise ``phi(p) = g'p + 1/2 p'(B + mu I)p`` by preconditioned CG (see the module docstring).

    ``product(v)`` is ``B v``; ``damping`` is ``mu >= 0``; ``preconditioner`` the positive
    diagonal ``c`` of ``M`` (``None``: ``M = I``); ``x0`` the warm start (``None``: 0).
    """
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    if isinstance(max_iter, bool) or int(max_iter) < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    g = np.asarray(g, dtype=float)
    c = np.ones_like(g) if preconditioner is None else np.asarray(preconditioner, dtype=float)
    if c.shape != g.shape or not np.all(c > 0):
        raise ValueError("the preconditioner must be a positive vector of the gradient's shape")
    save = _save_points(gamma, max_iter)
    products = 0

    def damped(v):
        nonlocal products
        products += 1
        return np.asarray(product(v), dtype=float) + damping * v

    x = np.zeros_like(g)
    r = g.copy()                                 # residual (B + mu I) x + g
    warm = False
    if x0 is not None and np.any(x0):
        x_try = np.asarray(x0, dtype=float)
        r_try = damped(x_try) + g
        if 0.5 * dot(x_try, r_try + g) < 0.0:   # phi(x0) < 0: better than the origin
            x, r, warm = x_try.copy(), r_try, True
    phi = 0.5 * dot(x, r + g)
    iterates = [CGIterate(0, x.copy(), phi, phi - 0.5 * damping * dot(x, x))] if warm else []
    history = [phi]
    y = r / c
    d = -y
    ry = dot(r, y)
    case, i, info = "max_iter", 0, {}
    if math.sqrt(dot(r, r)) <= tol:
        case = "residual"
    else:
        for i in range(1, int(max_iter) + 1):
            Ad = damped(d)
            curvature = dot(d, Ad)
            if not curvature > 0.0:
                case, i = "negative_curvature", i - 1
                info["rayleigh"] = curvature / dot(d, d)     # d'(B + mu I)d / d'd <= 0
                break
            alpha = ry / curvature
            x = x + alpha * d
            r = r + alpha * Ad
            phi = 0.5 * dot(x, r + g)
            history.append(phi)
            if i in save:
                iterates.append(CGIterate(i, x.copy(), phi, phi - 0.5 * damping * dot(x, x)))
            if math.sqrt(dot(r, r)) <= tol:
                case = "residual"
                break
            k = max(10, i // 10)
            if i >= max(k, min_iter) and phi < 0.0 and (phi - history[i - k]) / phi < k * epsilon:
                case = "progress"
                break
            y = r / c
            ry_next = dot(r, y)
            d = -y + (ry_next / ry) * d
            ry = ry_next
    if not iterates or iterates[-1].iteration != i:
        iterates.append(CGIterate(i, x.copy(), phi, phi - 0.5 * damping * dot(x, x)))
    return CGResult(iterates, case, products, warm, info)
