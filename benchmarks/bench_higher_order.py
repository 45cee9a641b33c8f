"""Order-p directional derivatives on P2: dist_hess Taylor mode against JAX nested ``jvp``.

P2: scikit-learn ``load_digits`` (all 1797 examples, 64 inputs scaled to [0, 1]),
a 64-32-10 network (tanh hidden, identity output), softmax cross-entropy,
random weights, a random unit direction ``v``.  Both sides compute
``[E, DE[v], ..., D^pE[v, ..., v]]`` in float64 on one thread: BLAS pinned with
threadpoolctl, XLA with ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` (set before JAX is imported).  JAX programs are
jitted and compiled before timing; every timing is the minimum over repeats.

Run: ``python benchmarks/bench_higher_order.py [--orders 1-8] [--repeat 5]``.
Prints markdown tables on stdout.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout
import dist_hess as dh  # noqa: E402

SPEC = {"inputs": 64,
        "layers": [{"type": "dense", "units": 32, "activation": "tanh"},
                   {"type": "dense", "units": 10, "activation": "identity"}],
        "loss": "softmax_cross_entropy"}


def problem(seed=0):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    model = dh.Model.from_dict(SPEC)
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.5, size=model.n_params)
    v = rng.normal(size=model.n_params)
    return model, X, y, w, v / np.linalg.norm(v)


def jax_objective(model, X, y):
    """``E(w)`` for P2 in plain JAX (independent of dist_hess's engine)."""
    (s1, d1), (s2, d2) = model.layer_shapes
    Xj = jnp.asarray(X)
    onehot = jnp.asarray(np.eye(10)[y])

    def E(w):
        W1 = w[: s1 * d1].reshape(s1, d1)
        W2 = w[s1 * d1:].reshape(s2, d2)
        h = jnp.tanh(Xj @ W1[:, 1:].T + W1[:, 0])
        out = h @ W2[:, 1:].T + W2[:, 0]
        return -jnp.sum(onehot * jax.nn.log_softmax(out, axis=1))

    return E


def jax_program(E, order):
    def derivatives(w, v):
        f = lambda t: E(w + t * v)  # noqa: E731
        values = []
        for _ in range(order + 1):
            values.append(f(0.0))
            f = (lambda g: lambda t: jax.jvp(g, (t,), (1.0,))[1])(f)
        return jnp.stack(values)

    return jax.jit(derivatives)


def best_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_orders(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", default="1-8", help="range of orders for the growth table")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    model, X, y, w, v = problem()
    E = jax_objective(model, X, y)
    wj, vj = jnp.asarray(w), jnp.asarray(v)
    rows = []
    with threadpool_limits(limits=1):
        for p in parse_orders(args.orders):
            program = jax_program(E, p)
            t0 = time.perf_counter()
            ref = np.asarray(program(wj, vj).block_until_ready())
            compile_s = time.perf_counter() - t0
            ours = model.directional_derivatives(w, X, y, v, p)
            err = float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-300)))
            t_ours = best_time(lambda: model.directional_derivatives(w, X, y, v, p), args.repeat)
            t_jax = best_time(lambda: program(wj, vj).block_until_ready(), args.repeat)
            rows.append((p, t_ours, t_jax, compile_s, err))
    print(f"P2: load_digits n={X.shape[0]}, 64-32-10 tanh/identity, softmax cross-entropy, "
          f"t={model.n_params} parameters, float64, 1 thread, min of {args.repeat} runs\n")
    print("| order p | dist_hess (ms) | JAX nested jvp, jit (ms) | JAX / dist_hess | JAX compile (s) "
          "| max rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p, t_ours, t_jax, compile_s, err in rows:
        print(f"| {p} | {1e3 * t_ours:.1f} | {1e3 * t_jax:.1f} | {t_jax / t_ours:.2f} | {compile_s:.1f} "
              f"| {err:.1e} |")
    base = {name: rows[0][i] for name, i in (("ours", 1), ("jax", 2))}
    print("\nCost relative to the lowest order measured:\n")
    print("| order p | dist_hess | JAX |")
    print("|---:|---:|---:|")
    for p, t_ours, t_jax, _, _ in rows:
        print(f"| {p} | {t_ours / base['ours']:.1f} | {t_jax / base['jax']:.1f} |")


if __name__ == "__main__":
    main()
