"""``WaldTable.summary()``: the table in statsmodels' layout, as text and HTML.

The layout of ``statsmodels`` ``RegressionResults.summary()`` (a two-column
header, then ``coef  std err  z  P>|z|  [0.025  0.975]``, then notes), the
numbers formatted as statsmodels' ``forg`` does (4 decimals, ``%.4g`` outside
``[1e-4, 1e4)``).  The header names the covariance type; a block structure
prints ``APPROXIMATION`` there and in a note.  A non-identifiable parameter
shows ``n.i.`` in place of its standard error and nothing for ``z``, ``P>|z|``
and the interval; a pruned one shows ``0 (pruned)``.
"""
from __future__ import annotations

import html
import textwrap

import numpy as np

__all__ = ["Summary", "forg"]

_WIDTH = 78
_COLUMN = 10


def forg(x, prec: int = 4) -> str:
    """statsmodels' number format: fixed with ``prec`` decimals, ``%.{prec}g`` when tiny or huge."""
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-4):
        return f"{x:.{prec}g}"
    return f"{x:.{prec}f}"


def _opt(x, fmt: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


class Summary:
    """The rendered summary of a :class:`~.wald.WaldTable`: ``as_text()``, ``as_html()``;
    ``str()`` gives the text and notebooks show the HTML."""

    def __init__(self, table, *, alpha: float = 0.05, max_rows: int | None = None):
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                     or max_rows < 0):
            raise ValueError(f"max_rows must be a non-negative integer or None, got {max_rows!r}")
        self.table = table
        self.alpha = alpha
        self.max_rows = max_rows
        self.lower, self.upper = table.confidence_interval(alpha)

    # -- content -----------------------------------------------------------------------
    def header(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        """Rows of (left key, value), (right key, value), as statsmodels prints them."""
        t = self.table
        model = t.model
        method = {"hessian": "inverse Hessian", "sandwich": "sandwich (HC0)"}[t.covariance_method]
        if t.approximation:
            computed = f"{t.structure} blocks: APPROX."
        elif t.solver == "cg":
            computed = "exact, CG"
        else:
            computed = "exact, full matrix"
        left = [("Model:", "-".join(str(s) for s in model.sizes)),
                ("Loss:", t.loss),
                ("Covariance Type:", method),
                ("Computed:", computed),
                ("s^2:", _opt(t.sigma2, ".6g")),
                ("Df Residuals:", str(t.df_residual))]
        right = [("No. Observations:", str(t.n_examples)),
                 ("No. Parameters:", str(t.n_params)),
                 ("Free parameters:", str(t.n_free)),
                 ("E(w):", _opt(t.value, ".8g")),
                 ("||grad||:", _opt(t.gradient_norm, ".3e")),
                 ("Non-identifiable:", str(int(np.sum(~t.identifiable))))]
        if t.solver == "cg":
            finite = t.cg_residual[np.isfinite(t.cg_residual)]
            left.append(("Max CG residual:", _opt(finite.max() if finite.size else None, ".1e")))
            right.append(("Passes over data:", str(t.covariance.passes)))
        if len(t) != t.n_params:
            left.append(("Parameters shown:", str(len(t))))
            right.append(("", ""))
        left += [("", "")] * (len(right) - len(left))
        right += [("", "")] * (len(left) - len(right))
        return list(zip(left, right))

    def body(self) -> list[list[str]]:
        """Rows of ``[name, coef, std err, z, P>|z|, lower, upper]`` as text."""
        t = self.table
        rows = []
        for i in range(len(t)):
            name = t.name[i]
            if not t.free[i]:
                rows.append([name, "0 (pruned)", "", "", "", "", ""])
            elif not t.identifiable[i]:
                rows.append([name + " [n.i.]", forg(t.estimate[i]), "n.i.", "", "", "", ""])
            else:
                rows.append([name, forg(t.estimate[i]), forg(t.std_error[i]),
                             f"{t.z[i]:.3f}", f"{t.p_value[i]:.3f}", forg(self.lower[i]),
                             forg(self.upper[i])])
        return rows

    def title(self) -> str:
        t = self.table
        method = {"hessian": "inverse Hessian", "sandwich": "sandwich"}[t.covariance_method]
        what = f"{t.structure} blocks: APPROXIMATION" if t.approximation else "exact"
        return f"Wald tests ({method}, {what})"

    def columns(self) -> list[str]:
        a = self.alpha / 2
        return ["", "coef", "std err", "z", "P>|z|", f"[{a:g}", f"{1 - a:g}]"]

    def notes(self) -> list[str]:
        t = self.table
        out = [f"Standard errors: {t.covariance_type}."]
        if t.approximation:
            out.append(f"APPROXIMATION: the {t.structure}-block inverse sets the covariance "
                       f"between blocks to zero; these are not the standard errors of the fit "
                       f"(structure='full' gives them).")
        if t.sigma2 is not None:
            out.append(f"Squared loss: the covariance is s^2 H^-1 with s^2 = RSS / "
                       f"(n c - p) on {t.df_residual} df.")
        if np.any(~t.identifiable):
            out.append("n.i.: not identifiable (the curvature is singular in the parameter's "
                       "direction, or its standard error is 0): no z, p-value or interval.")
        if t.solver == "cg":
            out.append(f"CG: one solve H x = e_q per parameter on exact Hessian-vector "
                       f"products, preconditioned by the {t.covariance.preconditioner} blocks; "
                       f"the residual is ||H x - e_q|| from a final product.")
        return out

    # -- rendering ---------------------------------------------------------------------
    def _shown(self):
        rows = self.body()
        more = 0
        if self.max_rows is not None and len(rows) > self.max_rows:
            more = len(rows) - self.max_rows
            rows = rows[:self.max_rows]
        return rows, more

    def as_text(self) -> str:
        rows, more = self._shown()
        names = [r[0] for r in rows] + ["parameter"]
        name_width = max(len(n) for n in names)
        width = max(_WIDTH, name_width + 6 * (_COLUMN + 1))
        half = width // 2
        lines = [self.title().center(width).rstrip(), "=" * width]
        for (lk, lv), (rk, rv) in self.header():
            left = lk + lv.rjust(half - 3 - len(lk))
            right = rk + rv.rjust(width - half - len(rk))
            lines.append(f"{left}   {right}".rstrip())
        lines.append("=" * width)
        head = self.columns()
        lines.append(head[0].ljust(name_width) + "".join(h.rjust(_COLUMN + 1) for h in head[1:]))
        lines.append("-" * width)
        for r in rows:
            lines.append((r[0].ljust(name_width) + "".join(c.rjust(_COLUMN + 1)
                                                            for c in r[1:])).rstrip())
        if more:
            lines.append(f"... {more} more rows")
        lines.append("=" * width)
        lines.append("Notes:")
        for i, note in enumerate(self.notes(), start=1):
            lines += textwrap.wrap(f"[{i}] {note}", width, subsequent_indent="    ")
        return "\n".join(lines)

    def as_html(self) -> str:
        rows, more = self._shown()
        e = html.escape
        head = ["<table class='simpletable'>",
                f"<caption>{e(self.title())}</caption>"]
        for (lk, lv), (rk, rv) in self.header():
            head.append(f"<tr><th>{e(lk)}</th><td>{e(lv)}</td><th>{e(rk)}</th><td>{e(rv)}</td></tr>")
        head.append("</table>")
        body = ["<table class='simpletable'>",
                "<tr>" + "".join(f"<th>{e(c)}</th>" for c in self.columns()) + "</tr>"]
        for r in rows:
            body.append(f"<tr><th>{e(r[0])}</th>" + "".join(f"<td>{e(c)}</td>" for c in r[1:])
                        + "</tr>")
        if more:
            body.append(f"<tr><td colspan='7'>... {more} more rows</td></tr>")
        body.append("</table>")
        notes = "<br>".join(f"[{i}] {e(n)}" for i, n in enumerate(self.notes(), start=1))
        return "\n".join(head + body + [f"<p>Notes:<br>{notes}</p>"])

    def __str__(self):
        return self.as_text()

    def __repr__(self):
        return self.as_text()

    def _repr_html_(self):
        return self.as_html()
