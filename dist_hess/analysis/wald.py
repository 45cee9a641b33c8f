"""Wald tests of weights: ``dh.wald_table`` (DESIGN §3) and joint chi-square tests.

For parameter ``q`` with estimate ``w_q`` and standard error
``se_q = sqrt(Sigma_qq)`` (:mod:`.covariance`):

    z_q = w_q / se_q,      p_q = 2 Phi(-|z_q|)                 (two-sided)

and for a group ``G`` of parameters (all weights of an input, a unit, a layer):

    W = w_G' (Sigma_GG)^+ w_G  ~  chi2(rank Sigma_GG)   under  w_G = 0.

The asymptotics are those of M-estimators (the Hessian estimates the
information matrix, seed §5); a non-identifiable parameter (hidden-unit
symmetries, dead units) has no such distribution, and is flagged.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ..jsonio import dump_json
from .covariance import RCOND, residual_df
from .covariance import covariance as compute_covariance
from .groups import parameter_names, parse_group
from .source import resolve

__all__ = ["WaldTable", "JointWald", "wald_table", "joint_wald", "stars"]


def stars(p) -> str:
    """R's significance codes: ``***`` < 0.001 < ``**`` < 0.01 < ``*`` < 0.05 < ``.`` < 0.1."""
    if p is None or not np.isfinite(p):
        return ""
    for limit, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < limit:
            return mark
    return ""


def _json_number(x):
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class JointWald:
    """A joint Wald test of ``w[indices] = 0``: ``statistic ~ chi2(df)``."""

    name: str
    indices: np.ndarray
    statistic: float
    df: int
    p_value: float

    def to_dict(self) -> dict:
        return {"name": self.name, "indices": [int(i) for i in self.indices],
                "statistic": _json_number(self.statistic), "df": int(self.df),
                "p_value": _json_number(self.p_value)}

    def __str__(self):
        return (f"Wald test of {self.name}: chi2 = {self.statistic:.4g} on {self.df} df, "
                f"p = {self.p_value:.4g} {stars(self.p_value)}")


@dataclass
class WaldTable:
    """One row per parameter, in the contract's flat order.

    ``estimate``, ``std_error``, ``z``, ``p_value`` (floats; ``nan`` for pruned
    parameters, which are not estimated), ``layer`` (1-based), ``row``,
    ``column`` (ints), ``name`` (str), ``free`` (not pruned) and
    ``identifiable`` (booleans).  ``sigma2`` is the noise variance used (squared
    loss with the Hessian covariance), else ``None``.
    """

    estimate: np.ndarray
    std_error: np.ndarray
    z: np.ndarray
    p_value: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    column: np.ndarray
    name: list
    free: np.ndarray
    identifiable: np.ndarray
    covariance_method: str
    structure: str
    n_examples: int
    df_residual: int
    sigma2: float | None
    loss: str
    covariance: object = field(default=None, repr=False)
    model: object = field(default=None, repr=False)

    def __len__(self):
        return len(self.estimate)

    # -- tests ---------------------------------------------------------------------------
    def joint_wald(self, group, *, model=None, name=None) -> JointWald:
        """Joint test of ``w[group] = 0`` using this table's covariance (see :func:`joint_wald`)."""
        model = model or self.model
        label, index = parse_group(model, group)
        index = index[self.free[index]]
        if index.size == 0:
            raise ValueError(f"every parameter of {label} is pruned: nothing to test")
        S = self.covariance.submatrix(index)
        lam, V = np.linalg.eigh(0.5 * (S + S.T))
        scale = float(np.max(np.abs(lam))) if lam.size else 0.0
        keep = lam > RCOND * scale if scale > 0 else np.zeros(lam.shape, dtype=bool)
        b = V[:, keep].T @ self.estimate[index]
        stat = float(np.sum(b * b / lam[keep]))
        df = int(keep.sum())
        p = float(special.chdtrc(df, stat)) if df > 0 else math.nan
        return JointWald(name or label, index, stat, df, p)

    # -- rendering -----------------------------------------------------------------------
    def rows(self):
        """Dicts, one per parameter (JSON-ready: ``None`` for non-finite numbers)."""
        out = []
        for q in range(len(self)):
            out.append({
                "index": q, "name": self.name[q], "layer": int(self.layer[q]),
                "row": int(self.row[q]), "column": int(self.column[q]),
                "estimate": _json_number(self.estimate[q]),
                "std_error": _json_number(self.std_error[q]),
                "z": _json_number(self.z[q]), "p_value": _json_number(self.p_value[q]),
                "free": bool(self.free[q]), "identifiable": bool(self.identifiable[q]),
                "stars": stars(self.p_value[q])})
        return out

    def to_dict(self) -> dict:
        return {"covariance": self.covariance_method, "structure": self.structure,
                "n_examples": int(self.n_examples), "df_residual": int(self.df_residual),
                "sigma2": None if self.sigma2 is None else _json_number(self.sigma2),
                "loss": self.loss, "parameters": self.rows()}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def to_csv(self, path=None) -> str:
        """CSV text (and written to ``path`` when given); empty cells for pruned parameters."""
        buf = io.StringIO()
        keys = ["index", "name", "layer", "row", "column", "estimate", "std_error", "z",
                "p_value", "stars", "free", "identifiable"]
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for r in self.rows():
            writer.writerow({k: ("" if r[k] is None else (repr(r[k]) if isinstance(r[k], float)
                                                          else r[k])) for k in keys})
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(text)
        return text

    def to_text(self, max_rows: int | None = None) -> str:
        """An aligned table with significance stars, as R's ``summary`` prints it."""
        head = ["parameter", "estimate", "std.error", "z", "p-value", ""]
        lines = []
        for q in range(len(self)):
            if not self.free[q]:
                lines.append([self.name[q], "0 (pruned)", "", "", "", ""])
                continue
            p = self.p_value[q]
            lines.append([self.name[q] + ("" if self.identifiable[q] else " [n.i.]"),
                          f"{self.estimate[q]:.6g}", f"{self.std_error[q]:.4g}",
                          f"{self.z[q]:.3f}", _format_p(p), stars(p)])
        if max_rows is not None and len(lines) > max_rows:
            lines = lines[:max_rows] + [[f"... {len(self) - max_rows} more", "", "", "", "", ""]]
        widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]

        def fmt(r):
            return "  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)]
                             + [r[5]]).rstrip()

        what = ("inverse Hessian" if self.covariance_method == "hessian" else
                "sandwich H^-1 (sum g_i g_i') H^-1")
        if self.structure != "full":
            what += f", {self.structure} blocks"
        out = [f"Wald tests ({what}); {self.n_examples} examples, loss {self.loss}"
               + (f", sigma^2 = {self.sigma2:.6g} on {self.df_residual} df"
                  if self.sigma2 is not None else ""),
               fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [fmt(r) for r in lines]
        out.append("---")
        out.append("Signif. codes: 0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        if not np.all(self.identifiable[self.free]):
            out.append("[n.i.]: not identifiable (the Hessian is singular in its direction); "
                       "its numbers come from a pseudo-inverse")
        return "\n".join(out)

    def __str__(self):
        return self.to_text()


def _format_p(p) -> str:
    if not np.isfinite(p):
        return "nan"
    return "< 2e-16" if p < 2e-16 else f"{p:.4g}"


def wald_table(source, *, covariance: str = "hessian", structure: str = "full",
               kind: str = "hessian", data=None, client=None, save: bool = False,
               rcond: float = RCOND) -> WaldTable:
    """Wald tests of every weight (DESIGN §3 *contract*).

    Parameters
    ----------
    source
        A store path, an open store (``dh.open_store``), or ``(model, w, X, Y)``
        (``model`` may carry a mask: :attr:`dist_hess.Model.mask`).
    covariance
        ``"hessian"``: ``s2 H^-1`` with ``s2 = RSS/(n c - p)`` for squared loss, ``1``
        otherwise; ``"sandwich"``: ``H^-1 (sum_i g_i g_i') H^-1``.
    structure
        ``"full"`` (the whole Hessian), ``"layer"`` or ``"row"`` (its diagonal
        blocks, inverted block by block).
    kind
        The curvature that stands for the information: ``"hessian"`` (observed) or
        ``"gauss_newton"``.
    data
        For a store: ``X`` or ``(X, Y)``. A store holds no data; its curvature is
        read when stored, else computed from ``(X, Y)`` (on ``client`` when given, and
        written back when ``save``); the sandwich needs ``X`` (with the stored
        multipliers) or ``(X, Y)``.
    rcond
        Eigenvalues ``<= rcond * max|eigenvalue|`` count as zero (pseudo-inverse,
        with a :class:`NonIdentifiableWarning` naming the parameters they reach).
    """
    fitted = resolve(source, data=data, client=client, save=save)
    model = fitted.model
    cov = compute_covariance(fitted, method=covariance, structure=structure, kind=kind,
                             rcond=rcond, warn=True)
    var = cov.diagonal()
    estimate = np.where(fitted.free, fitted.w, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.where(var >= 0, var, np.nan))
        z = estimate / se
    p = 2.0 * special.ndtr(-np.abs(z))
    layer, row, column = (np.array(a, dtype=int) for a in
                          zip(*(model.layer_of(q) for q in range(model.n_params))))
    identifiable = np.ones(model.n_params, dtype=bool)
    identifiable[cov.non_identifiable] = False
    sigma2 = None
    if covariance == "hessian" and model.loss.name == "squared":
        sigma2 = cov.scale
    table = WaldTable(estimate=estimate, std_error=se, z=z, p_value=p, layer=layer, row=row,
                      column=column, name=parameter_names(model), free=fitted.free.copy(),
                      identifiable=identifiable, covariance_method=covariance,
                      structure=structure, n_examples=fitted.n_examples,
                      df_residual=residual_df(fitted), sigma2=sigma2, loss=model.loss.name,
                      covariance=cov, model=model)
    return table


def joint_wald(source, group, *, covariance: str = "hessian", structure: str = "full",
               name: str | None = None, **options) -> JointWald:
    """Joint Wald chi-square test that every parameter of ``group`` is zero.

    ``source``: anything :func:`wald_table` takes, or a :class:`WaldTable` (its
    covariance is reused). ``group``: ``"input:I"`` (every weight reading input
    ``I``), ``"unit:K:J"`` (the incoming row of unit ``J`` of layer ``K``;
    ``"unit:K:J:out"`` adds the weights reading it), ``"layer:K"``, or a sequence
    of flat parameter indices. Pruned parameters are left out; ``df`` is the
    rank of the group's covariance.
    """
    table = source if isinstance(source, WaldTable) else wald_table(
        source, covariance=covariance, structure=structure, **options)
    return table.joint_wald(group, name=name)
