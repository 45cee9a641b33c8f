"""Comparison and finite-difference helpers shared by the derivative tests."""
from __future__ import annotations

import numpy as np

TINY = 1e-300


def _as_blocks(x):
    if isinstance(x, (list, tuple)):
        return [np.asarray(b, dtype=np.float64) for b in x]
    return [np.asarray(x, dtype=np.float64)]


def assert_close(actual, expected, rtol=1e-10, *, scale=None, atol_factor=1e-12, what=""):
    """Norm-relative comparison, block by block.

    ``actual`` and ``expected`` are arrays or lists of arrays (a ``row`` or
    ``layer`` structure, the multipliers).  Each block must have the expected
    shape, be finite, and satisfy

        ||a_k - b_k|| <= rtol * ||b_k|| + atol_factor * S,

    where ``S = max(||b||, scale)`` over all blocks together: a floor for blocks
    that are (nearly) zero.  Pass ``scale`` when ``expected`` is itself zero
    (e.g. the Lagrangian of linear regression) to say what "small" means.
    """
    a_blocks, b_blocks = _as_blocks(actual), _as_blocks(expected)
    prefix = f"{what}: " if what else ""
    assert isinstance(actual, (list, tuple)) == isinstance(expected, (list, tuple)), (
        f"{prefix}got {type(actual).__name__}, expected {type(expected).__name__}"
    )
    assert len(a_blocks) == len(b_blocks), f"{prefix}{len(a_blocks)} blocks, expected {len(b_blocks)}"
    total = np.sqrt(sum(np.sum(b**2) for b in b_blocks))
    floor = atol_factor * max(total, scale or 0.0, TINY)
    for k, (a, b) in enumerate(zip(a_blocks, b_blocks)):
        where = f"{prefix}block {k}: " if len(b_blocks) > 1 else prefix
        assert a.shape == b.shape, f"{where}shape {a.shape}, expected {b.shape}"
        assert np.all(np.isfinite(a)), f"{where}non-finite entries"
        err, ref = np.linalg.norm(a - b), np.linalg.norm(b)
        bound = rtol * ref + floor
        assert err <= bound, f"{where}||actual - expected|| = {err:.3e} > {bound:.3e} (||expected|| = {ref:.3e})"


def directional_difference(f, w, v, h=1e-3):
    """``d/ds f(w + s v)`` at ``s = 0``: central differences, one Richardson step.

    Error ``O(h^4)`` plus rounding ``O(eps |f| / h)``; ``f`` returns a float or an array.
    """
    w, v = np.asarray(w, dtype=np.float64), np.asarray(v, dtype=np.float64)

    def central(step):
        return (np.asarray(f(w + step * v)) - np.asarray(f(w - step * v))) / (2.0 * step)

    coarse, fine = central(h), central(h / 2.0)
    return (4.0 * fine - coarse) / 3.0


def assert_symmetric(M, rtol=1e-12, what=""):
    M = np.asarray(M)
    err, ref = np.linalg.norm(M - np.swapaxes(M, -1, -2)), np.linalg.norm(M)
    assert err <= rtol * max(ref, TINY), f"{what}: asymmetry {err:.3e} vs norm {ref:.3e}"


def assert_psd(M, rtol=1e-10, what=""):
    """Smallest eigenvalue of the symmetric part ``>= -rtol * ||M||`` (batched)."""
    M = np.asarray(M)
    sym = 0.5 * (M + np.swapaxes(M, -1, -2))
    smallest = np.linalg.eigvalsh(sym).min() if sym.size else 0.0
    ref = np.linalg.norm(M)
    assert smallest >= -rtol * max(ref, TINY), f"{what}: eigenvalue {smallest:.3e} < 0 (norm {ref:.3e})"
