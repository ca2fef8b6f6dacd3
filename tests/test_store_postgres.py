"""The results store on a real PostgreSQL server gives the same rows as on SQLite.

The server is a private throwaway cluster started from Debian's PostgreSQL binaries (see
tests/pg_server.py), or the one named by ``ASSAY_TEST_POSTGRES_URL``. Without one these tests
fail (never skip): install it with ``apt-get install -y -q postgresql``.

Expected values are the SQLite store's own rows for the same inputs (the SQLite store is
covered by test_store_export.py), compared bit for bit for floats and in the order the store
returns them; only wall-clock columns (timestamps, seconds, timings) are left out. Each
PostgreSQL database is created with an ICU en-US collation, so that any ordering that relied
on the server's collation instead of byte order shows up.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pg_server  # tests/ is on sys.path under pytest
import pytest
import sqlalchemy as sa

from assay.scoring import CaseRecord, ScoreRow, score
from assay.store import ResultStore, export_scores
from assay.synthetic import write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
#: Simulated model -> stored name. The names sort differently in byte order ("N" < "b") and
#: in a linguistic collation ("b" < "N").
MODELS = {"near_perfect": "Near-perfect", "boundary_noise": "boundary_noise"}
NAN = float("nan")
INF = float("inf")
#: Manifest entries that record when and how long, not what.
VOLATILE = ("started_at", "last_started_at", "finished_at", "timings")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("bench") / "b", n_cases=3, models=tuple(MODELS), **SMALL
    )


def _fill(store: ResultStore, bench) -> ResultStore:
    """The same content, whatever the backend: both models scored, metadata, a hand-made run."""
    for sim, name in MODELS.items():
        score(bench.reference, bench.predictions[sim], model=name, dataset="d", store=store)
    store.write_metadata("d", METADATA, id_column="id")
    store.ensure_run("r-edge", dataset="Edge", model=LONG_NAME, profile="default",
                     manifest={"note": "hand-made", "values": [1 / 3, None, "é"]})  # fmt: skip
    store.write_cases("r-edge", "Edge", LONG_NAME, EDGE_CASES)
    return store


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory, bench) -> Iterator[ResultStore]:
    with _closing(ResultStore(tmp_path_factory.mktemp("db") / "ref.db")) as store:
        yield _fill(store, bench)


@pytest.fixture(scope="module")
def pg_store(pg: pg_server.PgServer, bench) -> Iterator[ResultStore]:
    with _closing(ResultStore(pg.database())) as store:
        yield _fill(store, bench)


@contextmanager
def _closing(store: ResultStore) -> Iterator[ResultStore]:
    """Close the store's pooled connections at the end (psycopg warns about open ones)."""
    try:
        yield store
    finally:
        store.engine.dispose()


# -- content that stresses the backends --------------------------------------------------------

LONG_NAME = "model-" + "x" * 294  # longer than any VARCHAR(200)
#: Values that must come back bit for bit, and the non-finite ones.
EDGE_VALUES = {
    "third": 1 / 3,
    "tiny": 5e-324,
    "huge": sys.float_info.max,
    "integral": 3.0,
    "pi_17": 3.1415926535897931,
    "dice": 0.9123456789012345,
    "negative_zero": -0.0,
    "nan": NAN,
    "pinf": INF,
    "ninf": -INF,
}
EDGE_ROWS = (
    *(
        ScoreRow(name, "hd95", value, "both_empty" if np.isnan(value) else "ok")
        for name, value in EDGE_VALUES.items()
    ),
    ScoreRow("Liver", "dsc", NAN, "failed", "boom\x00 with a NUL, " + "m" * 5000),
)
EDGE_CASES = [
    CaseRecord(
        "Case_B" + "é" * 240,
        "failed",
        0.25,
        EDGE_ROWS,
        message="1 structure failed: ünïcode ✓",
        flags=tuple(f"flag_{i:03d}" for i in range(40)),  # joined: longer than 200
    ),
    CaseRecord("case_a", "ok", 0.5, (ScoreRow("_underscore", "dsc", 0.5, "ok"),)),
]
METADATA = pd.DataFrame(
    {
        "id": ["case_0001", "Case_0002", "case_0003", "Ärger"],
        "age": [30, 29, None, 41],
        "weight": [70.25, 1 / 3, NAN, 1e-300],
        "sex": ["M", "F", None, "F"],
        "scanner": ["Philips IQon", "Siemens ✓", "x" * 1000, ""],
        "contrast": [True, False, True, None],
    }
)


# -- helpers -----------------------------------------------------------------------------------


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes, rows and order; floats bit for bit (NaN where NaN)."""
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for col in a.columns:
        if a[col].dtype == np.float64:
            x, y = a[col].to_numpy(), b[col].to_numpy()
            assert np.array_equal(np.isnan(x), np.isnan(y)), col
            finite = ~np.isnan(x)
            assert np.array_equal(x[finite].view(np.uint64), y[finite].view(np.uint64)), col


def _stable(manifest: dict | None) -> dict:
    assert manifest is not None
    return {k: v for k, v in manifest.items() if k not in VOLATILE}


def _runs(store: ResultStore) -> pd.DataFrame:
    df = store.runs().drop(columns=["created_at", "updated_at"])
    df["manifest"] = [_stable(m) for m in df["manifest"]]
    return df


def _cases(store: ResultStore) -> pd.DataFrame:
    return store.cases().drop(columns=["seconds", "finished_at"])


# -- same rows in both -------------------------------------------------------------------------


def test_store_is_on_postgresql(pg_store: ResultStore) -> None:
    assert pg_store.engine.dialect.name == "postgresql"
    with pg_store.engine.connect() as con:
        kinds = dict(con.execute(sa.text(
            "select column_name, data_type from information_schema.columns "
            "where table_name = 'scores'"
        )).all())  # fmt: skip
    assert kinds["value"] == "double precision"


def test_scores_are_the_same_rows_in_the_same_order(sqlite_store, pg_store) -> None:
    want = sqlite_store.scores()
    assert set(want["model"]) == {*MODELS.values(), LONG_NAME}
    assert want["value"].isna().any() and np.isinf(want["value"]).any()
    _assert_same(pg_store.scores(), want)
    for model in (*MODELS.values(), LONG_NAME):
        _assert_same(pg_store.scores(model=model), sqlite_store.scores(model=model))
    _assert_same(pg_store.scores(dataset="d", profile="default"),
                 sqlite_store.scores(dataset="d", profile="default"))  # fmt: skip


def test_edge_values_round_trip_exactly(pg_store) -> None:
    back = pg_store.scores(dataset="Edge", model=LONG_NAME)
    values = dict(zip(back["structure"], back["value"], strict=True))
    for name, value in EDGE_VALUES.items():
        if name == "nan":
            assert np.isnan(values[name])
        elif name == "negative_zero":
            # stored as +0.0 on every backend (SQLite cannot keep the sign of zero)
            assert np.float64(values[name]).view(np.uint64) == np.float64(0.0).view(np.uint64)
        else:
            assert np.float64(values[name]).view(np.uint64) == np.float64(value).view(np.uint64)
    failed = back[back["structure"] == "Liver"].iloc[0]
    assert failed["message"].startswith("boom\\x00 with a NUL, mmm")
    assert len(failed["message"]) == len("boom\\x00 with a NUL, ") + 5000
    case = pg_store.cases(["r-edge"]).set_index("case_id").loc[EDGE_CASES[0].case_id]
    assert case["flags"] == ",".join(EDGE_CASES[0].flags)
    assert case["message"] == EDGE_CASES[0].message


def test_cases_runs_and_manifests_are_the_same(sqlite_store, pg_store) -> None:
    _assert_same(_cases(pg_store), _cases(sqlite_store))
    assert pg_store.cases(["no-such-run"]).empty
    want = _runs(sqlite_store)
    assert len(want) == 3
    _assert_same(_runs(pg_store), want)
    run_id = want["run_id"].iloc[0]
    assert _stable(pg_store.manifest(run_id)) == _stable(sqlite_store.manifest(run_id))
    assert pg_store.manifest("no-such-run") is None
    assert pg_store.stored_cases(run_id) == sqlite_store.stored_cases(run_id)


def test_metadata_round_trips_the_same(sqlite_store, pg_store) -> None:
    want = sqlite_store.metadata("d")
    assert len(want) == len(METADATA)
    _assert_same(pg_store.metadata("d"), want)
    assert pg_store.metadata("no-such-dataset").empty
    got = pg_store.metadata("d").set_index("case_id")
    assert got.loc["Ärger", "scanner"] == "" and got.loc["case_0003", "scanner"] == "x" * 1000
    assert got.loc["Case_0002", "weight"] == 1 / 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "touchstone"])
def test_exports_are_byte_identical(sqlite_store, pg_store, tmp_path, fmt) -> None:
    out = {}
    for name, store in (("sqlite", sqlite_store), ("pg", pg_store)):
        target = tmp_path / name / ("scores" if fmt == "touchstone" else f"scores.{fmt}")
        files = export_scores(store, fmt, target, dataset="d")
        out[name] = {str(p.relative_to(tmp_path / name)): p.read_bytes() for p in files}
    assert out["pg"] == out["sqlite"]
    assert len(out["pg"]) == (4 if fmt == "touchstone" else 1)


# -- runs on PostgreSQL ------------------------------------------------------------------------


class _InterruptError(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(pg, bench, sqlite_store) -> None:
    url = pg.database()
    model = MODELS["near_perfect"]
    run_id = sqlite_store.scores(model=model)["run_id"].iloc[0]

    def stop_after_first(_record: CaseRecord) -> None:
        raise _InterruptError

    with _closing(ResultStore(url)) as store, pytest.raises(_InterruptError):
        score(bench.reference, bench.predictions["near_perfect"], model=model, dataset="d",
              store=store, on_case=stop_after_first)  # fmt: skip
    with _closing(ResultStore(url, create=False)) as store:
        assert len(store.stored_cases(run_id)) == 1
        report = score(bench.reference, bench.predictions["near_perfect"], model=model,
                       dataset="d", store=store)  # fmt: skip
        assert (report.n_skipped, report.n_scored) == (1, 2)
        _assert_same(store.scores(), sqlite_store.scores(model=model))
        want = _cases(sqlite_store)
        _assert_same(_cases(store), want[want["run_id"] == run_id])


def test_stores_opened_at_once_on_an_empty_database_all_work(pg) -> None:
    """Several processes may open a new database at the same moment (e.g. two `assay score`)."""
    url = pg.database()
    barrier = threading.Barrier(6)
    errors: list[Exception] = []

    def open_store() -> None:
        barrier.wait()
        try:
            ResultStore(url).engine.dispose()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_cli_scores_two_models_concurrently_into_one_database(pg, bench, sqlite_store) -> None:
    url = pg.database()
    cli = Path(sys.executable).with_name("assay")
    procs = []
    for sim, name in MODELS.items():
        paths = ["--reference", str(bench.reference), "--predictions", str(bench.predictions[sim])]
        cmd = [str(cli), "score", *paths, "--model", name, "--dataset", "d", "--db", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))  # fmt: skip
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output

    with _closing(ResultStore(url, create=False)) as store:
        _assert_same(store.scores(), sqlite_store.scores(dataset="d"))
        want = _cases(sqlite_store)
        _assert_same(_cases(store), want[want["run_id"].isin(store.runs()["run_id"])])
        assert len(store.runs()) == len(MODELS)


def test_bulk_run_replacement_is_the_same_on_both_backends(pg, tmp_path) -> None:
    """An import-sized replacement (one transaction, bulk inserts) stores the same rows."""
    records = [
        CaseRecord(f"s{i:04d}", "ok" if i % 7 else "partial", 0.0, tuple(
            ScoreRow(s, m, (i * 37 % 101) / 101 if (i + len(s)) % 5 else NAN,
                     "ok" if (i + len(s)) % 5 else "empty_reference",
                     "" if (i + len(s)) % 5 else "not evaluated é")
            for m in ("dsc", "nsd") for s in ("aorta", "liver", "spleen")
        ))
        for i in range(1500)
    ]  # fmt: skip
    with (_closing(ResultStore(pg.database())) as on_pg,
          _closing(ResultStore(tmp_path / "bulk.db")) as on_sqlite):  # fmt: skip
        for store in (on_pg, on_sqlite):
            store.ensure_run("r-bulk", dataset="ts", model="M", profile="touchstone", manifest={})
            store.write_cases("r-bulk", "ts", "M", records[:10])
            store.write_cases("r-bulk", "ts", "M", records, replace_run=True)
        _assert_same(on_pg.scores(run_ids=["r-bulk"]), on_sqlite.scores(run_ids=["r-bulk"]))
        drop = ["finished_at"]
        _assert_same(on_pg.cases(["r-bulk"]).drop(columns=drop),
                     on_sqlite.cases(["r-bulk"]).drop(columns=drop))  # fmt: skip
        assert len(on_pg.scores(run_ids=["r-bulk"])) == 1500 * 6
