"""How the weights reach the shard tasks (issue 13): per-call wall time of ``dh.evaluate``.

    python -m benchmarks.bench_transport               # 20 repeats
    python -m benchmarks.bench_transport --repeats 5

Three transports of the payload (model, weights, request), side by side on one
2-worker ``LocalCluster`` (processes, one thread each, BLAS pinned), data persisted:

* **graph** (what ``dh.evaluate`` does): one key of the graph, recomputable after a
  worker loss;
* **broadcast**: ``client.scatter(payload, broadcast=True)`` (what it did before;
  can hang forever when a worker dies during the replication);
* **scatter**: ``client.scatter(payload)`` to one worker (lost with that worker).

The alternatives replace ``evaluate``'s graph builder for the time of their call
and build the same graph around the scattered future. Problems: t = 102,001 weights
on 400 and 4,000 examples (the payload is 0.8 MB: transport dominates) and t = 593
on 2,000 (a small repeated evaluation, as in training). The transports run
interleaved, repeat by repeat; each figure is the best and the median wall time,
with its ratio to broadcast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import time
import uuid

import numpy as np

PROBLEMS = {"t=102001 n=400": (100, 1000, 400, 100),
            "t=102001 n=4000": (100, 1000, 4000, 1000),
            "t=593 n=2000": (20, 25, 2000, 500)}
TRANSPORTS = ("graph", "broadcast", "scatter")


def _graph_around(ref):
    """``evaluate``'s graph builder with the payload argument replaced by ``ref``."""
    from dask import delayed

    from dist_hess.distributed.tasks import combine, shard_task
    from dist_hess.distributed.tree import tree_groups

    def build(shards, payload, target, split_every, collect):
        token = uuid.uuid4().hex[:12]
        level = [delayed(shard_task)(ref, X, Y, start, target, dask_key_name=f"shard-{token}-{i}")
                 for i, (start, X, Y) in enumerate(shards.dask_blocks())]
        for depth, groups in enumerate(tree_groups(len(level), split_every), start=1):
            level = [level[g[0]] if len(g) == 1 else
                     delayed(combine)(*(level[j] for j in g),
                                      dask_key_name=f"combine-{token}-{depth}-{i}")
                     for i, g in enumerate(groups)]
        return level[0], []
    return build


def _call(transport, client, model, w, X, Y):
    import dist_hess as dh
    from dist_hess.distributed.tasks import Payload
    from dist_hess.engine.sums import Request

    if transport == "graph":
        return dh.evaluate(model, w, X, Y, client=client)
    payload = Payload(model, w, Request(value=True, gradient=True,
                                        memory_budget=model.memory_budget))
    ref = client.scatter(payload, broadcast=transport == "broadcast", hash=False)
    module = importlib.import_module("dist_hess.distributed.evaluate")
    original = module._graph
    module._graph = _graph_around(ref)
    try:
        return dh.evaluate(model, w, X, Y, client=client)
    finally:
        module._graph = original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import dist_hess as dh
    from dist_hess.distributed import persist_data
    from dist_hess.distributed.cluster import BLAS_ENV

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=dict(BLAS_ENV),
                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    rng = np.random.default_rng(0)
    problems = {}
    for name, (inputs, hidden, n, chunk) in PROBLEMS.items():
        model = dh.Model.from_dict({"inputs": inputs, "loss": "squared", "layers": [
            {"type": "dense", "units": hidden, "activation": "tanh"},
            {"type": "dense", "units": 1, "activation": "identity"}]})
        X, Y = persist_data(rng.normal(size=(n, inputs)), rng.normal(size=n), client,
                            chunk_size=chunk)
        problems[name] = (model, model.init(seed=0), X, Y)
    times = {(p, t): [] for p in problems for t in TRANSPORTS}
    values = {}
    try:
        for _ in range(args.repeats):
            for p, (model, w, X, Y) in problems.items():
                for t in TRANSPORTS:
                    start = time.perf_counter()
                    value = _call(t, client, model, w, X, Y).value
                    times[(p, t)].append(time.perf_counter() - start)
                    assert values.setdefault(p, value) == value, "transports disagree"
    finally:
        client.close()
        cluster.close()
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print("| problem | " + " | ".join(f"{t} best / median ms (best ratio to broadcast)"
                                      for t in TRANSPORTS) + " |")
    for p in problems:
        base = min(times[(p, "broadcast")])
        cells = [f"{min(times[(p, t)]) * 1e3:.1f} / {np.median(times[(p, t)]) * 1e3:.1f} "
                 f"({min(times[(p, t)]) / base:.2f})" for t in TRANSPORTS]
        print(f"| {p} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
