"""Map a function over tasks: in this process, a pool of local processes, or a Dask cluster.

Local worker processes never outlive the process that started them: each one exits when
its parent dies (killed, even by SIGKILL), on Linux through ``PR_SET_PDEATHSIG`` and
everywhere through a thread that watches its parent, and when the parent stops early
(Ctrl-C, SIGTERM, an error) it terminates its workers instead of letting them finish
their queued cases. A worker stopped by SIGTERM unwinds (``finally`` blocks run, e.g. a
model command's process group is killed) and starts no further task.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any, TypeVar

from assay.errors import AssayError, InputError

T = TypeVar("T")
R = TypeVar("R")

#: Seconds between a worker's checks that its parent is alive.
_WATCH_INTERVAL_S = 0.2
#: Seconds a worker whose parent died may take to unwind before it is ended outright.
_UNWIND_S = 5.0
#: Seconds the parent waits for terminated workers before killing them.
_TERMINATE_WAIT_S = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerError(AssayError, RuntimeError):
    """A worker process died (killed, out of memory); stored cases are kept."""


def check_scheduler_address(address: str) -> str:
    """``address`` if it is a Dask scheduler address (``tcp://HOST:PORT``, also ``tls://``,
    ``ws://``, ``wss://``, ``ucx://``, ``inproc://``; no scheme means tcp), else InputError.

    Checked before connecting, so that a typo fails at once, in one line, instead of after a
    connection timeout.
    """
    from distributed.comm import registry
    from distributed.comm.addressing import parse_address, parse_host_port

    text = address.strip() if isinstance(address, str) else ""
    expected = (
        "expected tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786 (the address `dask scheduler` prints)"
    )
    try:
        scheme, location = parse_address(text)
        registry.get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
            if not host or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError("the host is empty or the port is not in 1..65535")
        elif not location:
            raise ValueError("no location after the scheme")
    except (ValueError, TypeError) as exc:
        raise InputError(f"Invalid --scheduler address {address!r} ({exc}); {expected}.") from exc
    return text


def map_unordered(
    fn: Callable[[T], R], tasks: Iterable[T], workers: int = 1, *, scheduler: str | None = None
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers <= 1`` runs in this process. Otherwise a pool of ``workers`` fresh ("spawn")
    processes runs the tasks, keeping at most two tasks per worker in flight so memory stays
    bounded on large cases. ``fn`` must be a module-level function and tasks picklable. The
    workers exit when this process dies, and are terminated when the iteration stops early
    (an exception, Ctrl-C, or the caller closing the iterator): tasks in flight are lost,
    results already yielded are the caller's.

    With ``scheduler`` (a Dask distributed address such as ``tcp://10.0.0.5:8786``) the tasks
    run on that cluster's workers instead (``workers`` is ignored), at most two per worker
    thread in flight; Dask reschedules the tasks of a worker that dies.
    """
    if scheduler is not None:
        yield from _map_dask(fn, tasks, check_scheduler_address(scheduler))
        return
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    pending: set[Future[R]] = set()
    ctx = multiprocessing.get_context("spawn")
    # PR_SET_PDEATHSIG fires when the *thread* that started a worker ends; workers start in
    # submit(), in this thread, so use it only when this is the main thread (which lives as
    # long as the process); the watcher thread covers the rest.
    on_main = threading.current_thread() is threading.main_thread()
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init,
        initargs=(os.getpid(), on_main),
    )  # fmt: skip
    completed = False
    try:
        for task in tasks:
            pending.add(pool.submit(_call, fn, task))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
        completed = True
    except BrokenProcessPool as exc:
        raise WorkerError(
            "A scoring worker process died (killed, out of memory, or unable to start: a script "
            "using workers > 1 needs an `if __name__ == '__main__':` guard). Cases finished so "
            "far are stored; re-run to resume, with fewer --workers if memory is short."
        ) from exc
    finally:  # also on Ctrl-C or an error in the consumer: drop queued tasks, do not wait
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        if not completed:
            _terminate(processes)


def _terminate(processes: list[Any]) -> None:
    """SIGTERM the workers (they unwind), wait a little, then SIGKILL what is left."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + _TERMINATE_WAIT_S
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


_stopping = False
_parent = 0


def _call(fn: Callable[[T], R], task: T) -> R:
    """Run one task in a worker, unless the worker has been told to stop."""
    if _stopping:
        os._exit(143)  # told to stop while this task was queued: start nothing new
    try:
        return fn(task)
    finally:
        if _stopping:  # unwound by SIGTERM (its finally blocks have run): the result is moot
            os._exit(143)


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    if os.getppid() != _parent:  # nobody to report to: no tracebacks of a broken result pipe
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
    raise SystemExit(128 + signum)  # unwind the task: its finally blocks run


def _worker_init(parent: int, use_pdeathsig: bool) -> None:
    """Initializer of every local worker: tie its life to its parent's."""
    global _parent
    _parent = parent
    # Ctrl-C reaches the whole process group; the parent decides and terminates the
    # workers. A handler, not SIG_IGN, so that commands the worker starts get the default.
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watcher alone
            pass
    if os.getppid() != parent:  # the parent died before this worker was set up
        os._exit(143)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="assay-parent-watch").start()  # fmt: skip


def _watch_parent(parent: int) -> None:
    """In a worker: when the parent is gone, stop like on SIGTERM, then end outright."""
    while os.getppid() == parent:
        time.sleep(_WATCH_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_UNWIND_S)
    os._exit(143)


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
