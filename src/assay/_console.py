"""How the command line prints: consoles, uncut tables and progress (issue 9 §5).

* In a terminal rich sizes output to the terminal; when output is not a terminal (a log
  file, CI) the console is at least :data:`LOG_WIDTH` wide and never wraps a line, so a log
  holds complete lines.
* :func:`print_table` never cuts a cell: every cell is on one line; a table too wide for the
  console first stacks its header words and drops its outer edge, and one still too wide is
  printed wider than the console (the terminal wraps the lines) rather than cut.
* :func:`make_progress` is a rich live bar on a terminal and, elsewhere, a
  :class:`LineProgress` that prints complete lines ("scoring nnunet: 6/12 cases, 4.1
  cases/min, ETA 1m30s") every 10 % and at least every :data:`LINE_EVERY_S` seconds.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.segment import Segments
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup

LOG_WIDTH = 200  # the width of a console that is not a terminal
LINE_EVERY_S = 30.0  # the longest silence of LineProgress while a task advances
LINE_STEPS = 10  # LineProgress prints each time another tenth of a task is done

# -- consoles --------------------------------------------------------------------------------


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): the terminal's, or a wide, non-wrapping one for logs."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=max(console.width, LOG_WIDTH), soft_wrap=True)


# -- tables ----------------------------------------------------------------------------------


def _natural_width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(1_000_000), table).maximum


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` without cutting any cell (model names, ranks, 🏆, numbers)."""
    table.expand = False
    for column in table.columns:
        column.no_wrap = True  # a cell is one line, never wrapped or cut ...
        column.overflow = "fold"  # ... and if rich must squeeze it anyway, folded, not cut
    width = console.width
    if _natural_width(console, table) > width:  # narrow terminal: stack header words
        for column in table.columns:
            if isinstance(column.header, str):
                column.header = re.sub(r"[ _]+", "\n", column.header.strip())
    if _natural_width(console, table) > width:  # still too wide: no outer edge ...
        table.show_edge = False
        table.pad_edge = False
        if table.box is not None:
            table.box = box.SQUARE
    if _natural_width(console, table) > width:  # ... and one space between columns
        table.collapse_padding = True
    natural = _natural_width(console, table)
    if natural <= width:
        console.print(table)
        return
    # Wider than the console: lines longer than the terminal (which wraps them), never cut.
    lines = console.render_lines(table, console.options.update_width(natural), new_lines=True)
    console.print(Segments([s for line in lines for s in line]), crop=False, soft_wrap=True)


# -- progress --------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``40s``, ``1m30s``, ``2h05m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _counted(total: float | None) -> bool:
    return total is not None and total > 0


def _rate_per_min(completed: float, elapsed: float | None) -> float | None:
    if not completed or not elapsed or elapsed <= 0:
        return None
    return completed / elapsed * 60


def _eta(completed: float, total: float | None, elapsed: float | None) -> float | None:
    rate = _rate_per_min(completed, elapsed)
    if rate is None or not _counted(total) or completed >= total:  # type: ignore[operator]
        return None
    return (total - completed) / rate * 60  # type: ignore[operator]


class _CountColumn(ProgressColumn):
    """``6/12 cases``; ``6/? cases`` while the total is unknown; nothing for a stage
    without countable items (no total, nothing done)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "cases")
        if _counted(task.total):
            return Text(f"{int(task.completed)}/{int(task.total)} {unit}")  # type: ignore[arg-type]
        if task.completed:
            return Text(f"{int(task.completed)}/? {unit}")
        return Text("")


class _RateColumn(ProgressColumn):
    """Items per minute over the task so far (the unit is the count's: ``4.1/min``)."""

    def render(self, task: Task) -> Text:
        rate = _rate_per_min(task.completed, task.finished_time or task.elapsed)
        return Text("" if rate is None else f"{rate:.1f}/min")


class _EtaColumn(ProgressColumn):
    """``ETA 1m30s`` while a counted task runs."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("")
        eta = _eta(task.completed, task.total, task.elapsed)
        return Text("" if eta is None else f"ETA {duration(eta)}")


def rich_progress(console: Console) -> Progress:
    """The live progress bars of a terminal."""

    def fixed() -> Column:  # counts, rates and times are never wrapped or cut
        return Column(no_wrap=True)

    return Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        # a long description (dataset, model) wraps onto a second line rather than being cut
        TextColumn("[bold]{task.description}", table_column=Column(overflow="fold")),
        BarColumn(bar_width=max(10, min(40, console.width - 80))),  # room for the text
        _CountColumn(table_column=fixed()),
        _RateColumn(table_column=fixed()),
        TimeElapsedColumn(table_column=fixed()),
        _EtaColumn(table_column=fixed()),
        console=console,
    )


@dataclass
class LineTask:
    """One task of :class:`LineProgress` (the attributes of rich's ``Task`` the CLI reads)."""

    id: int
    description: str
    total: float | None
    completed: float = 0
    fields: dict[str, Any] = field(default_factory=dict)
    start: float = field(default_factory=lambda: time.monotonic())
    printed_at: float = field(default_factory=lambda: time.monotonic())
    printed: float | None = None  # `completed` of the last line printed (None: no line yet)
    announced: str = ""  # the description last announced for a task without counts

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total


class LineProgress:
    """Progress as complete lines, for output that is not a terminal (logs, CI).

    It takes the calls the CLI makes of rich's ``Progress`` (``add_task``, ``update``,
    ``advance``, ``tasks``, ``console``, a context manager). A task with a known total prints
    ``description: done/total unit, rate unit/min, ETA 1m30s`` each time another tenth is
    done and at least every ``every_s`` seconds while it advances, and a last line with the
    time taken; a task without counts prints its description (again when it changes),
    unless it was added with the field ``quiet=True``.
    """

    def __init__(
        self, console: Console, *, every_s: float = LINE_EVERY_S, steps: int = LINE_STEPS
    ) -> None:
        self.console = console
        self.every_s = every_s
        self.steps = steps
        self.tasks: list[LineTask] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return
        for task in self.tasks:  # the last state of tasks that ended between two lines
            if task.completed and task.printed != task.completed:
                self._line(task)

    def _task(self, task_id: Any) -> LineTask:
        return next(t for t in self.tasks if t.id == task_id)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> TaskID:
        task = LineTask(id=len(self.tasks), description=description, total=total, fields=fields)
        self.tasks.append(task)
        self._maybe_print(task)
        return TaskID(task.id)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: Any,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        task = self._task(task_id)
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        task.fields.update(fields)
        self._maybe_print(task)

    def _maybe_print(self, task: LineTask) -> None:
        if not task.completed and not _counted(task.total):
            if task.description != task.announced and not task.fields.get("quiet"):
                # a stage without counts: say what runs
                task.announced = task.description
                self.console.print(f"{task.description} ...", highlight=False, soft_wrap=True)
            return
        if task.printed == task.completed:
            return
        now = time.monotonic()
        if (
            task.printed is None
            or task.finished
            or now - task.printed_at >= self.every_s
            or (
                _counted(task.total)
                and self._step(task, task.completed) > self._step(task, task.printed)
            )
        ):
            self._line(task)

    def _step(self, task: LineTask, completed: float) -> int:
        """Which tenth (of ``steps``) of the task ``completed`` items reach."""
        return int(completed * self.steps // task.total)  # type: ignore[operator]

    def _line(self, task: LineTask) -> None:
        unit = task.fields.get("unit", "cases")
        done = int(task.completed)
        elapsed = time.monotonic() - task.start
        count = f"{done}/{int(task.total)}" if _counted(task.total) else f"{done}/?"  # type: ignore[arg-type]
        parts = [f"{count} {unit}"]
        rate = _rate_per_min(task.completed, elapsed)
        if rate is not None:
            parts.append(f"{rate:.1f} {unit}/min")
        if task.finished:
            parts.append(f"done in {duration(elapsed)}")
        elif done:
            eta = _eta(task.completed, task.total, elapsed)
            parts.append("ETA ?" if eta is None else f"ETA {duration(eta)}")
        self.console.print(
            f"{task.description}: {', '.join(parts)}", highlight=False, soft_wrap=True
        )
        task.printed = task.completed
        task.printed_at = time.monotonic()


AnyProgress = Progress | LineProgress


def make_progress(console: Console) -> AnyProgress:
    """Live bars on a terminal, complete lines elsewhere."""
    return rich_progress(console) if console.is_terminal else LineProgress(console)


# -- figures ---------------------------------------------------------------------------------


def figure_total(data: Any) -> int | None:
    """How many figures the report of ``data`` draws (None where that cannot be told); the
    figure callback of report building is called once per figure."""
    try:
        from assay.report._render import _figure_jobs

        return len(_figure_jobs(data))
    except Exception:  # only a progress total: never stop a report for it
        return None


# -- --help and --version --------------------------------------------------------------------


class HelpGroup(TyperGroup):
    """A command group whose help lists each command with its whole summary (click cuts it
    to what fits on one line, "Score every case and ...;..."), wrapped to the terminal."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # ctx, formatter: click's Context and HelpFormatter (typer >= 0.29 vendors its own
        # click, older typers use the click package: no one annotation fits both).
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            summary = command.short_help or inspect.cleandoc(command.help or "").split("\n\n")[0]
            rows.append((name, " ".join(summary.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def package_version() -> str:
    try:
        return version("assay")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        from assay import __version__

        return str(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"assay {package_version()}")
        raise typer.Exit()


def app_options(
    version_: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version of assay and exit.",
    ),
) -> None:
    pass  # no docstring: the app's help stays the one given to typer.Typer


__all__ = [
    "LOG_WIDTH",
    "AnyProgress",
    "HelpGroup",
    "LineProgress",
    "app_options",
    "duration",
    "figure_total",
    "make_console",
    "make_progress",
    "print_table",
    "rich_progress",
]
