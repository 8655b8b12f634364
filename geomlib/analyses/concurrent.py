"""Independent tasks of an analysis on a few threads, with their warnings recorded in task order.

The gauge analysis does, per layer pair, a neuron matching, its null, a head
matching, its null and the composition scores: independent pieces, one of them
(``linear_sum_assignment``) single-threaded.  On ``n`` cores, running ``n`` of
them at once with torch at one thread each keeps every core busy without
oversubscribing (two pools of BLAS threads on the same cores is what makes a
busy machine 10x slower, see :mod:`geomlib.threads`).  The tasks must write to
disjoint places; this module only schedules them.

Python's warning filters are process-wide state (``catch_warnings`` from two
threads at once corrupts it), so :class:`TaskRunner` installs one handler for
the whole run, tags each GeomlibWarning raised inside a task with that task,
drops those of tasks marked ``quiet`` and hands the others to ``record`` in the
order the tasks were submitted, whatever order they ran in: a run's provenance
does not depend on thread timing.  Other warnings, and those raised by the
submitting thread itself, are shown as they would be without the runner.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from ..errors import GeomlibWarning


class TaskRunner:
    """Run groups of tasks on ``workers`` threads (inline when 1), at most ``in_flight`` groups at once.

    Parameters
    ----------
    workers : int
        Threads; 1 runs every task inline, in order.
    record : callable
        Receives each GeomlibWarning's message, in submission order, when the runner closes.
    in_flight : int
        Groups (e.g. layer pairs) submitted but not finished; bounds the memory of the layers they hold.
    on_group_done : callable, optional
        Called once per finished group (a progress bar's ``update``), from the submitting thread.

    Use as a context manager; :meth:`submit` a group's tasks, each ``(fn, quiet)``.
    """

    def __init__(self, workers: int, record: Callable[[str], None], in_flight: int = 1,
                 on_group_done: Callable[[], None] | None = None) -> None:
        self.workers = max(1, int(workers))
        self._record = record
        self._in_flight = max(1, in_flight)
        self._done = on_group_done or (lambda: None)
        self._local = threading.local()
        self._seq = itertools.count()
        self._caught: list[tuple[tuple[int, int], int, str]] = []
        self._groups: deque[list[Future]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._group = 0

    def __enter__(self) -> TaskRunner:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always", GeomlibWarning)
        forward = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if getattr(self._local, "tag", None) is None or not issubclass(category, GeomlibWarning):
                # not a task's (the submitting thread's own, already recorded where it was raised) or not
                # geomlib's: shown as without the runner
                forward(message, category, filename, lineno, file, line)
                return
            self.warn(str(message))

        warnings.showwarning = show
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="geomlib-task")
        return self

    def warn(self, message: str) -> None:
        """Record ``message``: in its task's place when called from a task, at once otherwise."""
        tag = getattr(self._local, "tag", None)
        if tag is None:
            self._record(message)
        elif not tag[1]:
            self._caught.append((tag[0], next(self._seq), message))

    def _run(self, tag: tuple[int, int], quiet: bool, fn: Callable[[], None]) -> None:
        self._local.tag = (tag, quiet)
        try:
            fn()
        finally:
            self._local.tag = None

    def submit(self, tasks: list[tuple[Callable[[], None], bool]]) -> None:
        """Run one group's tasks (inline, or queued), then wait for the oldest groups beyond ``in_flight``."""
        g = self._group
        self._group += 1
        if self._pool is None:
            for i, (fn, quiet) in enumerate(tasks):
                self._run((g, i), quiet, fn)
            self._done()
            return
        self._groups.append([self._pool.submit(self._run, (g, i), quiet, fn) for i, (fn, quiet) in enumerate(tasks)])
        while len(self._groups) > self._in_flight:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        for f in self._groups.popleft():
            f.result()  # a task's exception is raised here, in the submitting thread
        self._done()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                while self._groups:
                    self._finish_oldest()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._catch.__exit__(exc_type, exc, tb)
        if exc_type is None:
            for _, _, msg in sorted(self._caught):
                self._record(msg)


@contextmanager
def one_torch_thread(on: bool):
    """torch at one intra-op thread for the block (each concurrent task is then one core), restored after."""
    import torch  # the runner itself is torch-free

    if not on:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
