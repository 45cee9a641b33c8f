"""Wald tests of weights: ``dh.wald_table`` (DESIGN §3) and joint chi-square tests.

For parameter ``q`` with estimate ``w_q`` and standard error
``se_q = sqrt(Sigma_qq)`` (:mod:`.covariance`):

    z_q = w_q / se_q,      p_q = 2 Phi(-|z_q|)                 (two-sided)

and for a group ``G`` of parameters (all weights of an input, a unit, a layer):

    W = w_G' (Sigma_GG)^+ w_G  ~  chi2(rank Sigma_GG)   under  w_G = 0.

The asymptotics are those of M-estimators (the Hessian estimates the
information matrix, seed §5); a non-identifiable parameter (hidden-unit
symmetries, dead units) has no such distribution: it is flagged ``n.i.`` and
gets no ``z`` and no ``p`` (nor does a standard error of 0), never stars.

``Sigma`` is by default the exact full covariance (:mod:`.covariance`), the same
in Python and on the command line; over the memory budget, the exact entries
for selected parameters come from conjugate gradients (:mod:`.selected`); the
row/layer block inverses are approximations, labelled so in every output.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ..jsonio import dump_json
from .covariance import (RCOND, check_covariance_options, check_fraction, check_memory_budget,
                         check_rcond, full_fits, refuse_full, residual_df)
from .covariance import covariance as compute_covariance
from .groups import parameter_name, parameter_names, parse_group, select_parameters
from .selected import CG_MAX_ITER, CG_TOL, check_cg_options, selected_covariance
from .source import resolve
from .summary import Summary

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
    """One row per reported parameter, in the contract's flat order.

    ``index``: the rows' flat parameter indices (every parameter, or those selected by
    ``parameters=``); per row ``estimate``, ``std_error``, ``z``, ``p_value`` (floats:
    ``nan`` for pruned parameters, which are not estimated, and no ``z`` or ``p`` for a
    non-identifiable one), ``layer`` (1-based), ``row``, ``column`` (ints), ``name``
    (str), ``free`` (not pruned) and ``identifiable`` (booleans: ``False`` where the
    curvature is singular in the parameter's direction or its standard error is 0 or
    not finite, the Wald statistic then undefined). ``sigma2`` is the noise variance used
    (squared loss with the Hessian covariance), else ``None``; ``value`` and
    ``gradient_norm`` are ``E(w)`` and ``||dE/dw||`` over the free parameters (``None``
    when neither stored nor computable); ``solver`` is ``"eigh"`` (the full matrix or its
    blocks) or ``"cg"`` (conjugate gradients, ``cg_residual`` per row).
    """

    index: np.ndarray
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
    n_params: int
    n_free: int
    value: float | None = None
    gradient_norm: float | None = None
    solver: str = "eigh"
    cg_residual: np.ndarray | None = None
    covariance: object = field(default=None, repr=False)
    model: object = field(default=None, repr=False)

    def __len__(self):
        return len(self.estimate)

    @property
    def approximation(self) -> bool:
        """``True`` for row/layer blocks: not the standard errors of the fit."""
        return self.covariance.approximation

    @property
    def covariance_type(self) -> str:
        """What the standard errors are, in words (printed in every output)."""
        return self.covariance.label

    def confidence_interval(self, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """``estimate -/+ z_{1-alpha/2} std_error`` per row (``nan`` where not identifiable)."""
        alpha = check_fraction(alpha, "alpha", zero=False)
        half = special.ndtri(1.0 - alpha / 2.0) * np.where(self.identifiable, self.std_error,
                                                            np.nan)
        return self.estimate - half, self.estimate + half

    def rows_of(self, indices) -> np.ndarray:
        """Positions in this table of flat parameter ``indices`` (``ValueError`` if absent)."""
        indices = np.asarray(indices, dtype=int)
        pos = np.searchsorted(self.index, indices)
        pos = np.minimum(pos, len(self.index) - 1)
        missing = indices[self.index[pos] != indices] if len(self.index) else indices
        if missing.size:
            names = [parameter_name(self.model, q) for q in missing[:5]]
            raise ValueError(f"parameter(s) {names}{' ...' if missing.size > 5 else ''} are not "
                             f"in this table: select them with parameters=[...]")
        return pos

    # -- tests ---------------------------------------------------------------------------
    def joint_wald(self, group, *, model=None, name=None) -> JointWald:
        """Joint test of ``w[group] = 0`` using this table's covariance (see :func:`joint_wald`)."""
        model = model or self.model
        label, index = parse_group(model, group)
        index = index[self.free[self.rows_of(index)]]
        if index.size == 0:
            raise ValueError(f"every parameter of {label} is pruned: nothing to test")
        S = self.covariance.submatrix(index)
        lam, V = np.linalg.eigh(0.5 * (S + S.T))
        scale = float(np.max(np.abs(lam))) if lam.size else 0.0
        keep = lam > RCOND * scale if scale > 0 else np.zeros(lam.shape, dtype=bool)
        b = V[:, keep].T @ self.estimate[self.rows_of(index)]
        stat = float(np.sum(b * b / lam[keep]))
        df = int(keep.sum())
        p = float(special.chdtrc(df, stat)) if df > 0 else math.nan
        return JointWald(name or label, index, stat, df, p)

    # -- rendering -----------------------------------------------------------------------
    def rows(self, alpha: float = 0.05):
        """Dicts, one per parameter (JSON-ready: ``None`` for non-finite numbers)."""
        lower, upper = self.confidence_interval(alpha)
        out = []
        for i in range(len(self)):
            out.append({
                "index": int(self.index[i]), "name": self.name[i], "layer": int(self.layer[i]),
                "row": int(self.row[i]), "column": int(self.column[i]),
                "estimate": _json_number(self.estimate[i]),
                "std_error": _json_number(self.std_error[i]),
                "z": _json_number(self.z[i]), "p_value": _json_number(self.p_value[i]),
                "ci_lower": _json_number(lower[i]), "ci_upper": _json_number(upper[i]),
                "free": bool(self.free[i]), "identifiable": bool(self.identifiable[i]),
                "cg_residual": (None if self.cg_residual is None
                                else _json_number(self.cg_residual[i])),
                "stars": stars(self.p_value[i])})
        return out

    def to_dict(self) -> dict:
        return {"covariance": self.covariance_method, "structure": self.structure,
                "solver": self.solver, "covariance_type": self.covariance_type,
                "approximation": self.approximation,
                "n_examples": int(self.n_examples), "n_params": int(self.n_params),
                "df_residual": int(self.df_residual),
                "sigma2": None if self.sigma2 is None else _json_number(self.sigma2),
                "value": None if self.value is None else _json_number(self.value),
                "gradient_norm": (None if self.gradient_norm is None
                                  else _json_number(self.gradient_norm)),
                "loss": self.loss, "parameters": self.rows()}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def to_csv(self, path=None) -> str:
        """CSV text (and written to ``path`` when given); empty cells for pruned parameters and
        for the z and p of non-identifiable ones; the ``covariance`` column says on every row
        what the standard errors are (``... APPROXIMATION`` for row/layer blocks)."""
        buf = io.StringIO()
        keys = ["index", "name", "layer", "row", "column", "estimate", "std_error", "z",
                "p_value", "ci_lower", "ci_upper", "stars", "free", "identifiable",
                "cg_residual", "covariance"]
        kind = (f"{self.covariance_method} {self.structure} "
                + ("APPROXIMATION" if self.approximation else f"exact ({self.solver})"))
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for r in self.rows():
            r["covariance"] = kind
            writer.writerow({k: ("" if r[k] is None else (repr(r[k]) if isinstance(r[k], float)
                                                          else r[k])) for k in keys})
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(text)
        return text

    def summary(self, *, alpha: float = 0.05, max_rows: int | None = None) -> Summary:
        """The table in statsmodels' layout (``.as_text()``, ``.as_html()``; prints as text)."""
        return Summary(self, alpha=alpha, max_rows=max_rows)

    def to_frame(self, alpha: float = 0.05):
        """A ``pandas.DataFrame`` indexed by parameter name, with statsmodels' column names
        (``coef``, ``std err``, ``z``, ``P>|z|``, ``[0.025``, ``0.975]``) and the layout columns;
        ``attrs`` holds the header (covariance type, n, t, E, ...). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:                          # optional dependency
            raise ImportError("WaldTable.to_frame() needs pandas: pip install pandas") from None
        lower, upper = self.confidence_interval(alpha)
        columns = {"index": self.index, "coef": self.estimate, "std err": self.std_error,
                   "z": self.z, "P>|z|": self.p_value, f"[{alpha / 2:g}": lower,
                   f"{1 - alpha / 2:g}]": upper, "layer": self.layer, "row": self.row,
                   "column": self.column, "free": self.free, "identifiable": self.identifiable}
        if self.cg_residual is not None:
            columns["cg_residual"] = self.cg_residual
        frame = pd.DataFrame(columns, index=pd.Index(self.name, name="parameter"))
        frame.attrs.update({k: v for k, v in self.to_dict().items() if k != "parameters"})
        return frame

    def to_text(self, max_rows: int | None = None) -> str:
        """The statsmodels-layout text of :meth:`summary`."""
        return self.summary(max_rows=max_rows).as_text()

    def _repr_html_(self):
        return self.summary().as_html()

    def __str__(self):
        return self.to_text()


def wald_table(source, *, covariance: str = "hessian", structure: str = "full",
               parameters=None, kind: str = "hessian", data=None, client=None,
               save: bool = False, rcond: float = RCOND, memory_budget: int | None = None,
               solver: str = "auto", cg_tol: float = CG_TOL,
               cg_max_iter: int = CG_MAX_ITER) -> WaldTable:
    """Wald tests of the weights (DESIGN §3 *contract*): the same defaults as the command line.

    Parameters
    ----------
    source
        A store path, an open store (``dh.open_store``), or ``(model, w, X, Y)``
        (``model`` may carry a mask: :attr:`dist_hess.Model.mask`).
    covariance
        ``"hessian"``: ``s2 H^-1`` with ``s2 = RSS/(n c - p)`` for squared loss, ``1``
        otherwise; ``"sandwich"``: ``H^-1 (sum_i g_i g_i') H^-1``.
    structure
        ``"full"`` (default): the exact covariance of the fit. ``"layer"`` or ``"row"``:
        the inverses of the diagonal blocks, an approximation (the covariance between
        blocks is set to zero), labelled as such in every output.
    parameters
        ``None`` (every parameter), or the parameters to report: flat indices, names
        (``"L1.3 <- x2"``), groups (``"layer:2"``, ``"unit:1:0"``, ``"input:3"``) or a
        boolean mask (:func:`~.groups.select_parameters`).
    solver
        For ``structure="full"``: ``"eigh"`` (the full matrix, refused when its
        ``8 c t^2`` bytes exceed ``memory_budget``), ``"cg"`` (conjugate gradients on
        exact Hessian-vector products, one solve per selected parameter, no ``t x t``
        matrix: :mod:`.selected`; needs the data), or ``"auto"`` (default): ``eigh``
        when it fits, else ``cg`` for the selected ``parameters`` (without
        ``parameters`` a ``ValueError`` says what to select).
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
    memory_budget
        Bytes the full covariance may take (default
        :data:`~.covariance.COVARIANCE_BUDGET`, 2 GiB).
    cg_tol, cg_max_iter
        CG stops at relative residual ``cg_tol`` or after ``cg_max_iter`` iterations;
        the residual reached is in ``cg_residual``.
    """
    check_covariance_options(covariance, structure, kind)
    rcond = check_rcond(rcond)
    budget = check_memory_budget(memory_budget)
    if solver not in ("auto", "eigh", "cg"):
        raise ValueError(f"solver must be 'auto', 'eigh' or 'cg', got {solver!r}")
    if solver == "cg" and structure != "full":
        raise ValueError(f"solver='cg' solves with the full Hessian: use structure='full', "
                         f"not {structure!r}")
    check_cg_options(cg_tol, cg_max_iter)
    fitted = resolve(source, data=data, client=client, save=save)
    model = fitted.model
    index = (np.arange(model.n_params) if parameters is None
             else select_parameters(model, parameters))
    if structure == "full" and solver == "auto":
        solver = "eigh" if full_fits(fitted.n_free, covariance, budget) else "cg"
        if solver == "cg" and parameters is None:
            raise refuse_full(fitted.n_free, covariance, budget)
    if structure == "full" and solver == "cg":
        cov = selected_covariance(fitted, index[fitted.free[index]], method=covariance,
                                  kind=kind, tol=cg_tol, max_iter=cg_max_iter,
                                  memory_budget=budget, warn=True)
    else:
        cov = compute_covariance(fitted, method=covariance, structure=structure, kind=kind,
                                 rcond=rcond, warn=True, memory_budget=budget)
        solver = "eigh"
    free = fitted.free[index]
    var = cov.diagonal()[index]
    estimate = np.where(free, fitted.w[index], np.nan)
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.where(var >= 0, var, np.nan))
    identifiable = ~np.isin(index, cov.non_identifiable) & (se > 0) & np.isfinite(se)
    identifiable |= ~free                  # pruned: not estimated, no flag
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(identifiable & free, estimate / se, np.nan)
    p = 2.0 * special.ndtr(-np.abs(z))
    layer, row, column = (np.array(a, dtype=int).reshape(-1) for a in
                          zip(*(model.layer_of(int(q)) for q in index)))
    names = parameter_names(model)
    value, gradient_norm = fitted.objective_summary()
    return WaldTable(
        index=index, estimate=estimate, std_error=se, z=z, p_value=p, layer=layer, row=row,
        column=column, name=[names[q] for q in index], free=free.copy(),
        identifiable=identifiable, covariance_method=covariance, structure=structure,
        n_examples=fitted.n_examples, df_residual=residual_df(fitted),
        sigma2=cov.scale if covariance == "hessian" and model.loss.name == "squared" else None,
        loss=model.loss.name, n_params=model.n_params, n_free=fitted.n_free, value=value,
        gradient_norm=gradient_norm, solver=solver,
        cg_residual=None if cov.residual is None else cov.residual[index],
        covariance=cov, model=model)


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
