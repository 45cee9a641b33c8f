"""Truncated Taylor arithmetic (univariate, DESIGN §6).

A series ``f(t) = sum_p c_p t^p`` truncated after ``c_{P-1}`` is stored as an
array of coefficients; ``D^p f(0) = p! c_p``.  Two layouts:

* **last axis** (the public functions ``series_*``): the last axis holds
  ``c_0 .. c_{P-1}``, leading axes broadcast.  Layers and losses use these.
* **leading axis** (the ``*_leading`` kernels): axis 0 holds the coefficients,
  so each ``c_p`` is one contiguous block and a whole series of a dense layer
  goes through one matrix product.  A leading-axis series may be *short*:
  ``len(c) < P`` means the missing coefficients are zero (a constant has
  length 1, ``w + t v`` length 2); every kernel takes the truncation length
  ``P`` and returns the shortest exact result.  The engine's Taylor
  propagation (:mod:`dist_hess.engine.directional`) works in this layout.

A leaf module (numpy only): propagations, losses and the engine import it.

Recurrences (Griewank & Walther, *Evaluating Derivatives*, 2nd ed., §13.2):
``c = a b``: ``c_p = sum_q a_q b_{p-q}``;
``y = exp(a)``: ``p y_p = sum_{k=1..p} k a_k y_{p-k}``;
``y = log(a)``: ``p a_0 y_p = p a_p - sum_{k=1..p-1} k y_k a_{p-k}``;
``y = h(a)``: ``y = sum_q h^(q)(a_0)/q! (a - a_0)^q`` (Faa di Bruno by powers),
which is ``y_q = h^(q)(a_0)/q! a_1^q`` when ``a`` is linear in ``t``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["series_mul", "series_exp", "series_log", "series_compose",
           "mul_leading", "exp_leading", "log_leading", "compose_leading",
           "to_leading", "to_last"]


# --------------------------------------------------------------------------- layouts

def to_leading(a):
    """Last-axis series -> leading-axis series (a view)."""
    return np.moveaxis(np.asarray(a, dtype=float), -1, 0)


def to_last(c, P=None):
    """Leading-axis series (possibly short) -> last-axis series of length ``P`` (a new array)."""
    P = len(c) if P is None else P
    out = np.zeros(c.shape[1:] + (P,))
    out[..., : len(c)] = np.moveaxis(c, 0, -1)
    return out


# --------------------------------------------------------------------------- leading-axis kernels

def _scalar_coefficients(kernel):
    """Let a kernel written for array coefficients (``c[p]`` a view) take ``(P,)`` series."""
    @functools.wraps(kernel)
    def wrapped(*args, **kwargs):
        arrays = [i for i, x in enumerate(args) if isinstance(x, np.ndarray) and x.ndim == 1]
        if not arrays:
            return kernel(*args, **kwargs)
        args = [x[:, None] if i in arrays else x for i, x in enumerate(args)]
        if kwargs.get("value") is not None:
            kwargs["value"] = np.reshape(kwargs["value"], (1,))
        return kernel(*args, **kwargs)[:, 0]
    return wrapped


@_scalar_coefficients
def mul_leading(a, b, P):
    """Cauchy product ``c_p = sum_q a_q b_{p-q}``, truncated to ``P`` coefficients."""
    if len(a) < len(b):
        a, b = b, a
    L = min(len(a) + len(b) - 1, P)
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    out = np.zeros((L,) + shape)
    for q in range(min(len(b), L)):           # the shorter factor drives the loop
        n = min(len(a), L - q)
        out[q: q + n] += b[q] * a[:n]
    return out


def _weighted(a):
    """``[k a_k]`` for ``k = 1 .. len(a) - 1``."""
    k = np.arange(1, len(a), dtype=float).reshape((-1,) + (1,) * (a.ndim - 1))
    return k * a[1:]


def _dot(u, v, out=None):
    """``sum_k u_k v_k`` over the leading axis (elementwise in the others)."""
    return np.einsum("k...,k...->...", u, v, out=out)


@_scalar_coefficients
def exp_leading(a, P):
    """``y = exp(a)``: ``y_0 = exp(a_0)``, ``p y_p = sum_{k=1..p} k a_k y_{p-k}``."""
    L = P if len(a) > 1 else 1
    y = np.empty((L,) + a.shape[1:])
    np.exp(a[0], out=y[0])
    ka = _weighted(a[:L])
    for p in range(1, L):
        m = min(p, len(ka))
        _dot(ka[:m], y[p - m:p][::-1], out=y[p])
        y[p] *= 1.0 / p
    return y


@_scalar_coefficients
def log_leading(a, P):
    """``y = log(a)``: ``y_0 = log(a_0)``, ``p a_0 y_p = p a_p - sum_{k=1..p-1} k y_k a_{p-k}``."""
    L = P if len(a) > 1 else 1
    y = np.empty((L,) + a.shape[1:])
    y[0] = np.log(a[0])
    if L == 1:
        return y
    inv = 1.0 / a[0]
    for p in range(1, L):
        acc = a[p].copy() if p < len(a) else np.zeros(a.shape[1:])
        for k in range(max(1, p - len(a) + 1), p):
            acc -= (k / p) * (y[k] * a[p - k])
        np.multiply(acc, inv, out=y[p])
    return y


@_scalar_coefficients
def compose_leading(activation, a, P, value=None):
    """``h(a(t))`` for an elementwise activation; ``value`` = ``h(a_0)`` when already known.

    The result may share memory with ``a`` (identity).  Activations whose
    derivative is a polynomial of degree <= 2 in their value (``activation.ode``:
    ``h' = Q(h)``, tanh and logistic) use the recurrence of :func:`_ode_leading`; the others the
    derivatives ``h^(q)(a_0)`` (``activation.derivatives``) and powers of ``a - a_0``.
    """
    if getattr(activation, "name", None) == "identity":
        return a[:P]
    L = P if len(a) > 1 else 1
    if L == 1:
        return (_value(activation, a[0]) if value is None else value)[None]
    ode = getattr(activation, "ode", None)
    if ode is not None and len(ode) <= 3:
        y0 = _value(activation, a[0]) if value is None else value
        return _ode_leading(np.asarray(ode, dtype=float), a, y0, L)
    derivs = activation.derivatives(a[0], L - 1)
    y = np.empty((L,) + a.shape[1:])
    y[0] = derivs[0]
    if len(a) == 2:                           # linear in t: y_q = h^(q)/q! a_1^q
        power = a[1].copy()
        for q in range(1, L):
            if q > 1:
                power *= a[1]
            np.multiply(derivs[q], power, out=y[q])
            if q > 1:
                y[q] *= 1.0 / math.factorial(q)
        return y
    y[1:] = 0.0
    b = np.zeros((L - 1,) + a.shape[1:])      # coefficients 1.. of a - a_0
    b[: len(a) - 1] = a[1:L]
    power = b                                 # power[i] = coefficient q + i of (a - a_0)^q
    for q in range(1, L):
        if q > 1:                             # (a - a_0)^q = (a - a_0)^(q-1) (a - a_0), lowest term t^q
            nxt = np.zeros((L - q,) + b.shape[1:])
            for i in range(L - q):
                for m in range(min(i + 1, len(power))):
                    nxt[i] += power[m] * b[i - m]
            power = nxt
        y[q:] += (derivs[q] / math.factorial(q)) * power
    return y


def _value(activation, a):
    """``h(a)``: the activation's ``value`` method when it has one (no derivatives computed)."""
    value = getattr(activation, "value", None)
    return value(a) if callable(value) else activation.derivatives(a, 0)[0]


def _ode_leading(ode, a, y0, L):
    """``y = h(a)`` with ``h' = Q(h)``, ``Q(y) = c_0 + c_1 y + c_2 y^2`` (``ode = [c_0, c_1, c_2]``).

    With ``z = Q(y)``: ``p y_p = sum_{k=1..p} k a_k z_{p-k}`` and
    ``z_p = c_1 y_p + c_2 (y^2)_p`` (+ ``c_0`` at ``p = 0``), ``(y^2)_p = sum_i y_i y_{p-i}``
    (Griewank & Walther §13.2): ``O(p^2)`` products, no ``h^(q)`` needed.
    """
    c = np.zeros(3)
    c[: len(ode)] = ode
    shape = a.shape[1:]
    y = np.empty((L,) + shape)
    y[0] = y0
    z = np.empty((L - 1,) + shape)
    ka = _weighted(a[:L])
    for p in range(L - 1):
        zp = z[p]
        if c[2] != 0.0:
            _dot(y[: p + 1], y[p::-1], out=zp)
            zp *= c[2]
        else:
            zp[...] = 0.0
        if c[1] != 0.0:
            zp += c[1] * y[p]
        if p == 0 and c[0] != 0.0:
            zp += c[0]
        q = p + 1                             # coefficient q of y
        m = min(q, len(ka))
        _dot(ka[:m], z[q - m:q][::-1], out=y[q])
        y[q] *= 1.0 / q
    return y


# --------------------------------------------------------------------------- last-axis API

def series_mul(a, b):
    """Cauchy product truncated to the common length: ``c_p = sum_q a_q b_{p-q}``."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    P = a.shape[-1]
    return to_last(mul_leading(to_leading(a), to_leading(b), P), P)


def series_exp(a):
    """``y = exp(a)`` from ``y' = a' y``: ``p y_p = sum_{k=1..p} k a_k y_{p-k}``."""
    P = np.shape(a)[-1]
    return to_last(exp_leading(to_leading(a), P), P)


def series_log(a):
    """``y = log(a)`` from ``a y' = a'``: ``p a_0 y_p = p a_p - sum_{k=1..p-1} k y_k a_{p-k}``."""
    P = np.shape(a)[-1]
    return to_last(log_leading(to_leading(a), P), P)


def series_compose(activation, a):
    """``h(a(t))`` for an elementwise activation: ``sum_q h^(q)(a_0)/q! (a(t) - a_0)^q``."""
    P = np.shape(a)[-1]
    return to_last(compose_leading(activation, to_leading(a), P), P)
