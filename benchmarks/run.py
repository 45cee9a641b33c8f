"""Engine benchmarks: every figure a ratio against a peer measured in the same run.

    python -m benchmarks.run                 # everything (about 15 minutes on 2 cores)
    python -m benchmarks.run --quick         # smaller n for P3/P4 (ratios, a few minutes)
    python -m benchmarks.run --only P2:full  # one cell
    python -m benchmarks.run --only P1:hvp@1 # the per-call overhead cell (n = 1 row)

Each measurement runs in a fresh subprocess pinned to one BLAS/XLA thread;
it reports the best of several repeats and the subprocess's peak RSS.  The
gradient and HVP cells (milliseconds) time ours and JAX in one subprocess,
alternating ``FAST_ROUNDS`` rounds of calls (``FAST_SECONDS`` of CPU per side in
all) and keeping each side's best: on a shared machine, runs minutes apart are
noise; their peak RSS comes from one subprocess per side.  Peers: JAX (jit,
float64, one thread) and this machine's numpy GEMM rate.

BLAS kernels: OpenBLAS picks its kernels from the CPU it recognises; one it
does not know (AMD Zen 5 with OpenBLAS 0.3.31) gets the Haswell (AVX2)
kernels, about half the rate of the AVX-512 ones XLA uses on the same CPU.
``--openblas-coretype auto`` (the default) sets ``OPENBLAS_CORETYPE=SkylakeX``
for the measuring subprocesses when OpenBLAS runs Haswell kernels on a CPU
with AVX-512 (F, CD, BW, DQ, VL); ``default`` leaves OpenBLAS's choice.  The
setting is printed in the header.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}

# (problem, quantity[@n]) cells; quantity in ours/jax: value_grad, hvp, row, layer, full; gemm.
# "@1": the same call on one row (the per-call overhead).
CELLS = [("P1", "value_grad@1"), ("P1", "hvp@1"),
         ("P1", "value_grad"), ("P1", "hvp"), ("P1", "full"),
         ("P2", "value_grad"), ("P2", "hvp"), ("P2", "row"), ("P2", "layer"), ("P2", "full"),
         ("P3", "value_grad"), ("P3", "hvp"), ("P3", "row"), ("P3", "full"),
         ("P4", "value_grad"), ("P4", "row")]
FAST = ("value_grad", "hvp")
#: gradient/HVP cells: seconds of calls per side, in this many alternating rounds
FAST_SECONDS = 2.0
FAST_ROUNDS = 10


def _best(fn, repeats, min_seconds=0.0):
    """Best wall time of ``fn()`` over ``repeats`` calls, more while under ``min_seconds`` of CPU."""
    fn()  # warm-up (and JIT compilation for JAX)
    times = []
    start = time.process_time()
    while len(times) < repeats or time.process_time() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def openblas_coretype(choice="auto"):
    """The ``OPENBLAS_CORETYPE`` for the measuring subprocesses (``None``: OpenBLAS's own pick).

    ``auto``: ``SkylakeX`` when numpy's OpenBLAS runs its Haswell (AVX2) kernels on a CPU
    with the AVX-512 subsets those kernels need; ``default``: ``None``; anything else is
    passed on as the core name."""
    if choice == "default":
        return None
    if choice != "auto":
        return choice
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:      # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    cores = {info.get("architecture") for info in threadpool_info()
             if info.get("internal_api") == "openblas"}
    return "SkylakeX" if cores == {"Haswell"} and features.get("AVX512_SKX") else None


def measure(lib, problem_name, quantity, n=None, timing=True):
    """Run one measurement in this process; returns seconds.

    ``lib`` ``pair`` (gradient and HVP cells): ours and JAX in this one process, their
    calls alternated in ``FAST_ROUNDS`` rounds, each side's best kept (``seconds`` and
    ``peer_seconds``).  ``timing=False``: a few calls only (for the peak RSS).
    """
    import numpy as np
    from benchmarks.problems import problem
    spec, X, Y = problem(problem_name, n=n)
    min_seconds = FAST_SECONDS if quantity in FAST and timing else 0.0
    repeats = 5 if quantity in FAST else 2
    if quantity in ("full", "layer") and problem_name == "P3":
        repeats = 1
    if lib == "gemm":
        a = np.random.default_rng(0).normal(size=(1500, 1500))
        secs = _best(lambda: a @ a, 5)
        return {"seconds": secs, "gflops": 2 * 1500**3 / secs / 1e9}
    if lib == "pair":
        ours, peer = _ours_call(spec, X, Y, quantity), _jax_call(spec, X, Y, problem_name, quantity)
        best_ours = best_peer = float("inf")
        for _ in range(FAST_ROUNDS):
            best_ours = min(best_ours, _best(ours, repeats, FAST_SECONDS / FAST_ROUNDS))
            best_peer = min(best_peer, _best(peer, repeats, FAST_SECONDS / FAST_ROUNDS))
        return {"seconds": best_ours, "peer_seconds": best_peer}
    if lib == "ours":
        secs = _best(_ours_call(spec, X, Y, quantity), repeats, min_seconds)
        out = {"seconds": secs}
        if quantity == "row":
            import dist_hess as dh
            shapes = dh.Model.from_dict(spec).layer_shapes
            out["gflops"] = 2 * X.shape[0] * sum(s * d * d for s, d in shapes) / secs / 1e9
        return out
    if lib == "jax":
        return {"seconds": _best(_jax_call(spec, X, Y, problem_name, quantity), repeats, min_seconds)}
    raise ValueError(lib)


def _ours_call(spec, X, Y, quantity):
    import numpy as np
    import dist_hess as dh
    model = dh.Model.from_dict(spec)
    w = model.init(0)
    v = np.random.default_rng(1).normal(size=model.n_params)
    return {"value_grad": lambda: model.value_and_gradient(w, X, Y),
            "hvp": lambda: model.hvp(w, X, Y, v),
            "row": lambda: model.curvature(w, X, Y, "hessian", "row"),
            "layer": lambda: model.curvature(w, X, Y, "hessian", "layer"),
            "full": lambda: model.curvature(w, X, Y, "hessian", "full")}[quantity]


def _jax_call(spec, X, Y, problem_name, quantity):
    import numpy as np
    import jax
    import jax.numpy as jnp
    from benchmarks.jax_peer import build
    import dist_hess as dh
    objective, unpack, offsets, Xj, Yj = build(spec, X, Y)
    w = jnp.asarray(dh.Model.from_dict(spec).init(0))
    v = jnp.asarray(np.random.default_rng(1).normal(size=w.shape[0]))
    n = X.shape[0]
    chunk = n if problem_name != "P3" else 2000
    if quantity == "value_grad":
        f = jax.jit(jax.value_and_grad(objective))
        return lambda: jax.block_until_ready(f(w))
    if quantity == "hvp":
        f = jax.jit(lambda w, v: jax.jvp(jax.grad(objective), (w,), (v,))[1])
        return lambda: jax.block_until_ready(f(w, v))

    def chunk_obj(w, Xc, Yc):
        return objective(w, Xc, Yc)
    if quantity == "full":
        hess = jax.jit(jax.hessian(chunk_obj))

        def fn():
            H = 0
            for s in range(0, n, chunk):
                H = H + hess(w, Xj[s:s + chunk], Yj[s:s + chunk])
            return jax.block_until_ready(H)
        return fn
    # per-layer Hessians (the peer for both row and layer blocks)
    hs = []
    for k in range(len(offsets) - 1):
        lo, hi = int(offsets[k]), int(offsets[k + 1])

        def obj_k(wk, w, Xc, Yc, lo=lo, hi=hi):
            return chunk_obj(w.at[lo:hi].set(wk), Xc, Yc)
        hs.append((lo, hi, jax.jit(jax.hessian(obj_k))))

    def fn():
        out = []
        for lo, hi, h in hs:
            H = 0
            for s in range(0, n, chunk):
                H = H + h(w[lo:hi], w, Xj[s:s + chunk], Yj[s:s + chunk])
            out.append(jax.block_until_ready(H))
        return out
    return fn


def run_one_subprocess(lib, problem_name, quantity, n=None, timeout=1800, default_allocator=False,
                       coretype=None, timing=True):
    cmd = [sys.executable, "-m", "benchmarks.run", "--one", lib, problem_name, quantity]
    if default_allocator:
        cmd.append("--default-allocator")
    if not timing:
        cmd.append("--no-timing")
    if n:
        cmd += ["--n", str(n)]
    env = dict(os.environ, **ONE_THREAD)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", nargs=3, metavar=("LIB", "PROBLEM", "QUANTITY"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-timing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's allocator as it is (default: dist_hess.runtime.tune_allocator)")
    p.add_argument("--quick", action="store_true", help="P3 with n=4000 and P4 with n=6000")
    p.add_argument("--only", default=None, help="comma-separated PROBLEM:QUANTITY cells")
    p.add_argument("--openblas-coretype", default="auto",
                   help="auto (default; see above), default (OpenBLAS's own choice) or a core name")
    p.add_argument("--skip-jax-p3-full", action="store_true",
                   help="skip JAX's P3 full Hessian (about 2 minutes at n=20,000)")
    args = p.parse_args(argv)
    if args.one:
        if not args.default_allocator:
            from dist_hess.runtime import tune_allocator
            tune_allocator()
        out = measure(*args.one, n=args.n, timing=not args.no_timing)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    cells = CELLS
    if args.only:
        wanted = [tuple(c.split(":")) for c in args.only.split(",")]
        cells = [c for c in CELLS if c in wanted]
    sizes = {"P3": 4000, "P4": 6000} if args.quick else {"P4": 10000}
    coretype = openblas_coretype(args.openblas_coretype)
    run = functools.partial(run_one_subprocess, default_allocator=args.default_allocator,
                            coretype=coretype)
    gemm = run("gemm", "P1", "gemm")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}; OpenBLAS kernels: "
          f"{'OPENBLAS_CORETYPE=' + coretype if coretype else 'its own choice'}; "
          f"numpy GEMM (1 thread) {gemm['gflops']:.1f} GFLOP/s\n")
    print("| problem | quantity | n | dist_hess s | peer | peer s | speedup | dist_hess GFLOP/s (% GEMM) | peak MB ours / peer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for prob, cell in cells:
        qty, _, rows = cell.partition("@")
        n = int(rows) if rows else sizes.get(prob)
        peer_qty = "layer" if qty == "row" else qty
        skip_peer = (prob == "P3" and qty == "full" and args.skip_jax_p3_full) or (prob, qty) == ("P4", "row")
        # P4: JAX's per-layer Hessian of layer 1 alone is 100,480^2 floats (81 GB)
        if qty in FAST:         # timed side by side in one process; peak RSS from one process each
            pair = run("pair", prob, qty, n)
            ours = dict(run("ours", prob, qty, n, timing=False), seconds=pair["seconds"])
            peer = dict(run("jax", prob, qty, n, timing=False), seconds=pair["peer_seconds"])
        else:
            ours = run("ours", prob, qty, n)
            peer = None if skip_peer else run("jax", prob, peer_qty, n)
        rate = ""
        if "gflops" in ours:
            rate = f"{ours['gflops']:.1f} ({100 * ours['gflops'] / gemm['gflops']:.0f}%)"
        peer_name = "JAX per-layer Hessians" if qty in ("row", "layer") else f"JAX {qty}"
        if peer is None:
            print(f"| {prob} | {qty} | {n or 'all'} | {_secs(ours['seconds'])} | {peer_name} | skipped | | {rate} | {ours['peak_rss_mb']:.0f} / |")
            continue
        print(f"| {prob} | {qty} | {n or 'all'} | {_secs(ours['seconds'])} | {peer_name} | {_secs(peer['seconds'])} | "
              f"{_ratio(peer['seconds'] / ours['seconds'])} | {rate} | {ours['peak_rss_mb']:.0f} / {peer['peak_rss_mb']:.0f} |",
              flush=True)


def _secs(seconds):
    return f"{seconds:.3g}"


def _ratio(speedup):
    return f"{speedup:.2f}x" if speedup < 10 else f"{speedup:.0f}x"


if __name__ == "__main__":
    main()
