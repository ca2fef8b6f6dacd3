"""The results store (SQLite) and score export: round trips, replacement, Touchstone layout.

Expected values are the values written (exact float round trips through SQLite REAL and
Parquet float64, both IEEE-754 binary64) or the values read back from the store; the
Touchstone layout rules (empty cell unless status is ok or empty_prediction, no row for a
case whose prediction is entirely missing) are those documented in assay.store._export.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.exc import IntegrityError

from assay.errors import InputError
from assay.metrics import PROFILES
from assay.scoring import CaseRecord, ScoreRow, score
from assay.store import FORMATS, SCORE_COLUMNS, ResultStore, database_url, export_scores
from assay.synthetic import STRUCTURES, write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
N_CASES = 3
N_METRICS = len(PROFILES["default"].metrics)
LONG_COLUMNS = [*SCORE_COLUMNS, "profile"]
MODELS = ("boundary_noise", "misses_small")
NAN = float("nan")
INF = float("inf")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("bench") / "b", n_cases=N_CASES, models=MODELS, **SMALL
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, bench) -> ResultStore:
    """boundary_noise (last case missing) and misses_small (gallbladder empty), default
    profile. Read-only: tests that write use their own database."""
    store = ResultStore(tmp_path_factory.mktemp("db") / "scored.db")
    for model in MODELS:
        score(bench.reference, bench.predictions[model], model=model, dataset="synth", store=store)
    return store


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory: pytest.TempPathFactory, bench) -> ResultStore:
    """misses_small scored under the default and the touchstone profiles."""
    store = ResultStore(tmp_path_factory.mktemp("db") / "two_profiles.db")
    for profile in ("default", "touchstone"):
        score(bench.reference, bench.predictions["misses_small"], model="misses_small",
              dataset="synth", profile=profile, store=store)  # fmt: skip
    return store


def _store(tmp_path: Path, run_id: str = "r1", **manifest) -> ResultStore:
    store = ResultStore(tmp_path / "db.sqlite")
    store.ensure_run(run_id, dataset="d", model="m", profile="default", manifest=manifest)
    return store


def _raw_values(db: Path, run_id: str) -> dict[str, float | None]:
    """structure -> the value column exactly as SQLite holds it (None for NULL)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select structure, value from scores where run_id = ?", (run_id,)
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


# -- ResultStore -------------------------------------------------------------------------------

#: Values that must come back bit for bit: sub-normal, extremes, a non-terminating binary
#: fraction, a 17-significant-digit value, an integral value (SQLite may store it as an
#: integer internally; it must read back as the same float). Negative zero is left out on
#: purpose: SQLite stores integral REALs as integers and returns -0.0 as 0.0.
EXACT = {
    "third": 1 / 3,
    "tiny": 5e-324,
    "huge": sys.float_info.max,
    "integral": 3.0,
    "pi_17": 3.1415926535897931,
    "dice": 0.9123456789012345,
}


def test_values_round_trip_nan_as_null_and_inf(tmp_path):
    store = _store(tmp_path)
    rows = [ScoreRow(name, "hd95", value, "ok") for name, value in EXACT.items()]
    rows += [
        ScoreRow("nan", "hd95", NAN, "both_empty"),
        ScoreRow("pinf", "hd95", INF, "empty_prediction"),
        ScoreRow("ninf", "hd95", -INF, "ok"),
    ]
    store.write_case("r1", "d", "m", CaseRecord("c1", "ok", 0.5, tuple(rows)))

    back = store.scores(run_ids=["r1"]).set_index("structure")
    assert back["value"].dtype == np.float64
    assert len(back) == len(rows)
    for name, value in EXACT.items():
        got = back.loc[name, "value"]
        assert got == value and isinstance(got, float), name
    assert math.isnan(back.loc["nan", "value"])
    assert back.loc["pinf", "value"] == INF
    assert back.loc["ninf", "value"] == -INF
    assert back.loc["pinf", "status"] == "empty_prediction"

    raw = _raw_values(tmp_path / "db.sqlite", "r1")
    assert raw["nan"] is None  # NaN is stored as NULL, per the schema docstring
    assert raw["pinf"] == INF and raw["ninf"] == -INF
    assert raw["third"] == 1 / 3


def test_scores_columns_and_profile(tmp_path):
    store = _store(tmp_path)
    store.write_case("r1", "d", "m", CaseRecord(
        "c1", "failed", 0.1, (ScoreRow("liver", "dsc", NAN, "failed", "boom: bad file"),),
        message="1 structure failed",
    ))  # fmt: skip
    df = store.scores()
    assert list(df.columns) == LONG_COLUMNS
    row = df.iloc[0]
    assert (row["run_id"], row["dataset"], row["model"], row["case_id"]) == ("r1", "d", "m", "c1")
    assert (row["status"], row["message"], row["profile"]) == (
        "failed",
        "boom: bad file",
        "default",
    )
    case = store.cases(["r1"]).iloc[0]
    assert (case["status"], case["message"], case["seconds"]) == (
        "failed",
        "1 structure failed",
        0.1,
    )


def test_write_case_replaces_the_whole_case(tmp_path):
    store = _store(tmp_path)
    first = CaseRecord("c1", "failed", 1.0, (
        ScoreRow("liver", "dsc", NAN, "failed", "unreadable"),
        ScoreRow("spleen", "dsc", 0.5, "ok"),
        ScoreRow("spleen", "nsd", 0.4, "ok"),
    ), message="liver failed", flags=("resampled",))  # fmt: skip
    other = CaseRecord("c2", "ok", 1.0, (ScoreRow("liver", "dsc", 0.7, "ok"),))
    store.write_case("r1", "d", "m", first)
    store.write_case("r1", "d", "m", other)
    second = CaseRecord("c1", "ok", 2.0, (ScoreRow("liver", "dsc", 0.9, "ok"),))
    store.write_case("r1", "d", "m", second)

    df = store.scores(run_ids=["r1"])
    c1 = df[df["case_id"] == "c1"]
    assert list(zip(c1["structure"], c1["metric"], c1["value"], c1["status"], strict=True)) == [
        ("liver", "dsc", 0.9, "ok")
    ]
    assert df[df["case_id"] == "c2"]["value"].tolist() == [0.7]  # the other case is untouched
    cases = store.cases(["r1"]).set_index("case_id")
    assert len(cases) == 2
    assert (cases.loc["c1", "status"], cases.loc["c1", "message"]) == ("ok", "")
    assert (cases.loc["c1", "flags"], cases.loc["c1", "seconds"]) == ("", 2.0)


def test_write_case_is_atomic_when_the_new_rows_cannot_be_stored(tmp_path):
    """A record whose rows violate the primary key fails as a whole: the old case and its
    rows stay exactly as they were (one transaction for delete + insert)."""
    store = _store(tmp_path)
    old = CaseRecord("c1", "ok", 1.0, (ScoreRow("liver", "dsc", 0.8, "ok"),))
    store.write_case("r1", "d", "m", old)
    before = store.scores(run_ids=["r1"])
    duplicate = (ScoreRow("liver", "dsc", 0.1, "ok"), ScoreRow("liver", "dsc", 0.2, "ok"))
    with pytest.raises(IntegrityError):
        store.write_case("r1", "d", "m", CaseRecord("c1", "ok", 1.0, duplicate))
    pd.testing.assert_frame_equal(store.scores(run_ids=["r1"]), before)
    assert store.stored_cases("r1") == {"c1": "ok"}


def test_stored_cases(tmp_path):
    store = _store(tmp_path)
    store.ensure_run("r2", dataset="d", model="m2", profile="default", manifest={})
    assert store.stored_cases("r1") == {}
    store.write_case("r1", "d", "m", CaseRecord("c1", "ok", 0.0))
    store.write_case("r1", "d", "m", CaseRecord("c2", "partial", 0.0))
    store.write_case("r1", "d", "m", CaseRecord("c3", "missing_prediction", 0.0))
    store.write_case("r2", "d", "m2", CaseRecord("c1", "failed", 0.0))
    assert store.stored_cases("r1") == {"c1": "ok", "c2": "partial", "c3": "missing_prediction"}
    assert store.stored_cases("r2") == {"c1": "failed"}
    assert store.stored_cases("unknown") == {}


def test_delete_run_removes_its_cases_and_scores_only(tmp_path):
    store = _store(tmp_path)
    store.ensure_run("r2", dataset="d", model="m2", profile="default", manifest={})
    for run, model in (("r1", "m"), ("r2", "m2")):
        for case in ("c1", "c2"):
            rows = (ScoreRow("liver", "dsc", 0.5, "ok"), ScoreRow("liver", "nsd", 0.6, "ok"))
            store.write_case(run, "d", model, CaseRecord(case, "ok", 0.0, rows))
    store.delete_run("r1")
    assert store.stored_cases("r1") == {}
    assert store.scores(run_ids=["r1"]).empty
    assert len(store.scores(run_ids=["r2"])) == 4
    assert store.stored_cases("r2") == {"c1": "ok", "c2": "ok"}
    assert sorted(store.runs()["run_id"]) == ["r1", "r2"]  # the run row stays


def test_runs_parse_the_manifest_and_a_resumed_run_refreshes_it(tmp_path):
    manifest = {"protocol": {"tolerance_mm": 1.5, "extra": [1, 2]}, "seeds": None, "n": 3}
    store = _store(tmp_path, **manifest)
    runs = store.runs()
    assert list(runs["run_id"]) == ["r1"]
    row = runs.iloc[0]
    assert row["manifest"] == manifest
    assert (row["dataset"], row["model"], row["profile"]) == ("d", "m", "default")

    store.ensure_run("r1", dataset="d", model="m", profile="default", manifest={"n": 4})
    runs = store.runs()
    assert len(runs) == 1
    assert runs.iloc[0]["manifest"] == {"n": 4}
    assert runs.iloc[0]["created_at"] == row["created_at"]


def test_runs_of_an_empty_database(tmp_path):
    runs = ResultStore(tmp_path / "empty.db").runs()
    assert runs.empty
    assert {"run_id", "dataset", "model", "profile", "manifest"} <= set(runs.columns)


def test_database_url(tmp_path, monkeypatch):
    for url in ("postgresql+psycopg://user@host:5432/assay", "sqlite:///relative.db",
                "sqlite:////abs/path.db"):  # fmt: skip
        assert database_url(url) == url
    target = tmp_path / "new" / "nested" / "results.db"
    assert database_url(target) == f"sqlite:///{target.resolve()}"
    assert target.parent.is_dir()
    assert not target.exists()  # only the folder is created
    monkeypatch.chdir(tmp_path)
    assert database_url("rel/x.db") == f"sqlite:///{(tmp_path / 'rel' / 'x.db').resolve()}"
    assert (tmp_path / "rel").is_dir()
    assert database_url(str(target)) == database_url(target)


def test_result_store_on_a_path_creates_the_file(tmp_path):
    db = tmp_path / "sub" / "a.db"
    store = ResultStore(db)
    assert store.url == f"sqlite:///{db.resolve()}"
    assert db.is_file()


# -- export: csv / parquet ---------------------------------------------------------------------


def test_scored_store_has_every_row(scored):
    """Sanity of the fixture the export tests rely on (nothing dropped)."""
    df = scored.scores()
    assert len(df) == len(MODELS) * N_CASES * len(STRUCTURES) * N_METRICS
    assert df["value"].isna().any() and np.isinf(df["value"]).any()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_table_export(tmp_path, scored, fmt):
    out = tmp_path / "deep" / f"scores.{fmt}"
    files = export_scores(scored, fmt, out)
    assert files == [out]
    got = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    expected = scored.scores()
    assert list(got.columns) == LONG_COLUMNS
    assert len(got) == len(expected)
    assert got["run_id"].tolist() == expected["run_id"].tolist()
    assert got["case_id"].tolist() == expected["case_id"].tolist()
    assert got["status"].tolist() == expected["status"].tolist()
    assert set(got["profile"]) == {"default"}
    np.testing.assert_array_equal(got["value"].to_numpy(), expected["value"].to_numpy())


def test_parquet_round_trip_is_exact(tmp_path, scored):
    out = tmp_path / "scores.parquet"
    export_scores(scored, "parquet", out)
    got = pd.read_parquet(out)
    expected = scored.scores()
    assert got["value"].dtype == np.float64
    np.testing.assert_array_equal(got["value"].to_numpy(), expected["value"].to_numpy())
    assert got["value"].isna().sum() == expected["value"].isna().sum() > 0
    assert (got["value"] == INF).sum() == (expected["value"] == INF).sum() > 0
    for col in LONG_COLUMNS:
        if col != "value":
            assert got[col].tolist() == expected[col].tolist(), col


def test_parquet_exact_for_hand_made_values(tmp_path):
    store = _store(tmp_path)
    values = [*EXACT.values(), NAN, INF, -INF]
    rows = tuple(ScoreRow(f"s{i:02d}", "hd95", v, "ok") for i, v in enumerate(values))
    store.write_case("r1", "d", "m", CaseRecord("c1", "ok", 0.0, rows))
    out = tmp_path / "x.parquet"
    export_scores(store, "parquet", out)
    got = pd.read_parquet(out).sort_values("structure")["value"].to_numpy()
    np.testing.assert_array_equal(got, np.array(values))


def test_export_filters(tmp_path, scored):
    out = tmp_path / "one.csv"
    export_scores(scored, "csv", out, model="misses_small", dataset="synth", profile="default")
    got = pd.read_csv(out)
    assert set(got["model"]) == {"misses_small"}
    assert len(got) == len(scored.scores(model="misses_small"))


# -- export: touchstone ------------------------------------------------------------------------


def _stored_wide(store: ResultStore, model: str, metric: str) -> pd.DataFrame:
    df = store.scores(model=model)
    df = df[df["metric"] == metric]
    return df.pivot(index="case_id", columns="structure", values="value")


def test_touchstone_layout_from_scored_benchmark(tmp_path, scored):
    out = tmp_path / "ts"
    files = export_scores(scored, "touchstone", out)
    expected_files = {out / m / f for m in MODELS for f in ("dsc.csv", "nsd.csv")}
    assert set(files) == expected_files and len(files) == 4
    assert all(f.is_file() for f in files)

    for model in MODELS:
        for metric in ("dsc", "nsd"):
            table = pd.read_csv(out / model / f"{metric}.csv")
            assert list(table.columns) == ["name", *sorted(STRUCTURES)]
            assert table["name"].is_monotonic_increasing
            values = table.set_index("name")
            assert ((values >= 0) & (values <= 1) | values.isna()).all().all()
            stored = _stored_wide(scored, model, metric).loc[values.index, values.columns]
            np.testing.assert_array_equal(values.to_numpy(), stored.to_numpy())

    noisy = pd.read_csv(out / "boundary_noise" / "dsc.csv")
    # case_0003 has no prediction at all: no row, as in Touchstone's published files
    assert noisy["name"].tolist() == ["case_0001", "case_0002"]
    assert noisy.drop(columns="name").notna().all().all()

    small = pd.read_csv(out / "misses_small" / "dsc.csv")
    assert small["name"].tolist() == ["case_0001", "case_0002", "case_0003"]
    # the gallbladder is always missed: an empty prediction is a 0, never an empty cell
    assert (small["gallbladder"] == 0).all()
    assert (pd.read_csv(out / "misses_small" / "nsd.csv")["gallbladder"] == 0).all()


def test_touchstone_cells_by_status(tmp_path):
    """Only ok and empty_prediction have a value; every other status is an empty cell."""
    store = _store(tmp_path)
    statuses = {  # structure -> (status, stored dsc, stored nsd)
        "zeta_ok": ("ok", 0.75, 0.625),
        "alpha_both_empty": ("both_empty", NAN, NAN),
        "beta_empty_reference": ("empty_reference", 0.0, 0.0),
        "gamma_empty_prediction": ("empty_prediction", 0.0, 0.0),
        "delta_failed": ("failed", NAN, NAN),
        "eps_missing": ("missing_prediction", NAN, NAN),
    }

    def rows(table: dict[str, tuple[str, float, float]]) -> tuple[ScoreRow, ...]:
        out = []
        for structure, (status, dsc, nsd) in table.items():
            out.append(ScoreRow(structure, "dsc", dsc, status))
            out.append(ScoreRow(structure, "nsd", nsd, status))
            out.append(ScoreRow(structure, "hd95", 3.0, status))
        return tuple(out)

    store.write_case("r1", "d", "m", CaseRecord("c1", "partial", 0.0, rows(statuses)))
    all_missing = {s: ("missing_prediction", NAN, NAN) for s in statuses}
    store.write_case("r1", "d", "m", CaseRecord("c2", "missing_prediction", 0.0,
                                                rows(all_missing)))  # fmt: skip
    all_ok = {s: ("ok", 0.5, 0.25) for s in statuses}
    store.write_case("r1", "d", "m", CaseRecord("c0", "ok", 0.0, rows(all_ok)))

    files = export_scores(store, "touchstone", tmp_path / "ts")
    assert files == [tmp_path / "ts" / "m" / "dsc.csv", tmp_path / "ts" / "m" / "nsd.csv"]
    dsc = pd.read_csv(files[0])
    nsd = pd.read_csv(files[1])
    assert list(dsc.columns) == ["name", *sorted(statuses)]
    assert dsc["name"].tolist() == ["c0", "c1"]  # c2: prediction entirely missing, no row
    d1 = dsc.set_index("name").loc["c1"]
    n1 = nsd.set_index("name").loc["c1"]
    assert d1["zeta_ok"] == 0.75 and n1["zeta_ok"] == 0.625
    assert d1["gamma_empty_prediction"] == 0 and n1["gamma_empty_prediction"] == 0
    for structure in ("alpha_both_empty", "beta_empty_reference", "delta_failed", "eps_missing"):
        assert math.isnan(d1[structure]) and math.isnan(n1[structure]), structure
    assert (dsc.set_index("name").loc["c0"] == 0.5).all()
    # empty cells are empty, not the text "nan"
    c1_line = files[0].read_text().splitlines()[2]
    assert c1_line == "c1,,,,,0.0,0.75"


def test_touchstone_needs_one_run_per_model(two_profiles, tmp_path):
    out = tmp_path / "ts"
    with pytest.raises(InputError, match="--profile"):
        export_scores(two_profiles, "touchstone", out)
    assert not (out / "misses_small").exists()
    files = export_scores(two_profiles, "touchstone", out, profile="touchstone")
    table = pd.read_csv(files[0]).set_index("name")
    stored = two_profiles.scores(profile="touchstone")
    stored = stored[stored["metric"] == "dsc"].pivot(
        index="case_id", columns="structure", values="value"
    )
    np.testing.assert_array_equal(table.to_numpy(), stored.loc[table.index, table.columns])
    # the long formats hold both runs, told apart by the profile column
    long = export_scores(two_profiles, "csv", tmp_path / "all.csv")
    assert set(pd.read_csv(long[0])["profile"]) == {"default", "touchstone"}


def test_empty_selection_is_an_error(tmp_path, scored):
    for fmt in FORMATS:
        with pytest.raises(InputError, match="No scores"):
            export_scores(scored, fmt, tmp_path / f"x.{fmt}", model="no_such_model")
    with pytest.raises(InputError):
        export_scores(ResultStore(tmp_path / "empty.db"), "csv", tmp_path / "e.csv")
    assert not any(p.name.startswith(("x.", "e.")) for p in tmp_path.iterdir())


def test_unknown_format_is_an_error(tmp_path, scored):
    with pytest.raises(InputError, match="xlsx"):
        export_scores(scored, "xlsx", tmp_path / "x.xlsx")
    assert not (tmp_path / "x.xlsx").exists()


def test_export_path_errors_are_input_errors(tmp_path, scored):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="needs a folder"):
        export_scores(scored, "touchstone", a_file)
    with pytest.raises(InputError, match="is a folder"):
        export_scores(scored, "csv", tmp_path)
    with pytest.raises(InputError, match="No results database"):
        ResultStore(tmp_path / "nowhere" / "x.db", create=False)
    assert not (tmp_path / "nowhere").exists()  # a read-only command creates nothing


def test_touchstone_folder_names_are_single_folders(tmp_path):
    store = ResultStore(tmp_path / "db.sqlite")
    store.ensure_run("r1", dataset="d", model="nnU-Net/ResEnc", profile="default", manifest={})
    rows = (ScoreRow("liver", "dsc", 0.9, "ok"), ScoreRow("liver", "nsd", 0.8, "ok"))
    store.write_case("r1", "d", "nnU-Net/ResEnc", CaseRecord("c1", "ok", 0.1, rows))
    files = export_scores(store, "touchstone", tmp_path / "out")
    assert {f.parent.name for f in files} == {"nnU-Net_ResEnc"}
    assert all(f.parent.parent == tmp_path / "out" for f in files)


def test_store_accepts_an_sqlalchemy_url(tmp_path):
    """--db takes an SQLAlchemy URL as well as a path (here SQLite's own URL form)."""
    url = f"sqlite:///{tmp_path / 'by_url.db'}"
    store = ResultStore(url)
    assert store.url == url
    store.ensure_run("r", dataset="d", model="m", profile="default", manifest={"k": 1})
    store.write_case(
        "r", "d", "m", CaseRecord("c", "ok", 0.5, (ScoreRow("liver", "dsc", 0.5, "ok"),))
    )
    assert ResultStore(tmp_path / "by_url.db").scores()["value"].tolist() == [0.5]


def _bulk_records(n: int, value: float) -> list[CaseRecord]:
    return [
        CaseRecord(f"c{i:03d}", "ok", 0.1, tuple(
            ScoreRow(s, m, value + i / 1000, "ok") for s in ("liver", "spleen")
            for m in ("dsc", "nsd")
        ))
        for i in range(n)
    ]  # fmt: skip


def test_write_cases_in_bulk_equals_one_case_at_a_time(tmp_path):
    bulk, single = _store(tmp_path / "a"), _store(tmp_path / "b")
    records = _bulk_records(1200, 0.5)  # more than one chunk of deletes
    records.append(CaseRecord("c007", "failed", 2.0, (ScoreRow("liver", "dsc", NAN, "failed",
                                                               "boom\x00"),)))  # fmt: skip
    bulk.write_cases("r1", "d", "m", records)
    for record in records:
        single.write_case("r1", "d", "m", record)
    pd.testing.assert_frame_equal(bulk.scores(), single.scores())
    drop = ["finished_at"]
    pd.testing.assert_frame_equal(
        bulk.cases().drop(columns=drop), single.cases().drop(columns=drop)
    )
    c7 = bulk.scores()[lambda d: d["case_id"] == "c007"]  # a case given twice: the last record
    assert c7[["structure", "status", "message"]].values.tolist() == [["liver", "failed",
                                                                       "boom\\x00"]]  # fmt: skip


def test_write_cases_replace_run_replaces_every_case_in_one_transaction(tmp_path):
    store = _store(tmp_path)
    store.write_cases("r1", "d", "m", _bulk_records(5, 0.2))
    store.write_cases("r1", "d", "m", _bulk_records(2, 0.9), replace_run=True)
    assert store.cases()["case_id"].tolist() == ["c000", "c001"]
    assert store.scores()["value"].min() == 0.9
    duplicate = (ScoreRow("liver", "dsc", 0.1, "ok"), ScoreRow("liver", "dsc", 0.2, "ok"))
    with pytest.raises(IntegrityError):  # all or none: the old run is still there
        store.write_cases("r1", "d", "m", [CaseRecord("c9", "ok", 0.0, duplicate)],
                          replace_run=True)  # fmt: skip
    assert store.cases()["case_id"].tolist() == ["c000", "c001"]
    assert len(store.scores()) == 8
