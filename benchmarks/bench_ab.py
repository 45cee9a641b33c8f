"""``dh.evaluate`` on two source trees side by side: the same workloads, ratio B / A.

    python -m benchmarks.bench_ab /work/main .                 # A = main, B = this tree
    python -m benchmarks.bench_ab A_TREE B_TREE --rounds 4 --repeats 5

Each round runs one process per tree, alternating A, B (then B, A the next round),
with ``PYTHONPATH`` set to that tree (so its worker processes import it too) and BLAS
pinned to one thread. A process times each workload ``--repeats`` times after a
warm-up call; the figure per tree is the best over all its rounds. Workloads, on P3
of ``benchmarks/problems.py`` (n = 20,000, t = 2,633, shards of 5,000 rows):

* ``local:row``: in this process (``client=None``, in-process whatever the size),
  value, gradient and Hessian row blocks;
* ``local:row+store``: the same with multipliers, written to a store;
* ``cluster:row``: on a 2-worker LocalCluster, data persisted (the weights' transport);
* ``cluster:row+store``: the same with multipliers, written to a store by the workers.

Each figure is a wall time and the CPU seconds of the processes involved (this one,
which holds the scheduler, and the workers), the least over repeats: on a shared
machine the CPU seconds depend much less on the load than the wall time. A ratio near
1 means the trees are as fast; the machine's load is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, logging, os, sys, tempfile, time
    sys.path.append({bench_root!r})          # benchmarks.problems if the tree has none
    import dist_hess as dh
    from benchmarks.problems import problem
    from distributed import Client, LocalCluster
    from dist_hess.distributed import persist_data
    from dist_hess.distributed import cluster as where
    from dist_hess.distributed.cluster import BLAS_ENV
    where.IN_PROCESS_WORK = 10**15                # client=None: in this process, any size

    import psutil
    workers = []                                  # worker processes, once a cluster runs

    def cpu():                                    # this process (client, scheduler) + workers
        return time.process_time() + sum(sum(p.cpu_times()[:2]) for p in workers)

    def best(call, repeats):
        call()
        wall, used = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), cpu()
            call()
            wall.append(time.perf_counter() - start)
            used.append(cpu() - start_cpu)
        return [min(wall), min(used)]

    if __name__ == "__main__":
        spec, X, Y = problem("P3", n=20000)
        model = dh.Model.from_dict(spec)
        w = model.init(seed=0)
        out, tmp = {{}}, tempfile.mkdtemp()
        row = dict(curvature="hessian", structure="row", chunk_size=5000)
        stored = dict(row, multipliers=True, store=os.path.join(tmp, "run.zarr"))
        out["local:row"] = best(lambda: dh.evaluate(model, w, X, Y, client=None, **row),
                                {repeats})
        out["local:row+store"] = best(
            lambda: dh.evaluate(model, w, X, Y, client=None, **stored), {repeats})
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          env=dict(BLAS_ENV), dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            Xp, Yp = persist_data(X, Y, client, chunk_size=5000)
            workers[:] = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
            out["cluster:row"] = best(lambda: dh.evaluate(model, w, Xp, Yp, client=client,
                                                          curvature="hessian"), {repeats})
            out["cluster:row+store"] = best(lambda: dh.evaluate(
                model, w, Xp, Yp, client=client, curvature="hessian", multipliers=True,
                store=os.path.join(tmp, "cluster.zarr")), {repeats})
        print(json.dumps(out))
""")


def run_tree(tree: str, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    bench_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(bench_root=bench_root,
                                                              repeats=repeats)],
                          env=env, cwd=os.path.abspath(tree), capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="source tree A (e.g. a checkout of main)")
    parser.add_argument("b", help="source tree B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    best = {"a": {}, "b": {}}                     # workload -> [wall, cpu] seconds
    for round_ in range(args.rounds):
        for side in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
            for key, seconds in run_tree(getattr(args, side), args.repeats).items():
                old = best[side].get(key, [float("inf")] * 2)
                best[side][key] = [min(x, y) for x, y in zip(seconds, old)]
        print(f"round {round_ + 1}: load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| workload | A wall / CPU s | B wall / CPU s | B / A wall | B / A CPU |")
    for key in best["a"]:
        (aw, ac), (bw, bc) = best["a"][key], best["b"][key]
        print(f"| {key} | {aw:.3f} / {ac:.3f} | {bw:.3f} / {bc:.3f} | {bw / aw:.2f} | "
              f"{bc / ac:.2f} |")


if __name__ == "__main__":
    main()
