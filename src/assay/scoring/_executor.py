"""Map a function over tasks, in this process or in a pool of local processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from assay.errors import AssayError

T = TypeVar("T")
R = TypeVar("R")


class WorkerError(AssayError, RuntimeError):
    """A worker process died (killed, out of memory); stored cases are kept."""


def map_unordered(fn: Callable[[T], R], tasks: Iterable[T], workers: int = 1) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers <= 1`` runs in this process. Otherwise a pool of ``workers`` fresh ("spawn")
    processes runs the tasks, keeping at most two tasks per worker in flight so memory stays
    bounded on large cases. ``fn`` must be a module-level function and tasks picklable.
    """
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    pending: set[Future[R]] = set()
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        for task in tasks:
            pending.add(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    except BrokenProcessPool as exc:
        raise WorkerError(
            "A scoring worker process died (killed, out of memory, or unable to start: a script "
            "using workers > 1 needs an `if __name__ == '__main__':` guard). Cases finished so "
            "far are stored; re-run to resume, with fewer --workers if memory is short."
        ) from exc
    finally:  # also on Ctrl-C or an error in the consumer: drop queued tasks, do not wait
        pool.shutdown(wait=False, cancel_futures=True)
