"""How many BLAS/OpenMP threads a computation uses: never more than the machine has free.

The policy (:func:`choose_threads`)
    1. an explicit request (``geomlib compute --threads N``, ``geomlib.compute(threads=N)``) wins;
    2. else ``GEOMLIB_THREADS``, else ``OMP_NUM_THREADS``, when set to a positive integer;
    3. else the cores this process may use (its CPU affinity, capped by a cgroup CPU quota)
       minus how busy the machine already is (the 1-minute load average, which counts the
       runnable threads of every other process), rounded to the nearest integer and kept
       between 1 and the number of cores.

Why it errs towards fewer threads
    Oversubscription is catastrophic and under-use is cheap.  BLAS and LAPACK
    threads synchronise many times per call, so one thread descheduled by a
    competing process stalls all the others: measured on a busy 2-core machine, a
    1024 x 1024 float64 ``eigvalsh`` took 12.8 s with 2 threads against 1.1 s with
    one.  Leaving a core idle costs at most the factor it would have contributed
    (2 threads are about 1.8x faster than 1 on a quiet machine of that kind).

The module imports in microseconds and without torch; torch and threadpoolctl are
imported only by :func:`apply_threads` and :func:`using_threads`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import InvalidArgumentError

#: environment variables that set the thread count, the first set one wins (after an explicit request)
POLICY_ENV = ("GEOMLIB_THREADS", "OMP_NUM_THREADS")
#: what child processes (and libraries loaded later) read; set only where the user left them unset
CHILD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# The values apply_threads itself wrote into os.environ: they are not a user's choice, so the
# policy does not honour them as one (a second call must see the machine again, not its own echo).
_WRITTEN: dict[str, str] = {}


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count :func:`thread_policy` chose, and why.

    Attributes
    ----------
    threads : int
        The count.
    reason : str
        ``"requested"``, ``"GEOMLIB_THREADS"``, ``"OMP_NUM_THREADS"`` or ``"policy"``.
    cores : int
        Cores available to this process (affinity, cgroup quota).
    load : float or None
        The 1-minute load average the policy read (None when it did not look).
    """

    threads: int
    reason: str
    cores: int
    load: float | None = None

    def describe(self) -> str:
        """One line for stderr, e.g. ``geomlib: 2 BLAS threads (2 cores, load 0.1)``."""
        n = f"{self.threads} BLAS thread{'s' if self.threads != 1 else ''}"
        if self.reason == "policy":
            why = f"{self.cores} core{'s' if self.cores != 1 else ''}, load {self.load:.1f}"
        elif self.reason == "requested":
            why = f"as requested; {self.cores} core{'s' if self.cores != 1 else ''}"
        else:
            why = f"{self.reason}={self.threads}"
        return f"geomlib: {n} ({why})"


def check_threads(requested: object, what: str = "threads") -> int | None:
    """``requested`` as an int >= 1 (None passes through); else one-sentence :class:`InvalidArgumentError`."""
    if requested is None:
        return None
    if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested < 1:
        raise InvalidArgumentError(
            f"{what}={requested!r} is not a thread count; pass a whole number of at least 1 (e.g. {what}=2), "
            "or leave it out to let geomlib choose from the free cores"
        )
    return int(requested)


def _env_threads(name: str) -> int | None:
    """A positive count from environment variable ``name``, None when unset, empty or written by geomlib.

    ``OMP_NUM_THREADS`` may be a nested list (``"4,2"``): its first level counts;
    a malformed value of it is left to the libraries that read it.  A malformed
    ``GEOMLIB_THREADS`` is geomlib's own setting and is refused.
    """
    raw = os.environ.get(name, "").strip()
    if not raw or _WRITTEN.get(name) == raw:
        return None
    first = raw.split(",")[0].strip()
    try:
        n = int(first)
    except ValueError:
        n = 0
    if n >= 1:
        return n
    if name == "GEOMLIB_THREADS":
        raise InvalidArgumentError(
            f"GEOMLIB_THREADS={raw!r} is not a thread count; set it to a whole number of at least 1 or unset it"
        )
    return None


def _cgroup_cpus() -> float | None:
    """CPUs the cgroup CPU quota allows (v2 ``cpu.max``, else v1 ``cfs_quota_us``), None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota = float(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period = float(fh.read())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (else ``os.cpu_count()``), capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))  # 1.5 CPUs of quota: a second thread would be throttled
    return max(1, cores)


def _load() -> float:
    try:
        return max(0.0, float(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        return 0.0


def thread_policy(requested: object = None) -> ThreadChoice:
    """:func:`choose_threads` with the reason and the inputs it looked at (for the progress line).

    Raises
    ------
    InvalidArgumentError
        ``requested`` is not an int >= 1, or ``GEOMLIB_THREADS`` is set to something else.
    """
    n = check_threads(requested)
    cores = available_cores()
    if n is not None:
        return ThreadChoice(n, "requested", cores)
    for name in POLICY_ENV:
        env = _env_threads(name)
        if env is not None:
            return ThreadChoice(env, name, cores)
    busy = _load()
    return ThreadChoice(max(1, min(cores, math.floor(cores - busy + 0.5))), "policy", cores, busy)


def choose_threads(requested: int | None = None) -> int:
    """How many BLAS/OpenMP threads to compute with.

    Parameters
    ----------
    requested : int, optional
        An explicit count (at least 1): returned as it is.

    Returns
    -------
    int
        Without a request: ``GEOMLIB_THREADS`` or else ``OMP_NUM_THREADS`` when the
        user set one to a positive integer; otherwise
        ``max(1, min(cores, floor(cores - load + 0.5)))`` where ``cores`` is the
        number of CPUs this process may use (``os.sched_getaffinity``, else
        ``os.cpu_count()``, capped by a cgroup CPU quota such as
        ``/sys/fs/cgroup/cpu.max``) and ``load`` the 1-minute load average
        (``os.getloadavg()[0]``, the runnable threads of every process).

    Notes
    -----
    The policy would rather leave a core idle than share one.  Linear algebra
    threads wait for each other many times per call, so a single thread
    preempted by another process stalls them all: on a busy 2-core machine a
    1024² float64 ``eigvalsh`` took 12.8 s with 2 threads and 1.1 s with one.
    Under-use costs at most the factor left idle (2 threads are ~1.8x faster
    than 1 on a quiet 2-core machine).  The load average is a 1-minute mean, so
    it lags: a machine that just became busy (or quiet) is seen a little late.
    It also counts the host's processes inside a container, which can only
    make the count smaller.

    Raises
    ------
    InvalidArgumentError
        ``requested`` is not an int >= 1 (``0``, ``-1``, ``"two"``, ``1.5``),
        or ``GEOMLIB_THREADS`` is set to something other than a positive integer.
    """
    return thread_policy(requested).threads


def _apply(n: int) -> Callable[[], None]:
    """Apply ``n`` threads; return a function that puts back what was there before."""
    import torch

    n = check_threads(n)
    if n is None:
        raise InvalidArgumentError("threads=None is not a thread count; pass a whole number of at least 1")
    undo: list[Callable[[], None]] = []
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
        undo.append(lambda: torch.set_num_threads(before))
    try:  # numpy's and scipy's own BLAS (torch's threads are set above); optional
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        pass
    else:
        if any(p.get("user_api") == "blas" and p.get("num_threads") != n for p in threadpool_info()):
            limiter = threadpool_limits(limits=n, user_api="blas")
            undo.append(limiter.restore_original_limits)
    for name in CHILD_ENV:  # for child processes and libraries loaded later; a user's own value stays
        old = os.environ.get(name)
        if old is None or old == _WRITTEN.get(name):
            os.environ[name] = _WRITTEN[name] = str(n)

            def put_back(name: str = name, old: str | None = old) -> None:
                if old is None:
                    os.environ.pop(name, None)
                    _WRITTEN.pop(name, None)
                else:
                    os.environ[name] = _WRITTEN[name] = old

            undo.append(put_back)

    def restore() -> None:
        for u in reversed(undo):
            u()

    return restore


def apply_threads(n: int) -> None:
    """Use ``n`` threads from now on: torch, numpy/scipy's BLAS, and child processes.

    ``torch.set_num_threads(n)``; numpy's and scipy's BLAS limited to ``n`` through
    threadpoolctl when it is installed (geomlib's heavy kernels all run in torch,
    so it is optional); ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
    ``OPENBLAS_NUM_THREADS`` set to ``n`` for child processes, unless the user
    set them.  Calling it again with the same ``n`` changes nothing.

    Raises
    ------
    InvalidArgumentError
        ``n`` is not an int >= 1.
    """
    _apply(n)


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[int]:
    """:func:`apply_threads` for the duration of a ``with`` block; the previous settings come back after it."""
    restore = _apply(n)
    try:
        yield n
    finally:
        restore()


def current_threads() -> int:
    """torch's intra-op thread count now (what provenance records); imports torch."""
    import torch

    return int(torch.get_num_threads())


__all__ = ["ThreadChoice", "apply_threads", "available_cores", "check_threads", "choose_threads",
           "current_threads", "thread_policy", "using_threads"]
