"""Which Dask client a computation runs on: :func:`resolve_client`, the one decision.

``dist_hess.evaluate``, ``dist_hess.fit`` (its objective), ``persist_data`` and the
``dist-hess`` command line all pass what the user gave through :func:`resolve_client`:

- a ``distributed.Client``: used as is;
- a scheduler address string (``"tcp://10.0.0.5:8786"``, ``"tls://..."``): a
  client is connected once per address and kept for later calls (``security``
  is passed through for TLS); an unreachable address raises ``ConnectionError``
  after ``connect_timeout`` seconds instead of hanging;
- ``None`` with ``n_workers``: the embedded ``LocalCluster`` with that many workers
  (``dist-hess --workers N``);
- ``None``: the current client if the caller made one (``distributed.Client(...)``
  or ``with Client(...)``); otherwise problems with ``n * t`` below
  :data:`IN_PROCESS_WORK` run in this process without any cluster (``None`` is
  returned), and larger ones, or callers that need a cluster whatever the size
  (``work=None``: data to persist on workers), on an embedded ``LocalCluster`` (one
  single-threaded worker process per core, BLAS pinned to one thread per worker),
  created on first use, reused by later calls and closed at interpreter exit.

``distributed`` is imported only when a cluster is used, so that in-process work
never pays for it.

While an evaluation runs, :func:`gather_watching_workers` watches the scheduler: a worker
that dies is replaced by the others (its tasks and data are recomputed from the
graph), but a scheduler left with no worker at all for :data:`NO_WORKER_TIMEOUT`
seconds ends the evaluation with a ``RuntimeError`` instead of waiting forever.

:func:`limit_message_logs` shortens distributed's logs of recent messages: every
batched stream keeps its last ``distributed.admin.low-level-log-length`` (1,000)
messages of under 1 MB for debugging, and a message that carries a weight vector
(0.8 MB at ``t = 101,770``) is such a message. The client's stream and, for a
``LocalCluster``, the scheduler's streams to its workers live in this process, which
so grew by 1.2-2.1 MB per value+gradient call of a fit, up to a few GB. Every
evaluation calls it on its client.
"""
from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time

__all__ = ["IN_PROCESS_WORK", "DEFAULT_CONNECT_TIMEOUT", "NO_WORKER_TIMEOUT", "BLAS_ENV",
           "resolve_client", "tls_security", "current_client", "connect", "embedded_client",
           "close_clients", "gather_watching_workers", "limit_message_logs", "MESSAGE_LOG_LENGTH"]

#: ``n * t`` below which ``client=None`` (and no current client) stays in-process.
IN_PROCESS_WORK = 50_000_000
#: Seconds to wait for a scheduler before giving up.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Messages each of distributed's batched streams keeps for debugging (`limit_message_logs`).
MESSAGE_LOG_LENGTH = 10
#: Seconds an evaluation waits on a scheduler that has no worker at all before it gives up.
NO_WORKER_TIMEOUT = 60.0
#: Seconds between two looks at the scheduler's workers while an evaluation runs.
WORKER_POLL_INTERVAL = 0.5
#: One BLAS thread per single-threaded worker process: the workers are the parallelism.
BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_lock = threading.Lock()
_connected: dict[str, object] = {}          # address -> Client
_embedded: dict[str, object] = {}           # "cluster", "client"


def current_client():
    """The client the caller has made current, or ``None``.

    No client exists before ``distributed`` is imported, so this answers without
    importing it.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:                        # "No clients found"
        return None
    return client if client.status == "running" else None


def connect(address: str, *, security=None, timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """A client on the scheduler at ``address``, reused across calls.

    Raises ``ConnectionError`` naming the address when nothing answers within
    ``timeout`` seconds.
    """
    from distributed import Client

    with _lock:
        client = _connected.get(address)
        if client is not None and client.status == "running":
            return client
        try:
            client = Client(address, security=security, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"could not reach the Dask scheduler at {address!r} within {timeout:g} s "
                f"({type(err).__name__}: {err}). Is `dask scheduler` running there, is the "
                f"address (protocol://host:port) right, and for tls:// did you pass "
                f"security=distributed.Security(...)?") from err
        _connected[address] = client
        return client


def embedded_client(n_workers: int | None = None):
    """The client of the embedded ``LocalCluster``, created on first use.

    ``n_workers`` defaults to the number of cores (at most 32); asking again
    with another count rescales the running cluster.
    """
    from distributed import Client, LocalCluster

    wanted = n_workers or min(os.cpu_count() or 1, 32)
    with _lock:
        cluster = _embedded.get("cluster")
        if cluster is None or cluster.status.name != "running":
            try:
                cluster = LocalCluster(n_workers=wanted, threads_per_worker=1, processes=True,
                                       env=dict(BLAS_ENV), dashboard_address=":0")
            except RuntimeError as err:
                raise RuntimeError(
                    f"could not start the embedded local Dask cluster ({err}). Worker "
                    f"processes are spawned and re-import your main script: put the code "
                    f"that calls dist_hess under `if __name__ == '__main__':`, or pass "
                    f"client=<a distributed.Client or scheduler address>") from err
            client = Client(cluster, set_as_default=False)
            _embedded.update(cluster=cluster, client=client)
        elif n_workers is not None and len(cluster.workers) != wanted:
            cluster.scale(wanted)
            _embedded["client"].wait_for_workers(wanted)
        return _embedded["client"]


def close_clients() -> None:
    """Close the embedded cluster and every client this module connected."""
    with _lock:
        client, cluster = _embedded.pop("client", None), _embedded.pop("cluster", None)
        for obj in (client, cluster, *_connected.values()):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 -- best effort at exit
                    pass
        _connected.clear()


atexit.register(close_clients)


def resolve_client(client=None, *, work: int | None = None, n_workers: int | None = None,
                   security=None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """The ``distributed.Client`` to run on, or ``None`` to run in this process.

    client : what the user gave: ``None``, a ``distributed.Client`` or a scheduler
        address (``"tcp://..."``, ``"tls://..."``).
    work : ``n * t`` (examples times parameters), for the in-process decision when
        ``client`` is ``None``: below :data:`IN_PROCESS_WORK` (and no current client)
        the answer is ``None``. ``None`` means the caller needs a cluster whatever the
        size (it persists data on workers).
    n_workers : with ``client=None``, the embedded ``LocalCluster`` with this many
        worker processes, whatever the work.
    security, connect_timeout : for an address (``distributed.Security`` for
        ``tls://``, see :func:`tls_security`; seconds before ``ConnectionError``).
    """
    if n_workers is not None:
        if client is not None:
            raise ValueError(f"n_workers={n_workers!r} starts an embedded local cluster; "
                             f"it cannot be combined with client={client!r}")
        if isinstance(n_workers, bool) or int(n_workers) != n_workers or n_workers < 1:
            raise ValueError(f"n_workers must be a positive number of worker processes, "
                             f"got {n_workers!r}")
        return embedded_client(n_workers=int(n_workers))
    if client is None:
        found = current_client()
        if found is not None:
            return found
        if work is not None and work < IN_PROCESS_WORK:
            return None
        return embedded_client()
    if isinstance(client, str):
        return connect(client, security=security, timeout=connect_timeout)
    if hasattr(client, "scatter") and hasattr(client, "compute"):
        return client
    raise TypeError(f"client must be None, a scheduler address string or a "
                    f"distributed.Client, got {type(client).__name__}")


def tls_security(ca_file: str | None = None, cert: str | None = None, key: str | None = None):
    """A client's ``distributed.Security`` for ``tls://`` addresses from PEM files
    (certificate authority, this client's certificate and key); ``None`` when none
    is given."""
    if not (ca_file or cert or key):
        return None
    from distributed import Security

    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True)


def limit_message_logs(client) -> None:
    """Keep at most :data:`MESSAGE_LOG_LENGTH` messages in the debugging logs of the
    client's stream to the scheduler and, when the scheduler runs in this process (a
    ``LocalCluster``), of its streams; streams made later read the lowered
    ``distributed.admin.low-level-log-length`` (see the module docstring)."""
    import dask

    if (dask.config.get("distributed.admin.low-level-log-length", None) or 0) > MESSAGE_LOG_LENGTH:
        dask.config.set({"distributed.admin.low-level-log-length": MESSAGE_LOG_LENGTH})
    streams = [getattr(client, "scheduler_comm", None)]
    scheduler = getattr(getattr(client, "cluster", None), "scheduler", None)
    for name in ("stream_comms", "client_comms"):
        streams.extend(dict(getattr(scheduler, name, None) or {}).values())
    for stream in streams:
        log = getattr(stream, "recent_message_log", None)
        if isinstance(log, collections.deque) and (log.maxlen or 0) > MESSAGE_LOG_LENGTH:
            stream.recent_message_log = collections.deque(log, maxlen=MESSAGE_LOG_LENGTH)


def gather_watching_workers(client, futures) -> list:
    """``client.gather(futures)``, given up when the cluster has no worker left.

    A watcher thread asks the scheduler for its workers every
    :data:`WORKER_POLL_INTERVAL` seconds; once it has had none for
    :data:`NO_WORKER_TIMEOUT` seconds in a row, the futures are cancelled and this
    raises ``RuntimeError``, so that a cluster that lost all its workers ends the
    call within that time instead of hanging. A call that finishes first pays
    nothing but the thread's start.
    """
    finished = threading.Event()
    gave_up: list[bool] = []

    def watch():
        alone_since = None
        while not finished.wait(WORKER_POLL_INTERVAL):
            try:
                has_workers = bool(client.nthreads())
            except Exception:  # noqa: BLE001 -- the client is closing: nothing left to watch
                return
            now = time.monotonic()
            alone_since = None if has_workers else (alone_since or now)
            if alone_since is not None and now - alone_since >= NO_WORKER_TIMEOUT:
                gave_up.append(True)
                client.cancel(futures)
                return

    limit_message_logs(client)
    watcher = threading.Thread(target=watch, name="dist_hess-worker-watch", daemon=True)
    watcher.start()
    try:
        # direct: results come from the workers, not relayed by the scheduler (which a
        # LocalCluster runs in this process): 10-20 ms less per call of a few MB
        return client.gather(futures, direct=True)
    except BaseException:
        if gave_up:
            raise RuntimeError(
                f"the Dask scheduler at {client.scheduler.address} has had no worker for "
                f"{NO_WORKER_TIMEOUT:g} s, so the evaluation was cancelled: every worker "
                f"died or left. Start workers (dask worker {client.scheduler.address}) and "
                f"run it again") from None
        raise
    finally:
        finished.set()
