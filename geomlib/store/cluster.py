"""Where many-model work runs: in this process, on a local Dask cluster, or on an existing Dask scheduler.

A sweep is a list of independent tasks (one per checkpoint and analysis, one per
compared pair).  :func:`run_tasks` runs them

- on ``dask.distributed``: by default a :class:`~distributed.LocalCluster` of worker
  *processes* (one thread each, so a task's BLAS never fights another's for a core,
  see :mod:`geomlib.threads`) sized to the machine's free cores and memory; or, given
  ``scheduler="tcp://HOST:8786"`` or ``$DASK_SCHEDULER_ADDRESS``, on that cluster;
- or in this process, one after the other (``scheduler="serial"``): the reference path,
  and what a machine without the cluster extra gets.

A worker that dies mid-task (killed, out of memory) has its task rescheduled by the
Dask scheduler, up to ``distributed.scheduler.allowed-failures`` times; the cache
write of every task is atomic, so a killed task leaves nothing that loads.  A task
that raises (a bad source) is reported as its one-line error and the others finish.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import ClusterError, GeomlibError, GeomlibWarning, InvalidArgumentError, MissingDependencyError
from ..validate import positive_int

SERIAL = "serial"
LOCAL = "local"
#: memory a worker is sized for when not told: a 4B-parameter model's analyses stay under 2 GiB (README, Performance)
DEFAULT_WORKER_MEMORY = 2 * 2**30
_ADDRESS = re.compile(r"(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+(:\d+)?/?")
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


@dataclass(frozen=True)
class Task:
    """One independent piece of a sweep.

    Attributes
    ----------
    key : str
        Unique name (the Dask key, and how results are looked up).
    label : str
        How messages name it (``"step-00100: gauge"``).
    fn : callable
        A module-level function (workers import it by name), called as ``fn(*args)``.
    args : tuple
        Picklable arguments.
    """

    key: str
    label: str
    fn: Callable[..., Any]
    args: tuple


FollowUp = Callable[[str, "Outcome"], "list[Task]"]


@dataclass(frozen=True)
class Outcome:
    """What a task gave: its value, or the one-line error that stopped it."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_bytes(text: str | int, what: str = "--memory-per-worker") -> int:
    """``"4GiB"``, ``"500MB"``, ``2**30`` -> bytes; one-sentence error otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return positive_int(what, text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise InvalidArgumentError(f"{what} {text!r} is not an amount of memory; pass e.g. 4GiB, 2500MB or a "
                                   "number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def resolve_scheduler(scheduler: str | None) -> str:
    """``"serial"``, ``"local"`` or a scheduler address; default ``$DASK_SCHEDULER_ADDRESS``, else local."""
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or LOCAL
    if not isinstance(scheduler, str):
        raise InvalidArgumentError(f"scheduler={scheduler!r} is not understood; pass 'local', 'serial' or an "
                                   "address such as tcp://10.0.0.5:8786")
    s = scheduler.strip()
    if s.lower() in (SERIAL, LOCAL):
        return s.lower()
    if not _ADDRESS.fullmatch(s):
        raise InvalidArgumentError(f"scheduler {scheduler!r} is not a Dask scheduler address; pass e.g. "
                                   "tcp://10.0.0.5:8786, or 'local' for a cluster on this machine, or 'serial'")
    return s


def default_workers(memory_per_worker: int = DEFAULT_WORKER_MEMORY) -> int:
    """Worker processes for a local cluster: one per free core, as many as the available memory holds."""
    import psutil

    from ..threads import available_cores

    fit = max(1, int(psutil.virtual_memory().available // max(1, memory_per_worker)))
    return max(1, min(available_cores(), fit))


def _require_distributed():
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError(
            "running on a Dask cluster needs the cluster extra (dask, distributed); install it with "
            "pip install 'geomlib[cluster]', or pass scheduler='serial' (--scheduler serial) to run in this process"
        ) from None
    return distributed


@contextmanager
def client_for(scheduler: str, workers: int | None, memory_per_worker: int, progress: bool) -> Iterator[Any]:
    """A ``distributed.Client``: a new local cluster (closed on exit) or one connected to ``scheduler``."""
    distributed = _require_distributed()
    if scheduler == LOCAL:
        n = workers if workers is not None else default_workers(memory_per_worker)
        with _environ_kept():
            yield from _local(distributed, n, memory_per_worker, progress)
        return
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except Exception as exc:  # noqa: BLE001 - OSError or TimeoutError, depending on how it fails
        raise ClusterError(f"the Dask scheduler at {scheduler} did not answer within 10 s ({exc.__class__.__name__}); "
                           "check the address and that `dask scheduler` runs there, or leave --scheduler out for "
                           "a local cluster") from None
    with client:
        if progress:
            n = len(client.scheduler_info().get("workers", {}))
            print(f"geomlib: Dask scheduler {scheduler}, {n} workers; dashboard {client.dashboard_link}",
                  file=sys.stderr, flush=True)
        yield client


@contextmanager
def _environ_kept() -> Iterator[None]:
    """``os.environ`` as it was, once the cluster is closed.

    A Nanny sets ``distributed.nanny.pre-spawn-environ`` (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_...) in
    *this* process' environment before spawning its worker, and never puts it back: after a sweep, a
    ``geomlib.compute`` in the same session would read OMP_NUM_THREADS=1 and run on one thread.
    """
    before = dict(os.environ)
    try:
        yield
    finally:
        for k in set(os.environ) - set(before):
            del os.environ[k]
        os.environ.update(before)


def _local(distributed, n: int, memory_per_worker: int, progress: bool) -> Iterator[Any]:
    try:
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           memory_limit=memory_per_worker, silence_logs=logging.ERROR,
                                           dashboard_address=":8787")
    except Exception as exc:  # noqa: BLE001 - a cluster that cannot start is one line, whatever the cause
        raise ClusterError(f"a local Dask cluster of {n} workers could not start ({exc}); pass "
                           "--scheduler serial to run in this process") from None
    with cluster, distributed.Client(cluster) as client:
        if progress:
            print(f"geomlib: Dask LocalCluster, {n} worker process{'es' if n != 1 else ''} x 1 thread, "
                  f"{memory_per_worker / 2**30:.1f} GiB each; dashboard {client.dashboard_link}",
                  file=sys.stderr, flush=True)
        yield client


def describe_error(exc: BaseException) -> str:
    """One line for a failed task: geomlib's own sentence, or the exception's class and text."""
    if isinstance(exc, GeomlibError):
        return str(exc)
    if type(exc).__name__ == "KilledWorker":
        return ("its worker process died on every attempt (killed, or out of memory: raise --memory-per-worker "
                "or lower --workers)")
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


@dataclass(frozen=True)
class _Refused:
    """What a task returns instead of raising a GeomlibError: a user's error, not a worker's crash, so the
    worker logs no traceback for it and the scheduler does not count it as a failure."""

    message: str


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` as a task: geomlib's errors come back as :class:`_Refused`; GeomlibWarnings are
    recorded in each result's attrs and reported once by the caller, so they are not printed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        try:
            return fn(*args)
        except GeomlibError as exc:
            return _Refused(str(exc))


def _outcome(value: Any) -> Outcome:
    return Outcome(error=value.message) if isinstance(value, _Refused) else Outcome(value)


def _run_serial(tasks: list[Task], bar, follow_up: FollowUp) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    queue = deque(tasks)
    while queue:
        t = queue.popleft()
        try:
            out[t.key] = _outcome(call(t.fn, *t.args))
        except Exception as exc:  # noqa: BLE001 - as on a cluster: one task's failure is reported, the rest run
            out[t.key] = Outcome(error=describe_error(exc))
        more = follow_up(t.key, out[t.key])
        queue.extend(more)
        bar.total += len(more)
        bar.update(1)
    return out


def _no_follow_up(key: str, outcome: Outcome) -> list[Task]:
    return []


def run_tasks(tasks: list[Task], scheduler: str | None = None, *, workers: int | None = None,
              memory_per_worker: int | str = DEFAULT_WORKER_MEMORY, progress: bool = True,
              desc: str = "sweep", follow_up: FollowUp | None = None) -> dict[str, Outcome]:
    """Run independent ``tasks``; every task's :class:`Outcome` by key, whatever failed.

    Parameters
    ----------
    scheduler : str, optional
        ``"local"`` (default unless ``$DASK_SCHEDULER_ADDRESS`` is set), ``"serial"`` or an address.
    workers : int, optional
        Local cluster size; default :func:`default_workers`.
    memory_per_worker : int or str
        Each local worker's memory limit (the nanny restarts a worker beyond it).
    follow_up : callable, optional
        ``follow_up(key, outcome) -> tasks`` is called as each task ends; the tasks it returns (new keys
        only) join the run (a sweep replaces a compare whose checkpoint failed with one that skips it).
    """
    from tqdm.auto import tqdm

    where = resolve_scheduler(scheduler)
    if workers is not None:
        workers = positive_int("workers", workers)
    mem = parse_bytes(memory_per_worker)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise InvalidArgumentError("two tasks of one run have the same key; every (source, analysis) must be "
                                   "listed once")
    seen = set(keys)

    def more(key: str, outcome: Outcome) -> list[Task]:
        new = [t for t in (follow_up or _no_follow_up)(key, outcome) if t.key not in seen]
        seen.update(t.key for t in new)
        return new

    with tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress) as bar:
        if where == SERIAL:
            return _run_serial(tasks, bar, more)
        distributed = _require_distributed()
        with client_for(where, workers, mem, progress) as client:
            futures = {client.submit(call, t.fn, *t.args, key=t.key, pure=False): t for t in tasks}
            out = {}
            done = distributed.as_completed(list(futures))
            for fut in done:
                t = futures[fut]
                if fut.status == "finished":
                    out[t.key] = _outcome(fut.result())
                else:
                    out[t.key] = Outcome(error=describe_error(fut.exception()))
                for t2 in more(t.key, out[t.key]):
                    f2 = client.submit(call, t2.fn, *t2.args, key=t2.key, pure=False)
                    futures[f2] = t2
                    done.add(f2)
                    bar.total += 1
                bar.update(1)
                fut.release()
            return out


__all__ = ["LOCAL", "SERIAL", "Outcome", "Task", "call", "default_workers", "parse_bytes", "resolve_scheduler",
           "run_tasks"]
