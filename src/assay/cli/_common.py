"""What every command shares: the app, the consoles, one-line fatal errors, progress,
and the analysis options of ``analyze``/``report``/``reanalyze``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape

from assay._console import (
    AnyProgress,
    HelpGroup,
    app_options,
    make_console,
    make_progress,
)
from assay.errors import AssayError, InputError
from assay.models import load_model_cards
from assay.scoring import ScoreReport, score
from assay.stats import AnalysisOptions
from assay.store import ResultStore

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="assay: exact, fast evaluation of medical image segmentation.",
    rich_markup_mode=None,  # plain help: option names are never cut, at any width
    cls=HelpGroup,  # and command summaries are whole
)


app.callback()(app_options)  # assay --version


out = make_console()  # a terminal's console, or a wide one that never wraps (logs, CI)


err = make_console(stderr=True)


@contextmanager
def _fatal_errors() -> Iterator[None]:
    """Turn assay errors and file-system errors into a one-line message and exit status 2.

    SIGTERM stops the command like Ctrl-C (work in flight is lost, committed work kept), with
    exit status 143 instead of 130.
    """
    import signal
    import threading

    from assay.errors import os_error_message

    terminated: list[int] = []

    def on_sigterm(signum: int, _frame: Any) -> None:
        if not terminated:  # once: a second SIGTERM must not interrupt the cleanup
            terminated.append(signum)
            raise KeyboardInterrupt

    previous: Any = None
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except (AssayError, OSError) as exc:
        text = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # a command without its own message
        err.print("[yellow]interrupted:[/] finished work is kept; re-run to redo the rest.")
        raise typer.Exit(143 if terminated else 130) from None
    except typer.Exit as exc:
        if terminated and exc.exit_code == 130:  # the command's own Ctrl-C handling
            raise typer.Exit(143) from None
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _progress() -> AnyProgress:
    """Live bars on a terminal; complete progress lines when stderr is a log."""
    return make_progress(err)


def _run_score(progress: AnyProgress, description: str, **kwargs: Any) -> ScoreReport:
    # quiet: in a log the first line is "model: 0/N cases", once the cases are found (an
    # input error before that leaves stderr its one error line)
    task = progress.add_task(escape(description), total=None, quiet=True)
    return score(
        **kwargs,
        on_start=lambda n: progress.update(task, total=n),
        on_case=lambda _record: progress.advance(task),
    )


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


# Options shared by `analyze` and `report` (the analysis parameters).
_ProfileFilter = Annotated[str | None, typer.Option(help="Only runs of this profile.")]


def _analysis_option(name: str) -> Any:
    """The typer option of analysis field ``name``, from its one declaration
    (:data:`~assay.stats.OPTION_SPECS`: flag, minimum, help)."""
    spec = AnalysisOptions.spec(name)
    minimum = int(spec.minimum) if spec.minimum is not None and spec.minimum >= 1 else None
    return typer.Option(f"--{spec.key}", min=minimum, help=spec.help)


#: The analysis defaults (``AnalysisOptions()``), used as the commands' defaults.
ANALYSIS_DEFAULTS = AnalysisOptions()

_Policy = Annotated[str, _analysis_option("policy")]
_Aggregation = Annotated[str, _analysis_option("aggregation")]
_Bootstrap = Annotated[int, _analysis_option("n_bootstrap")]
_Seed = Annotated[int, _analysis_option("seed")]
_CI = Annotated[str, _analysis_option("ci_method")]
_Alpha = Annotated[float, _analysis_option("alpha")]
_WinnerRule = Annotated[str, _analysis_option("winner_rule")]
_Permutations = Annotated[int, _analysis_option("n_permutations")]


_Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--groups",
        help="Subgroups: sex | age:decades | age:0,40,60,120 | name: QUERY (repeatable).",
    ),
]


_MinGroupSize = Annotated[int, _analysis_option("min_group_size")]
_Correction = Annotated[str, _analysis_option("correction")]
_SubgroupFamily = Annotated[str, _analysis_option("subgroup_family")]


_FigureFormats = Annotated[
    str,
    typer.Option(
        "--figure-formats",
        help="Figure files, comma-separated: svg (the site's, always written), and pdf, png "
        "(200 dpi) for papers under figures/, e.g. svg,pdf,png.",
    ),
]


_WorstValue = Annotated[
    list[str] | None,
    typer.Option(help="Worst value METRIC=VALUE for missing cases and +inf, e.g. hd95=500."),
]


def _check_analysis_choices(
    policy: str, aggregation: str, ci: str, correction: str, winner_rule: str = "mean"
) -> None:
    """One line naming the option for a value outside its choices (:data:`OPTION_SPECS`),
    before any database is opened."""
    given = {"winner_rule": winner_rule, "policy": policy, "aggregation": aggregation,
             "ci_method": ci, "correction": correction}  # fmt: skip
    for name, value in given.items():
        spec = AnalysisOptions.spec(name)
        _choice(spec.key, value, spec.choices)


def _training_data(
    store: ResultStore, scores: pd.DataFrame, cards_path: Path | None
) -> dict[str, list[str]]:
    """Model -> declared training data, from --models cards, else from the runs' manifests."""
    if cards_path is not None:
        return {c.name: list(c.training_data) for c in load_model_cards(cards_path).values()}
    from assay.report._collect import cards_from_runs

    runs = store.runs()
    cards = cards_from_runs(runs[runs["run_id"].isin(set(scores["run_id"]))])
    return {name: list(c.training_data) for name, c in cards.items() if c.training_data}


def _worst_values(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InputError(
                f"Invalid --worst-value {item!r}; expected METRIC=VALUE, e.g. hd95=500."
            )
    return out


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"--{option} {value!r} is not one of {', '.join(allowed)}.")


def _figure_formats(value: str | None) -> tuple[str, ...]:
    """Validated ``--figure-formats`` (an :class:`InputError` names the bad format)."""
    from assay.report._render import parse_figure_formats

    return parse_figure_formats(value)
