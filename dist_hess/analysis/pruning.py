"""Optimal Brain Damage / Surgeon saliencies and a backward pruning loop.

For a weight ``q`` at a minimum of ``E`` with Hessian ``H`` (second-order model
``dE = 1/2 dw' H dw``):

* OBD (LeCun, Denker & Solla 1990) ignores off-diagonal terms:
  ``L_q = w_q^2 H_qq / 2``.
* OBS (Hassibi & Stork 1993) minimises ``1/2 dw' H dw`` subject to
  ``e_q' (w + dw) = 0``:

      L_q  = w_q^2 / (2 [H^-1]_qq)
      dw   = -w_q / [H^-1]_qq  H^-1 e_q

  and for a group ``G`` removed together (a unit):
  ``L_G = 1/2 w_G' ([H^-1]_GG)^-1 w_G``, ``dw = -H^-1[:, G] ([H^-1]_GG)^-1 w_G``.

``structure`` ``full`` uses the whole Hessian (exact OBS), ``row``/``layer`` its
diagonal blocks (OBS exact within the block holding ``q``; the update moves
that block only).  When ``e_q`` reaches the null space of ``H``
(:mod:`.covariance`), the weight can be moved at no second-order cost: ``L_q = 0``
and ``dw`` is the null-space direction through ``e_q``.

:func:`prune` removes the least significant weight (or hidden unit), starts
from the OBS-compensated weights, retrains the remaining ones with
:func:`dist_hess.train.fit` (pruned weights held at 0 by a
:class:`~.masking.MaskedModel`), and stops by a stated criterion.
"""
from __future__ import annotations

import csv
import io
import math
import numbers
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from ..jsonio import dump_json
from .covariance import (LOADING_TOL, RCOND, check_covariance_options, hessian_blocks,
                         pseudo_inverse)
from .covariance import covariance as compute_covariance
from .groups import parameter_name, unit_group
from .masking import MaskedModel
from .source import loss_sum, resolve

__all__ = ["Saliencies", "saliencies", "obs_step", "obs_group_step", "obs_update", "prune",
           "PruningStep", "PruningPath", "bic"]


# ---------------------------------------------------------------- saliencies

def obs_step(H, w, q: int, rcond: float = RCOND):
    """``(dw, L_q)`` of OBS for weight ``q`` of a quadratic with Hessian ``H`` (closed form above)."""
    w = np.asarray(w, dtype=float)
    Hinv, loading, _, _, _, V0 = pseudo_inverse(H, rcond)
    return _obs_from_inverse(Hinv, loading, V0, w, q)


def _obs_from_inverse(Hinv, loading, V0, w, q):
    if loading[q] > LOADING_TOL:               # e_q reaches the null space: free move
        u = V0 @ V0[q]
        return -w[q] / u[q] * u, 0.0
    dw = -w[q] / Hinv[q, q] * Hinv[:, q]
    return dw, float(w[q] ** 2 / (2.0 * Hinv[q, q]))


def obs_group_step(Hinv, w, group):
    """``(dw, L_G)`` removing every weight of ``group`` at once, given ``H^-1``."""
    w = np.asarray(w, dtype=float)
    group = np.asarray(group, dtype=int)
    S = Hinv[np.ix_(group, group)]
    Sinv, *_ = pseudo_inverse(S)
    a = Sinv @ w[group]
    return -Hinv[:, group] @ a, float(0.5 * w[group] @ a)


@dataclass
class Saliencies:
    """OBD and OBS saliencies per flat parameter (``nan`` for pruned parameters)."""

    obd: np.ndarray
    obs: np.ndarray
    structure: str


def _saliencies(fitted, cov) -> Saliencies:
    t = fitted.model.n_params
    obd, obs = np.full(t, np.nan), np.full(t, np.nan)
    H = hessian_blocks(fitted.model, fitted.curvature(cov.kind, cov.structure), cov.structure,
                       [blk.index for blk in cov.inverses])
    for blk, Hb in zip(cov.inverses, H):
        w = fitted.w[blk.index]
        diag = np.diagonal(blk.inverse)
        identifiable = blk.loading <= LOADING_TOL
        obs[blk.index] = 0.0
        obs[blk.index[identifiable]] = w[identifiable] ** 2 / (2.0 * diag[identifiable])
        obd[blk.index] = 0.5 * w ** 2 * np.diagonal(Hb)
    return Saliencies(obd=obd, obs=obs, structure=cov.structure)


def _inverse(fitted, structure, kind, rcond):
    """The blocks' pseudo-inverses ``H_b^+`` (a :class:`Covariance` without noise variance)."""
    return compute_covariance(fitted, method="inverse", structure=structure, kind=kind,
                              rcond=rcond, warn=False)


def saliencies(source, *, structure: str = "full", kind: str = "hessian", data=None,
               rcond: float = RCOND) -> Saliencies:
    """OBD ``w_q^2 H_qq / 2`` and OBS ``w_q^2 / (2 [H^-1]_qq)`` for every free weight."""
    fitted = resolve(source, data=data)
    return _saliencies(fitted, _inverse(fitted, structure, kind, rcond))


def _group_update(cov, w, group):
    """OBS update of ``group`` with the block pseudo-inverses touching it."""
    group = np.asarray(group, dtype=int)
    touched = [blk for blk in cov.inverses if np.intersect1d(blk.index, group).size]
    dw = np.zeros_like(w)
    if len(group) == 1 and len(touched) == 1:
        blk = touched[0]
        local = int(np.flatnonzero(blk.index == group[0])[0])
        d, _ = _obs_from_inverse(blk.inverse, blk.loading, blk.null_vectors, w[blk.index], local)
        dw[blk.index] = d
        return dw
    union = np.concatenate([blk.index for blk in touched])
    Hinv = np.zeros((union.size, union.size))
    start = 0
    for blk in touched:
        n = blk.index.size
        Hinv[start:start + n, start:start + n] = blk.inverse
        start += n
    pos = {int(q): i for i, q in enumerate(union)}
    d, _ = obs_group_step(Hinv, w[union], [pos[int(q)] for q in group])
    dw[union] = d
    return dw


def obs_update(source, q, *, structure: str = "full", kind: str = "hessian", data=None,
               rcond: float = RCOND) -> np.ndarray:
    """The OBS compensating update ``dw`` (``(t,)``, ``dw[q] = -w[q]``) removing ``q``
    (an index, or a sequence of indices removed together)."""
    fitted = resolve(source, data=data)
    cov = _inverse(fitted, structure, kind, rcond)
    group = np.atleast_1d(np.asarray(q, dtype=int))
    if group.size == 0 or group.min() < 0 or group.max() >= fitted.model.n_params:
        raise ValueError(f"q must be parameter indices in 0..{fitted.model.n_params - 1}, got {q!r}")
    if not np.all(fitted.free[group]):
        raise ValueError("cannot remove a parameter that is already pruned")
    return _group_update(cov, fitted.w, group)


# ---------------------------------------------------------------- criteria

def bic(model, loss: float, n: int, n_free: int) -> float:
    """Schwarz's criterion: ``-2 log L + p log n`` up to a constant.

    Squared loss (Gaussian noise, variance profiled out): ``N log(RSS / N) + p log n``
    with ``N = n c`` and ``RSS = 2 loss``; cross-entropy losses: ``2 loss + p log n``.
    """
    if model.loss.name == "squared":
        N = n * model.sizes[-1]
        rss = max(2.0 * loss, np.finfo(float).tiny)
        return float(N * math.log(rss / N) + n_free * math.log(n))
    return float(2.0 * loss + n_free * math.log(n))


@dataclass
class PruningStep:
    """One step of the path: what was removed, and the refitted model's numbers.

    Step 0 is the starting fit (nothing removed).  ``p_value`` and ``saliency``
    are those of the removed weight or unit just before removal; ``loss`` is the
    training loss ``sum_i g_i`` (no penalty), ``objective`` adds the penalty;
    ``val_loss`` the validation loss (``None`` without validation data).
    """

    step: int
    removed: list
    names: list
    p_value: float | None
    saliency: float | None
    loss: float
    objective: float
    bic: float
    val_loss: float | None
    n_free: int
    fit_status: str
    fit_iterations: int
    accepted: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("p_value", "saliency", "loss", "objective", "bic", "val_loss"):
            if d[key] is not None:
                d[key] = float(d[key]) if math.isfinite(d[key]) else None
        d["removed"] = [int(q) for q in self.removed]
        return d


@dataclass
class PruningPath:
    """The steps of :func:`prune` and the model it chose.

    ``steps`` (a list of :class:`PruningStep`; the path also iterates and indexes
    like it), ``best``: the index of the chosen step, ``model`` (a
    :class:`MaskedModel`) and ``w`` its weights, ``stop_reason``.
    """

    steps: list
    criterion: str
    threshold: float | None
    best: int
    model: object
    w: np.ndarray
    stop_reason: str

    def __len__(self):
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, i):
        return self.steps[i]

    @property
    def mask(self) -> np.ndarray:
        return self.model.free

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "threshold": self.threshold, "best": int(self.best),
                "stop_reason": self.stop_reason, "steps": [s.to_dict() for s in self.steps]}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def to_csv(self, path=None) -> str:
        return path_to_csv(self.to_dict(), path)

    def to_text(self) -> str:
        return path_to_text(self.to_dict())

    def save(self, path, X, Y, *, kind: str = "hessian", structure: str = "full",
             multipliers: bool = False) -> str:
        """Write the chosen model to a store: weights, value, gradient, ``kind:structure``
        curvature, the mask in the model JSON and the path in ``attrs["pruning_path"]``."""
        from ..store import write_store
        base = self.model.with_mask(None)
        X = np.asarray(X)
        value, grad = base.value_and_gradient(self.w, X, Y)
        curvature = base.curvature(self.w, X, Y, kind=kind, structure=structure)
        mults = base.multipliers(self.w, X, Y) if multipliers else None
        return write_store(path, self.model, self.w, n_examples=X.shape[0], value=value,
                           gradient=grad, curvature={(kind, structure): curvature},
                           multipliers=mults, attrs={"pruning_path": self.to_dict()})


def path_to_csv(path_dict, path=None) -> str:
    buf = io.StringIO()
    keys = ["step", "removed", "names", "p_value", "saliency", "loss", "objective", "bic",
            "val_loss", "n_free", "fit_status", "fit_iterations", "accepted", "note"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for s in path_dict["steps"]:
        row = {k: s.get(k) for k in keys}
        row["removed"] = " ".join(str(q) for q in s["removed"])
        row["names"] = "; ".join(s["names"])
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    text = buf.getvalue()
    if path is not None:
        with open(path, "w", newline="") as f:
            f.write(text)
    return text


def path_to_text(path_dict) -> str:
    lines = [f"pruning path (criterion {path_dict['criterion']}"
             + (f", threshold {path_dict['threshold']:g}" if path_dict.get("threshold") is not None
                else "") + f"): {path_dict['stop_reason']}",
             f"{'step':>4}  {'free':>5}  {'loss':>12}  {'BIC':>12}  {'val loss':>12}  "
             f"{'p-value':>9}  removed"]
    for s in path_dict["steps"]:
        mark = "*" if s["step"] == path_dict["best"] else (" " if s["accepted"] else "x")

        def num(x, f="12.6g"):
            return format(x, f) if x is not None else "-".rjust(int(f.split(".")[0]))
        lines.append(f"{s['step']:>3}{mark}  {s['n_free']:>5}  {num(s['loss'])}  {num(s['bic'])}  "
                     f"{num(s['val_loss'])}  {num(s['p_value'], '9.3g')}  "
                     f"{', '.join(s['names'])}")
    lines.append("* chosen model; x rejected by the criterion")
    return "\n".join(lines)


# ---------------------------------------------------------------- the loop

def _hidden_units(model):
    out = []
    for k in range(1, len(model.layers) + 1):
        if any(k in layer.sources for layer in model.layers):
            out += [(k, j) for j in range(model.layers[k - 1].units)]
    return out


def _measure(base, w, X, Y, X_val, Y_val, n_free):
    loss = loss_sum(base, w, X, Y)
    objective = base.value(w, X, Y)
    val = None if X_val is None else loss_sum(base, w, X_val, Y_val)
    return loss, objective, bic(base, loss, X.shape[0], n_free), val


def prune(model, X, Y, w, *, criterion: str = "wald", threshold: float = 0.05, X_val=None,
          Y_val=None, method: str = "newton", max_steps: int | None = None,
          unit: bool = False, rank: str = "wald", covariance: str = "hessian",
          structure: str = "full", candidates=None, fit_options: dict | None = None,
          verbose: bool = False) -> PruningPath:
    """Backward pruning: remove, retrain, repeat, stop by ``criterion``.

    Parameters
    ----------
    model, X, Y, w
        A fitted model (a :class:`Model` or a :class:`MaskedModel` already pruned)
        at weights ``w`` (a minimum of its objective), and its training data.
    criterion
        ``"wald"``: remove while the least significant candidate has Wald p-value
        ``> threshold`` (units: the joint Wald test of their weights);
        ``"bic"``: remove while BIC decreases; ``"validation"``: while the loss on
        ``(X_val, Y_val)`` decreases. With ``bic``/``validation`` the step that made
        the criterion worse is recorded (``accepted=False``) and the best step is
        returned.
    method, fit_options
        Retraining: ``MaskedModel.fit(X, Y, w0=..., method=method, **fit_options)`` (that
        is ``dist_hess.train.fit``) from the OBS-compensated weights.
    max_steps
        At most this many removals (default: until the criterion stops or no
        candidate is left).
    unit
        Remove whole hidden units (incoming row and outgoing weights) instead of weights.
    rank
        Which candidate goes first: ``"wald"`` (largest p-value), ``"obs"`` or ``"obd"``
        (smallest saliency). A non-identifiable candidate always goes first.
    covariance, structure
        Of the Wald tests and the OBS inverse (``full`` | ``layer`` | ``row``).
    candidates
        Flat indices (or a ``(t,)`` boolean mask) of the weights that may be removed
        (default all); ignored with ``unit``.
    """
    _check_prune_options(criterion, rank, threshold, max_steps, covariance, structure,
                         X_val, Y_val, fit_options)
    fit_options = dict(fit_options or {})
    base = model.with_mask(None)
    mm = MaskedModel(base, model.free)
    X = np.asarray(X, dtype=float)
    w = mm.project(base.check_weights(w))
    allowed = _candidate_mask(candidates, base.n_params)

    loss, objective, b, val = _measure(base, w, X, Y, X_val, Y_val, mm.n_free)
    steps = [PruningStep(0, [], [], None, None, loss, objective, b, val, mm.n_free, "start", 0)]
    history = [(mm, w)]
    best, reason = 0, "no candidate left"
    limit = math.inf if max_steps is None else int(max_steps)
    n_removed = 0
    while n_removed < limit:
        fitted = resolve((mm, w, X, Y))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cov = compute_covariance(fitted, method=covariance, structure=structure)
        note = "; ".join(sorted({str(c.message).split(";")[0] for c in caught}))
        choice = _choose(fitted, cov, unit, rank, allowed)
        if choice is None:
            reason = "no candidate left"
            break
        group, p_value, saliency, non_identifiable = choice
        if criterion == "wald" and p_value <= threshold and not non_identifiable:
            reason = (f"every remaining {'unit' if unit else 'weight'} has Wald p-value <= "
                      f"{threshold:g} (smallest candidate p = {p_value:.3g})")
            break
        new = mm.pruned(group)
        w0 = _warm_start(new, w, _group_update(cov, w, group), X, Y)
        result = new.fit(X, Y, w0=w0, method=method, **fit_options)
        w_new = result.w
        loss, objective, b, val = _measure(base, w_new, X, Y, X_val, Y_val, new.n_free)
        n_removed += 1
        step = PruningStep(len(steps), [int(q) for q in group],
                           [parameter_name(base, q) for q in group], p_value, saliency, loss,
                           objective, b, val, new.n_free, str(result.status), int(result.n_iter),
                           note=("non-identifiable; " if non_identifiable else "") + note)
        previous = steps[best]
        worse = ((criterion == "bic" and b > previous.bic) or
                 (criterion == "validation" and val > previous.val_loss))
        step.accepted = not worse
        steps.append(step)
        history.append((new, w_new))
        if verbose:
            print(path_to_text({"criterion": criterion, "threshold": threshold, "best": best,
                                "stop_reason": "", "steps": [step.to_dict()]}).splitlines()[2])
        if worse:
            reason = f"{'BIC' if criterion == 'bic' else 'validation loss'} increased"
            break
        best = len(steps) - 1
        mm, w = new, w_new
    else:
        reason = f"max_steps={max_steps} removals done"
    model_best, w_best = history[best]
    return PruningPath(steps=steps, criterion=criterion,
                       threshold=threshold if criterion == "wald" else None, best=best,
                       model=model_best, w=w_best, stop_reason=reason)


def _check_prune_options(criterion, rank, threshold, max_steps, covariance, structure,
                         X_val, Y_val, fit_options) -> None:
    """A ``ValueError`` / ``TypeError`` naming the first bad option of :func:`prune`."""
    if criterion not in ("wald", "bic", "validation"):
        raise ValueError(f"criterion must be 'wald', 'bic' or 'validation', got {criterion!r}")
    if rank not in ("wald", "obs", "obd"):
        raise ValueError(f"rank must be 'wald', 'obs' or 'obd', got {rank!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a p-value level and must be a number in [0, 1], got "
                         f"{threshold!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or
                                  not isinstance(max_steps, numbers.Integral) or max_steps < 0):
        raise ValueError(f"max_steps must be None or an integer >= 0, got {max_steps!r}")
    check_covariance_options(covariance, structure, "hessian")
    if criterion == "validation" and (X_val is None or Y_val is None):
        raise ValueError("criterion 'validation' needs X_val and Y_val")
    if fit_options is not None and not isinstance(fit_options, dict):
        raise TypeError(f"fit_options must be a dict of dist_hess.fit options, got "
                        f"{type(fit_options).__name__}")


def _candidate_mask(candidates, t: int) -> np.ndarray:
    """``(t,)`` booleans from ``candidates``: ``None`` (all), indices in ``0..t-1`` or a mask."""
    if candidates is None:
        return np.ones(t, dtype=bool)
    c = np.asarray(candidates)
    if c.dtype == bool:
        if c.shape != (t,):
            raise ValueError(f"a boolean candidates mask must have shape ({t},), got {c.shape}")
        return c.copy()
    if c.size == 0 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"candidates must be a non-empty sequence of parameter indices or a "
                         f"({t},) boolean mask, got {candidates!r}")
    bad = c[(c < 0) | (c >= t)]
    if bad.size:
        raise ValueError(f"candidates {bad[:5].tolist()} out of range 0..{t - 1}")
    return np.isin(np.arange(t), c)


def _warm_start(model, w, dw, X, Y):
    """The OBS-compensated weights, unless plain zeroing gives a lower objective
    (the quadratic model behind OBS can be poor far from the minimum)."""
    plain = model.project(w)
    compensated = model.project(w + dw)
    try:
        better = model.value(compensated, X, Y) < model.value(plain, X, Y)
    except (FloatingPointError, OverflowError):
        better = False
    return compensated if better else plain


def _choose(fitted, cov, unit, rank, allowed):
    """``(group, p_value, saliency, non_identifiable)`` of the candidate to remove, or ``None``."""
    model, w, free = fitted.model, fitted.w, fitted.free
    non_id = set(int(q) for q in cov.non_identifiable)
    options = []
    if unit:
        for k, j in _hidden_units(model):
            row = unit_group(model, k, j)
            if not np.any(free[row]):
                continue
            group = unit_group(model, k, j, outgoing=True)
            group = group[free[group]]
            options.append(group)
    else:
        options = [np.array([q]) for q in np.flatnonzero(free & allowed)]
    if not options:
        return None
    var = cov.diagonal()
    scored = []
    for group in options:
        if group.size == 1:
            q = int(group[0])
            z = w[q] / math.sqrt(var[q]) if var[q] > 0 else math.inf
            p = float(2.0 * special.ndtr(-abs(z))) if math.isfinite(z) else 0.0
        else:
            S = cov.submatrix(group)
            Sinv, *_ = pseudo_inverse(S)
            stat = float(w[group] @ Sinv @ w[group])
            df = int(np.linalg.matrix_rank(S)) if S.size else 0
            p = float(special.chdtrc(df, stat)) if df > 0 else 1.0
        Sinv, *_ = pseudo_inverse(cov.inverse_submatrix(group))
        obs = float(0.5 * w[group] @ Sinv @ w[group])
        is_non_id = any(int(q) in non_id for q in group)
        if rank == "obd":
            blocks = [np.array([int(q)]) for q in group]
            Hd = hessian_blocks(model, fitted.curvature("hessian", cov.structure), cov.structure,
                                blocks)
            key = float(sum(0.5 * w[b[0]] ** 2 * h[0, 0] for b, h in zip(blocks, Hd)))
        elif rank == "obs":
            key = obs
        else:
            key = -p
        scored.append((0 if is_non_id else 1, key, group, p, obs, is_non_id))
    scored.sort(key=lambda item: (item[0], item[1]))
    _, _, group, p, obs, is_non_id = scored[0]
    return group, p, obs, is_non_id
