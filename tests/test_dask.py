"""Scoring on a real Dask distributed cluster (DESIGN.md §6): same rows as a local run, and
a worker killed mid-run does not lose or change anything."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from assay.scoring import score
from assay.scoring._executor import WorkerError, map_unordered
from assay.store import ResultStore
from assay.synthetic import write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
KEY = ["model", "case_id", "structure", "metric"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("dask") / "b", n_cases=6, models=("boundary_noise",), **SMALL
    )


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


def _rows(store: ResultStore) -> pd.DataFrame:
    frame = store.scores()[[*KEY, "value", "status", "message"]]
    return frame.sort_values(KEY).reset_index(drop=True)


def _local(tmp_path, bench) -> pd.DataFrame:
    local = ResultStore(tmp_path / "local.db")
    score(bench.reference, bench.predictions["boundary_noise"], model="boundary_noise",
          dataset="d", store=local)  # fmt: skip
    return _rows(local)


def test_dask_cluster_gives_the_local_rows(tmp_path, bench, cluster):
    store = ResultStore(tmp_path / "dask.db")
    report = score(bench.reference, bench.predictions["boundary_noise"], model="boundary_noise",
                   dataset="d", store=store, scheduler=cluster.scheduler_address)  # fmt: skip
    assert report.n_scored == 6
    pd.testing.assert_frame_equal(_rows(store), _local(tmp_path, bench))
    # both workers took part (the tasks were spread, not run in the client)
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, bench):
    """SIGKILL one of two worker processes after the first stored case: Dask reschedules its
    tasks on the other worker (a nanny restarts the dead one); the run completes and its rows
    equal an uninterrupted local run."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster.scheduler_address, set_as_default=False) as client,
    ):  # fmt: skip
        pids = list(client.run(os.getpid).values())
        killed: list[int] = []

        def on_case(_record: object) -> None:
            if not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        store = ResultStore(tmp_path / "killed.db")
        report = score(bench.reference, bench.predictions["boundary_noise"],
                       model="boundary_noise", dataset="d", store=store,
                       scheduler=cluster.scheduler_address, on_case=on_case)  # fmt: skip
        assert killed and report.n_scored == 6
        pd.testing.assert_frame_equal(_rows(store), _local(tmp_path, bench))


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(WorkerError, match=r"Cannot reach the Dask scheduler at tcp://127\.0\.0\.1"):
        list(map_unordered(abs, [1, 2], scheduler="tcp://127.0.0.1:1"))


def test_map_unordered_on_dask_yields_every_result(cluster):
    results = sorted(map_unordered(abs, range(-20, 0), scheduler=cluster.scheduler_address))
    assert results == list(range(1, 21))
