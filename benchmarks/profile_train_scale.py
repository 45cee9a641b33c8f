"""Where the time of a Newton iteration goes at scale (the profile behind docs/training.md).

    python -m benchmarks.profile_train_scale            # about 3 minutes
    python -m benchmarks.profile_train_scale --skip-blocks

On the teacher-10k problem of `benchmarks.bench_train_scale` (784-128-10, t = 101,770,
n = 10,000) at ``w0 = model.init(seed=0)``, best of ``--repeats``:

- in this process at 1 and 2 BLAS threads: value and gradient on all rows; a
  Gauss-Newton and a Hessian product on 10% of the rows, from a kept forward cache
  (`ShardCurvature`) and through ``model.hvp`` (which reruns the forward pass); the
  diagonal of the row blocks on 10% of the rows; the row blocks themselves on 500
  rows; one 785 x 785 block by Cholesky and by ``eigh``;
- on a 2-worker LocalCluster (one thread each): ``dh.evaluate`` value and gradient,
  the same by `ShardPool` tasks, a round trip of a task that does nothing, and one
  sampled product on 1 and on all 9 shards.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.bench_train_scale import problem
from dist_hess.engine.operator import ShardCurvature


def best(f, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _noop(x):
    return None


def in_process(model, X, Y, w, repeats, blocks):
    rng = np.random.default_rng(0)
    v = rng.standard_normal(model.n_params)
    rows = len(X) // 10
    out = {}
    for threads in (1, 2):
        with threadpool_limits(threads):
            op = ShardCurvature(model, w, X[:rows], Y[:rows])
            t = {
                "value+gradient, all rows": best(lambda: model.value_and_gradient(w, X, Y), repeats),
                "GN product, 10% rows, kept forward": best(lambda: op.product(v, "gauss_newton"), repeats),
                "H product, 10% rows, kept forward": best(lambda: op.product(v, "hessian"), repeats),
                "H product, 10% rows, model.hvp": best(lambda: model.hvp(w, X[:rows], Y[:rows], v), repeats),
                "GN diagonal of the row blocks, 10% rows": best(lambda: op.diagonal("gauss_newton"), repeats),
            }
            if blocks:
                t["GN row blocks, 500 rows"] = best(
                    lambda: model.curvature(w, X[:500], Y[:500], kind="gauss_newton", structure="row"), 1)
                A = rng.standard_normal((785, 2000))
                B = A @ A.T / 2000 + np.eye(785)
                t["785x785 Cholesky"] = best(lambda: np.linalg.cholesky(B), repeats)
                t["785x785 eigh"] = best(lambda: np.linalg.eigh(B), repeats)
        out[threads] = t
    return out


def on_cluster(model, X, Y, w, repeats):
    from distributed import Client, LocalCluster

    import dist_hess as dh
    from dist_hess.distributed.cluster import BLAS_ENV
    from dist_hess.train.objective import DaskObjective

    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=dict(BLAS_ENV),
                      dashboard_address=":0") as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2)
        t0 = time.perf_counter()
        objective = DaskObjective(model, X, Y, client=client, direct=True)
        pool = objective._shard_pool()
        out["load the data onto the workers"] = time.perf_counter() - t0
        out["dh.evaluate value+gradient"] = best(
            lambda: dh.evaluate(model, w, objective.X, objective.Y, client=client), repeats)
        out["ShardPool value+gradient"] = best(lambda: pool.value_gradient(model, w), repeats)
        out["ShardPool value"] = best(lambda: pool.value(model, w), repeats)
        x = pool._x[0]
        out["round trip of an empty task"] = best(
            lambda: client.gather(client.submit(_noop, x, pure=False)), 4 * repeats)
        v = np.random.default_rng(0).standard_normal(model.n_params)
        for shards in ((0,), tuple(range(pool.n_shards))):
            sample = objective.sampled_curvature(w, shards)
            sample.product(v, "gauss_newton")             # builds the operators
            out[f"sampled GN product, {len(shards)} shard(s)"] = best(
                lambda: sample.product(v, "gauss_newton"), repeats)
            sample.release()
        objective.close()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-blocks", action="store_true", help="skip the row blocks (slow)")
    args = parser.parse_args(argv)
    model, X, Y, _ = problem("teacher-10k")
    w = model.init(seed=0)
    load = os.getloadavg()[0]
    local = in_process(model, X, Y, w, args.repeats, not args.skip_blocks)
    remote = on_cluster(model, X, Y, w, args.repeats)
    print(f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores); "
          f"best of {args.repeats}\n")
    print("| in this process | 1 BLAS thread | 2 BLAS threads |\n|---|---:|---:|")
    for name in local[1]:
        print(f"| {name} | {local[1][name] * 1e3:.1f} ms | {local[2][name] * 1e3:.1f} ms |")
    print("\n| 2-worker LocalCluster | time |\n|---|---:|")
    for name, seconds in remote.items():
        print(f"| {name} | {seconds * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
