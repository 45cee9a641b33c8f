"""Third-order information at work: Halley steps and how quadratic a fitted network is.

A 10-6-1 tanh network on scikit-learn's diabetes data (442 examples, squared
loss, L2 penalty) is fitted by Newton's method.  Along each Newton
direction ``d`` the exact derivatives ``D^qE[d, ..., d]``, ``q = 1..4``, cost
one Taylor pass (``model.directional_derivatives``), so the step length can
come from a higher-order model of ``phi(s) = E(w + s d)`` instead of ``s = 1``:

* Newton (quadratic model): ``s = -D1 / D2`` (``= 1`` without damping);
* Halley (cubic model, one Halley iteration on ``phi'``):
  ``s = -2 D1 D2 / (2 D2^2 - D1 D3)``;
* quartic model: the minimiser of ``sum_q D^q s^q / q!`` (``q <= 4``) nearest 0.

Starting from 150 L-BFGS iterations, part 1 runs Newton with each step rule
to convergence; part 2 compares the three step lengths with the exact line
minimum along the first directions; part 3 asks, at the fit, how far the
quadratic (Wald / Laplace) picture holds: along random directions and Hessian
eigenvectors, the cubic and quartic Taylor terms relative to the quadratic one
at one and two standard errors.

Run: ``python examples/third_order.py`` (a few seconds).  See docs/higher_order.md.
"""
from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
from scipy.optimize import minimize
from sklearn.datasets import load_diabetes

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout
import dist_hess as dh  # noqa: E402

SPEC = {"inputs": 10,
        "layers": [{"type": "dense", "units": 6, "activation": "tanh"},
                   {"type": "dense", "units": 1, "activation": "identity"}],
        "loss": "squared",
        "penalty": {"type": "l2", "lambda": 1.0}}


def data():
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = (y - y.mean()) / y.std()
    return X, y


def newton_direction(model, w, X, y):
    """``d = -(H + mu I)^{-1} g``: ``mu = 0`` where ``H`` is safely positive definite, else a shift
    that makes its smallest eigenvalue ``1e-3`` of its largest."""
    g = model.gradient(w, X, y)
    H = model.curvature(w, X, y, "hessian", "full")
    lam, Q = np.linalg.eigh(H)
    mu = 0.0 if lam[0] > 1e-6 * abs(lam[-1]) else 1e-3 * abs(lam[-1]) - lam[0]
    d = -Q @ ((Q.T @ g) / (lam + mu))
    return d, g, mu


def step_lengths(D):
    """Step lengths along ``d`` from the derivatives ``D = [E, D1, D2, D3, D4]``."""
    _, D1, D2, D3, D4 = D
    newton = -D1 / D2
    halley = -2.0 * D1 * D2 / (2.0 * D2**2 - D1 * D3)
    # quartic model: roots of D1 + D2 s + D3 s^2/2 + D4 s^3/6 with positive curvature, nearest 0
    roots = np.roots([D4 / 6.0, D3 / 2.0, D2, D1])
    roots = roots[np.abs(roots.imag) < 1e-12].real
    roots = roots[D2 + D3 * roots + D4 * roots**2 / 2.0 > 0]
    quartic = roots[np.argmin(np.abs(roots))] if roots.size else newton
    return {"newton": newton, "halley": halley, "quartic": quartic}


def line_minimum(phi, s0):
    """The local minimiser of ``phi`` in ``[0, 2 s0]`` (golden section)."""
    lo, hi = 0.0, 2.0 * s0
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = phi(a), phi(b)
    while hi - lo > 1e-7 * s0:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = phi(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = phi(b)
    return 0.5 * (lo + hi)


def warm_start(model, w0, X, y):
    """150 L-BFGS iterations bring the weights into the basin of a minimum (positive Hessian)."""
    fun = lambda w: model.value_and_gradient(w, X, y)  # noqa: E731
    return minimize(fun, w0, jac=True, method="L-BFGS-B", options={"maxiter": 150}).x


def newton_step(model, w, X, y, rule):
    """One damped Newton step with step length ``rule``; returns the new weights and ``||grad||``."""
    d, g, _ = newton_direction(model, w, X, y)
    E0 = model.value(w, X, y)
    s = 1.0
    if rule != "newton":
        s = step_lengths(model.directional_derivatives(w, X, y, d, 4))[rule]
        if not np.isfinite(s) or s <= 0:
            s = 1.0
    while model.value(w + s * d, X, y) > E0 and s > 1e-10:     # backtracking, rarely needed here
        s *= 0.5
    return w + s * d, np.linalg.norm(g)


def step_length_table(model, w, X, y, E_star, iterations=3):
    print("Part 2. Step lengths along the first Newton directions d of the run with s = 1")
    print("        s: step length; E - E*: objective after the step, E* the value at the fit\n")
    print(f"{'it':>3} {'E - E*':>9} {'mu':>6} | {'s newton':>9} {'s halley':>9} {'s quartic':>9} {'s exact':>9} |"
          f" {'newton':>9} {'halley':>9} {'quartic':>9} {'exact':>9}")
    for it in range(iterations):
        d, _, mu = newton_direction(model, w, X, y)
        D = model.directional_derivatives(w, X, y, d, 4)
        s = step_lengths(D)
        phi = lambda t: model.value(w + t * d, X, y)  # noqa: E731
        s["exact"] = line_minimum(phi, max(s["newton"], s["halley"]))
        gaps = {k: phi(v) - E_star for k, v in s.items()}
        print(f"{it:>3} {D[0] - E_star:>9.2e} {mu:>6.2g} | {s['newton']:>9.5f} {s['halley']:>9.5f}"
              f" {s['quartic']:>9.5f} {s['exact']:>9.5f} | {gaps['newton']:>9.2e} {gaps['halley']:>9.2e}"
              f" {gaps['quartic']:>9.2e} {gaps['exact']:>9.2e}")
        w = w + s["newton"] * d
    print()


def convergence_table(model, w_start, X, y, tol=1e-9, max_iter=30):
    """Newton (s = 1), Newton-Halley and Newton-quartic from the same start: E - E* per iteration."""
    runs = {}
    for rule in ("newton", "halley", "quartic"):
        w, history = w_start.copy(), []
        for _ in range(max_iter):
            E = model.value(w, X, y)
            w_next, gnorm = newton_step(model, w, X, y, rule)
            history.append((E, gnorm))
            if gnorm < tol:
                break
            w = w_next
        runs[rule] = (w, history)
    E_star = min(h[-1][0] for _, h in runs.values())
    print("Part 1. Newton to ||grad|| < 1e-9 from the warm start: E - E* and ||grad|| per iteration\n")
    print(f"{'it':>3} | {'newton: E-E*':>13} {'||grad||':>9} | {'halley: E-E*':>13} {'||grad||':>9} |"
          f" {'quartic: E-E*':>13} {'||grad||':>9}")
    for it in range(max(len(h) for _, h in runs.values())):
        cells = []
        for rule in ("newton", "halley", "quartic"):
            h = runs[rule][1]
            cells.append(f"{h[it][0] - E_star:>13.3e} {h[it][1]:>9.1e}" if it < len(h) else " " * 23)
        print(f"{it:>3} | " + " | ".join(cells))
    print()
    return runs["newton"][0], E_star


def quadratic_check(model, w, X, y, n_random=5):
    n, t = X.shape[0], model.n_params
    sse = 2.0 * (model.value(w, X, y) - model.penalty.value(model, w))
    sigma2 = sse / (n - t)
    H = model.curvature(w, X, y, "hessian", "full")
    lam, Q = np.linalg.eigh(H)
    print(f"Part 3. How quadratic is E around the fit?  n = {n}, t = {t}, sigma^2 = {sigma2:.3f},"
          f" Hessian eigenvalues {lam[0]:.3g} .. {lam[-1]:.3g}")
    print("        Along a unit direction v, one standard error is delta = sigma / sqrt(v'Hv); the Taylor terms")
    print("        of E(w + s v) - E(w) at s = delta are Q = D2 s^2/2 (= sigma^2/2), C = D3 s^3/6, R = D4 s^4/24.\n")
    rng = np.random.default_rng(0)
    directions = [(f"random {i}", v / np.linalg.norm(v)) for i, v in enumerate(rng.normal(size=(n_random, t)))]
    directions += [("eigvec lambda_min", Q[:, 0]), ("eigvec 2nd smallest", Q[:, 1]), ("eigvec lambda_max", Q[:, -1])]
    print(f"{'direction':>20} {'delta':>8} | {'C/Q at 1 se':>11} {'R/Q at 1 se':>11} {'C/Q at 2 se':>11} |"
          f" {'true/quad at 2 se':>17}")
    for name, v in directions:
        D = model.directional_derivatives(w, X, y, v, 4)
        delta = math.sqrt(sigma2 / D[2])
        terms = [D[q] * delta**q / math.factorial(q) for q in range(5)]
        true2 = model.value(w + 2 * delta * v, X, y) - D[0]
        quad2 = D[2] * (2 * delta) ** 2 / 2 + D[1] * 2 * delta
        print(f"{name:>20} {delta:>8.4f} | {terms[3] / terms[2]:>11.4f} {terms[4] / terms[2]:>11.4f}"
              f" {2 * terms[3] / terms[2]:>11.4f} | {true2 / quad2:>17.4f}")
    print("\n   |C/Q| well below 1 means Wald intervals (quadratic approximation) are trustworthy in that")
    print("   direction; directions of small curvature are where the cubic term matters first.")


def main():
    X, y = data()
    model = dh.Model.from_dict(SPEC)
    w_start = warm_start(model, model.init(seed=1), X, y)
    print(f"{model!r} on load_diabetes (standardised), L2 penalty lambda = {model.penalty.to_dict()['lambda']}\n")
    w, E_star = convergence_table(model, w_start, X, y)
    step_length_table(model, w_start, X, y, E_star)
    quadratic_check(model, w, X, y)


if __name__ == "__main__":
    main()
