"""``dist-hess analyze STORE --report DIR``: an HTML page with plots and tables.

:func:`write_report` reads a store (and, optionally, the data) and writes into
``DIR``:

* ``index.html``: the model and fit summary, the fit history (a store written by
  ``dist-hess fit``), the Wald table (significance stars, non-identifiable
  parameters flagged), the spectra summary, Laplace predictive intervals
  (regression, with the data), the pruning path, and the plots;
* PNG plots (matplotlib, the ``report`` extra; without it the page has the
  tables only): loss and gradient norm against iteration (log scale),
  eigenvalues of every row and layer block per layer, the full spectrum, heat
  maps of the curvature blocks, Wald z-values, the predictive intervals against
  the observed targets, the pruning path;
* ``wald.csv``, ``wald.json``, ``spectra.json``, ``spectra.csv``, ``summary.json``
  and, when there is one, ``fit_history.csv``, ``laplace.csv``, ``pruning.csv``,
  ``pruning.json``.

The fit history is the store's ``attrs["fit"]["history"]`` (one record per
iteration, `dist_hess.train.IterationRecord`). The Laplace section
(`dist_hess.analysis.laplace_predict` with its default curvature) evaluates the
95% predictive interval at up to :data:`LAPLACE_ROWS` training inputs, evenly
spaced in the data, and, with the targets, the share of them inside it.

A pruning path is read from the store's ``attrs["pruning_path"]`` (written by
:meth:`~.pruning.PruningPath.save`) or passed as ``pruning``.  Whatever the
store lacks (curvature that was not stored and no data to compute it) is left
out with a note on the page, never an error.
"""
from __future__ import annotations

import csv
import html
import json
import math
import os
import warnings

import numpy as np
from scipy import special

from .laplace import laplace_predict
from .pruning import path_to_csv
from .source import resolve
from .spectra import spectra as compute_spectra
from .wald import stars, wald_table

__all__ = ["write_report", "LAPLACE_ROWS", "LAPLACE_LEVEL"]

#: Training inputs (at most) at which the report evaluates the Laplace intervals.
LAPLACE_ROWS = 2000
#: The level of the report's predictive intervals.
LAPLACE_LEVEL = 0.95
#: Free parameters up to which the report computes a full curvature from the data.
MAX_FULL = 2000

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 3em; background: #fff;
       box-shadow: 0 0 12px rgba(0,0,0,.06); }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #e3e6ea; padding-bottom: .25em; margin-top: 2em; }
.sub { color: #667; margin-top: 0; }
table { border-collapse: collapse; font-size: .88em; margin: .6em 0 1em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e8eaee; text-align: right; }
th { background: #f0f2f5; position: sticky; top: 0; }
td.l, th.l { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace; }
tr.sig td { background: #f3f9f1; }
tr.ni td { color: #a05a00; }
tr.pruned td { color: #999; }
tr.best td { background: #eef4fd; font-weight: 600; }
.scroll { max-height: 32em; overflow-y: auto; border: 1px solid #e3e6ea; display: inline-block; }
.kv td:first-child { text-align: left; color: #556; }
.kv td { text-align: left; }
.note { background: #fff8e6; border-left: 4px solid #f0b400; padding: .5em 1em; margin: .5em 0; }
.warn { background: #fdeeee; border-left: 4px solid #d9534f; padding: .5em 1em; margin: .5em 0; }
img { max-width: 100%; border: 1px solid #e3e6ea; margin: .4em 0; }
.files a { margin-right: 1em; }
code { background: #f0f2f5; padding: 0 .25em; }
"""


def _fmt(x, spec=".4g"):
    if x is None:
        return "&ndash;"
    if isinstance(x, str):
        return html.escape(x)
    x = float(x)
    if math.isnan(x):
        return "&ndash;"
    if math.isinf(x):
        return "&infin;"
    return format(x, spec)


def _table(headers, rows, classes=None, left=()):
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i in left else ""}">{html.escape(h)}</th>'
            for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        out.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if i in left else ""}">{cell}</td>' for i, cell in enumerate(row))
            + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


# ---------------------------------------------------------------- plots

def _plain_ticks(axis):
    """Plain ``%.3g`` tick labels: symlog's default mathtext labels are slow to lay out."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _integer_ticks(axis, n):
    from matplotlib.ticker import FixedLocator, MaxNLocator
    if n <= 12:
        axis.set_major_locator(FixedLocator(list(range(n))))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def _symlog(ax, linthresh):
    ax.set_yscale("symlog", linthresh=linthresh)
    _plain_ticks(ax.yaxis)
    ax.margins(y=0.08)


def _save(plt, fig, directory, name, *, left=0.8, right=0.25, bottom=0.6, top=0.45,
          wspace=0.3, hspace=0.55):
    """Margins in inches (``tight_layout`` draws the figure twice: too slow for reports)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace, hspace=hspace)
    fig.savefig(os.path.join(directory, name), dpi=100)
    plt.close(fig)
    return name


def _plot_spectra(plt, spec, directory):
    layers = [s for s in spec.layers if s.row_eigenvalues or s.layer_eigenvalues is not None]
    if not layers:
        return None
    fig, axes = plt.subplots(len(layers), 2, figsize=(10, 2.8 * len(layers)), squeeze=False)
    for ax_row, s in zip(axes, layers):
        ax = ax_row[0]
        if s.row_eigenvalues:
            for j, e in enumerate(s.row_eigenvalues):
                ax.scatter(np.full(e.size, j), e, s=10, color="tab:blue", alpha=.7)
                neg = e < 0
                if np.any(neg):
                    ax.scatter(np.full(neg.sum(), j), e[neg], s=14, color="tab:red")
            ax.set_xlabel("unit j (row block)")
            _integer_ticks(ax.xaxis, len(s.row_eigenvalues))
            ax.set_xlim(-0.5, len(s.row_eigenvalues) - 0.5)
        else:
            ax.text(.5, .5, "no row blocks", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"layer {s.layer}: row-block eigenvalues")
        _symlog(ax, _linthresh(s.row_eigenvalues))
        ax.axhline(0, color="#888", lw=.6)
        ax = ax_row[1]
        if s.layer_eigenvalues is not None and s.layer_eigenvalues.size:
            e = s.layer_eigenvalues
            ax.plot(np.arange(e.size), e, ".-", color="tab:green", ms=4)
            _integer_ticks(ax.xaxis, e.size)
            _symlog(ax, _linthresh([e]))
            ax.axhline(0, color="#888", lw=.6)
            ax.set_xlabel("index (ascending)")
        else:
            ax.text(.5, .5, "no layer block", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"layer {s.layer}: layer-block eigenvalues")
    return _save(plt, fig, directory, "spectra_layers.png")


def _linthresh(arrays):
    vals = np.concatenate([np.abs(np.asarray(a, dtype=float)).ravel() for a in arrays or []]
                          or [np.ones(1)])
    vals = vals[vals > 0]
    if vals.size == 0:
        return 1.0
    return float(max(np.percentile(vals, 10), vals.max() * 1e-8))


def _plot_full_spectrum(plt, full, directory):
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if full.eigenvalues is not None:
        e = full.eigenvalues
        ax.plot(np.arange(e.size), e, ".-", ms=3)
        ax.set_xlabel("index (ascending)")
        _symlog(ax, _linthresh([e]))
    else:
        k = full.bottom.size
        ax.plot(np.arange(k), full.bottom, "o", label=f"{k} smallest (Lanczos)")
        ax.plot(np.arange(full.n - full.top.size, full.n), full.top[::-1], "o",
                label=f"{full.top.size} largest (Lanczos)")
        _symlog(ax, _linthresh([full.top, full.bottom]))
        ax.legend()
        ax.set_xlabel("index (ascending)")
    ax.axhline(0, color="#888", lw=.6)
    ax.set_title(f"full matrix ({full.method}), {full.n} free parameters")
    return _save(plt, fig, directory, "spectrum_full.png")


def _heatmap(plt, matrix, title, directory, name, boundaries=()):
    from matplotlib.colors import SymLogNorm
    M = np.asarray(matrix, dtype=float)
    vmax = float(np.max(np.abs(M))) if M.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    size = min(8.0, 2.5 + M.shape[0] / 12)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(M, cmap="RdBu_r", interpolation="nearest",
                   norm=SymLogNorm(linthresh=vmax * 1e-3, vmin=-vmax, vmax=vmax))
    for b in boundaries:
        ax.axhline(b - .5, color="k", lw=.6)
        ax.axvline(b - .5, color="k", lw=.6)
    ax.set_title(title)
    top = 10.0 ** math.floor(math.log10(vmax))
    decades = [top / 10.0 ** i for i in range(3)]
    bar = fig.colorbar(im, ax=ax, shrink=.8, fraction=.05, pad=.04, ticks=[-d for d in decades] + [0.0] + decades[::-1])
    _plain_ticks(bar.ax.yaxis)
    from matplotlib.ticker import NullLocator
    bar.ax.yaxis.set_minor_locator(NullLocator())
    return _save(plt, fig, directory, name, left=0.5, right=0.8, bottom=0.4, top=0.4)


def _plot_wald(plt, table, directory):
    free = table.free
    q = np.flatnonzero(free)
    if q.size == 0:
        return None
    named = q.size <= 60                               # few enough to name each bar
    fig, ax = plt.subplots(figsize=(10, 4.6 if named else 3.2))
    z = np.nan_to_num(table.z[q], nan=0.0, posinf=0.0, neginf=0.0)
    colors = [f"C{(k - 1) % 10}" for k in table.layer[q]]
    ax.bar(np.arange(q.size), z, color=colors)
    for level in (1.96, -1.96):
        ax.axhline(level, color="#c33", lw=.8, ls="--")
    if named:
        ax.set_xticks(np.arange(q.size))
        ax.set_xticklabels([table.name[i] for i in q], rotation=90, fontsize=6)
    ax.set_xlabel("free parameter (flat order; colour = layer)")
    ax.set_ylabel("z = estimate / s.e.")
    ax.set_title("Wald z-values (dashed: |z| = 1.96, p = 0.05)")
    if np.max(np.abs(z)) > 50:
        _symlog(ax, 2.0)
    return _save(plt, fig, directory, "wald_z.png", bottom=1.9 if named else 0.6)


def _plot_pruning(plt, path_dict, directory):
    steps = path_dict["steps"]
    free = [s["n_free"] for s in steps]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(free, [s["loss"] for s in steps], "o-", label="training loss")
    if any(s.get("val_loss") is not None for s in steps):
        axes[0].plot(free, [np.nan if s["val_loss"] is None else s["val_loss"] for s in steps],
                     "s-", label="validation loss")
    axes[0].set_xlabel("free parameters")
    axes[0].set_ylabel("loss (no penalty)")
    axes[0].legend()
    axes[0].invert_xaxis()
    axes[1].plot(free, [s["bic"] for s in steps], "o-", color="tab:purple")
    axes[1].set_xlabel("free parameters")
    axes[1].set_ylabel("BIC")
    axes[1].invert_xaxis()
    best = path_dict.get("best")
    if best is not None:
        for ax, key in ((axes[0], "loss"), (axes[1], "bic")):
            ax.axvline(free[best], color="#888", ls=":", lw=1)
    fig.suptitle(f"pruning path ({path_dict['criterion']})")
    return _save(plt, fig, directory, "pruning.png", top=0.55)


def _plot_fit_history(plt, fit, directory):
    """Loss and gradient norm against iteration, log scale; rejected steps in red."""
    history = fit["history"]
    it = np.array([r["iteration"] for r in history], dtype=float)
    rejected = np.array([not r["accepted"] for r in history])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key, label in ((axes[0], "value", "loss E(w)"),
                           (axes[1], "gradient_norm", "gradient norm ||grad E||")):
        y = np.array([np.nan if r[key] is None else r[key] for r in history], dtype=float)
        ax.plot(it, y, ".-", ms=4)
        if rejected.any():
            ax.plot(it[rejected], y[rejected], "x", color="tab:red", label="rejected step")
            ax.legend()
        positive = y[np.isfinite(y)]
        if positive.size and np.all(positive > 0):
            ax.set_yscale("log")
        else:
            _symlog(ax, _linthresh([positive]))
        ax.set_xlabel("iteration")
        ax.set_title(label)
        _integer_ticks(ax.xaxis, int(it.max()) + 1 if it.size else 1)
    fig.suptitle(f"fit history ({fit.get('method', '?')}: {fit.get('status', '?')})")
    return _save(plt, fig, directory, "fit_history.png", top=0.55)


def _plot_laplace(plt, lap, directory):
    """Per output (up to 4): the predictive interval and the mean's band, rows sorted by
    the prediction, and the observed targets."""
    outputs = min(lap["mean"].shape[1], 4)
    fig, axes = plt.subplots(1, outputs, figsize=(10, 3.4), squeeze=False)
    for o, ax in enumerate(axes[0]):
        order = np.argsort(lap["mean"][:, o])
        x = np.arange(order.size)
        ax.fill_between(x, lap["lower"][order, o], lap["upper"][order, o], color="tab:blue",
                        alpha=.2, lw=0, label=f"{lap['level']:.0%} predictive interval")
        half = special.ndtri(0.5 + lap["level"] / 2.0) * lap["se"][order, o]
        ax.fill_between(x, lap["mean"][order, o] - half, lap["mean"][order, o] + half,
                        color="tab:blue", alpha=.4, lw=0,
                        label=f"{lap['level']:.0%} interval of the mean")
        ax.plot(x, lap["mean"][order, o], color="tab:blue", lw=1, label="prediction")
        if lap["observed"] is not None:
            ax.plot(x, lap["observed"][order, o], ".", ms=3, color="k", label="observed")
        ax.set_xlabel("training rows, sorted by prediction")
        ax.set_title(f"output {o}")
    axes[0][0].legend(fontsize="small")
    return _save(plt, fig, directory, "laplace.png")


# ---------------------------------------------------------------- sections

def _fit_history(fitted):
    """The store's ``attrs["fit"]`` when it has a history, else ``None``."""
    fit = fitted.store.attrs.get("fit") if fitted.store is not None else None
    return fit if isinstance(fit, dict) and fit.get("history") else None


def _laplace(fitted, notes):
    """Predictive intervals at up to `LAPLACE_ROWS` training inputs (regression with the
    data), as a dict of arrays, or ``None`` with a note saying why not."""
    if fitted.model.loss.name != "squared":
        return None
    if fitted.X is None:
        notes.append("Laplace predictive intervals need the training inputs: pass data "
                     "(dist-hess analyze --data)")
        return None
    stored_full = any("full" in fitted.available(kind) for kind in ("gauss_newton", "hessian"))
    if fitted.n_free > MAX_FULL and not stored_full:
        notes.append(f"Laplace predictive intervals left out: {fitted.n_free} free parameters "
                     f"is more than {MAX_FULL} for a full curvature computed here")
        return None
    step = max(1, -(-int(np.shape(fitted.X)[0]) // LAPLACE_ROWS))
    X = np.asarray(fitted.X[::step], dtype=float)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = laplace_predict(fitted, X, structure="full")
    except (LookupError, ValueError) as err:
        notes.append(f"Laplace predictive intervals not computed: {err}")
        return None
    notes += [f"Laplace predictive intervals: {w.message}" for w in caught]
    lower, upper = pred.interval(LAPLACE_LEVEL)
    observed = None
    if fitted.Y is not None:
        observed = np.asarray(fitted.Y[::step], dtype=float).reshape(X.shape[0], -1)
    return {"level": LAPLACE_LEVEL, "kind": pred.kind, "structure": pred.structure,
            "rows": X.shape[0], "step": step, "mean": pred.mean, "lower": lower,
            "upper": upper, "se": pred.standard_error,
            "noise_sd": float(np.sqrt(pred.noise_variance)), "observed": observed}


def _laplace_rows(lap):
    """One row per output: the numbers the page's table and ``laplace.csv`` show."""
    rows = []
    for o in range(lap["mean"].shape[1]):
        inside = None
        if lap["observed"] is not None:
            y = lap["observed"][:, o]
            inside = float(np.mean((y >= lap["lower"][:, o]) & (y <= lap["upper"][:, o])))
        rows.append({"output": o, "rows": lap["rows"], "noise_sd": lap["noise_sd"],
                     "median_se": float(np.median(lap["se"][:, o])),
                     "median_half_width": float(np.median(lap["upper"][:, o] - lap["mean"][:, o])),
                     "coverage": inside})
    return rows


# ---------------------------------------------------------------- page

def write_report(source, directory, *, data=None, covariance: str = "hessian",
                 structure: str | None = None, kind: str = "hessian", pruning=None,
                 title: str | None = None, max_heatmap: int = 600, plots: bool = True) -> str:
    """Write ``directory/index.html`` (and plots and tables) for ``source``; return its path.

    ``source``: a store path, an open store or ``(model, w, X, Y)``; ``data``: ``X``
    or ``(X, Y)`` for a store (to compute what it does not hold); ``structure`` of
    the Wald table (default ``"full"``, as ``dh.wald_table``; ``"row"``/``"layer"`` are
    labelled approximations); ``pruning``: a
    :class:`~.pruning.PruningPath` or its ``to_dict()`` (default: the store's);
    ``plots=False`` writes the tables only.
    """
    os.makedirs(directory, exist_ok=True)
    fitted = resolve(source, data=data)
    plt = _matplotlib() if plots else None
    notes, alerts, files = [], [], []

    # -- Wald table (the same default as dh.wald_table: the exact full covariance; over the
    # memory budget the page says so and what to select instead)
    structure = structure or "full"
    table = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = wald_table(fitted, covariance=covariance, structure=structure, kind=kind)
        except (LookupError, ValueError) as err:
            notes.append(f"Wald table not computed: {err}")
    alerts += [str(w.message) for w in caught]
    if table is not None:
        table.to_csv(os.path.join(directory, "wald.csv"))
        table.to_json(os.path.join(directory, "wald.json"))
        files += ["wald.csv", "wald.json"]

    # -- spectra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = compute_spectra(fitted, kind=kind, k=6)
    notes += spec.notes
    spec.to_json(os.path.join(directory, "spectra.json"))
    _write_csv(os.path.join(directory, "spectra.csv"), spec.summary_rows())
    files += ["spectra.json", "spectra.csv"]

    # -- pruning path
    path_dict = None
    if pruning is not None:
        path_dict = pruning if isinstance(pruning, dict) else pruning.to_dict()
    elif fitted.store is not None and "pruning_path" in fitted.store.attrs:
        path_dict = fitted.store.attrs["pruning_path"]
    if path_dict is not None:
        path_to_csv(path_dict, os.path.join(directory, "pruning.csv"))
        with open(os.path.join(directory, "pruning.json"), "w") as f:
            json.dump(path_dict, f, indent=1)
        files += ["pruning.csv", "pruning.json"]

    # -- fit history, Laplace predictive intervals
    fit = _fit_history(fitted)
    if fit is not None:
        _write_csv(os.path.join(directory, "fit_history.csv"), fit["history"])
        files.append("fit_history.csv")
    lap = _laplace(fitted, notes)
    if lap is not None:
        _write_csv(os.path.join(directory, "laplace.csv"), _laplace_rows(lap))
        files.append("laplace.csv")

    # -- plots
    images = {}
    if not plots:
        pass
    elif plt is None:
        notes.append("matplotlib is not installed (pip install dist_hess[report]): no plots")
    else:
        with np.errstate(all="ignore"):
            images = _make_plots(plt, fitted, kind, spec, table, path_dict, directory,
                                 max_heatmap, notes)
            if fit is not None:
                images["fit"] = _plot_fit_history(plt, fit, directory)
            if lap is not None:
                images["laplace"] = _plot_laplace(plt, lap, directory)

    summary = _summary(fitted, table, spec)
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    files.append("summary.json")

    page = _page(title or f"dist_hess analysis: {summary['architecture']}", summary, table,
                 spec, path_dict, images, notes, alerts, files, stars, fit=fit, lap=lap)
    index = os.path.join(directory, "index.html")
    with open(index, "w") as f:
        f.write(page)
    return index


def _write_csv(path, rows):
    if not rows:
        open(path, "w").close()
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _make_plots(plt, fitted, kind, spec, table, path_dict, directory, max_heatmap, notes):
    model = fitted.model
    images = {"spectra": [], "heatmaps": [], "wald": None, "pruning": None}
    name = _plot_spectra(plt, spec, directory)
    if name:
        images["spectra"].append(name)
    if spec.full is not None:
        images["spectra"].append(_plot_full_spectrum(plt, spec.full, directory))
    avail = fitted.available(kind)
    free = fitted.free
    if "full" in avail and fitted.n_free <= max_heatmap:
        H = np.asarray(fitted.curvature(kind, "full"))
        index = np.flatnonzero(free)
        bounds = [int(np.sum(index < sl.start)) for sl in model.layer_slices[1:]]
        images["heatmaps"].append(_heatmap(plt, H[np.ix_(index, index)],
                                           f"{kind}, full (lines: layers)", directory,
                                           "heatmap_full.png", bounds))
    if avail:
        structure = "layer" if "layer" in avail else "row"
        blocks = fitted.curvature(kind, structure)
        for k, (sl, (s, d)) in enumerate(zip(model.layer_slices, model.layer_shapes), start=1):
            if s * d > max_heatmap:
                notes.append(f"layer {k}: block of {s * d} parameters too large for a heat map")
                continue
            if structure == "layer":
                B = np.asarray(blocks[k - 1])
            else:
                B = np.zeros((s * d, s * d))
                for j in range(s):
                    B[j * d:(j + 1) * d, j * d:(j + 1) * d] = blocks[k - 1][j]
            local = np.flatnonzero(free[sl])
            images["heatmaps"].append(_heatmap(
                plt, B[np.ix_(local, local)],
                f"layer {k}: {kind} {structure} block" + (" (row blocks only)"
                                                          if structure == "row" else ""),
                directory, f"heatmap_layer_{k}.png",
                [int(np.sum(local < j * d)) for j in range(1, s)]))
    if table is not None:
        images["wald"] = _plot_wald(plt, table, directory)
    if path_dict is not None and path_dict.get("steps"):
        images["pruning"] = _plot_pruning(plt, path_dict, directory)
    return images


def _summary(fitted, table, spec):
    model = fitted.model
    store = fitted.store
    grad = store.gradient if store is not None else None
    return {
        "architecture": "-".join(str(s) for s in model.sizes),
        "n_inputs": int(model.inputs),
        "input_names": None if model.input_names is None else list(model.input_names),
        "output_names": None if model.output_names is None else list(model.output_names),
        "layers": [{"type": layer.propagation.type, "units": layer.units,
                    "activation": layer.activation.name, "sources": list(layer.sources)}
                   for layer in model.layers],
        "loss": model.loss.name,
        "penalty": None if model.penalty is None else model.penalty.to_dict(),
        "n_examples": int(fitted.n_examples), "n_params": int(model.n_params),
        "n_free": int(fitted.n_free),
        "value": None if fitted.stored_value is None else float(fitted.stored_value),
        "gradient_norm": None if grad is None else float(np.linalg.norm(grad * fitted.free)),
        "store": None if store is None else store.path,
        "stored_curvature": [f"{k}:{s}" for k, s in fitted.stored_curvatures()],
        "multipliers": bool(fitted.stored_multipliers() is not None),
        "sigma2": None if table is None or table.sigma2 is None else float(table.sigma2),
    }


def _fit_html(fit, images):
    h = ["<h2>Fit history</h2>"]
    kv = [("method", fit.get("method")), ("status", fit.get("status")),
          ("message", fit.get("message")), ("iterations", fit.get("n_iter")),
          ("final loss", _fmt(fit.get("value"), ".10g")),
          ("final gradient norm", _fmt(fit.get("gradient_norm"), ".3g")),
          ("seconds", _fmt(fit.get("seconds"), ".3g"))]
    h.append("<table class='kv'>" + "".join(
        f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>" for k, v in kv) + "</table>")
    if images.get("fit"):
        h.append(f"<img src='{images['fit']}' alt='loss and gradient norm against iteration'>")
    if fit.get("minima") is not None:                  # dist-hess fit --starts
        starts = fit.get("starts") or []
        h.append(f"<h3>Distinct minima over {len(starts)} starts</h3>"
                 f"<p>Converged starts grouped by final loss (within 1e-6 relative); the "
                 f"smallest eigenvalue of the exact Hessian at the lowest start of each "
                 f"(positive: a strict minimum). The stored weights are those of start "
                 f"{fit.get('start')}.</p>")
        rows = [[_fmt(m["value"], ".10g"), m["count"], _fmt(m["min_eigenvalue"], ".4g"),
                 html.escape(", ".join(str(i) for i in m["starts"]))] for m in fit["minima"]]
        classes = ["best" if fit.get("start") in m["starts"] else "" for m in fit["minima"]]
        h.append(_table(["loss", "starts", "min Hessian eigenvalue", "seeds"], rows, classes,
                        left=(3,)))
    return h


def _laplace_html(lap, images):
    h = ["<h2>Laplace predictive intervals</h2>",
         f"<p>The output at input <i>x</i> is N(<i>f</i>, <i>J</i>&Sigma;<i>J</i>&prime; + "
         f"s&sup2;), <i>J</i> the exact output Jacobian and &Sigma; = s&sup2; G<sup>-1</sup> "
         f"with G = <code>{html.escape(lap['kind'])}:{html.escape(lap['structure'])}</code>; "
         f"{lap['level']:.0%} intervals at {lap['rows']} training inputs"
         + (f" (one row in {lap['step']})" if lap["step"] > 1 else "")
         + ". <i>se</i>: the standard error of the mean (parameters' uncertainty only); "
           "coverage: the share of observed targets inside the interval.</p>"]
    rows = [[r["output"], _fmt(r["noise_sd"]), _fmt(r["median_se"]),
             _fmt(r["median_half_width"]),
             "&ndash;" if r["coverage"] is None else f"{r['coverage']:.1%}"]
            for r in _laplace_rows(lap)]
    h.append(_table(["output", "noise s", "median se", "median half-width", "coverage"], rows))
    if images.get("laplace"):
        h.append(f"<img src='{images['laplace']}' alt='predictive intervals'>")
    return h


def _page(title, summary, table, spec, path_dict, images, notes, alerts, files, stars, *,
          fit=None, lap=None):
    h = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
         "<meta name='viewport' content='width=device-width, initial-scale=1'>",
         f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
         f"<h1>{html.escape(title)}</h1>",
         f"<p class='sub'>{html.escape(summary['store'] or 'in-memory fit')}</p>"]
    kv = [("network", summary["architecture"] + " (" + ", ".join(
              f"{l['type']} {l['units']} {l['activation']} &larr; {l['sources']}"
              for l in summary["layers"]) + ")"),
          ("inputs", ", ".join(summary["input_names"] or []) or f"x0..x{summary['n_inputs'] - 1}"),
          ("outputs", ", ".join(summary["output_names"] or []) or "unnamed"),
          ("loss", summary["loss"]),
          ("penalty", json.dumps(summary["penalty"]) if summary["penalty"] else "none"),
          ("examples", summary["n_examples"]),
          ("parameters", f"{summary['n_params']} ({summary['n_free']} free)"),
          ("objective E(w)", _fmt(summary["value"], ".10g")),
          ("gradient norm", _fmt(summary["gradient_norm"], ".3g")),
          ("stored curvature", ", ".join(summary["stored_curvature"]) or "none"),
          ("multipliers stored", "yes" if summary["multipliers"] else "no"),
          ("noise variance s&sup2;", _fmt(summary["sigma2"], ".6g"))]
    h.append("<h2>Summary</h2><table class='kv'>" + "".join(
        f"<tr><td>{k}</td><td>{v if isinstance(v, str) and '&' in v else html.escape(str(v))}"
        f"</td></tr>" for k, v in kv) + "</table>")
    for a in alerts:
        h.append(f"<div class='warn'>{html.escape(a)}</div>")
    for n in notes:
        h.append(f"<div class='note'>{html.escape(n)}</div>")
    if fit is not None:
        h += _fit_html(fit, images)

    h.append("<h2>Wald tests</h2>")
    if table is None:
        h.append("<p>Not available (see the notes above).</p>")
    else:
        what = html.escape(table.covariance_type)
        if table.approximation:
            h.append(f"<div class='warn'>APPROXIMATION: the {table.structure}-block inverse sets "
                     f"the covariance between blocks to zero; these are not the standard errors "
                     f"of the fit (structure='full' gives them).</div>")
        h.append(f"<p>Covariance: {what}; two-sided p-values "
                 f"of <code>w = 0</code>. Signif. codes: *** &lt; 0.001 &lt; ** &lt; 0.01 &lt; * "
                 f"&lt; 0.05 &lt; . &lt; 0.1. Orange rows: not identifiable (n.i.: no z or p-value).</p>")
        if images.get("wald"):
            h.append(f"<img src='{images['wald']}' alt='Wald z-values'>")
        rows, classes = [], []
        for r in table.rows():
            if not r["free"]:
                rows.append([html.escape(r["name"]), "0 (pruned)", "", "", "", ""])
                classes.append("pruned")
                continue
            if not r["identifiable"]:
                rows.append([html.escape(r["name"]), _fmt(r["estimate"], ".6g"), "n.i.", "", "",
                             ""])
                classes.append("ni")
                continue
            rows.append([html.escape(r["name"]), _fmt(r["estimate"], ".6g"),
                         _fmt(r["std_error"]), _fmt(r["z"], ".3f"),
                         ("&lt; 2e-16" if r["p_value"] is not None and r["p_value"] < 2e-16
                          else _fmt(r["p_value"])), r["stars"]])
            classes.append("ni" if not r["identifiable"] else
                           ("sig" if r["p_value"] is not None and r["p_value"] < 0.05 else ""))
        h.append("<div class='scroll'>" + _table(
            ["parameter", "estimate", "std. error", "z", "p-value", ""], rows, classes, left=(0, 5))
            + "</div>")

    h.append("<h2>Spectra</h2><p>Eigenvalues of the curvature "
             f"(<code>{html.escape(spec.kind)}</code>) per row block (one per unit) and per "
             "layer block; the full matrix by dense diagonalisation or Lanczos. A minimum has no "
             "negative eigenvalue (red points).</p>")
    rows = [[html.escape(r["block"]), _fmt(r["min"]), _fmt(r["max"]), _fmt(r["condition"], ".3g"),
             html.escape(str(r["negative"]))] for r in spec.summary_rows()]
    h.append(_table(["block", "min eigenvalue", "max eigenvalue", "condition", "negative"],
                    rows, left=(0,)))
    for img in images.get("spectra", []):
        h.append(f"<img src='{img}' alt='spectrum'>")
    if images.get("heatmaps"):
        h.append("<h2>Curvature blocks</h2><p>Heat maps on a symmetric log scale "
                 "(linear within 10<sup>-3</sup> of the largest entry); lines separate units "
                 "(layer blocks) or layers (full matrix).</p>")
        for img in images["heatmaps"]:
            h.append(f"<img src='{img}' alt='heat map' style='max-width:48%'>")

    if lap is not None:
        h += _laplace_html(lap, images)

    if path_dict is not None:
        h.append("<h2>Pruning path</h2>")
        h.append(f"<p>Criterion <code>{html.escape(str(path_dict['criterion']))}</code>"
                 + (f", threshold {path_dict['threshold']:g}" if path_dict.get("threshold")
                    is not None else "")
                 + f": {html.escape(str(path_dict.get('stop_reason', '')))}. "
                   "Highlighted: the chosen model.</p>")
        if images.get("pruning"):
            h.append(f"<img src='{images['pruning']}' alt='pruning path'>")
        rows, classes = [], []
        for s in path_dict["steps"]:
            rows.append([s["step"], s["n_free"], _fmt(s["loss"], ".6g"), _fmt(s["bic"], ".6g"),
                         _fmt(s.get("val_loss"), ".6g"), _fmt(s.get("p_value"), ".3g"),
                         html.escape(", ".join(s["names"])) or "&ndash;",
                         "" if s["accepted"] else "rejected"])
            classes.append("best" if s["step"] == path_dict.get("best") else "")
        h.append("<div class='scroll'>" + _table(
            ["step", "free", "loss", "BIC", "val. loss", "p-value", "removed", ""], rows, classes,
            left=(6,)) + "</div>")

    h.append("<h2>Files</h2><p class='files'>" + "".join(
        f"<a href='{f}'>{f}</a>" for f in files) + "</p>")
    h.append("</main></body></html>")
    return "\n".join(h)
