"""Helper processes that share a report's work with this process (analyses, figures).

A report is CPU-bound Python (pandas, matplotlib): on a machine with ``workers`` cores it
runs fastest as this process plus ``workers - 1`` spawned helpers, all taking work from one
queue, with the helpers started early enough that their start-up (imports, about a second
each) overlaps work done here. :class:`HelperPool` is that set of helpers; the work they
do is deterministic, so every result is the same as this process alone would compute.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["HelperPool", "helper_pool"]

T = TypeVar("T")
R = TypeVar("R")

#: Modules a helper imports as soon as it starts (before any work reaches it).
FIGURE_MODULES = (
    "assay.report._figures",
    "assay.report._subgroup_figures",
    "matplotlib.backends.backend_svg",
)


def _warm_up(modules: tuple[str, ...]) -> int:
    """Import ``modules`` in a helper (Agg backend for matplotlib); returns the helper's pid."""
    import matplotlib as mpl

    mpl.use("Agg")  # a helper never opens a GUI backend
    for name in modules:
        importlib.import_module(name)
    return os.getpid()


class HelperPool:
    """``n`` spawned local helper processes (``n`` may be 0: everything runs here).

    The helpers are tied to this process's life like the workers of
    :func:`assay.scoring.map_unordered`: they end when it dies, and :meth:`close` after an
    error (or leaving the ``with`` block by an exception, Ctrl-C included) terminates them
    instead of letting them finish queued work. Each helper starts at once and imports
    ``warm`` (module names) before any task reaches it.
    """

    def __init__(self, n: int, *, warm: Iterable[str] = FIGURE_MODULES) -> None:
        from assay.scoring._executor import _worker_init

        self.n = max(0, int(n))
        self._executor: ProcessPoolExecutor | None = None
        if self.n:
            on_main = threading.current_thread() is threading.main_thread()
            self._executor = ProcessPoolExecutor(
                max_workers=self.n, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(os.getpid(), on_main),
            )  # fmt: skip
            modules = tuple(warm)
            for _ in range(self.n):  # each submit starts one more helper, now
                self.submit(_warm_up, modules)

    def submit(self, fn: Callable[[T], R], arg: T) -> Future[R]:
        """Run ``fn(arg)`` in a helper (``fn`` and ``arg`` must pickle).

        Raises
        ------
        RuntimeError
            The pool has no helpers or is closed.
        """
        from assay.scoring._executor import _call

        if self._executor is None:
            raise RuntimeError("HelperPool.submit: this pool has no helper processes.")
        return self._executor.submit(_call, fn, arg)

    def close(self, *, completed: bool = True) -> None:
        """Shut the helpers down; ``completed=False`` (an error) terminates them at once."""
        from assay.scoring._executor import _terminate

        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        if not completed:
            _terminate(processes)

    def __enter__(self) -> HelperPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(completed=exc_type is None)


def helper_pool(workers: int, *, warm: Iterable[str] = FIGURE_MODULES) -> HelperPool:
    """The helpers of a report drawn with ``workers`` processes: ``workers - 1`` of them.

    Use it around the whole report (``with helper_pool(workers) as helpers:``, then pass
    ``helpers`` to :func:`~assay.report._collect.collect_report_data` and
    :func:`~assay.report._build.build_report`), so that the helpers start while this
    process loads the scores and their start-up costs no wall time.
    """
    return HelperPool(max(0, workers - 1), warm=warm)


def worker_error(what: str) -> Exception:
    """The :class:`~assay.scoring.WorkerError` of a helper that died while doing ``what``."""
    from assay.scoring._executor import WorkerError

    return WorkerError(
        f"A helper process died while {what} (killed, out of memory, or unable to start: a "
        "script using workers > 1 needs an `if __name__ == '__main__':` guard). Re-run with "
        "--workers 1 if memory is short."
    )


def run_shared(
    tasks: Iterable[T],
    fn: Callable[[T], R],
    helpers: HelperPool | None,
    *,
    queued: int = 2,
    what: str = "working",
) -> Iterator[tuple[T, R, int]]:
    """``fn`` over ``tasks`` in this process and the helpers, taking tasks in order.

    This process takes the next task whenever it is free; the helpers are kept ``queued``
    tasks ahead (beyond the one each is doing), topped up between this process's tasks.
    Yields ``(task, result, pid of the process that computed it)`` in completion order,
    always in the calling thread. Without helpers everything runs here, in order.

    Raises
    ------
    WorkerError
        A helper died; the helpers are terminated on any error.
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(tasks)
    pending.reverse()  # pop() from the end = the next task in order
    if helpers is None or not helpers.n or len(pending) < 2:
        while pending:
            task = pending.pop()
            yield task, fn(task), os.getpid()
        return
    pool = helpers
    in_flight: dict[Future[tuple[R, int]], T] = {}

    def top_up() -> None:
        while pending and len(in_flight) < pool.n * (1 + queued):
            task = pending.pop()
            in_flight[pool.submit(_with_pid, (fn, task))] = task

    try:
        top_up()
        while pending or in_flight:
            if pending:  # one here, then collect what the helpers finished meanwhile
                task = pending.pop()
                yield task, fn(task), os.getpid()
                done = [f for f in in_flight if f.done()]
            else:
                done = list(wait(in_flight, return_when=FIRST_COMPLETED)[0])
            for future in done:
                task = in_flight.pop(future)
                result, pid = future.result()
                yield task, result, pid
            top_up()
    except BrokenProcessPool as exc:
        pool.close(completed=False)
        raise worker_error(what) from exc
    except BaseException:  # an error here or in the consumer, Ctrl-C: drop queued work
        pool.close(completed=False)
        raise


def _with_pid(job: tuple[Callable[[Any], R], Any]) -> tuple[R, int]:
    """``fn(task)`` in a helper, with the helper's pid (which process did what)."""
    fn, task = job
    return fn(task), os.getpid()
