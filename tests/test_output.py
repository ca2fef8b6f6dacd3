"""Output a person can read (issue 9 §5).

The real ``assay`` command runs in a subprocess at 80 columns, both with its output piped
(a log file, CI: not a terminal) and under a pseudo-terminal. Nothing a reader needs may be
cut: model names, ranks, 🏆, numbers, option names; progress in a log is complete lines with
counts, a rate and an ETA; ``assay --version`` works. The numbers in the tables are checked
against the files and database the same commands wrote.
"""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from cli_helpers import assay_script as _assay
from rich.console import Console
from rich.table import Table

from assay import _console, cli
from assay.scoring import score
from assay.store import ResultStore
from assay.synthetic import STRUCTURES, write_benchmark

pty = pytest.importorskip("pty")  # POSIX only

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
N_CASES = 3
# the longest simulated names, and one with a missing prediction (a "→worst" count)
MODELS = ("near_perfect", "misses_small", "flipped_orientation", "boundary_noise")
COLUMNS = 80
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z])")
MODES = ("piped", "tty")


# -- running the real command --------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERMINAL_WIDTH")}
    return {**env, "COLUMNS": str(COLUMNS), "LINES": "50", "TERM": "xterm-256color"}


def _run(args: list[str | Path], mode: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``args`` at 80 columns: (exit status, stdout, stderr). Under a pseudo-terminal
    stdout and stderr are one stream (returned as stdout), without escape codes."""
    cmd = [str(a) for a in args]
    if mode == "piped":
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=cwd)
        return proc.returncode, proc.stdout, proc.stderr
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=_env(), cwd=cwd, close_fds=True
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return proc.returncode, text.replace("\r\n", "\n"), ""


def _same_number(cell: str, value: float) -> None:
    """``cell`` is ``value`` to the digits it shows (all of them: nothing was cut)."""
    decimals = len(cell.partition(".")[2])
    assert abs(float(cell) - value) <= 0.5 * 10**-decimals + 1e-12, (cell, value)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│┃").split("│")]


def _rows(text: str, first: int, names: list[str]) -> dict[str, list[str]]:
    """Table rows whose cell ``first`` is one of ``names``: name -> cells (the last such row,
    so the final state of a table printed more than once)."""
    rows = {}
    for line in text.splitlines():
        if "│" not in line:
            continue
        cells = _cells(line)
        if len(cells) > first and cells[first] in names:
            rows[cells[first]] = cells
    return rows


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("output") / "data", n_cases=N_CASES, models=MODELS, **SMALL
    )


@pytest.fixture(scope="module")
def db(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model of ``bench`` scored into one database (in this process: it is the input,
    not the subject, of these tests)."""
    path = tmp_path_factory.mktemp("db") / "assay.db"
    store = ResultStore(path)
    for name, folder in bench.predictions.items():
        score(bench.reference, folder, model=name, dataset="synthetic", store=store)
    return path


# -- --version and --help ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_version(mode):
    rc, stdout, _ = _run([_assay(), "--version"], mode)
    assert rc == 0, stdout
    assert stdout.strip() == f"assay {version('assay')}"
    assert version("assay") == "0.1.0"


def _commands() -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Every command of the CLI ("import touchstone" for sub-apps) -> its option names, and
    every group ("" for ``assay``) -> its commands' summaries (first paragraph of help)."""
    root = typer.main.get_command(cli.app)
    commands: dict[str, list[str]] = {}
    groups: dict[str, dict[str, str]] = {}

    def walk(group, prefix):
        groups[prefix] = {}
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            groups[prefix][name] = " ".join((command.help or "").split("\n\n")[0].split())
            if hasattr(command, "commands"):
                walk(command, path)
            else:
                commands[path] = [
                    opt
                    for param in command.params
                    for opt in (*param.opts, *param.secondary_opts)
                    if opt.startswith("-")
                ]

    walk(root, "")
    return commands, groups


@pytest.mark.parametrize("mode", MODES)
def test_help_shows_every_option_name_in_full_at_80_columns(mode):
    commands, groups = _commands()
    assert {"score", "analyze", "report", "run", "demo", "import touchstone"} <= set(commands)
    assert {"serve", "worker", "submit", "challenge-demo", "admin token"} <= set(commands)
    assert set(groups) == {"", "import", "admin"}
    # one process prints the help of every command and group, separated by a marker line
    driver = (
        "import sys\nfrom assay.cli import app\n"
        "for cmd in sys.argv[1:]:\n"
        "    try:\n"
        "        app(args=[*cmd.split(), '--help'], prog_name='assay')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print('=====', flush=True)\n"
    )
    names = [*commands, *groups]
    rc, stdout, _ = _run([sys.executable, "-c", driver, *names], mode)
    assert rc == 0, stdout
    helps = dict(zip(names, stdout.split("=====\n"), strict=False))
    assert len(helps) == len(names), stdout
    for name, text in helps.items():
        assert f"Usage: assay {name} ".replace("  ", " ") in text, text
        assert "…" not in text, text
        assert max(map(len, text.splitlines())) <= COLUMNS, text
    for command, options in commands.items():
        for opt in options:  # the whole name, not "--prediction-lay…"
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", helps[command]), (
                command,
                opt,
            )
    for opt in ("--prediction-layout", "--prediction-labels", "--structure-tolerance"):
        assert opt in helps["score"]
    for group, summaries in groups.items():  # whole summaries, not "... per metric;..."
        flat = " ".join(helps[group].split())
        for name, summary in summaries.items():
            assert f"{name} {summary}" in flat, (group, name, helps[group])


# -- tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_score_summary_is_uncut(mode, bench, tmp_path):
    db = tmp_path / "s.db"
    args = ["score", "--reference", bench.reference, "--predictions",
            bench.predictions["misses_small"], "--model", "misses_small", "--dataset", "d",
            "--db", db]  # fmt: skip
    rc, stdout, stderr = _run([_assay(), *args], mode)
    assert rc == 0, stdout + stderr
    assert "…" not in stdout
    assert "misses_small on d (profile default" in stdout
    rows = _rows(stdout, 0, list(STRUCTURES))
    assert set(rows) == set(STRUCTURES), stdout
    scores = ResultStore(db).scores()
    for structure, cells in rows.items():
        assert len(cells) == 9, cells  # structure, 6 statuses, mean Dice, mean NSD
        part = scores[scores["structure"] == structure]
        for metric, cell in (("dsc", cells[7]), ("nsd", cells[8])):
            assert cell == f"{part.loc[part['metric'] == metric, 'value'].mean():.4f}"


@pytest.mark.parametrize("mode", MODES)
def test_leaderboard_shows_every_name_rank_and_trophy(mode, db, tmp_path):
    out = tmp_path / "analysis"
    args = ["analyze", "--db", db, "--dataset", "synthetic", "--metric", "hd95",
            "--worst-value", "hd95=500", "--bootstrap", "100", "--out", out]  # fmt: skip
    rc, stdout, stderr = _run([_assay(), *args], mode)
    assert rc == 0, stdout + stderr
    assert "…" not in stdout
    agg = pd.read_csv(out / "aggregates.csv")
    agg = agg[agg["structure"] == "average"].set_index("model")
    assert set(agg.index) == set(MODELS)
    rows = _rows(stdout, 1, list(MODELS))
    assert set(rows) == set(MODELS), stdout
    for model, cells in rows.items():
        # rank (a mark may follow it), model, mean, 95% CI, n, →worst, dropped
        ref = agg.loc[model]
        rank = re.fullmatch(r"(\d+)(\S*?)( 🏆)?", cells[0])
        assert rank, (model, cells)
        assert int(rank[1]) == int(ref["rank"]), (model, cells)
        assert bool(rank[3]) == bool(ref["winner"]), (model, cells)
        _same_number(cells[2], ref["mean"])
        low, high = re.fullmatch(r"\[(\S+), (\S+)\]", cells[3]).groups()
        _same_number(low, ref["ci_low"])
        _same_number(high, ref["ci_high"])
        assert cells[4] == str(int(ref["n"]))
        assert cells[5] == str(int(ref["n_set_worst"]))
    assert sum("🏆" in cells[0] for cells in rows.values()) == int(agg["winner"].sum()) >= 1


@pytest.mark.parametrize("mode", MODES)
def test_import_table_is_uncut(mode, db, tmp_path):
    results = tmp_path / "touchstone"
    rc, stdout, stderr = _run([_assay(), "export", "--db", db, "--format", "touchstone",
                               "--out", results], "piped")  # fmt: skip
    assert rc == 0, stdout + stderr
    long_names = {m: f"{m}_with_a_long_display_name" for m in MODELS}
    cards = tmp_path / "cards.yaml"
    cards.write_text(yaml.safe_dump({"models": {m: {"name": n} for m, n in long_names.items()}}))
    args = ["import", "touchstone", results, "--dataset", "imported", "--models", cards,
            "--db", tmp_path / "i.db"]  # fmt: skip
    rc, stdout, stderr = _run([_assay(), *args], mode)
    assert rc == 0, stdout + stderr
    assert "…" not in stdout
    rows = _rows(stdout, 0, list(MODELS))
    assert set(rows) == set(MODELS), stdout
    for folder, cells in rows.items():
        assert cells[1] == long_names[folder]
        assert cells[2] == str(N_CASES)


def test_demo_tables_are_uncut_in_an_80_column_terminal(db, monkeypatch):
    """The demo's two tables (drawn by the functions `assay demo` calls) on a terminal."""
    buffer = io.StringIO()
    monkeypatch.setattr(
        cli._common, "out", Console(file=buffer, width=COLUMNS, force_terminal=True)
    )
    from assay.scoring import summarize

    summary = summarize(ResultStore(db).scores(dataset="synthetic"))
    cli._demo._print_structure_matrix(summary)
    cli._demo._print_leaderboard(summary)
    text = ANSI.sub("", buffer.getvalue())
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= COLUMNS
    matrix = summary.pivot(index="structure", columns="model", values="mean_dsc")
    for structure, cells in _rows(text, 0, list(STRUCTURES)).items():
        assert cells[1:] == [f"{matrix.loc[structure, m]:.3f}" for m in matrix.columns]
    board = _rows(text, 0, list(MODELS))
    assert set(board) == set(MODELS), text  # full names, e.g. flipped_orientation
    for model, cells in board.items():
        mean = summary[summary["model"] == model]["mean_dsc"].mean()
        assert cells[1] == f"{mean:.4f}"


def test_tables_wider_than_the_terminal_are_not_cut():
    """A table that cannot fit is printed wider than the terminal, never with '…'."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, force_terminal=True)
    table = Table(title="wide")
    for col in ("model", "value", "other value"):
        table.add_column(col)
    table.add_row("a_model_name_of_forty_characters_exactly", "0.123456", "🏆 1")
    _console.print_table(console, table)
    text = ANSI.sub("", buffer.getvalue())
    assert "a_model_name_of_forty_characters_exactly" in text
    assert "0.123456" in text and "🏆 1" in text and "…" not in text


# -- progress ------------------------------------------------------------------------------------

LINE = re.compile(
    r"^(?P<what>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>cases|steps|figures)"
    r"(, (?P<rate>[\d.]+) (?P=unit)/min)?(, (?P<end>ETA \S+|done in \S+))?$"
)


def _run_config(tmp: Path, bench) -> Path:
    config = {
        "name": "output test", "output": "out", "db": "out/assay.db", "workers": 1,
        "datasets": [{"name": "synthetic", "root": str(bench.reference),
                      "metadata": str(bench.metadata), "licence": "CC0-1.0"}],
        "models": [{"name": m, "predictions": str(bench.predictions[m])}
                   for m in ("misses_small", "flipped_orientation")],
        "analysis": {"bootstrap": 100}, "report": False,
    }  # fmt: skip
    path = tmp / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_progress_in_a_log_is_complete_lines_with_counts_and_eta(bench, tmp_path):
    rc, stdout, stderr = _run([_assay(), "run", _run_config(tmp_path, bench)], "piped",
                              cwd=tmp_path)  # fmt: skip
    assert rc == 0, stdout + stderr
    assert "\r" not in stderr and "\x1b" not in stderr  # no live bar in a log
    lines = stderr.splitlines()
    for model in ("misses_small", "flipped_orientation"):
        stage = f"synthetic: scoring {model}"
        counts = [m for m in map(LINE.match, lines) if m and m["what"] == stage]
        assert counts, stderr
        assert all(int(m["total"]) == N_CASES for m in counts)  # the stage's real size
        assert [int(m["done"]) for m in counts] == list(range(N_CASES + 1))
        for m in counts[1:-1]:  # while it runs: a rate and an ETA
            assert m["rate"] and m["end"].startswith("ETA "), m.string
        assert counts[-1]["end"].startswith("done in "), counts[-1].string
        assert f"synthetic: spot check of {model} ..." in lines
    assert "synthetic: hashing 3 cases ..." in lines  # a stage without counts: its name
    assert not re.search(r"\b1/1\b", stderr), stderr  # never a made-up "1/1"
    assert lines[-1].startswith("benchmark: 2/2 steps, ") and "done in" in lines[-1]
    # and the run summary is whole
    rows = _rows(stdout, 1, ["misses_small", "flipped_orientation"])
    assert {m: c[2:5] for m, c in rows.items()} == {
        m: ["ok", str(N_CASES), str(N_CASES)] for m in ("misses_small", "flipped_orientation")
    }


def test_progress_on_a_terminal_shows_real_totals(bench, tmp_path):
    rc, text, _ = _run([_assay(), "run", _run_config(tmp_path, bench)], "tty", cwd=tmp_path)
    assert rc == 0, text
    final = text.split("\n")
    assert any("━" in line and f"{N_CASES}/{N_CASES} cases" in line for line in final), text
    assert any("2/2 steps" in line for line in final), text
    assert not re.search(r"\b1/1\b", text), text  # "hashing 3 cases" was shown as 1/1
    assert "-- cases/min" not in text
    rows = _rows(text, 1, ["misses_small", "flipped_orientation"])
    assert set(rows) == {"misses_small", "flipped_orientation"}, text


@pytest.mark.parametrize("mode", MODES)
def test_score_progress(mode, bench, tmp_path):
    args = ["score", "--reference", bench.reference, "--predictions",
            bench.predictions["near_perfect"], "--model", "near_perfect", "--dataset", "d",
            "--db", tmp_path / "p.db"]  # fmt: skip
    rc, stdout, stderr = _run([_assay(), *args], mode)
    assert rc == 0, stdout + stderr
    if mode == "piped":
        counts = [m for m in map(LINE.match, stderr.splitlines()) if m]
        assert [(m["what"], int(m["done"]), int(m["total"])) for m in counts] == [
            ("near_perfect", i, N_CASES) for i in range(N_CASES + 1)
        ], stderr
        assert counts[-1]["end"].startswith("done in ")
    else:
        assert f"{N_CASES}/{N_CASES} cases" in stdout, stdout


def test_an_error_in_a_log_is_one_whole_line(bench, tmp_path):
    """An error inside scoring leaves stderr its one line: no progress before it, no wrap."""
    db = tmp_path / "e.db"
    store = ResultStore(db)
    score(bench.reference, bench.predictions["near_perfect"], model="m", dataset="d",
          store=store)  # fmt: skip
    args = ["score", "--reference", bench.reference, "--predictions",
            bench.predictions["misses_small"], "--model", "m", "--dataset", "d",
            "--db", db]  # fmt: skip
    rc, stdout, stderr = _run([_assay(), *args], "piped")
    assert rc == 2, stdout + stderr
    (line,) = stderr.splitlines()
    assert len(line) > COLUMNS  # a long message, on one line
    assert line.startswith("error: Run ") and line.endswith("or --dataset name."), line


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_every_tenth_and_every_30_s(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_console.time, "monotonic", clock)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, soft_wrap=True)
    with _console.LineProgress(console) as progress:
        task = progress.add_task("scoring nnunet", total=None)
        progress.update(task, total=12)
        for _ in range(6):
            clock.now += 15  # 4 cases/min
            progress.advance(task)
        progress.update(task, total=100, completed=6)  # now a long task: 6 % ...
        clock.now += 10
        progress.advance(task)  # 7 %, 10 s after the last line: no line
        clock.now += 25
        progress.advance(task)  # 8 %, 35 s after the last line: a line
        progress.update(task, completed=100)
    assert buffer.getvalue().splitlines() == [
        "scoring nnunet ...",  # no total yet
        "scoring nnunet: 0/12 cases",
        # each tenth of 12 (1 case is 8 %: no line), 4 cases/min
        "scoring nnunet: 2/12 cases, 4.0 cases/min, ETA 2m30s",
        "scoring nnunet: 3/12 cases, 4.0 cases/min, ETA 2m15s",
        "scoring nnunet: 4/12 cases, 4.0 cases/min, ETA 2m00s",
        "scoring nnunet: 5/12 cases, 4.0 cases/min, ETA 1m45s",
        "scoring nnunet: 6/12 cases, 4.0 cases/min, ETA 1m30s",
        # 7/100 (10 s after the last line) is silent; 8/100, 35 s after it, is not
        "scoring nnunet: 8/100 cases, 3.8 cases/min, ETA 23m58s",
        "scoring nnunet: 100/100 cases, 48.0 cases/min, done in 2m05s",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_report_figures_progress_has_a_known_total(mode, db, monkeypatch):
    """The figure callback of report building is shown with its total from the start."""
    import assay.report._build as build
    from assay.report._render import _figure_jobs

    calls = []

    def fake_build_report(data, out_dir, *, metadata, workers, on_figure, **_options):
        for key, _draw in _figure_jobs(data):  # the real figures, not drawn (speed)
            calls.append(key)
            on_figure(str(key))
        return type("Files", (), {"n_figures": len(calls)})()

    monkeypatch.setattr(build, "build_report", fake_build_report)
    monkeypatch.setattr(cli._common, "out", Console(file=io.StringIO(), width=1000))
    buffer = io.StringIO()
    terminal = mode == "tty"
    monkeypatch.setattr(
        cli._common, "err", Console(file=buffer, width=COLUMNS, force_terminal=terminal)
    )
    options = {"metrics": ["dsc"], "n_bootstrap": 100}
    cli._analyze._build_report(ResultStore(db), ["synthetic"], Path("unused"), options=options)
    n = len(calls)
    assert n > 10
    text = ANSI.sub("", buffer.getvalue())
    if terminal:
        assert f"{n}/{n} figures" in text and "/? figures" not in text, text
        return
    counts = [m for m in map(LINE.match, text.splitlines()) if m and m["what"] == "figures"]
    assert counts[0].string == f"figures: 0/{n} figures"  # the total before the first figure
    assert all(int(m["total"]) == n for m in counts)
    assert all(m["end"].startswith("ETA ") for m in counts[1:-1])
    assert counts[-1]["done"] == str(n) and counts[-1]["end"].startswith("done in ")
    assert len(counts) <= 12  # every tenth, not every figure
