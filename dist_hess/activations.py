"""Activations ``h`` and their derivatives of any order (DESIGN §1).

An activation is applied elementwise: ``x = h(a)``.  The engine needs ``h``,
``h'`` and ``h''`` (seed eqs. (2), (8)-(10)); Taylor propagation (DESIGN §6)
needs ``h^(q)`` for every ``q`` up to the order asked.  An activation therefore
implements one method, :meth:`Activation.derivatives`, returning
``[h(a), h'(a), ..., h^(order)(a)]``.

Adding one::

    class Cube(Activation):
        name = "cube"
        def derivatives(self, a, order):
            out = [a**3, 3 * a**2, 6 * a, 6 * np.ones_like(a)]
            return (out + [np.zeros_like(a)] * order)[: order + 1]

    register_activation(Cube())

Several built-ins are polynomials in their own value (tanh: ``y' = 1 - y^2``,
logistic: ``y' = y (1 - y)``); their derivatives of every order come from
differentiating that polynomial repeatedly (``d/da P(y) = P'(y) y'``).
"""
from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial as P

__all__ = ["Activation", "get_activation", "register_activation", "ACTIVATIONS"]


class Activation:
    """Base class: ``derivatives(a, order)`` -> list of ``order + 1`` arrays shaped like ``a``."""

    name: str = ""
    #: True for ``h(a) = a`` (``h' = 1``, ``h'' = 0``): the engine then skips its products
    #: with ``h'`` and ``h''``.
    linear: bool = False

    def derivatives(self, a: np.ndarray, order: int) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, a):
        return self.derivatives(a, 0)[0]

    def __repr__(self):
        return f"<activation {self.name}>"


class _PolynomialInValue(Activation):
    """``h^(q)(a) = P_q(h(a))`` with ``P_{q+1} = P_q' * P_1`` (``P_1`` = the ODE of ``h``)."""

    ode: np.ndarray  # coefficients (low -> high) of h' as a polynomial in h

    def value(self, a):
        raise NotImplementedError

    def derivatives(self, a, order):
        y = self.value(a)
        out = [y]
        if order == 0:
            return out
        if order <= 2:                 # the engine's hot path: explicit, no polynomial evaluation
            out += self.first_two(y, order)
            return out
        poly = np.array([0.0, 1.0])  # P_0(y) = y
        for _ in range(order):
            poly = P.polymul(P.polyder(poly), self.ode)
            out.append(P.polyval(y, poly))
        return out


class Tanh(_PolynomialInValue):
    name = "tanh"
    ode = np.array([1.0, 0.0, -1.0])  # 1 - y^2

    def value(self, a):
        return np.tanh(a)

    def first_two(self, y, order=2):
        d1 = y * y
        np.subtract(1.0, d1, out=d1)             # 1 - y^2
        if order < 2:
            return [d1]
        d2 = y * d1
        d2 *= -2.0                               # -2 y (1 - y^2)
        return [d1, d2]


class Logistic(_PolynomialInValue):
    name = "logistic"
    ode = np.array([0.0, 1.0, -1.0])  # y - y^2

    def value(self, a):
        return _logistic(a)

    def first_two(self, y, order=2):
        d1 = y * (1.0 - y)
        return [d1] if order < 2 else [d1, d1 * (1.0 - 2.0 * y)]


def _logistic(a):
    # exp of a non-positive number only: no overflow for huge |a|.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(a):
    return np.maximum(a, 0.0) + np.log1p(np.exp(-np.abs(a)))


class Identity(Activation):
    name = "identity"
    linear = True

    def derivatives(self, a, order):
        out = [a]
        if order >= 1:              # np.ones/zeros of the shape: a third of *_like's set-up
            out.append(np.ones(a.shape, a.dtype))
        if order >= 2:
            out += [np.zeros(a.shape, a.dtype)] * (order - 1)
        return out


class Softplus(Activation):
    """``log(1 + e^a)``; its derivative is the logistic function."""

    name = "softplus"

    def derivatives(self, a, order):
        out = [_softplus(a)]
        if order >= 1:
            out += Logistic().derivatives(a, order - 1)
        return out


class Gaussian(Activation):
    """``exp(-a/2)``, the paper's RBF activation: ``h^(q) = (-1/2)^q h``."""

    name = "gaussian"

    def derivatives(self, a, order):
        y = np.exp(-0.5 * a)
        return [(-0.5) ** q * y for q in range(order + 1)]


class Relu(Activation):
    """``max(a, 0)``; ``h'`` is the step (0 at 0), every higher derivative is 0."""

    name = "relu"

    def derivatives(self, a, order):
        out = [np.maximum(a, 0.0)]
        if order >= 1:
            out.append((a > 0).astype(a.dtype))
        out += [np.zeros_like(a)] * (order - 1)
        return out


class Sin(Activation):
    name = "sin"

    def derivatives(self, a, order):
        s, c = np.sin(a), np.cos(a)
        cycle = (s, c, -s, -c)
        return [cycle[q % 4] for q in range(order + 1)]


ACTIVATIONS: dict[str, Activation] = {}


def register_activation(activation: Activation) -> Activation:
    """Register ``activation`` under ``activation.name`` (the JSON ``activation`` value)."""
    if not isinstance(activation, Activation):
        raise TypeError(f"expected an Activation instance, got {type(activation).__name__}")
    if not activation.name:
        raise ValueError("an activation needs a non-empty .name")
    ACTIVATIONS[activation.name] = activation
    return activation


def get_activation(name) -> Activation:
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; known activations: {sorted(ACTIVATIONS)}"
        ) from None


for _cls in (Identity, Tanh, Logistic, Softplus, Gaussian, Relu, Sin):
    register_activation(_cls())
