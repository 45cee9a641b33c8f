"""Distributed benchmarks (issue 3, item 8): ``dh.evaluate`` on real worker processes.

    python -m benchmarks.bench_distributed            # P3 n=20,000; P4 n=20,000 (gradient), 10,000 (row blocks)
    python -m benchmarks.bench_distributed --quick    # fewer repeats; P4 row blocks on n=4,000 (2 shards of 2,000)
    python -m benchmarks.bench_distributed --only P3:row,P4:value_grad --json out.json
    python -m benchmarks.bench_distributed --model [out.json]   # scaling-model tables only

For each problem (``benchmarks/problems.py``) and quantity -- ``value_grad``
(value and gradient only) and ``row`` (value, gradient and Hessian row blocks,
``curvature="hessian", structure="row"``) -- it measures

* **single**: the single-process engine in this process, ``finalize(shard_sums(all
  data))`` with the very Request ``dh.evaluate`` sends to its shards, BLAS pinned
  to one thread (threadpoolctl);
* **1 worker / 2 workers**: ``dh.evaluate(..., client=c)`` on a real
  ``distributed.LocalCluster(processes=True, threads_per_worker=1)`` whose worker
  processes get ``dist_hess.distributed.cluster.BLAS_ENV`` (OMP/OPENBLAS/MKL
  threads = 1, checked with threadpoolctl inside the workers), the data persisted
  on the workers first (``dist_hess.distributed.persist_data``) in shards of
  ``chunk`` rows.

The three are interleaved repeat by repeat (single, 1 worker, 2 workers, then
again) so that a change in the machine's load hits all three; each figure is the
best (minimum) wall time over the repeats, with ``os.getloadavg()`` (1 min) read
just before that best run. Because other processes may share the cores, CPU
seconds are reported too -- the worker processes' (psutil) against the single
process's (``time.process_time``), least over repeats -- since they do not depend
on how the cores were shared.

**Bytes moved** are read from the workers' own transfer logs
(``Worker.transfer_outgoing_log``, cleared after each evaluation), split into

* *reduction*: partial sums (``shard-*`` / ``combine-*`` results, packed
  curvature) sent worker to worker along the tree;
* *to client*: the packed root gathered by the client;
* *data*: any shard of ``X``/``Y`` that had to move (should be 0 once persisted;
  reported per evaluation, first evaluation included);

and the packed partial-sum size ``B`` (bytes per shard result: value, count,
gradient ``t`` x 8, packed row blocks ``sum_k s_k d_k (d_k + 1) / 2`` x 8) with the
number of nodes and inputs of each tree level. The weights (``t`` x 8 bytes plus the
model description) are one key of each call's graph, fetched once per call by every
worker; Dask's ``sizeof`` under-reports that object (56 bytes), so its pickled size is
printed instead.

Finally a few micro-measurements feed the scaling model in ``docs/scaling.md``:
seconds per example per shard (from the task stream), the cost of one
``add_sums`` of two packed partial sums (bytes/s), packing, unpack + finalize on
the client, a no-op task round trip, and the fixed cost of an evaluation on tiny
data with 4 and 64 shards (per-task scheduling overhead). ``--model`` prints the
model's predictions (:func:`predict`, :func:`recommend`) from the built-in
measurements or from the ``--json`` file of a run.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import platform
import statistics
import sys
import time

import numpy as np

CELLS = [("P3", "value_grad"), ("P3", "row"), ("P4", "value_grad"), ("P4", "row")]

# (n, rows per shard) and repeats, full and --quick.
SIZES = {"P3": {"value_grad": (20000, 5000), "row": (20000, 5000)},
         "P4": {"value_grad": (20000, 5000), "row": (10000, 5000)}}
QUICK_SIZES = {"P3": {"value_grad": (20000, 5000), "row": (20000, 5000)},
               "P4": {"value_grad": (20000, 5000), "row": (4000, 2000)}}
REPEATS = {("P3", "value_grad"): 7, ("P3", "row"): 4, ("P4", "value_grad"): 7, ("P4", "row"): 2}
QUICK_REPEATS = {("P3", "value_grad"): 5, ("P3", "row"): 3, ("P4", "value_grad"): 5,
                 ("P4", "row"): 1}


# ------------------------------------------------------------------ helpers

def _load() -> float:
    return os.getloadavg()[0]


def _request(quantity, memory_budget=None):
    from dist_hess.engine import Request
    curvature = (("hessian", "row"),) if quantity == "row" else ()
    return Request(value=True, gradient=True, curvature=curvature, memory_budget=memory_budget)


def _evaluate_kwargs(quantity):
    return {"curvature": "hessian", "structure": "row"} if quantity == "row" else {}


def packed_bytes(model, quantity) -> int:
    """Bytes of one packed partial sum: n, value, gradient, packed row blocks (float64)."""
    words = 2 + model.n_params
    if quantity == "row":
        words += sum(s * d * (d + 1) // 2 for s, d in model.layer_shapes)
    return 8 * words


def _max_rel_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over every array, relative to the largest |b| of that array."""
    worst = 0.0
    for key, x in a.items():
        if key == "n":
            continue
        xs, ys = (x, b[key]) if isinstance(x, list) else ([x], [b[key]])
        for xi, yi in zip(xs, ys):
            xi, yi = np.asarray(xi, float), np.asarray(yi, float)
            scale = max(float(np.max(np.abs(yi), initial=0.0)), 1e-300)
            worst = max(worst, float(np.max(np.abs(xi - yi), initial=0.0)) / scale)
    return worst


def _as_sums(ev, quantity) -> dict:
    out = {"value": ev.value, "gradient": ev.gradient}
    if quantity == "row":
        out["curvature/hessian/row"] = ev.curvature
    return out


def _bitwise_equal(a: dict, b: dict) -> bool:
    for key, x in a.items():
        xs, ys = (x, b[key]) if isinstance(x, list) else ([x], [b[key]])
        if not all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(xs, ys)):
            return False
    return True


class Cluster:
    """A LocalCluster of single-threaded worker processes, BLAS pinned as dist_hess does it."""

    def __init__(self, n_workers: int):
        import psutil
        from distributed import Client, LocalCluster

        from dist_hess.distributed.cluster import BLAS_ENV

        self.n_workers = n_workers
        self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    env=dict(BLAS_ENV), dashboard_address=":0",
                                    silence_logs=logging.ERROR)
        self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(n_workers)
        pids = self.client.run(os.getpid)
        self.workers = sorted(pids)
        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.blas_threads = sorted({info["num_threads"] for infos in self.client.run(
            lambda: __import__("threadpoolctl").threadpool_info()).values() for info in infos})

    def cpu(self) -> dict:
        out = {}
        for addr, proc in self.procs.items():
            t = proc.cpu_times()
            out[addr] = t.user + t.system
        return out

    def transfer_logs(self) -> list[dict]:
        """Entries of every worker's outgoing transfer log since the last call (then cleared)."""
        def take(dask_worker):
            log = [{"who": e.get("who"), "keys": {str(k): int(v) for k, v in e["keys"].items()},
                    "total": int(e["total"])} for e in dask_worker.transfer_outgoing_log]
            dask_worker.transfer_outgoing_log.clear()
            return log
        return [entry for entries in self.client.run(take).values() for entry in entries]

    def close(self):
        self.client.close()
        self.cluster.close()


def classify_transfers(entries, workers) -> dict:
    out = {"reduction": 0, "to_client": 0, "data": 0, "payload": 0, "messages_reduction": 0}
    for e in entries:
        for key, nbytes in e["keys"].items():
            if key.startswith(("shard-", "combine-")):
                if e["who"] in workers:
                    out["reduction"] += nbytes
                    out["messages_reduction"] += 1
                else:
                    out["to_client"] += nbytes
            elif key.startswith("payload-"):
                out["payload"] += nbytes         # Dask's sizeof: not the real size
            elif key.startswith("multipliers-"):
                out["to_client"] += nbytes
            else:
                out["data"] += nbytes
    return out


def tree_levels(n_shards: int, split_every: int) -> list[tuple[int, int]]:
    """(nodes, inputs) per level above the leaves."""
    from dist_hess.distributed.tree import tree_groups
    return [(len(groups), sum(len(g) for g in groups if len(g) > 1))
            for groups in tree_groups(n_shards, split_every)]


def placement(cluster: Cluster, Xp, Yp) -> dict:
    """How the persisted shards sit on the workers."""
    from distributed import futures_of
    who = cluster.client.who_has(futures_of(Xp) + futures_of(Yp))
    where_x = {k[1]: set(v) for k, v in who.items() if k[0] == Xp.name}
    where_y = {k[1]: set(v) for k, v in who.items() if k[0] == Yp.name}
    per_worker = {w: sum(w in s for s in where_x.values()) for w in cluster.workers}
    together = sum(bool(where_x[i] & where_y.get(i, set())) for i in where_x)
    return {"x_shards_per_worker": sorted(per_worker.values(), reverse=True),
            "xy_colocated": f"{together}/{len(where_x)}"}


# ------------------------------------------------------------------ one cell

def run_cell(prob, quantity, n, chunk, repeats, clusters, split_every, log):
    import dist_hess as dh
    from distributed import futures_of, get_task_stream, wait
    from threadpoolctl import threadpool_limits

    from benchmarks.problems import problem
    from dist_hess.distributed import persist_data
    from dist_hess.distributed.tasks import Payload
    from dist_hess.engine import finalize, shard_sums

    spec, X, Y = problem(prob, n=n)
    model = dh.Model.from_dict(spec)
    w = model.init(0)
    req = _request(quantity)
    kwargs = _evaluate_kwargs(quantity)
    n_shards = -(-n // chunk)
    log(f"{prob} {quantity}: n={n}, {n_shards} shards of {chunk}, t={model.n_params}")

    def single():
        with threadpool_limits(1):
            return finalize(model, w, shard_sums(model, w, X, Y, req), req)

    with threadpool_limits(1):                             # warm-up on a slice
        finalize(model, w, shard_sums(model, w, X[:64], Y[:64], req), req)

    persisted = {}
    for nw, cl in clusters.items():
        Xp, Yp = persist_data(X, Y, cl.client, chunk_size=chunk)
        with cl.client.as_current():
            wait(futures_of(Xp) + futures_of(Yp))
        # warm the workers (imports, code paths) on a few rows
        dh.evaluate(model, w, X[:8 * nw], Y[:8 * nw], client=cl.client, chunk_size=4, **kwargs)
        cl.transfer_logs()
        persisted[nw] = (Xp, Yp, placement(cl, Xp, Yp))

    runs = {"single": [], **{nw: [] for nw in clusters}}
    reference = None
    results = {}
    for rep in range(repeats):
        load = _load()
        c0, t0 = time.process_time(), time.perf_counter()
        ref = single()
        runs["single"].append({"wall": time.perf_counter() - t0,
                               "cpu": time.process_time() - c0, "load": load})
        reference = ref if reference is None else reference
        for nw, cl in clusters.items():
            Xp, Yp, _ = persisted[nw]
            load = _load()
            w0 = cl.cpu()
            with get_task_stream(client=cl.client) as ts:
                c0, t0 = time.process_time(), time.perf_counter()
                ev = dh.evaluate(model, w, Xp, Yp, client=cl.client, split_every=split_every,
                                 **kwargs)
                wall = time.perf_counter() - t0
                main_cpu = time.process_time() - c0
            w1 = cl.cpu()
            worker_cpu = {a: w1[a] - w0[a] for a in w1}
            shard_compute, combine_compute, transfer_s = [], [], []
            for rec in ts.data:
                key = str(rec["key"])
                for ss in rec["startstops"]:
                    d = ss["stop"] - ss["start"]
                    if ss["action"] == "transfer":
                        transfer_s.append(d)
                    elif ss["action"] == "compute" and key.startswith("shard-"):
                        shard_compute.append(d)
                    elif ss["action"] == "compute" and key.startswith("combine-"):
                        combine_compute.append(d)
            runs[nw].append({"wall": wall, "cpu": main_cpu + sum(worker_cpu.values()),
                             "client_cpu": main_cpu, "worker_cpu": sorted(worker_cpu.values()),
                             "load": load, "bytes": classify_transfers(cl.transfer_logs(),
                                                                       set(cl.workers)),
                             "shard_compute": shard_compute, "combine_compute": combine_compute,
                             "transfer_s": transfer_s})
            results.setdefault(nw, []).append(_as_sums(ev, quantity))
        log(f"  repeat {rep + 1}/{repeats}: single {runs['single'][-1]['wall']:.3f}s, " +
            ", ".join(f"{nw}w {runs[nw][-1]['wall']:.3f}s" for nw in clusters) +
            f" (load {load:.1f})")

    ref_sums = {k: v for k, v in reference.items() if k in ("value", "gradient")
                or k.startswith("curvature/")}
    rel = max(_max_rel_diff(r, ref_sums) for rs in results.values() for r in rs)
    all_results = [r for rs in results.values() for r in rs]
    bitwise = all(_bitwise_equal(r, all_results[0]) for r in all_results)

    def best(rs):
        return min(rs, key=lambda r: r["wall"])

    out = {"problem": prob, "quantity": quantity, "n": n, "chunk": chunk, "n_shards": n_shards,
           "t": model.n_params, "layer_shapes": [list(s) for s in model.layer_shapes],
           "split_every": split_every, "repeats": repeats,
           "packed_bytes": packed_bytes(model, quantity),
           "payload_pickled_bytes": len(pickle.dumps(Payload(model, w, req))),
           "tree_levels": tree_levels(n_shards, split_every),
           "max_rel_diff_vs_single": rel, "bitwise_same_across_workers_and_repeats": bitwise,
           "single": best(runs["single"]), "all_single": [r["wall"] for r in runs["single"]],
           "single_cpu_min": min(r["cpu"] for r in runs["single"]),
           "single_cpu_s_per_example": min(r["cpu"] for r in runs["single"]) / n}
    for nw in clusters:
        b = best(runs[nw])
        shard_compute = [d for r in runs[nw] for d in r["shard_compute"]]
        combine = [d for r in runs[nw] for d in r["combine_compute"]]
        out[f"w{nw}"] = {k: v for k, v in b.items()
                         if k not in ("shard_compute", "combine_compute", "transfer_s")}
        out[f"w{nw}"].update(
            all_walls=[r["wall"] for r in runs[nw]],
            placement=persisted[nw][2],
            first_eval_bytes=runs[nw][0]["bytes"],
            shard_s_per_example_min=min(shard_compute) / chunk if shard_compute else None,
            shard_s_per_example_median=(statistics.median(shard_compute) / chunk
                                        if shard_compute else None),
            combine_s_median=statistics.median(combine) if combine else None,
            worker_cpu_min=min(sum(r["worker_cpu"]) for r in runs[nw]),
            busiest_worker_cpu_min=min(max(r["worker_cpu"]) for r in runs[nw]),
            client_cpu_min=min(r["client_cpu"] for r in runs[nw]),
            moved_data_evals=sum(r["bytes"]["data"] > 0 for r in runs[nw]),
            transfer_s_max=max((d for r in runs[nw] for d in r["transfer_s"]), default=0.0))
    return out


# ------------------------------------------------------------------ micro-measurements

def micro(cluster: Cluster, log) -> dict:
    """Costs the scaling model needs that are not per-example compute."""
    import dist_hess as dh
    from dist_hess.distributed.packing import pack_sums, unpack_sums
    from dist_hess.engine import add_sums, finalize
    from threadpoolctl import threadpool_limits

    from benchmarks.problems import problem

    out = {}
    # add_sums of two packed partial sums and unpack+finalize, for P3 and P4 row blocks
    for prob in ("P3", "P4"):
        spec, X, Y = problem(prob, n=16)
        model = dh.Model.from_dict(spec)
        w = model.init(0)
        rng = np.random.default_rng(0)
        fake = {"n": 8, "value": 1.0, "gradient": rng.normal(size=model.n_params),
                "curvature/hessian/row": [rng.normal(size=(s, d, d)) for s, d in model.layer_shapes]}
        packed = pack_sums(fake)
        nbytes = packed_bytes(model, "row")
        req = _request("row")
        with threadpool_limits(1):
            add = min(_timed(lambda: add_sums(packed, packed)) for _ in range(5))
            pack = min(_timed(lambda: pack_sums(fake)) for _ in range(3))
            unpack = min(_timed(lambda: finalize(model, w, unpack_sums(packed), req))
                         for _ in range(3))
        out[prob] = {"packed_bytes_row": nbytes, "add_s": add, "add_bytes_per_s": nbytes / add,
                     "pack_s": pack, "unpack_finalize_s": unpack}
        log(f"  micro {prob}: add {add * 1e3:.2f} ms ({nbytes / add / 1e9:.2f} GB/s), "
            f"pack {pack * 1e3:.2f} ms, unpack+finalize {unpack * 1e3:.2f} ms for {nbytes / 1e6:.2f} MB")

    c = cluster.client
    c.submit(int, 0, pure=False).result()
    out["noop_roundtrip_s"] = min(_timed(lambda: c.submit(int, 0, pure=False).result())
                                  for _ in range(20))
    # fixed cost of an evaluation: P3 value+gradient on tiny shards
    spec, X, Y = problem("P3", n=640)
    model = dh.Model.from_dict(spec)
    w = model.init(0)
    fixed = {}
    for shards in (4, 64):
        rows = 640 // shards
        dh.evaluate(model, w, X, Y, client=c, chunk_size=rows)
        fixed[shards] = min(_timed(lambda: dh.evaluate(model, w, X, Y, client=c, chunk_size=rows))
                            for _ in range(5))
    out["tiny_eval_s"] = fixed
    tasks = {s: s + _combines(s, 4) for s in fixed}          # shard + combine tasks (default k)
    out["per_task_s"] = (fixed[64] - fixed[4]) / (tasks[64] - tasks[4])
    log(f"  micro: no-op round trip {out['noop_roundtrip_s'] * 1e3:.1f} ms; tiny evaluation "
        f"{fixed[4] * 1e3:.1f} ms (4 shards), {fixed[64] * 1e3:.1f} ms (64 shards): "
        f"{out['per_task_s'] * 1e3:.2f} ms per task")
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ report

def _mb(b):
    return f"{b / 1e6:.3f}" if b < 1e8 else f"{b / 1e6:.0f}"


def table(cells: list[dict]) -> str:
    lines = [
        "| problem | quantity | n | shards x rows | single s (load) | 1 worker s (load) | "
        "overhead wall / CPU | 2 workers s (load) | speedup wall / CPU | "
        "B = packed partial MB | reduction MB per eval (msgs) | to client MB | data moved MB "
        "(1st eval; evals with moves) | tree levels (nodes) | max rel diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        s, w1, w2 = c["single"], c["w1"], c["w2"]
        over_wall = w1["wall"] / s["wall"] - 1
        # CPU: the worker's CPU seconds against the single process's (least over repeats)
        over_cpu = w1["worker_cpu_min"] / c["single_cpu_min"] - 1
        speed = w1["wall"] / w2["wall"]
        # CPU-bound speedup: what 2 workers would give with a core each, from the CPU
        # seconds the workers actually spent (the busier of the two) rather than wall clock
        speed_cpu = w1["worker_cpu_min"] / w2["busiest_worker_cpu_min"]
        levels = " / ".join(str(nodes) for nodes, _ in c["tree_levels"]) or "0"
        lines.append(
            f"| {c['problem']} | {c['quantity']} | {c['n']:,} | {c['n_shards']} x {c['chunk']:,} | "
            f"{s['wall']:.3f} ({s['load']:.1f}) | {w1['wall']:.3f} ({w1['load']:.1f}) | "
            f"{100 * over_wall:+.1f}% / {100 * over_cpu:+.1f}% | {w2['wall']:.3f} ({w2['load']:.1f}) | "
            f"{speed:.2f}x / {speed_cpu:.2f}x | {_mb(c['packed_bytes'])} | "
            f"{_mb(w2['bytes']['reduction'])} ({w2['bytes']['messages_reduction']}) | "
            f"{_mb(w2['bytes']['to_client'])} | "
            f"{_mb(w2['bytes']['data'])} ({_mb(w2['first_eval_bytes']['data'])}; "
            f"{w2['moved_data_evals']}/{c['repeats']}) | "
            f"{levels} | {c['max_rel_diff_vs_single']:.1e} |")
    return "\n".join(lines)


def detail_table(cells: list[dict]) -> str:
    lines = ["| problem | quantity | s/example per shard (1w, median) | s/example (2w, median) | "
             "combine s (median) | CPU s (least) single / 1w worker / 2w busier worker / client 1w, 2w | "
             "weights pickled KB x workers | placement 2w (shards per worker, X/Y together) | "
             "1w walls | 2w walls | single walls |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(xs):
        return ", ".join(f"{x:.3f}" for x in xs)

    for c in cells:
        w1, w2 = c["w1"], c["w2"]
        lines.append(
            f"| {c['problem']} | {c['quantity']} | {w1['shard_s_per_example_median']:.3g} | "
            f"{w2['shard_s_per_example_median']:.3g} | "
            f"{(w2['combine_s_median'] or 0):.4f} | {c['single_cpu_min']:.2f} / "
            f"{w1['worker_cpu_min']:.2f} / {w2['busiest_worker_cpu_min']:.2f} / "
            f"{w1['client_cpu_min']:.2f}, {w2['client_cpu_min']:.2f} | "
            f"{c['payload_pickled_bytes'] / 1e3:.1f} | "
            f"{w2['placement']['x_shards_per_worker']}, {w2['placement']['xy_colocated']} | "
            f"{fmt(w1['all_walls'])} | {fmt(w2['all_walls'])} | {fmt(c['all_single'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ scaling model (docs/scaling.md)

#: Network and scheduler assumptions (not measured here): 10 GbE, one worker per NIC.
NETWORK = {"bandwidth": 1.0e9,    # bytes/s a worker can receive (10 GbE is 1.25e9 raw)
           "latency": 1.0e-3,     # s per message between two workers (incl. the worker hop)
           "task": 1.0e-3}        # s of scheduler + client time per task (Dask: 0.2-1 ms)

#: Measured on this machine (2 cores shared with other jobs; see docs/scaling.md): CPU
#: seconds per example for one shard, packed partial-sum bytes, weights payload, and the
#: throughputs (bytes of packed partial sum per second) of add, pack and unpack+finalize.
MEASURED = {
    ("P3", "value_grad"): {"c": 6.35e-6, "B": 21080, "P": 24720, "x_bytes": 200},
    ("P3", "row"): {"c": 6.99e-5, "B": 503792, "P": 24740, "x_bytes": 200},
    ("P4", "value_grad"): {"c": 2.25e-5, "B": 814176, "P": 916900, "x_bytes": 6280},
    ("P4", "row"): {"c": 4.43e-3, "B": 317394096, "P": 916900, "x_bytes": 6280},
}
MEASURED_THROUGHPUT = {"add": 2.73e9, "pack": 1.57e9, "unpack": 0.476e9}

MODEL_N = (10**6, 10**7, 10**8, 10**9)
MODEL_WORKERS = (10, 100, 1000)


def model_inputs(run: dict | None = None) -> dict:
    """Per-quantity inputs of the model: built-in measurements, or those of a ``--json`` run."""
    out = {key: dict(val, **MEASURED_THROUGHPUT) for key, val in MEASURED.items()}
    if run:
        micro_ = run.get("micro") or {}
        p4 = micro_.get("P4", {})
        tp = {}
        if p4:
            b = p4["packed_bytes_row"]
            tp = {"add": b / p4["add_s"], "pack": b / p4["pack_s"],
                  "unpack": b / p4["unpack_finalize_s"]}
        for cell in run["cells"]:
            key = (cell["problem"], cell["quantity"])
            out[key] = dict(out.get(key, {}), c=cell["single_cpu_s_per_example"],
                            B=cell["packed_bytes"], P=cell["payload_pickled_bytes"], **tp)
    return out


def _levels(n_shards: int, k: int) -> list[int]:
    """Largest group size at each level of the tree (as :func:`tree_groups`)."""
    out, width = [], n_shards
    while width > 1:
        out.append(min(k, width))
        width = -(-width // k)
    return out


def _combines(n_shards: int, k: int) -> int:
    total, width = 0, n_shards
    while width > 1:
        total += width // k + (1 if width % k > 1 else 0)
        width = -(-width // k)
    return total


def predict(q: dict, n: int, workers: int, rows: int, k: int, net: dict = NETWORK) -> dict:
    """Seconds per evaluation, by phase (see docs/scaling.md for each term)."""
    beta, alpha, tau = net["bandwidth"], net["latency"], net["task"]
    shards = -(-n // rows)
    waves = -(-shards // workers)
    hop = alpha + tau
    bcast = (hop + q["P"] / beta) + (math.ceil(math.log(workers, 3) - 1e-9) * (hop + 2 * q["P"] / beta)
                                     if workers > 1 else 0.0)
    shard_s = rows * q["c"] + q["B"] / q["pack"]
    compute = waves * shard_s
    tasks = shards + _combines(shards, k)
    # the scheduler hands out tasks one at a time: the last shard starts after shards * tau
    leaves = max(compute, shards * tau + shard_s)
    per_byte = 1 / beta + 1 / q["add"]
    reduce_ = sum(hop + (g - 1) * q["B"] * per_byte for g in _levels(shards, k))
    root = hop + q["B"] / beta + q["B"] / q["unpack"]
    total = bcast + leaves + reduce_ + root
    return {"total": total, "bcast": bcast, "compute": compute, "scheduler": tasks * tau,
            "reduce": reduce_, "root": root, "shards": shards, "rows": rows, "k": k,
            "depth": len(_levels(shards, k)), "ideal": n * q["c"] / workers,
            "gb_per_worker": n * q["x_bytes"] / min(workers, shards) / 1e9}


def recommend(q: dict, n: int, workers: int, net: dict = NETWORK,
              shard_bytes: float = 1e9) -> tuple[int, int]:
    """(rows per shard, split_every) that minimise the modelled time for ``n`` examples.

    Candidates: 1, 2, 4, ... shards up to ``workers``, then 1, 2, ..., 64 shards per
    worker; shards hold at most ``shard_bytes`` of input. For each, split_every is
    the fan-in (2 to 32) with the cheapest reduction. Ties (within 5%) go to fewer shards.
    """
    r_max = max(1, int(shard_bytes // q["x_bytes"]))
    counts = {2 ** j for j in range(int(math.log2(workers)) + 1)} | {
        workers * m for m in range(1, 65)}
    counts |= {-(-n // r_max)}
    best = None
    for shards in sorted(c for c in counts if 1 <= c <= n):
        rows = -(-n // shards)
        if rows > r_max:
            continue
        k = min(range(2, 33), key=lambda k: (predict(q, n, workers, rows, k, net)["reduce"], k))
        total = predict(q, n, workers, rows, k, net)["total"]
        if best is None or total < 0.95 * best[0]:
            best = (total, rows, k)
    _, rows, k = best
    return rows, (k if -(-n // rows) > 1 else 4)


def model_tables(inputs: dict, net: dict = NETWORK) -> str:
    """Markdown: predicted seconds per evaluation and the recommended sharding."""
    labels = {"value_grad": "value + gradient", "row": "Hessian row blocks"}
    out = [f"Assumed network: {net['bandwidth'] / 1e9:g} GB/s per worker, {net['latency'] * 1e3:g} ms "
           f"per message, {net['task'] * 1e3:g} ms scheduler time per task.\n"]
    for (prob, qty), q in inputs.items():
        out.append(f"**{prob}, {labels[qty]}** (c = {q['c']:.3g} s/example, B = "
                   f"{q['B'] / 1e6:.3g} MB per partial sum)\n")
        head = "| n | " + " | ".join(f"{w} workers: time (speedup) | rows x shards, split_every"
                                     for w in MODEL_WORKERS) + " |"
        out += [head, "|---|" + "---|---|" * len(MODEL_WORKERS)]
        for n in MODEL_N:
            cells = []
            for w in MODEL_WORKERS:
                rows, k = recommend(q, n, w, net)
                p = predict(q, n, w, rows, k, net)
                flag = " *" if p["gb_per_worker"] > 64 else ""
                cells.append(f"{_seconds(p['total'])} ({n * q['c'] / p['total']:,.0f}x){flag} | "
                             f"{rows:,} x {p['shards']:,}, {k} (depth {p['depth']})")
            out.append(f"| 10^{round(math.log10(n))} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("speedup = n c (one core, no Dask) over the predicted time (at most the number of "
               "workers); * more than 64 GB of input per worker (does not fit in memory: read from "
               "zarr each call).")
    return "\n".join(out)


def _seconds(t: float) -> str:
    if t < 1:
        return f"{t * 1e3:.0f} ms"
    if t < 600:
        return f"{t:.3g} s"
    return f"{t / 3600:.3g} h"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats; P4 row blocks on 4,000 examples in 2 shards of 2,000")
    p.add_argument("--only", default=None, help="comma-separated PROBLEM:QUANTITY cells, "
                   "e.g. P3:row,P4:value_grad")
    p.add_argument("--repeats", type=int, default=None, help="override the repeats of every cell")
    p.add_argument("--split-every", type=int, default=4)
    p.add_argument("--json", default=None, help="also write every measurement to this file")
    p.add_argument("--no-micro", action="store_true", help="skip the micro-measurements")
    p.add_argument("--model", nargs="?", const="", default=None, metavar="JSON",
                   help="only print the scaling model's tables (docs/scaling.md), from the "
                        "built-in measurements or from a --json file of an earlier run")
    args = p.parse_args(argv)
    if args.model is not None:
        run = None
        if args.model:
            with open(args.model) as f:
                run = json.load(f)
        print(model_tables(model_inputs(run)))
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cells = CELLS
    if args.only:
        wanted = [tuple(c.split(":")) for c in args.only.split(",")]
        cells = [c for c in CELLS if c in wanted]
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = QUICK_REPEATS if args.quick else REPEATS

    log(f"starting clusters (1 and 2 single-threaded worker processes); load {_load():.1f}")
    clusters = {1: Cluster(1), 2: Cluster(2)}
    try:
        blas = {nw: cl.blas_threads for nw, cl in clusters.items()}
        results = []
        for prob, qty in cells:
            n, chunk = sizes[prob][qty]
            results.append(run_cell(prob, qty, n, chunk, args.repeats or repeats[(prob, qty)],
                                    clusters, args.split_every, log))
        extra = None if args.no_micro else micro(clusters[1], log)
    finally:
        for cl in clusters.values():
            cl.close()

    import dask
    import distributed
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
          f"distributed {distributed.__version__}; BLAS threads in the workers: {blas}; "
          f"split_every={args.split_every}; load average now {os.getloadavg()}\n")
    print(table(results))
    print()
    print(detail_table(results))
    if extra:
        print()
        print("| micro | P3 row | P4 row |\n|---|---|---|")
        for key, label in (("packed_bytes_row", "packed partial sum B (MB)"),
                           ("add_s", "add_sums of two packed partials (ms)"),
                           ("add_bytes_per_s", "add throughput (GB/s of B)"),
                           ("pack_s", "pack on the worker (ms)"),
                           ("unpack_finalize_s", "unpack + finalize on the client (ms)")):
            scale = {"packed_bytes_row": 1e-6, "add_bytes_per_s": 1e-9}.get(key, 1e3)
            print(f"| {label} | {extra['P3'][key] * scale:.3f} | {extra['P4'][key] * scale:.3f} |")
        print(f"\nno-op task round trip {extra['noop_roundtrip_s'] * 1e3:.2f} ms; evaluation on "
              f"640 rows: {extra['tiny_eval_s'][4] * 1e3:.1f} ms with 4 shards, "
              f"{extra['tiny_eval_s'][64] * 1e3:.1f} ms with 64 shards "
              f"({extra['per_task_s'] * 1e3:.2f} ms per extra task)")
    print("\nColumns: *overhead* = 1 worker / single - 1 (target <= +10%), by wall clock (best "
          "of repeats) and by CPU seconds (the worker process against the single process, least "
          "over repeats; includes Dask's idle background in the worker, heartbeats etc.); "
          "*speedup* = 1 worker / 2 workers (target >= 1.8x), by wall clock and by CPU (1-worker "
          "CPU seconds / the busier 2-worker worker's CPU seconds: the speedup two uncontended "
          "cores would give). Bytes are per evaluation from the workers' transfer logs "
          "(2-worker cluster, best run); 'data moved' is a shard's X/Y fetched by another worker "
          "(persisted X and Y shards on different workers, or a task stolen for balance). Loads "
          "are os.getloadavg()[0] just before the run shown.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cells": results, "micro": extra, "blas_threads": blas,
                       "cores": os.cpu_count()}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
