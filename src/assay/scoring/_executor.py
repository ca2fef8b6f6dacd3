"""Map a function over tasks: in this process, a pool of local processes, or a Dask cluster."""

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


def map_unordered(
    fn: Callable[[T], R], tasks: Iterable[T], workers: int = 1, *, scheduler: str | None = None
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers <= 1`` runs in this process. Otherwise a pool of ``workers`` fresh ("spawn")
    processes runs the tasks, keeping at most two tasks per worker in flight so memory stays
    bounded on large cases. ``fn`` must be a module-level function and tasks picklable.

    With ``scheduler`` (a Dask distributed address such as ``tcp://10.0.0.5:8786``) the tasks
    run on that cluster's workers instead (``workers`` is ignored), at most two per worker
    thread in flight; Dask reschedules the tasks of a worker that dies.
    """
    if scheduler is not None:
        yield from _map_dask(fn, tasks, scheduler)
        return
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


def _map_dask(fn: Callable[[T], R], tasks: Iterable[T], scheduler: str) -> Iterator[R]:
    """:func:`map_unordered` on a Dask distributed cluster."""
    from distributed import Client, as_completed
    from distributed.scheduler import KilledWorker

    try:
        client = Client(scheduler, timeout="30s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise WorkerError(
            f"Cannot reach the Dask scheduler at {scheduler}: {exc}. Start it (dask scheduler; "
            "dask worker ADDRESS) or check the address."
        ) from exc
    try:
        slots = max(2 * sum(client.nthreads().values()), 2)
        queue = iter(tasks)
        running = as_completed(loop=client.loop)
        for task in queue:
            running.add(client.submit(fn, task, pure=False))
            if running.count() >= slots:
                break
        for fut in running:
            try:
                result = fut.result()
            except KilledWorker as exc:
                raise WorkerError(
                    f"A task killed Dask workers repeatedly ({exc}); finished cases are "
                    "stored. Check the workers' memory and logs, then re-run to resume."
                ) from exc
            except Exception as exc:  # a task that could not run on a worker at all
                raise WorkerError(
                    f"A task failed on the Dask cluster: {type(exc).__name__}: {exc}. The "
                    "workers need assay installed and must see the same paths; finished "
                    "cases are stored, re-run to resume."
                ) from exc
            fut.release()
            for task in queue:  # refill one
                running.add(client.submit(fn, task, pure=False))
                break
            yield result
    finally:
        client.close()
