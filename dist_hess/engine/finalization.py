"""After the reduction: the penalty, added once, and the mask restriction.

Shards return sums over examples without the penalty (:mod:`.sums`);
:func:`finalize` turns the reduced sums into the derivatives of
``E(W) = sum_i g_i + pen(W)``:

* penalty (DESIGN §1, :mod:`dist_hess.penalties`): value ``pen(w)``, gradient
  ``pen'(w)``, its Hessian ``pen''`` (block diagonal over layers; its positive
  semi-definite part for ``gauss_newton``) on every curvature block, the same
  times ``v`` on every curvature-vector product, and its Taylor terms to the
  requested order on directional derivatives;
* mask (pruned weights held at zero, :attr:`dist_hess.Model.mask`): with
  ``P = diag(mask)`` the model's objective is ``E_m(w) = E(P w)``, so

      grad      = P grad E(P w)                    (pruned entries: 0)
      curvature = P B(P w) P + (I - P)             (pruned rows/columns: 0, diagonal 1)
      hvp(v)    = P B(P w) P v + (I - P) v

  The pruned entries are inert: nothing depends on them, their gradient is 0
  and their curvature row is ``e_q``, so a Newton step ``-(B + lambda I)^-1 g``
  leaves them where they are; the unit diagonal only keeps the matrices
  invertible (the analysis restricts to the free entries instead).  The shards
  already ran at ``P w`` with projected directions (:meth:`Request.projected`).

This is the only place either is applied.
"""
from __future__ import annotations

import numpy as np

from .request import Request

__all__ = ["finalize"]


def finalize(model, w, sums: dict, req: Request | None = None) -> dict:
    """Add the penalty (value, gradient, curvature, hvp, directional) once, then restrict to the mask.

    ``req`` (the :class:`Request` the shards ran) is needed when it asked for
    hvp or directional derivatives: their penalty terms depend on ``v``.
    """
    mask = model.mask
    if mask is None:
        return _add_penalty(model, w, sums, req)
    projected = None if req is None else req.projected(mask)
    out = _add_penalty(model, w * mask, sums, projected)
    return _restrict(model, out, req, mask)


def _add_penalty(model, w, sums, req):
    """The penalty's terms (:class:`dist_hess.penalties.PenaltySum`) added to every sum asked for."""
    out = dict(sums)
    pen = model.penalty
    if pen is None:
        return out
    if "value" in out:
        out["value"] = out["value"] + pen.value(model, w)
    if "gradient" in out:
        out["gradient"] = out["gradient"] + pen.gradient(model, w)
    for key, val in sums.items():
        if key.startswith("curvature/"):
            _, kind, structure = key.split("/")
            out[key] = pen.add_curvature(model, w, val, kind, structure)
    needs_req = any(key.startswith("hvp/") for key in sums) or "directional" in sums
    if needs_req and req is None:
        raise ValueError("finalize needs the Request for hvp or directional sums")
    for i, (kind, v) in enumerate(req.hvp if needs_req else ()):
        out[f"hvp/{i}"] = out[f"hvp/{i}"] + pen.hvp(model, w, v, kind)
    if "directional" in sums:
        v, order = req.directional
        out["directional"] = out["directional"] + pen.directional(model, w, v, order)
    return out


def _restrict(model, out, req, mask):
    """Masked derivatives: ``P grad``, ``P B P + (I - P)``, ``P B P v + (I - P) v``."""
    p = mask.astype(float)
    if "gradient" in out:
        out["gradient"] = out["gradient"] * p
    for key, val in list(out.items()):
        if key.startswith("curvature/"):
            out[key] = _restrict_curvature(model, val, mask, key.rsplit("/", 1)[1])
    for i, (_, v) in enumerate(req.hvp if req is not None else ()):
        out[f"hvp/{i}"] = p * out[f"hvp/{i}"] + (1.0 - p) * v
    return out


def _restrict_curvature(model, blocks, mask, structure):
    """``P B P + (I - P)`` for curvature ``blocks`` in ``structure`` (row | layer | full)."""
    p = mask.astype(float)
    if structure == "full":
        out = np.asarray(blocks) * np.outer(p, p)
        idx = np.flatnonzero(~mask)
        out[idx, idx] = 1.0
        return out
    result = []
    for blk, sl, (s, d) in zip(blocks, model.layer_slices, model.layer_shapes):
        if structure == "row":
            pr = p[sl].reshape(s, d)
            out = blk * pr[:, :, None] * pr[:, None, :]
            j, c = np.nonzero(pr == 0)
            out[j, c, c] = 1.0
        else:
            out = blk * np.outer(p[sl], p[sl])
            idx = np.flatnonzero(p[sl] == 0)
            out[idx, idx] = 1.0
        result.append(out)
    return result
