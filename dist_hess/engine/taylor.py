"""Truncated Taylor arithmetic (univariate, DESIGN §6).

A series is an array whose last axis holds coefficients ``c_0 .. c_P`` of
``f(t) = sum_p c_p t^p``; leading axes broadcast.  ``D^p f(0) = p! c_p``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["series_mul", "series_exp", "series_log", "series_compose"]


def series_mul(a, b):
    """Cauchy product truncated to the common length: ``c_p = sum_q a_q b_{p-q}``."""
    a, b = np.broadcast_arrays(a, b)
    P = a.shape[-1]
    out = np.zeros(a.shape)
    for p in range(P):
        out[..., p] = np.einsum("...q,...q->...", a[..., : p + 1], b[..., p::-1])
    return out


def series_exp(a):
    """``y = exp(a)`` from ``y' = a' y``: ``p y_p = sum_{k=1..p} k a_k y_{p-k}``."""
    P = a.shape[-1]
    y = np.zeros(a.shape)
    y[..., 0] = np.exp(a[..., 0])
    for p in range(1, P):
        k = np.arange(1, p + 1)
        y[..., p] = np.einsum("...k,k,...k->...", a[..., 1: p + 1], k, y[..., p - 1:: -1][..., :p]) / p
    return y


def series_log(a):
    """``y = log(a)`` from ``a y' = a'``: ``p a_0 y_p = p a_p - sum_{k=1..p-1} k y_k a_{p-k}``."""
    P = a.shape[-1]
    y = np.zeros(a.shape)
    y[..., 0] = np.log(a[..., 0])
    for p in range(1, P):
        acc = p * a[..., p]
        for k in range(1, p):
            acc = acc - k * y[..., k] * a[..., p - k]
        y[..., p] = acc / (p * a[..., 0])
    return y


def series_compose(activation, a):
    """``h(a(t))`` for an elementwise activation: ``sum_q h^(q)(a_0)/q! (a(t) - a_0)^q``."""
    P = a.shape[-1]
    derivs = activation.derivatives(a[..., 0], P - 1)
    b = a.copy()
    b[..., 0] = 0.0
    out = np.zeros(a.shape)
    out[..., 0] = derivs[0]
    power = None
    for q in range(1, P):
        power = b if power is None else series_mul(power, b)
        out += (derivs[q] / math.factorial(q))[..., None] * power
    return out
