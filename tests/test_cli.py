"""The ``assay`` command line: score, export, demo (DESIGN.md §1, §6, §7).

The numbers printed are checked against the database the same command wrote (the CLI only
formats them), and errors against the house style of §7: exit status 2, one line that says
what failed and how to fix it, no traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assay_script as _console_script
from rich.console import Console
from typer.testing import CliRunner, Result

from assay import cli
from assay.metrics import PROFILES
from assay.store import SCORE_COLUMNS, ResultStore
from assay.synthetic import MODELS, STRUCTURES, write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
N_CASES = 3
N_METRICS = len(PROFILES["default"].metrics)
KEY = ["case_id", "structure", "metric"]
WIDE = 1000  # no wrapping or truncation of long paths and messages in assertions

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("bench") / "a",
        n_cases=N_CASES,
        models=("near_perfect", "boundary_noise"),
        **SMALL,
    )


@pytest.fixture(scope="module")
def bench_labelmap(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("bench") / "b",
        n_cases=2,
        models=("near_perfect",),
        layout="labelmap",
        **SMALL,
    )


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich sizes its output to the terminal; pin a wide one so text is never cut."""
    monkeypatch.setattr(cli._common, "out", Console(width=WIDE))
    monkeypatch.setattr(cli._common, "err", Console(stderr=True, width=WIDE))


def _invoke(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def _score_args(ref: Path, pred: Path, db: Path, model: str = "m") -> list[str | Path]:
    return ["score", "--reference", ref, "--predictions", pred, "--model", model,
            "--dataset", "d", "--db", db]  # fmt: skip


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _table_row(stdout: str, first_cell: str) -> list[str]:
    """Cells of the rich table row whose first cell is ``first_cell``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{stdout}")


# -- score ---------------------------------------------------------------------------------------


def test_score_prints_summary_and_case_counts(tmp_path, bench):
    db = tmp_path / "r.db"
    result = _invoke(*_score_args(bench.reference, bench.predictions["boundary_noise"], db))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Traceback" not in result.output
    assert f"{N_CASES} cases, {N_CASES} scored now, 0 already stored" in out
    assert "Per-structure summary" in out
    assert "cases: 2 ok, 0 partial, 0 failed, 1 missing prediction" in out
    assert "case_0003: missing_prediction No prediction for case 'case_0003'" in out

    scores = ResultStore(db).scores()
    assert len(scores) == N_CASES * len(STRUCTURES) * N_METRICS
    for structure in STRUCTURES:
        cells = _table_row(out, structure)
        # structure, ok, both_empty, empty_reference, empty_prediction, missing, failed, Dice, NSD
        assert cells[1:7] == ["2", "0", "0", "0", "1", "0"], structure
        rows = scores[scores["structure"] == structure]
        for metric, cell in (("dsc", cells[7]), ("nsd", cells[8])):
            mean = rows.loc[rows["metric"] == metric, "value"].mean()  # NaN (missing) skipped
            assert cell == f"{mean:.4f}", (structure, metric)


def test_summary_table_is_readable_in_an_80_column_terminal(tmp_path, bench, monkeypatch):
    """At the common default width every structure must still be told apart: kidney_left and
    kidney_right must not both print as a truncated 'kidne…'."""
    monkeypatch.setattr(cli._common, "out", Console(width=80))
    db = tmp_path / "r.db"
    result = _invoke(*_score_args(bench.reference, bench.predictions["near_perfect"], db))
    assert result.exit_code == 0, result.output
    for structure in STRUCTURES:
        assert structure in result.stdout, structure


def test_rerun_skips_stored_cases_and_force_rescores(tmp_path, bench):
    db = tmp_path / "r.db"
    args = _score_args(bench.reference, bench.predictions["near_perfect"], db)
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    before = ResultStore(db).scores()

    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    assert f"{N_CASES} cases, 0 scored now, {N_CASES} already stored" in again.stdout
    assert "cases: 3 ok, 0 partial, 0 failed, 0 missing prediction" in again.stdout
    for structure in STRUCTURES:  # the summary still covers the stored cases
        assert _table_row(again.stdout, structure)[1] == str(N_CASES)

    forced = _invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert f"{N_CASES} cases, {N_CASES} scored now, 0 already stored" in forced.stdout
    pd.testing.assert_frame_equal(ResultStore(db).scores(), before)
    assert len(ResultStore(db).runs()) == 1


def test_profile_touchstone(tmp_path, bench):
    db = tmp_path / "r.db"
    args = _score_args(bench.reference, bench.predictions["near_perfect"], db)
    default = _invoke(*args)
    touchstone = _invoke(*args, "--profile", "touchstone")
    assert touchstone.exit_code == 0, touchstone.output
    assert "(profile touchstone, run " in touchstone.stdout
    assert f"{N_CASES} scored now" in touchstone.stdout  # a separate run, not a resume
    store = ResultStore(db)
    runs = store.runs().set_index("profile")
    assert set(runs.index) == {"default", "touchstone"}
    protocol = runs.loc["touchstone", "manifest"]["protocol"]
    assert (protocol["nsd_variant"], protocol["tolerance_mm"]) == ("voxel", 1.5)
    run_id = runs.loc["touchstone", "run_id"]
    assert f"run {run_id})" in touchstone.stdout
    assert f"run {runs.loc['default', 'run_id']})" in default.stdout


def test_tolerance_override_is_recorded(tmp_path, bench):
    db = tmp_path / "r.db"
    args = _score_args(bench.reference, bench.predictions["near_perfect"], db)
    result = _invoke(*args, "--tolerance-mm", "5")
    assert result.exit_code == 0, result.output
    (manifest,) = ResultStore(db).runs()["manifest"]
    assert manifest["protocol"]["tolerance_mm"] == 5.0


def test_unknown_profile_is_a_one_line_error(tmp_path, bench):
    db = tmp_path / "r.db"
    result = _invoke(
        *_score_args(bench.reference, bench.predictions["near_perfect"], db), "--profile", "nope"
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = _error_lines(result)
    assert "'nope'" in line
    for name in PROFILES:
        assert name in line


def test_invalid_tolerance_is_a_one_line_error(tmp_path, bench):
    db = tmp_path / "r.db"
    result = _invoke(
        *_score_args(bench.reference, bench.predictions["near_perfect"], db),
        "--tolerance-mm",
        "-1",
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = _error_lines(result)
    assert "tolerance" in line


def test_missing_reference_folder_names_the_path(tmp_path, bench):
    missing = tmp_path / "no_such_folder"
    result = _invoke(*_score_args(missing, bench.predictions["near_perfect"], tmp_path / "r.db"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = _error_lines(result)
    assert str(missing) in line
    assert "does not exist" in line


def test_workers_2_equals_serial(tmp_path, bench):
    serial_db, parallel_db = tmp_path / "s.db", tmp_path / "p.db"
    pred = bench.predictions["boundary_noise"]
    serial = _invoke(*_score_args(bench.reference, pred, serial_db))
    parallel = _invoke(*_score_args(bench.reference, pred, parallel_db), "--workers", "2")
    assert serial.exit_code == 0, serial.output
    assert parallel.exit_code == 0, parallel.output
    assert f"{N_CASES} cases, {N_CASES} scored now" in parallel.stdout
    pd.testing.assert_frame_equal(
        ResultStore(parallel_db).scores(), ResultStore(serial_db).scores()
    )
    assert ResultStore(parallel_db).runs()["manifest"][0]["host"]["workers"] == 2


def test_broken_prediction_file_is_reported_and_the_rest_scores(tmp_path, bench):
    pred = tmp_path / "pred"
    shutil.copytree(bench.predictions["near_perfect"], pred)
    broken = pred / "case_0002" / "liver.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    db = tmp_path / "r.db"
    result = _invoke(*_score_args(bench.reference, pred, db))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cases: 2 ok, 0 partial, 1 failed, 0 missing prediction" in out
    (line,) = [x for x in out.splitlines() if x.strip().startswith("case_0002:")]
    assert line.strip().startswith("case_0002: failed")
    assert str(broken) in line
    cells = _table_row(out, "liver")
    assert (cells[1], cells[6]) == ("2", "1")  # two ok, one failed
    assert _table_row(out, "spleen")[1] == str(N_CASES)

    scores = ResultStore(db).scores().set_index(KEY)
    failed = scores.loc[("case_0002", "liver", "dsc")]
    assert failed["status"] == "failed" and np.isnan(failed["value"])
    assert failed["message"] in line  # the stored message is what was printed
    assert scores.loc[("case_0002", "spleen", "dsc"), "status"] == "ok"


def test_labels_for_a_label_map_benchmark(tmp_path, bench_labelmap):
    # the benchmark's dataset.json (next to reference/) is found without --labels, and the
    # predictions fall back to the reference's labels
    auto = _invoke(
        *_score_args(
            bench_labelmap.reference, bench_labelmap.predictions["near_perfect"], tmp_path / "a.db"
        )
    )
    assert auto.exit_code == 0, auto.output
    assert "cases: 2 ok" in auto.stdout
    # copied away from it, the label maps need --labels
    ref = Path(shutil.copytree(bench_labelmap.reference, tmp_path / "ref"))
    pred = Path(shutil.copytree(bench_labelmap.predictions["near_perfect"], tmp_path / "pred"))
    db = tmp_path / "r.db"

    without = _invoke(*_score_args(ref, pred, db))
    assert without.exit_code == 2, without.output
    (line,) = _error_lines(without)
    assert "--labels" in line

    result = _invoke(*_score_args(ref, pred, db), "--labels", bench_labelmap.labels)
    assert result.exit_code == 0, result.output
    assert "2 cases, 2 scored now" in result.stdout
    assert "cases: 2 ok, 0 partial, 0 failed, 0 missing prediction" in result.stdout
    scores = ResultStore(db).scores()
    assert set(scores["structure"]) == set(STRUCTURES)
    assert len(scores) == 2 * len(STRUCTURES) * N_METRICS
    assert set(scores["status"]) == {"ok"}
    for structure in STRUCTURES:
        assert _table_row(result.stdout, structure)[1] == "2"


# -- export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory: pytest.TempPathFactory, bench) -> Path:
    db = tmp_path_factory.mktemp("db") / "cli.db"
    for model in ("near_perfect", "boundary_noise"):
        result = runner.invoke(cli.app, [str(a) for a in _score_args(
            bench.reference, bench.predictions[model], db, model=model)])  # fmt: skip
        assert result.exit_code == 0, result.output
    return db


def _wrote(result: Result) -> list[Path]:
    return [Path(line.removeprefix("wrote ")) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_long_formats(tmp_path, scored_db, fmt):
    out = tmp_path / f"scores.{fmt}"
    result = _invoke("export", "--db", scored_db, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    assert _wrote(result) == [out]
    table = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    expected = ResultStore(scored_db).scores()
    assert list(table.columns) == [*SCORE_COLUMNS, "profile"]
    assert len(table) == len(expected) == 2 * N_CASES * len(STRUCTURES) * N_METRICS
    np.testing.assert_array_equal(table["value"].to_numpy(), expected["value"].to_numpy())


def test_export_filtered_by_model(tmp_path, scored_db):
    out = tmp_path / "one.csv"
    result = _invoke("export", "--db", scored_db, "--out", out, "--model", "near_perfect")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table["model"]) == {"near_perfect"}
    assert len(table) == N_CASES * len(STRUCTURES) * N_METRICS


def test_export_touchstone(tmp_path, scored_db):
    out = tmp_path / "ts"
    result = _invoke("export", "--db", scored_db, "--format", "touchstone", "--out", out)
    assert result.exit_code == 0, result.output
    expected = {out / m / f for m in ("near_perfect", "boundary_noise")
                for f in ("dsc.csv", "nsd.csv")}  # fmt: skip
    assert set(_wrote(result)) == expected
    dsc = pd.read_csv(out / "near_perfect" / "dsc.csv")
    assert list(dsc.columns) == ["name", *sorted(STRUCTURES)]
    assert dsc["name"].tolist() == ["case_0001", "case_0002", "case_0003"]
    assert dsc.drop(columns="name").stack().between(0.9, 1.0).all()
    # boundary_noise has no prediction for its last case: no row
    noisy = pd.read_csv(out / "boundary_noise" / "nsd.csv")
    assert noisy["name"].tolist() == ["case_0001", "case_0002"]


def test_report_command_writes_site_leaderboard_figures_and_a_bundle(tmp_path, scored_db):
    """`assay report` on two scored models: every artefact exists, the printed leaderboard
    is the analysis' (checked in test_report.py), and `assay reanalyze` reproduces it."""
    out = tmp_path / "site"
    result = _invoke("report", "--db", scored_db, "--dataset", "d", "--out", out,
                     "--bootstrap", "100", "--workers", "1", "--metric", "dsc",
                     "--metric", "hd95", "--worst-value", "hd95=700",
                     "--figure-formats", "svg,pdf,png")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("index.html", "methods.html", "stability.html", "leaderboard.md",
                 "bundle/results.json", "bundle/scores.parquet", "bundle/scores.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert f"site: {out / 'index.html'}" in result.stdout
    svgs = sorted(p.stem for p in (out / "svg").glob("*.svg"))
    assert svgs == sorted(p.stem for p in (out / "figures").glob("*.pdf"))
    assert svgs == sorted(p.stem for p in (out / "figures").glob("*.png"))
    # per metric: 10 structure slices (9 + average) × heatmap, cases, blobs; + tau, robustness
    assert len(svgs) == 2 * (10 * 3 + 2)
    text = (out / "leaderboard.md").read_text()
    assert "### DSC" in text and "### HD95" in text and "HD95 (mm)" in text
    check = _invoke("reanalyze", out / "bundle")
    assert check.exit_code == 0, check.output
    assert "reproduced" in check.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "nope"], "No scores for dataset 'nope'"),
        (["--dataset", "d", "--metric", "hd95"], "--worst-value hd95="),
        (["--dataset", "d", "--policy", "median"], "--policy 'median' is not one of"),
    ],
)
def test_report_errors_are_one_line(tmp_path, scored_db, args, expected):
    result = _invoke("report", "--db", scored_db, "--out", tmp_path / "s", *args)
    assert result.exit_code == 2
    assert len(_error_lines(result)) == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_export_bad_format_and_empty_selection(tmp_path, scored_db):
    bad = _invoke("export", "--db", scored_db, "--format", "xlsx", "--out", tmp_path / "x.xlsx")
    assert bad.exit_code == 2, bad.output
    assert "Traceback" not in bad.output
    (line,) = _error_lines(bad)
    assert "'xlsx'" in line and "csv, parquet, touchstone" in line
    assert not (tmp_path / "x.xlsx").exists()

    none = _invoke("export", "--db", scored_db, "--out", tmp_path / "y.csv", "--model", "zzz")
    assert none.exit_code == 2, none.output
    (line,) = _error_lines(none)
    assert "No scores" in line and "'zzz'" in line
    assert not (tmp_path / "y.csv").exists()


# -- the installed console script ----------------------------------------------------------------


def test_demo_console_script(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [_console_script(), "demo", "--out", str(out), "--cases", "2", "--figure-formats", "pdf"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Models (mean over structures of the per-structure means)" in proc.stdout
    for model in MODELS:
        row = _table_row(proc.stdout, model)
        assert len(row) == 5, row  # model, mean Dice, mean NSD, missing, failed
        assert 0.0 <= float(row[1]) <= 1.0
    assert _table_row(proc.stdout, "boundary_noise")[3] == str(len(STRUCTURES))
    assert (out / "assay.db").is_file()
    assert (out / "scores.csv").is_file()
    for model in MODELS:
        assert (out / "touchstone" / model / "dsc.csv").is_file()
        assert (out / "touchstone" / model / "nsd.csv").is_file()
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["model"]) == set(MODELS)
    assert len(scores) == len(MODELS) * 2 * len(STRUCTURES) * N_METRICS
    report = out / "report"
    assert f"site: {report / 'index.html'}" in proc.stdout
    for name in ("index.html", "methods.html", "subgroups.html", "leaderboard.md",
                 "bundle/results.json"):  # fmt: skip
        assert (report / name).is_file(), name
    assert len(list((report / "figures").glob("*.pdf"))) > 30
    check = subprocess.run([_console_script(), "reanalyze", str(report / "bundle")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_structure_tolerance_changes_only_that_structure(tmp_path, bench):
    """--structure-tolerance gall_bladder=8 (a synonym) widens τ for the gallbladder only;
    the manifest records it. Expected: NSD non-decreasing in τ (DESIGN §3), other structures
    identical to the default run."""
    pred = bench.predictions["boundary_noise"]
    base = _invoke(*_score_args(bench.reference, pred, tmp_path / "a.db"))
    wide = _invoke(
        *_score_args(bench.reference, pred, tmp_path / "b.db"),
        "--structure-tolerance", "gall_bladder=8",
    )  # fmt: skip
    assert base.exit_code == 0 and wide.exit_code == 0, wide.output
    a = ResultStore(tmp_path / "a.db").scores().set_index(["case_id", "structure", "metric"])
    b = ResultStore(tmp_path / "b.db").scores().set_index(["case_id", "structure", "metric"])
    nsd_a = a.xs("nsd", level="metric")["value"]
    nsd_b = b.xs("nsd", level="metric")["value"]
    gb = nsd_a.index.get_level_values("structure") == "gallbladder"
    valued = gb & nsd_a.notna().to_numpy()  # the missing last case has no value
    assert valued.sum() >= 2
    assert (nsd_b[valued] >= nsd_a[valued]).all() and (nsd_b[valued] > nsd_a[valued]).any()
    pd.testing.assert_series_equal(nsd_a[~gb], nsd_b[~gb])
    manifest = ResultStore(tmp_path / "b.db").runs()["manifest"].iloc[0]
    assert manifest["protocol"]["structure_tolerance_mm"] == {"gallbladder": 8.0}


@pytest.mark.parametrize("item", ["liver", "liver=abc", "=2", "nowhere=1"])
def test_bad_structure_tolerance_is_a_one_line_error(tmp_path, bench, item):
    result = _invoke(
        *_score_args(bench.reference, bench.predictions["near_perfect"], tmp_path / "c.db"),
        "--structure-tolerance", item,
    )  # fmt: skip
    assert result.exit_code == 2
    assert len(_error_lines(result)) == 1
