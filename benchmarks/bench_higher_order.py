"""Order-p directional derivatives on P2: dist_hess Taylor mode against JAX nested ``jvp``.

P2: scikit-learn ``load_digits`` (all 1797 examples, 64 inputs scaled to [0, 1]),
a 64-32-10 network (tanh hidden, identity output), softmax cross-entropy,
random weights, a random unit direction ``v``.  Both sides compute
``[E, DE[v], ..., D^pE[v, ..., v]]`` in float64 on one thread: BLAS pinned with
threadpoolctl, XLA with ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` (set before JAX is imported).  JAX programs are
jitted and compiled before timing; every timing is the minimum over
interleaved repeats, wall-clock and CPU time (the steadier one on a shared
machine).

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


def best_times(fns, repeat):
    """Min over ``repeat`` interleaved runs of each function: ``[(wall, cpu)]`` in seconds.

    CPU time (``time.process_time``, user + system of this process) is the
    steadier figure on a shared machine; both run on one thread.
    """
    for fn in fns:
        fn()
    best = [[np.inf, np.inf] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w1, c1 = time.perf_counter(), time.process_time()
            best[i][0] = min(best[i][0], w1 - w0)
            best[i][1] = min(best[i][1], c1 - c0)
    return best


def parse_orders(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", default="1-8", help="range of orders for the growth table")
    parser.add_argument("--repeat", type=int, default=10)
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
            (ours_wall, ours_cpu), (jax_wall, jax_cpu) = best_times(
                [lambda: model.directional_derivatives(w, X, y, v, p),
                 lambda: program(wj, vj).block_until_ready()], args.repeat)
            rows.append((p, ours_wall, jax_wall, ours_cpu, jax_cpu, compile_s, err))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"P2: load_digits n={X.shape[0]}, 64-32-10 tanh/identity, softmax cross-entropy, "
          f"t={model.n_params} parameters, float64, 1 thread; min of {args.repeat} interleaved runs; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs\n")
    print("| order p | dist_hess wall (ms) | JAX wall (ms) | dist_hess CPU (ms) | JAX CPU (ms) "
          "| JAX / dist_hess (CPU) | JAX compile (s) | max rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p, ow, jw, oc, jc, compile_s, err in rows:
        print(f"| {p} | {1e3 * ow:.1f} | {1e3 * jw:.1f} | {1e3 * oc:.1f} | {1e3 * jc:.1f} | {jc / oc:.2f} "
              f"| {compile_s:.1f} | {err:.1e} |")
    print("\nCPU time relative to the lowest order measured:\n")
    print("| order p | dist_hess | JAX |")
    print("|---:|---:|---:|")
    for p, _, _, oc, jc, _, _ in rows:
        print(f"| {p} | {oc / rows[0][3]:.2f} | {jc / rows[0][4]:.2f} |")


if __name__ == "__main__":
    main()
