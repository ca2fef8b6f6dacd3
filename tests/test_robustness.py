"""Nothing lost, nothing silently wrong (issue 9): what a new user meets when trying the CLI.

Each test reproduces a finding with real processes, real NIfTI files and real SQLite
databases, and checks the outcome: the demo never deletes what it did not write; several
processes can open a new database at once; killed commands leave no worker processes; bad
inputs give one line and exit status 2 instead of a traceback (or a minute-long hang); a
model whose runner fails every case is reported as failed, not ``ok``.

Unreadable files as root: root reads a ``chmod 000`` folder anyway, so the commands run with
the capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH) removed from their bounding set; every such test first checks, with a
probe process under the same conditions, that the file really is unreadable (or read-only).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import assay_script as _assay
from cli_helpers import wide_console  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from assay import cli
from assay.io import read_image, write_image
from assay.runs import load_benchmark, run_benchmark
from assay.runs._demo import DEMO_MARKER
from assay.store import ResultStore
from assay.synthetic import MODELS, write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
ENV = {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"}
runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("robust") / "data", n_cases=4,
        models=("near_perfect", "boundary_noise"), **SMALL,
    )  # fmt: skip


def _score_args(reference: Path, predictions: Path, db: Path | str, model: str = "m") -> list:
    return [_assay(), "score", "--reference", str(reference), "--predictions",
            str(predictions), "--model", model, "--dataset", "d", "--db", str(db)]  # fmt: skip


def _assert_one_line_error(stderr: str, *needles: str) -> str:
    """stderr ends with exactly one ``error:`` line (progress lines may come before it)."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- running as root: make file permissions bind -------------------------------------------

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _without_file_privileges() -> None:
    """preexec_fn: drop the capabilities that let root ignore file permissions (they are
    gone after the exec that follows)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _preexec() -> Callable[[], None] | None:
    return _without_file_privileges if os.geteuid() == 0 else None


def _run(args: list, *, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV,
                          preexec_fn=_preexec(), **kwargs)  # fmt: skip


def _probe(code: str, *args: object) -> int:
    """Exit status of ``python -c code args`` under the same privileges as the commands."""
    return _run([sys.executable, "-c", code, *map(str, args)], timeout=60).returncode


# -- 1. assay demo never deletes what it did not write ---------------------------------------


def test_demo_refuses_a_folder_it_did_not_write_and_leaves_it_untouched(tmp_path):
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "scans.txt").write_text("my own data")
    (folder / "assay.db").write_bytes(b"my results")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    proc = _run([_assay(), "demo", "--out", str(folder), "--cases", "2"], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _assert_one_line_error(proc.stderr, str(folder), "not empty", "--out")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    # a file as --out, and a bad option, are refused before anything is written
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    proc = _run([_assay(), "demo", "--out", str(a_file)], timeout=120)
    assert proc.returncode == 2 and a_file.read_text() == "x"
    _assert_one_line_error(proc.stderr, "is a file")
    proc = _run([_assay(), "demo", "--out", str(tmp_path / "new"), "--profile", "nope"])
    assert proc.returncode == 2 and not (tmp_path / "new").exists()
    _assert_one_line_error(proc.stderr, "Unknown profile 'nope'")


def _fake_report(store, paths, out_dir, **_kwargs):
    """Stands in for the demo's report (minutes of figures), writing one file like it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text("<html>report</html>")
    return None


def _demo(out: Path, cases: int) -> object:
    return runner.invoke(cli.app, ["demo", "--out", str(out), "--cases", str(cases)])


def test_demo_replaces_only_its_own_previous_demo(tmp_path, monkeypatch):
    """A second demo removes exactly the first one's files (its extra case too), keeps what
    the user added, and refuses once the user has changed the demo's database."""
    monkeypatch.setattr(cli._demo, "_demo_report", _fake_report)
    monkeypatch.setattr(cli._demo, "_print_report_files", lambda _files: None)
    out = tmp_path / "demo"
    first = _demo(out, 3)
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / DEMO_MARKER).read_text())
    assert manifest["complete"] and "assay.db" in manifest["files"]
    assert (out / "data" / "reference" / "case_0003").is_dir()
    mine = {
        out / "notes.txt": "mine",
        out / "data" / "extra.txt": "also mine",
        out / "report" / "review.md": "my review",
        out / "run" / "assay.db": "a run",  # what `assay run benchmark.yaml` writes
    }
    for path, text in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    second = _demo(out, 2)
    assert second.exit_code == 0, second.output
    assert f"replacing the previous demo in {out}" in second.stdout
    for path, text in mine.items():
        assert path.read_text() == text, path
    assert not (out / "data" / "reference" / "case_0003").exists()  # the first demo's, gone
    store = ResultStore(out / "assay.db", create=False)
    runs = store.runs()
    cases = store.cases(runs.loc[runs["dataset"] == "synthetic", "run_id"])
    assert set(cases["case_id"]) == {"case_0001", "case_0002"}
    assert len(cases) == 2 * len(MODELS)
    # the tumour-detection benchmark of the demo: at least 6 patients, its 6 models
    tumours = store.cases(runs.loc[runs["dataset"] == "synthetic-tumours", "run_id"])
    assert len(tumours) == 6 * 6
    store.close()
    assert (out / "report" / "index.html").is_file()

    # the user scores another model into the demo's database: the demo is no longer its own
    store = ResultStore(out / "assay.db")
    store.ensure_run("mine", dataset="d", model="mine", profile="default", manifest={})
    store.close()
    third = _demo(out, 2)
    assert third.exit_code == 2
    assert "changed since it was written" in third.stderr and "assay.db" in third.stderr
    assert "mine" in set(ResultStore(out / "assay.db", create=False).runs()["run_id"])


def test_an_interrupted_demo_is_replaced_without_touching_older_files(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    (out / "report").mkdir(parents=True)
    (out / "report" / "old.md").write_text("was here before")  # an empty folder otherwise

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._demo, "_demo_report", interrupted)
    cut = _demo(tmp_path / "fresh", 2)  # a new folder, cut in the report stage
    assert cut.exit_code == 130 and "interrupted" in cut.stderr
    assert not json.loads((tmp_path / "fresh" / DEMO_MARKER).read_text())["complete"]
    monkeypatch.setattr(cli._demo, "_demo_report", _fake_report)
    monkeypatch.setattr(cli._demo, "_print_report_files", lambda _files: None)
    again = _demo(tmp_path / "fresh", 2)
    assert again.exit_code == 0, again.output
    assert "replacing the previous demo" in again.stdout
    # a folder holding only a stray file is not a demo: refused
    refused = _demo(out, 2)
    assert refused.exit_code == 2 and (out / "report" / "old.md").read_text() == "was here before"


def test_write_benchmark_overwrites_only_its_own_benchmark(tmp_path):
    from assay.errors import LayoutError

    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "scan.nii.gz").write_bytes(b"someone's data")
    with pytest.raises(LayoutError, match="not written by write_benchmark"):
        write_benchmark(tmp_path, n_cases=1, models=("near_perfect",), overwrite=True)
    assert (tmp_path / "reference" / "scan.nii.gz").read_bytes() == b"someone's data"


# -- 2. concurrent first use of a new SQLite database ----------------------------------------

_OPENER = """
import sys, time
from pathlib import Path
from assay.scoring import CaseRecord, ScoreRow
from assay.store import ResultStore

db, name, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
ready.touch()
while not go.exists():  # every process is imported and waiting: they start together
    time.sleep(0.001)
store = ResultStore(db)
store.ensure_run(name, dataset="d", model=name, profile="default", manifest={})
row = ScoreRow("liver", "dsc", 1.0, "ok")
store.write_case(name, "d", name, CaseRecord("c1", "ok", 0.0, (row,)))
"""


def test_processes_opening_a_new_sqlite_database_at_once_all_succeed(tmp_path):
    """Before the fix, 4 of 18 such openings failed with `table runs already exists`."""
    n = 6
    for attempt in range(3):
        db = tmp_path / f"new{attempt}.db"
        go = tmp_path / f"go{attempt}"
        procs = [
            subprocess.Popen([sys.executable, "-c", _OPENER, str(db), f"p{i}",
                              str(tmp_path / f"ready{attempt}.{i}"), str(go)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(n)
        ]  # fmt: skip
        deadline = time.monotonic() + 120
        while sum((tmp_path / f"ready{attempt}.{i}").exists() for i in range(n)) < n:
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.01)
        go.touch()
        results = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
        assert all(code == 0 for _, code in results), [err for err, _ in results if err]
        store = ResultStore(db, create=False)
        assert sorted(store.runs()["run_id"]) == [f"p{i}" for i in range(n)]
        assert len(store.cases()) == n


def _open_and_write(db: str, go: str, errors) -> None:
    from assay.store._store import _sqlite_pragmas

    while not Path(go).exists():
        time.sleep(0.0005)
    try:
        con = sqlite3.connect(db, timeout=60)
        _sqlite_pragmas(con, None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE IF NOT EXISTS t (x)")
        con.execute("INSERT INTO t VALUES (1)")
        con.commit()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        con.close()
        if mode != "wal":
            errors.put(f"journal mode {mode}")
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_connections_switching_a_new_file_to_wal_at_once_all_succeed(tmp_path):
    """CI found it (1 of 18 openings): SQLite fails `PRAGMA journal_mode=WAL` at once, with no
    busy wait, when another connection is converting the new file; before the fix about one
    in five rounds of 8 processes had a `database is locked` here."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for attempt in range(25):
        db, go = str(tmp_path / f"wal{attempt}.db"), str(tmp_path / f"go{attempt}")
        procs = [ctx.Process(target=_open_and_write, args=(db, go, errors)) for _ in range(8)]
        for proc in procs:
            proc.start()
        time.sleep(0.05)
        Path(go).touch()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0] * 8
        assert errors.empty(), f"round {attempt}: {errors.get()}"
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 8


def test_three_assay_score_commands_on_a_new_database_all_score(tmp_path, bench):
    db = tmp_path / "shared.db"
    models = ["near_perfect", "boundary_noise", "near_perfect_again"]
    procs = [
        subprocess.Popen(_score_args(bench.reference, bench.predictions[m.removesuffix("_again")],
                                     db, model=m), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
        for m in models
    ]  # fmt: skip
    results = [(p.communicate(timeout=300)[1], p.returncode) for p in procs]
    assert [code for _, code in results] == [0, 0, 0], [err for err, _ in results]
    cases = ResultStore(db, create=False).cases()
    assert len(cases) == 3 * 4


# -- 3. killing `assay score --workers 2` leaves no process behind ---------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory):
    """Enough cases that a 2-worker score is still running seconds after it started."""
    return write_benchmark(tmp_path_factory.mktemp("big") / "data", n_cases=24,
                           models=("near_perfect",))  # fmt: skip


def _children(pid: int) -> dict[int, int]:
    """pid -> parent pid for every process in /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _children(pid)
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        kids = {p for p, pp in parents.items() if pp == current and p not in found}
        found |= kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _stored(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT count(*) FROM cases").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_score_leaves_no_worker_processes(tmp_path, big, sig):
    db = tmp_path / "k.db"
    args = [*_score_args(big.reference, big.predictions["near_perfect"], db), "--workers", "2"]
    # files, not pipes: the workers inherit them, and a pipe must not keep anything waiting
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=ENV)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while _stored(db) < 1:  # workers up and scoring: the first case is committed
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            assert time.monotonic() < deadline, "no case was scored in time"
            time.sleep(0.1)
        workers = _descendants(proc.pid)
        assert len([p for p in workers if _alive(p)]) >= 2, "expected two worker processes"
        committed = _stored(db)
        proc.send_signal(sig)
        t0 = time.monotonic()
        while any(_alive(p) for p in workers) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        left = [p for p in workers if _alive(p)]
        assert not left, f"processes still running 10 s after {sig.name}: {left}"
        proc.wait(timeout=60)
    finally:
        for pid in workers | {proc.pid}:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    stderr = (tmp_path / "err.txt").read_text()
    if sig == signal.SIGTERM:  # like Ctrl-C: one line, its own exit status
        assert proc.returncode == 143, stderr
        assert "Traceback" not in stderr and "interrupted" in stderr.splitlines()[-1]
    else:
        assert proc.returncode == -signal.SIGKILL
    kept = _stored(db)
    assert kept >= committed  # what was committed before the signal is kept
    again = _run(_score_args(big.reference, big.predictions["near_perfect"], db))
    assert again.returncode == 0, again.stderr
    assert f"{24 - kept} scored now, {kept} already stored" in again.stdout
    assert set(ResultStore(db, create=False).cases()["status"]) == {"ok"}


HANG_AND_TELL = """
import os, sys, time
from pathlib import Path
Path(sys.argv[3], Path(sys.argv[1]).parent.name).write_text(str(os.getpid()))
time.sleep(300)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_model_process(tmp_path, bench, sig):
    """`assay run` with 2 workers, each running a model command (its own process group):
    killing assay, even by SIGKILL, ends the models too."""
    pids = tmp_path / "pids"
    pids.mkdir()
    model = _script_model(tmp_path, "hanger", HANG_AND_TELL)
    model["runner"]["command"] += f" {pids}"
    model["runner"]["timeout_s"] = 600
    config = _config(tmp_path, bench.reference, [model], spot_check=False, workers=2)
    with (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen([_assay(), "run", str(config)], stdout=subprocess.DEVNULL,
                                stderr=err, env=ENV)  # fmt: skip
    models: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len(list(pids.iterdir())) < 2:  # both workers are running a model
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            assert time.monotonic() < deadline, "the models did not start"
            time.sleep(0.1)
        time.sleep(0.5)  # the pid files are complete
        models = [int(p.read_text()) for p in pids.iterdir()]
        assert all(_alive(p) for p in models)
        proc.send_signal(sig)
        t0 = time.monotonic()
        while any(_alive(p) for p in models) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not [p for p in models if _alive(p)], f"models still running after {sig.name}"
        proc.wait(timeout=60)
    finally:
        for pid in [*models, proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)


# -- 4. one-line errors, not tracebacks ------------------------------------------------------


def _unreadable(path: Path) -> None:
    """``chmod 000`` ``path`` and check that the commands really cannot read it."""
    path.chmod(0)
    assert _probe("import os, sys; os.listdir(sys.argv[1])", path) != 0, (
        f"{path} is still readable: permissions do not bind for this user"
    )


def test_an_unreadable_case_folder_is_one_line(tmp_path, bench):
    reference = tmp_path / "ref"
    shutil.copytree(bench.reference, reference)
    _unreadable(reference / "case_0002")
    try:
        proc = _run(_score_args(reference, bench.predictions["near_perfect"], tmp_path / "a.db"))
    finally:
        (reference / "case_0002").chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _assert_one_line_error(proc.stderr, "Permission denied", "case_0002", "permissions")


def test_a_read_only_database_is_one_line_at_open_and_still_readable(tmp_path, bench):
    db = tmp_path / "ro.db"
    first = _run(_score_args(bench.reference, bench.predictions["near_perfect"], db))
    assert first.returncode == 0, first.stderr
    for path in tmp_path.glob("ro.db*"):
        path.chmod(0o444)
    try:
        assert _probe("open(__import__('sys').argv[1], 'r+b')", db) != 0, "db still writable"
        proc = _run(_score_args(bench.reference, bench.predictions["boundary_noise"], db,
                                model="another"))  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        _assert_one_line_error(proc.stderr, "read-only", str(db.resolve()))
        assert "another" not in proc.stdout  # stopped at open, before any case
        export = _run([_assay(), "export", "--db", str(db), "--out", str(tmp_path / "s.csv")])
        assert export.returncode == 0, export.stderr  # reading needs no write access
        assert (tmp_path / "s.csv").read_text().count("\n") > 1
    finally:
        for path in tmp_path.glob("ro.db*"):
            path.chmod(0o644)


def _missing_pg_driver() -> str:
    for driver in ("pg8000", "psycopg2cffi", "psycopg2"):
        if importlib.util.find_spec(driver) is None:
            return driver
    raise AssertionError("every PostgreSQL driver is installed: none to test as missing")


def test_database_urls_without_a_driver_name_what_to_install(tmp_path, bench):
    driver = _missing_pg_driver()
    proc = _run(_score_args(bench.reference, bench.predictions["near_perfect"],
                            f"postgresql+{driver}://me:s3cret@localhost/results"))  # fmt: skip
    assert proc.returncode == 2
    line = _assert_one_line_error(proc.stderr, "not installed", "pip install")
    assert "s3cret" not in proc.stderr + proc.stdout and "***" in line
    proc = _run([_assay(), "export", "--db", "mysql+pymysql://me:s3cret@localhost/results",
                 "--out", str(tmp_path / "x.csv")])  # fmt: skip
    assert proc.returncode == 2
    line = _assert_one_line_error(proc.stderr, "SQLite or PostgreSQL", "mysql")
    assert "s3cret" not in proc.stderr


def test_a_malformed_scheduler_fails_fast_in_one_line(tmp_path, bench):
    t0 = time.monotonic()
    proc = _run([*_score_args(bench.reference, bench.predictions["near_perfect"],
                              tmp_path / "s.db"), "--scheduler", "nonsense:::"])  # fmt: skip
    seconds = time.monotonic() - t0
    assert proc.returncode == 2
    _assert_one_line_error(proc.stderr, "Invalid --scheduler address 'nonsense:::'", "tcp://")
    assert seconds < 45, f"took {seconds:.0f} s (it hung for 60 s at exit before the fix)"
    config = _config(tmp_path, bench.reference, [{"name": "m", "predictions": str(
        bench.predictions["near_perfect"])}])  # fmt: skip
    result = runner.invoke(cli.app, ["run", str(config), "--scheduler", "tcp://host"])
    assert result.exit_code == 2 and "missing port number" in result.stderr
    assert not (tmp_path / "out").exists()  # before any work


def test_export_refuses_a_file_name_that_contradicts_the_format(tmp_path, bench):
    db = tmp_path / "e.db"
    assert _run(_score_args(bench.reference, bench.predictions["near_perfect"], db)).returncode == 0
    result = runner.invoke(
        cli.app, ["export", "--db", str(db), "--out", str(tmp_path / "s.parquet")]
    )
    assert result.exit_code == 2 and "--format parquet" in result.stderr
    assert not (tmp_path / "s.parquet").exists()  # not a CSV file named .parquet
    result = runner.invoke(cli.app, ["export", "--db", str(tmp_path), "--out", "x.csv"])
    assert result.exit_code == 2 and "is a folder" in result.stderr


# -- 5. a runner that fails every case is not "ok" -------------------------------------------

CRASH = "import sys; sys.stderr.write('CUDA out of memory\\n'); sys.exit(3)"


def _config(tmp: Path, root: Path, models: list[dict], **extra) -> Path:
    config = {
        "name": "robustness", "output": "out", "db": "out/assay.db", "workers": 1,
        "datasets": [{"name": "synthetic", "root": str(root), "licence": "CC0-1.0"}],
        "models": models, "analysis": {"bootstrap": 100}, "report": False, **extra,
    }  # fmt: skip
    path = tmp / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _script_model(tmp: Path, name: str, body: str) -> dict:
    script = tmp / f"{name}.py"
    script.write_text(body)
    return {"name": name, "runner": {"command": f"{sys.executable} {script} {{input}} {{output}}",
                                     "timeout_s": 60}}  # fmt: skip


def _log_lines(tmp: Path, model: str) -> int:
    return len(
        (tmp / "out" / "inference" / "synthetic" / f"{model}.jsonl").read_text().splitlines()
    )


def test_a_runner_that_fails_every_case_fails_the_spot_check(tmp_path, bench):
    models = [_script_model(tmp_path, "crasher", CRASH),
              {"name": "good", "predictions": str(bench.predictions["near_perfect"])}]  # fmt: skip
    config = _config(tmp_path, bench.reference, models, spot_check={"cases": 2, "min_dice": 0.1})
    result = runner.invoke(cli.app, ["run", str(config)])
    assert result.exit_code == 1, result.output
    assert _log_lines(tmp_path, "crasher") == 2  # the spot check's cases, and no others
    summary = run_benchmark(load_benchmark(config))  # resumed: failures retried, same outcome
    assert _log_lines(tmp_path, "crasher") == 4
    by = {o.model: o for o in summary.outcomes}
    crasher = by["crasher"]
    assert crasher.status == "spot_check_failed"
    assert "failed on all 2 spot-check case(s)" in crasher.spot.finding
    assert "CUDA out of memory" in crasher.spot.finding  # the runner's own error
    assert "CUDA out of memory" in result.stdout and "spot check failed" in result.stdout
    assert set(ResultStore(tmp_path / "out" / "assay.db").scores()["model"]) == {"good"}
    assert by["good"].label == "ok"


def test_without_a_spot_check_the_summary_says_failed_and_notes_agree(tmp_path, bench):
    config = _config(tmp_path, bench.reference, [_script_model(tmp_path, "crasher", CRASH)],
                     spot_check=False)  # fmt: skip
    result = runner.invoke(cli.app, ["run", str(config)])
    assert result.exit_code == 1, result.output
    row = next(ln for ln in result.stdout.splitlines() if "crasher" in ln and "│" in ln)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[2:7] == ["failed: 0 of 4 scored", "4", "0", "0", "4"], cells
    assert "missing prediction" not in result.stdout  # 4 failed, none missing
    assert "the model wrote no predictions: 4 case(s) failed, 0 missing" in result.stdout
    summary = run_benchmark(load_benchmark(config))
    (outcome,) = summary.outcomes
    assert outcome.status == "failed" and outcome.case_statuses == {"failed": 4}
    assert outcome.label == "failed: 0 of 4 scored"
    assert not any("missing prediction" in note for note in summary.notes), summary.notes


PARTIAL = """
import shutil, sys
from pathlib import Path
image, output = Path(sys.argv[1]), Path(sys.argv[2])
case = image.parent.name
if case == "case_0001":
    sys.stderr.write("segfault on this one\\n")
    sys.exit(139)
shutil.copytree(Path(sys.argv[3]) / case, output, dirs_exist_ok=True)
"""


def test_spot_check_cases_are_run_once_and_a_partial_model_says_so(tmp_path, bench):
    model = _script_model(tmp_path, "flaky", PARTIAL)
    model["runner"]["command"] += f" {bench.predictions['near_perfect']}"
    config = _config(tmp_path, bench.reference, [model], spot_check={"cases": 3, "min_dice": 0.1})
    result = runner.invoke(cli.app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert _log_lines(tmp_path, "flaky") == 4  # case_0001 failed once, not twice
    assert "incomplete: 3 of 4 scored" in result.stdout
    assert "segfault on this one" in result.stdout
    (outcome,) = run_benchmark(load_benchmark(config)).outcomes
    assert outcome.case_statuses == {"ok": 3, "failed": 1} and outcome.status == "ok"


def test_an_input_image_rewritten_in_place_is_predicted_again(tmp_path, bench):
    data = tmp_path / "data"
    shutil.copytree(bench.reference, data)
    baseline = {"name": "baseline", "runner": {
        "command": f"{sys.executable} -m assay.models.baseline predict -i {{input}} -o {{output}}",
        "timeout_s": 120}}  # fmt: skip
    config = _config(tmp_path, data, [baseline], spot_check=False)
    run_benchmark(load_benchmark(config))
    store = ResultStore(tmp_path / "out" / "assay.db")
    before = store.scores().set_index(["case_id", "structure", "metric"])["value"]
    image = read_image(data / "case_0002" / "ct.nii.gz")
    blank = np.full(image.array.shape, -1000, dtype=image.array.dtype)  # air: nothing to find
    write_image(data / "case_0002" / "ct.nii.gz", blank, image.affine)
    run_benchmark(load_benchmark(config))
    assert _log_lines(tmp_path, "baseline") == 5  # case_0002 predicted again
    after = store.scores().set_index(["case_id", "structure", "metric"])["value"]
    assert after.loc["case_0002", "liver", "dsc"] == 0.0 < before.loc["case_0002", "liver", "dsc"]
    others = [c for c in before.index.get_level_values(0).unique() if c != "case_0002"]
    assert after.loc[others].equals(before.loc[others])
