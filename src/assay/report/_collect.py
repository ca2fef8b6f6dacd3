"""Gather a report's inputs from the results store: scores, analyses, cards, speed."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pandas as pd

from assay.datasets import DatasetCard
from assay.errors import InputError
from assay.models import ModelCard
from assay.report._bundle import ANALYSIS_OPTIONS, analysis_options
from assay.report._data import SPEED_COLUMNS, ReportData
from assay.report._helpers import HelperPool, run_shared
from assay.stats import analyze
from assay.store import ResultStore

#: Metrics reported when none are named: the overlap metrics present in the scores.
DEFAULT_METRICS = ("dsc", "nsd")

#: Fewest score rows for which helpers analyse some of the metrics (see
#: :func:`collect_report_data`); Touchstone's 19 models × 743 cases have about 254,000.
PARALLEL_ANALYSIS_ROWS = 50_000

#: Descriptive card fields read back from run manifests (not predictions/runner settings).
_CARD_FIELDS = ("framework", "organisation", "paper", "code", "training_data", "notes", "version")


def analysis_defaults() -> dict[str, Any]:
    """The default value of every recorded option of :func:`~assay.stats.analyze`."""
    params = inspect.signature(analyze).parameters
    return {k: params[k].default for k in ANALYSIS_OPTIONS}


def load_scores(store: ResultStore, datasets: Sequence[str], profile: str | None) -> pd.DataFrame:
    """Per-case scores of ``datasets``, one run per (dataset, model).

    Raises
    ------
    InputError
        A dataset without scores, or a (dataset, model) with runs of several profiles and
        no ``profile`` to choose one.
    """
    parts = []
    for name in datasets:
        part = store.scores(dataset=name, profile=profile)
        if profile is None:  # detection runs are analysed by `assay analyze --task detection`
            part = part[~part["profile"].str.startswith("detection:")]
        if part.empty:
            raise InputError(
                f"No scores for dataset {name!r} in {store.location}; check --dataset."
            )
        parts.append(part)
    scores = pd.concat(parts, ignore_index=True)
    runs = scores.groupby(["dataset", "model"])["run_id"].nunique()
    if (runs > 1).any():
        several = ", ".join(f"{m} on {d}" for d, m in runs[runs > 1].index)
        raise InputError(f"{several}: several runs (profiles); pass --profile.")
    return scores


def load_metadata(store: ResultStore, datasets: Sequence[str]) -> pd.DataFrame:
    """Case metadata of ``datasets`` in one table with a ``dataset`` column."""
    parts = [store.metadata(name).assign(dataset=name) for name in datasets]
    return pd.concat(parts, ignore_index=True)


def cards_from_runs(runs: pd.DataFrame) -> dict[str, ModelCard]:
    """Model cards recorded in run manifests (``manifest["model"]``), by model name."""
    out: dict[str, ModelCard] = {}
    for row in runs.itertuples():
        raw = row.manifest.get("model", {}) if isinstance(row.manifest, dict) else {}
        known = {k: v for k, v in raw.items() if k in _CARD_FIELDS and v is not None}
        known["name"] = str(row.model)
        known["training_data"] = tuple(known.get("training_data") or ())
        out[str(row.model)] = ModelCard(**known)
    return out


def speed_from_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Inference speed per (dataset, model) from ``manifest["inference"]`` when recorded.

    ``cm3_per_s`` = total reference image volume (cm³) / total inference seconds, as
    Touchstone reports it.
    """
    rows = []
    for row in runs.itertuples():
        inf = row.manifest.get("inference") if isinstance(row.manifest, dict) else None
        if not inf or not inf.get("seconds"):
            continue
        seconds, volume = float(inf["seconds"]), float(inf.get("volume_cm3") or "nan")
        rows.append((row.dataset, row.model, inf.get("n_cases"), seconds, volume, volume / seconds))
    return pd.DataFrame(rows, columns=list(SPEED_COLUMNS))


def collect_report_data(
    store: ResultStore,
    datasets: Sequence[str],
    *,
    options: Mapping[str, Any],
    profile: str | None = None,
    cards: Mapping[str, ModelCard] | None = None,
    dataset_cards: Mapping[str, DatasetCard] | None = None,
    title: str | None = None,
    software: Mapping[str, str] | None = None,
    on_metric: Callable[[str], None] | None = None,
    run_ids: Collection[str] | None = None,
    helpers: HelperPool | None = None,
) -> tuple[ReportData, pd.DataFrame | None]:
    """Load scores and run the analysis of every reported metric.

    Parameters
    ----------
    options : ``metrics`` (default: those of :data:`DEFAULT_METRICS` present) and the keyword
        arguments of :func:`~assay.stats.analyze` (policy, n_bootstrap, seed, groups, ...).
        ``training_data`` defaults to the cards' training data.
    cards : model cards by model name; default: the cards recorded in the runs' manifests.
    run_ids : only these runs (e.g. the models a benchmark run scored); default: every run
        of ``datasets`` (of ``profile``).
    helpers : helper processes (:func:`~assay.report._helpers.helper_pool`) that analyse
        some of the metrics while this process analyses the others, when there are several
        metrics and at least :data:`PARALLEL_ANALYSIS_ROWS` score rows (below that, starting
        the analysis in a helper costs more than it saves). Each analysis is the same
        wherever it runs.

    Returns
    -------
    The report data, and the metadata table used for subgroups (None without groups).
    """
    scores = load_scores(store, datasets, profile)
    if run_ids is not None:
        scores = scores[scores["run_id"].isin(set(run_ids))].reset_index(drop=True)
    runs = store.runs()
    runs = runs[runs["run_id"].isin(set(scores["run_id"].unique()))].reset_index(drop=True)
    run_cards = cards_from_runs(runs)
    cards = {**run_cards, **_by_model(cards or {})}
    present = sorted(set(scores["metric"].unique()))
    metrics = list(options.get("metrics") or [m for m in DEFAULT_METRICS if m in present])
    if not metrics:
        raise InputError(
            f"None of {', '.join(DEFAULT_METRICS)} was scored; pass --metric (present: "
            f"{', '.join(present)})."
        )
    unknown = [m for m in metrics if m not in present]
    if unknown:
        raise InputError(f"No scores for metric(s) {unknown}; present: {', '.join(present)}.")
    options = {**analysis_defaults(), **options, "metrics": metrics}
    if not options.get("training_data"):
        models = set(scores["model"].unique())
        training = {m: list(c.training_data) for m, c in cards.items() if c.training_data}
        options["training_data"] = {m: t for m, t in training.items() if m in models}
    metadata = load_metadata(store, datasets) if options.get("groups") else None
    kwargs = analysis_options(options)
    shared = helpers if len(metrics) > 1 and len(scores) >= PARALLEL_ANALYSIS_ROWS else None
    tasks = [(scores, metric, metadata, kwargs) for metric in metrics]
    if on_metric is not None and shared is not None:
        for metric in metrics:
            on_metric(metric)
    found = {}
    for task, analysis, _pid in run_shared(tasks, _analyze_task, shared, queued=0,
                                           what="analysing"):  # fmt: skip
        if on_metric is not None and shared is None:
            on_metric(task[1])
        found[task[1]] = analysis
    analyses = {metric: found[metric] for metric in metrics}
    # the distinct values once: iterating 250,000 (Arrow) strings per card took seconds
    scored_models = set(scores["model"].unique())
    data = ReportData(
        title=title or f"Benchmark: {', '.join(datasets)}",
        analyses=analyses,
        scores=scores,
        cards={m: c for m, c in cards.items() if m in scored_models},
        datasets=dict(dataset_cards or {}),
        runs=runs[["run_id", "dataset", "model", "profile", "manifest"]],
        speed=speed_from_runs(runs),
        options=options,
        software=dict(software or {}),
    )
    return data, metadata


def _analyze_task(task: tuple[pd.DataFrame, str, pd.DataFrame | None, dict[str, Any]]) -> Any:
    """:func:`~assay.stats.analyze` of one metric (a module-level function: helpers run it)."""
    scores, metric, metadata, kwargs = task
    return analyze(scores, metric=metric, metadata=metadata, **kwargs)


def _by_model(cards: Mapping[str, ModelCard]) -> dict[str, ModelCard]:
    """Cards keyed by folder name -> also reachable by display name."""
    out = dict(cards)
    out.update({c.name: c for c in cards.values()})
    return out
