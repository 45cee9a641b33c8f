"""Eigenvalues of the curvature: every row and layer block, and the full matrix.

Row and layer blocks are small enough to diagonalise (``eigvalsh``) whatever
the network.  The full ``t x t`` matrix is diagonalised when it is stored or
``t <= max_dense``; otherwise its ``k`` largest and ``k`` smallest eigenvalues
come from Lanczos (``scipy.sparse.linalg.eigsh``, ARPACK's implicitly
restarted Lanczos) on a ``LinearOperator`` whose product is the exact
Hessian-vector product ``model.hvp`` (Pearlmutter's R-operator, two gradients'
cost, docs/theory.md): the matrix is never formed.

For every block: the condition number ``max|lambda| / min|lambda|`` (``inf``
when singular) and the number of negative eigenvalues, the saddle diagnostic:
a minimum has none.  With Lanczos only the ``k`` smallest eigenvalues are
known, so the negative count is a lower bound (``negative_exact=False``).
Pruned parameters are left out: the spectra are those of the free block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from ..curvature import HVP_KINDS, STRUCTURES
from ..jsonio import dump_json
from ..memory import check_allocation, fits
from .covariance import block_indices, hessian_blocks
from .source import resolve

__all__ = ["Spectra", "LayerSpectrum", "FullSpectrum", "spectra", "lanczos_extremes",
           "condition_number"]


def condition_number(eigenvalues) -> float:
    """``max|lambda| / min|lambda|``; ``inf`` for a singular matrix, ``nan`` for an empty one."""
    a = np.abs(np.asarray(eigenvalues, dtype=float))
    if a.size == 0:
        return math.nan
    lo = float(a.min())
    return math.inf if lo <= np.finfo(float).tiny * max(float(a.max()), 1.0) else float(a.max()) / lo


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class LayerSpectrum:
    """Layer ``k``: eigenvalues of each row block (a list over units, ascending) and of
    the layer block (ascending), with condition numbers and negative counts."""

    layer: int
    row_eigenvalues: list | None = None
    layer_eigenvalues: np.ndarray | None = None

    @property
    def row_condition(self) -> list:
        return [condition_number(e) for e in self.row_eigenvalues or []]

    @property
    def row_negative(self) -> list:
        return [int(np.sum(e < 0)) for e in self.row_eigenvalues or []]

    @property
    def layer_condition(self) -> float | None:
        return None if self.layer_eigenvalues is None else condition_number(self.layer_eigenvalues)

    @property
    def layer_negative(self) -> int | None:
        return None if self.layer_eigenvalues is None else int(np.sum(self.layer_eigenvalues < 0))

    def to_dict(self) -> dict:
        d = {"layer": self.layer}
        if self.row_eigenvalues is not None:
            d["row_eigenvalues"] = [[float(x) for x in e] for e in self.row_eigenvalues]
            d["row_condition"] = [_finite(c) for c in self.row_condition]
            d["row_negative"] = self.row_negative
        if self.layer_eigenvalues is not None:
            d["layer_eigenvalues"] = [float(x) for x in self.layer_eigenvalues]
            d["layer_condition"] = _finite(self.layer_condition)
            d["layer_negative"] = self.layer_negative
        return d


@dataclass
class FullSpectrum:
    """The full matrix: all eigenvalues (``method="dense"``) or the ``k`` largest
    (``top``, descending) and smallest (``bottom``, ascending) by ``"lanczos"``."""

    method: str
    top: np.ndarray
    bottom: np.ndarray
    eigenvalues: np.ndarray | None = None
    n: int = 0

    @property
    def condition(self) -> float:
        if self.eigenvalues is not None:
            return condition_number(self.eigenvalues)
        # Lanczos: |lambda| extremes are among top/bottom unless the spectrum straddles 0.
        known = np.concatenate([self.top, self.bottom])
        if np.any(known < 0) and np.any(known > 0):
            return math.nan            # min |lambda| lies inside the unknown part
        return condition_number(known)

    @property
    def n_negative(self) -> int:
        e = self.eigenvalues if self.eigenvalues is not None else self.bottom
        return int(np.sum(e < 0))

    @property
    def negative_exact(self) -> bool:
        return self.eigenvalues is not None or bool(np.any(self.bottom >= 0))

    def to_dict(self) -> dict:
        d = {"method": self.method, "n": int(self.n), "top": [float(x) for x in self.top],
             "bottom": [float(x) for x in self.bottom], "condition": _finite(self.condition),
             "n_negative": self.n_negative, "negative_exact": self.negative_exact}
        if self.eigenvalues is not None:
            d["eigenvalues"] = [float(x) for x in self.eigenvalues]
        return d


@dataclass
class Spectra:
    """What :func:`spectra` returns: ``layers`` (a :class:`LayerSpectrum` per layer),
    ``full`` (a :class:`FullSpectrum` or ``None``), ``kind``, and ``notes`` on what
    could not be computed."""

    kind: str
    layers: list
    full: FullSpectrum | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layers": [s.to_dict() for s in self.layers],
                "full": None if self.full is None else self.full.to_dict(), "notes": self.notes}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def summary_rows(self) -> list[dict]:
        """One dict per block family: min/max eigenvalue, condition, negative count."""
        rows = []
        for s in self.layers:
            if s.row_eigenvalues:
                allrows = np.concatenate(s.row_eigenvalues)
                rows.append({"block": f"layer {s.layer} rows ({len(s.row_eigenvalues)})",
                             "min": float(allrows.min()), "max": float(allrows.max()),
                             "condition": max(s.row_condition),
                             "negative": int(sum(s.row_negative))})
            if s.layer_eigenvalues is not None and s.layer_eigenvalues.size:
                e = s.layer_eigenvalues
                rows.append({"block": f"layer {s.layer}", "min": float(e[0]), "max": float(e[-1]),
                             "condition": s.layer_condition, "negative": s.layer_negative})
        if self.full is not None:
            f = self.full
            lo = float(f.bottom[0]) if f.bottom.size else math.nan
            hi = float(f.top[0]) if f.top.size else math.nan
            rows.append({"block": f"full ({f.method})", "min": lo, "max": hi,
                         "condition": f.condition,
                         "negative": f.n_negative if f.negative_exact else f">= {f.n_negative}"})
        return rows

    def to_text(self) -> str:
        lines = [f"{'block':<24} {'min eig':>12} {'max eig':>12} {'condition':>11} {'negative':>9}"]
        for r in self.summary_rows():
            lines.append(f"{r['block']:<24} {r['min']:>12.4g} {r['max']:>12.4g} "
                         f"{r['condition']:>11.3g} {str(r['negative']):>9}")
        return "\n".join(lines + self.notes)


def lanczos_extremes(matvec, n: int, k: int = 6, *, tol: float = 0.0, maxiter: int | None = None,
                     seed: int = 0):
    """``(top, bottom)``: the ``k`` largest (descending) and smallest (ascending)
    eigenvalues of the symmetric operator ``v -> matvec(v)`` of size ``n``, by Lanczos."""
    if n <= 0:
        return np.zeros(0), np.zeros(0)
    op = LinearOperator((n, n), matvec=lambda v: matvec(np.asarray(v, dtype=float).ravel()),
                        dtype=float)
    k = int(min(k, n - 1))
    if k < 1:
        value = float(np.asarray(matvec(np.ones(n)))[0])
        return np.array([value]), np.array([value])
    v0 = np.random.default_rng(seed).normal(size=n)
    top = eigsh(op, k=k, which="LA", return_eigenvectors=False, tol=tol, maxiter=maxiter, v0=v0)
    bottom = eigsh(op, k=k, which="SA", return_eigenvectors=False, tol=tol, maxiter=maxiter, v0=v0)
    return np.sort(top)[::-1], np.sort(bottom)


def spectra(source, *, kind: str = "hessian", structures=STRUCTURES, k: int = 6,
            max_dense: int = 2000, data=None, client=None, save: bool = False,
            lanczos_tol: float = 0.0) -> Spectra:
    """Eigenvalues of every row and layer block and of the full curvature ``kind``.

    ``source``: a store path, an open store or ``(model, w, X, Y)``. Stored
    curvature is read; missing curvature is computed from the data (``data=(X, Y)``
    for a store) or, without data, skipped with a note. The full matrix is
    diagonalised when stored or when ``t <= max_dense``; else its ``k`` extreme
    eigenvalues come from Lanczos on Hessian-vector products (needs the data).
    """
    fitted = resolve(source, data=data, client=client, save=save)
    model, free = fitted.model, fitted.free
    structures = tuple(structures)
    out = Spectra(kind=kind, layers=[LayerSpectrum(layer=k_) for k_ in
                                     range(1, len(model.layers) + 1)])
    for structure in ("row", "layer"):
        if structure not in structures:
            continue
        try:
            blocks = fitted.curvature(kind, structure)
        except LookupError as err:
            out.notes.append(f"{structure} blocks skipped: {err}")
            continue
        for k_ in range(1, len(model.layers) + 1):
            index = block_indices(_one_layer(model, k_), free, structure)
            sub = hessian_blocks(model, blocks, structure, index)
            eig = [np.linalg.eigvalsh(0.5 * (H + H.T)) for H in sub]
            if structure == "row":
                out.layers[k_ - 1].row_eigenvalues = eig
            else:
                out.layers[k_ - 1].layer_eigenvalues = eig[0] if eig else np.zeros(0)
    if "full" in structures:
        out.full = _full(fitted, kind, k, max_dense, lanczos_tol, out.notes)
    return out


class _one_layer:
    """A view of ``model`` whose layout lists layer ``k`` only (for :func:`block_indices`)."""

    def __init__(self, model, k):
        self.layer_slices = [model.layer_slices[k - 1]]
        self.layer_shapes = [model.layer_shapes[k - 1]]


#: Copies of the full matrix the dense path holds at once (as read, the free block, its
#: symmetrised copy and the temporary of the sum, ``eigvalsh``'s workspace).
DENSE_COPIES = 5


def _full(fitted, kind, k, max_dense, tol, notes):
    model, free = fitted.model, fitted.free
    index = np.flatnonzero(free)
    t = index.size
    dense_ok = "full" in fitted.available(kind) or (t <= max_dense and fitted.has_data)
    dense_bytes = DENSE_COPIES * 8 * model.n_params ** 2
    if dense_ok and not fits(dense_bytes):
        if fitted.has_data and kind in HVP_KINDS:    # the matrix is never formed
            notes.append("full spectrum by Lanczos on Hessian-vector products: the dense "
                         "matrix would exceed the memory limit (dist_hess.memory)")
            dense_ok = False
        else:
            check_allocation(dense_bytes, f"the dense spectrum of the full {t:,} x {t:,} {kind}"
                             f" ({DENSE_COPIES} copies)",
                             ("pass data=(X, Y): Lanczos on Hessian-vector products",
                              "structures=('row', 'layer')"))
    if dense_ok:
        H = np.asarray(fitted.curvature(kind, "full"))[np.ix_(index, index)]
        if t <= max(max_dense, 1):
            e = np.linalg.eigvalsh(0.5 * (H + H.T))
            kk = min(k, t)
            return FullSpectrum("dense", e[::-1][:kk].copy(), e[:kk].copy(), eigenvalues=e, n=t)
        top, bottom = lanczos_extremes(lambda v: H @ v, t, k, tol=tol)
        return FullSpectrum("lanczos", top, bottom, n=t)
    if not fitted.has_data:
        notes.append("full spectrum skipped: no full curvature stored and no data for "
                     "Hessian-vector products (pass data=(X, Y))")
        return None
    if kind not in HVP_KINDS:
        notes.append(f"full spectrum skipped: no curvature-vector product for kind {kind!r}")
        return None

    def matvec(v):
        full = np.zeros(model.n_params)
        full[index] = v
        return fitted.hvp(full, kind=kind)[index]

    top, bottom = lanczos_extremes(matvec, t, k, tol=tol)
    return FullSpectrum("lanczos", top, bottom, n=t)
