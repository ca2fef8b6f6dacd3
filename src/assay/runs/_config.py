"""``BENCHMARK.yaml``: one file that describes a whole benchmark run.

::

    name: Synthetic abdomen benchmark        # title of the report
    output: out                              # predictions of run models, report (relative)
    db: assay.db                             # SQLite file (relative) or SQLAlchemy URL
    profile: default                         # metric protocol
    workers: 2                               # local processes (scoring, inference, figures)
    datasets: [datasets/synthetic.yaml]      # dataset card files or inline mappings
    models: [models/baseline.yaml, ...]      # model card files or inline mappings
    spot_check: {cases: 3, min_dice: 0.1}    # or false
    analysis: {metrics: [dsc, nsd], policy: worst, bootstrap: 2000, seed: 0,
               groups: [sex, "age:decades"], min_group_size: 10, worst_values: {hd95: 500}}
    report: true                             # or false
    figure_formats: [svg, pdf, png]          # report figures (default: svg, the site's)
    retry_failed: true                       # re-run failed/timed-out model cases on resume
    task: segmentation                       # or detection (tumours; then no profile)
    protocol: atlas2                         # detection protocol (with task: detection)

With ``task: detection`` the datasets' references hold tumour masks, model cards may give a
``probabilities`` folder, the ``analysis`` section takes ``bootstrap``, ``seed``, ``alpha``,
``policy`` (worst, empty, exclude), ``control_scope`` and ``proportion_ci``, and the report is
the detection report (``leaderboard.md``, ``detection.html``, figures, CSV tables).

Every problem is found before any work starts: an unknown key, a missing file or folder, a
model with neither predictions nor a runner; the message names the file, the key and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.datasets import DatasetCard, dataset_card_from_mapping, load_dataset_card
from assay.errors import InputError
from assay.metrics import PROFILES
from assay.metrics._detection_protocol import CONTROL_SCOPES
from assay.models import ModelCard
from assay.models._card import load_model_card, model_card_from_mapping
from assay.stats import OPTION_SPECS, AnalysisOptions, parse_group_spec
from assay.stats._options import DETECTION_POLICIES, PROPORTION_CIS

_KEYS = ("name", "output", "db", "profile", "workers", "datasets", "models", "spot_check",
         "retry_failed",
         "analysis", "report", "figure_formats", "task", "protocol")  # fmt: skip
#: ``analysis:`` keys of a detection benchmark and their allowed values (None: a number).
_DETECTION_ANALYSIS: dict[str, tuple[str, ...] | None] = {
    "bootstrap": None, "seed": None, "alpha": None,
    "policy": DETECTION_POLICIES,
    "control_scope": CONTROL_SCOPES,
    "proportion_ci": PROPORTION_CIS,
}  # fmt: skip
#: Keys of the ``analysis:`` section: the metrics, subgroups, worst values, and every
#: analysis option as declared once in :data:`~assay.stats.OPTION_SPECS` (``bootstrap``,
#: ``ci``, ``winner_rule``, ...).
_CONFIG_KEY = {spec.field: spec.key.replace("-", "_") for spec in OPTION_SPECS}
_ANALYSIS_KEYS = ("metrics", "groups", "worst_values", *_CONFIG_KEY.values())
_SPOT_KEYS = ("cases", "min_dice")


@dataclass(frozen=True)
class SpotCheck:
    """Score the first ``cases`` cases of each model before the full run; flag a model whose
    mean Dice is below ``min_dice`` (or whose outputs look mirrored or swapped)."""

    cases: int = 3
    min_dice: float = 0.1


@dataclass(frozen=True)
class Benchmark:
    """A validated benchmark configuration (see the module docstring)."""

    path: Path
    name: str
    output: Path
    db: str
    profile: str
    workers: int
    datasets: tuple[DatasetCard, ...]
    models: tuple[ModelCard, ...]
    spot_check: SpotCheck | None = field(default_factory=SpotCheck)
    analysis: Mapping[str, Any] = field(default_factory=dict)
    report: bool = True
    retry_failed: bool = True
    figure_formats: tuple[str, ...] = ("svg",)
    task: str = "segmentation"
    protocol: str = "atlas2"


def load_benchmark(path: str | Path) -> Benchmark:
    """Read and validate ``BENCHMARK.yaml``; relative paths are relative to it.

    Raises
    ------
    InputError
        Unreadable YAML, an unknown key, a missing dataset/model card or folder, a dataset
        without ``root``, a model with neither ``predictions`` nor ``runner`` (or both), two
        models or datasets with one name, an unknown profile or analysis option.
    """
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read benchmark config {path}: {exc}. Check the file.") from exc
    if not isinstance(raw, Mapping):
        raise InputError(f"Benchmark config {path} must be a YAML mapping (see assay run --help).")
    _check_keys(raw, _KEYS, f"benchmark config {path}")
    base = path.parent
    for key in ("datasets", "models"):
        if not isinstance(raw.get(key), Sequence) or isinstance(raw.get(key), str | bytes):
            raise InputError(f"{path}: '{key}' must be a non-empty list of card files or mappings.")
        if not raw[key]:
            raise InputError(f"{path}: '{key}' is empty; list at least one.")
    datasets = tuple(_dataset(entry, path, base, i) for i, entry in enumerate(raw["datasets"]))
    models = tuple(_model(entry, path, base, i) for i, entry in enumerate(raw["models"]))
    for kind, names in (
        ("dataset", [d.name for d in datasets]),
        ("model", [m.name for m in models]),
    ):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"{path}: {kind} name(s) {dupes} appear twice; names must be unique.")
    task = str(raw.get("task", "segmentation"))
    if task not in ("segmentation", "detection"):
        raise InputError(f"{path}: task {task!r} is not one of segmentation, detection.")
    if task == "detection":
        return _detection_benchmark(raw, path, base, datasets, models)
    if "protocol" in raw:
        raise InputError(
            f"{path}: 'protocol' names a detection protocol; add 'task: detection' or remove it."
        )
    profile = str(raw.get("profile", "default"))
    if profile not in PROFILES:
        raise InputError(f"{path}: profile {profile!r} is unknown; known: {', '.join(PROFILES)}.")
    analysis = _analysis(raw.get("analysis") or {}, path)
    if analysis.get("groups"):
        bare = [d.name for d in datasets if d.metadata is None]
        if bare:
            raise InputError(
                f"{path}: analysis.groups needs case metadata, but dataset(s) {bare} have no "
                "'metadata' file in their card; add it or drop the groups."
            )
    workers, report, retry = _run_settings(raw, path)
    metrics = analysis.get("metrics") or []
    known = PROFILES[profile].metrics
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise InputError(
            f"{path}: analysis.metrics {unknown} are not computed by profile {profile!r}; "
            f"known: {', '.join(known)}."
        )
    for spec in OPTION_SPECS:  # `analysis` holds the field names (n_bootstrap, ci_method)
        value = analysis.get(spec.field)
        if spec.choices and spec.field in analysis and value not in spec.choices:
            raise InputError(
                f"{path}: analysis.{_CONFIG_KEY[spec.field]} {value!r} is not one of "
                f"{', '.join(spec.choices)}."
            )
    try:  # numbers: types and ranges, checked as analyze checks them
        AnalysisOptions(**{k: v for k, v in analysis.items() if k in _CONFIG_KEY})
    except InputError as exc:
        raise InputError(f"{path}: analysis: {exc}") from None
    from assay.report._render import parse_figure_formats

    figure_formats = parse_figure_formats(
        raw.get("figure_formats"), where=f"{path}: figure_formats"
    )
    output, db = _places(raw, base)
    return Benchmark(
        path=path,
        name=str(raw.get("name") or path.stem),
        output=output,
        db=db,
        profile=profile,
        workers=workers,
        datasets=datasets,
        models=models,
        spot_check=_spot_check(raw.get("spot_check", {}), path),
        analysis=analysis,
        report=report,
        retry_failed=retry,
        figure_formats=figure_formats,
    )


def _detection_benchmark(
    raw: Mapping[str, Any],
    path: Path,
    base: Path,
    datasets: tuple[DatasetCard, ...],
    models: tuple[ModelCard, ...],
) -> Benchmark:
    """The rest of a ``task: detection`` config (its own analysis keys, no profile)."""
    from assay.metrics import get_detection_protocol
    from assay.report._render import parse_figure_formats

    if "profile" in raw:
        raise InputError(
            f"{path}: 'profile' sets segmentation metrics; a detection benchmark takes a "
            "'protocol' instead."
        )
    protocol = str(raw.get("protocol", "atlas2"))
    try:
        get_detection_protocol(protocol)
    except InputError as exc:
        raise InputError(f"{path}: protocol: {exc}") from None
    analysis = raw.get("analysis") or {}
    if not isinstance(analysis, Mapping):
        raise InputError(f"{path}: 'analysis' must be a mapping.")
    _check_keys(analysis, tuple(_DETECTION_ANALYSIS), f"{path}, analysis (task: detection)")
    for key, choices in _DETECTION_ANALYSIS.items():
        if key not in analysis:
            continue
        value = analysis[key]
        if choices is not None and value not in choices:
            raise InputError(
                f"{path}: analysis.{key} {value!r} is not one of {', '.join(choices)}."
            )
        if choices is None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError(f"{path}: analysis.{key} must be a number, got {value!r}.")
    if "bootstrap" in analysis and (
        not isinstance(analysis["bootstrap"], int) or analysis["bootstrap"] < 100
    ):
        raise InputError(f"{path}: analysis.bootstrap must be a whole number >= 100.")
    if "alpha" in analysis and not 0 < float(analysis["alpha"]) < 1:
        raise InputError(f"{path}: analysis.alpha must be between 0 and 1.")
    workers, report, retry = _run_settings(raw, path)
    output, db = _places(raw, base)
    return Benchmark(
        path=path,
        name=str(raw.get("name") or path.stem),
        output=output,
        db=db,
        profile=f"detection:{protocol}",
        workers=workers,
        datasets=datasets,
        models=models,
        spot_check=None,  # a Dice spot check means nothing for tumours (controls are empty)
        analysis=dict(analysis),
        report=report,
        retry_failed=retry,
        figure_formats=parse_figure_formats(
            raw.get("figure_formats"), where=f"{path}: figure_formats"
        ),
        task="detection",
        protocol=protocol,
    )


def _run_settings(raw: Mapping[str, Any], path: Path) -> tuple[int, bool, bool]:
    """The validated ``workers``, ``report`` and ``retry_failed`` of a config."""
    workers = raw.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"{path}: 'workers' must be a positive integer, got {workers!r}.")
    report, retry = raw.get("report", True), raw.get("retry_failed", True)
    for key, value in (("report", report), ("retry_failed", retry)):
        if not isinstance(value, bool):
            raise InputError(f"{path}: '{key}' must be true or false, got {value!r}.")
    return workers, report, retry


def _places(raw: Mapping[str, Any], base: Path) -> tuple[Path, str]:
    """The output folder and the database (a file relative to the config, or a URL)."""
    db = str(raw.get("db", "assay.db"))
    if "://" not in db:
        db = str((base / db).resolve())
    return (base / str(raw.get("output", "assay-run"))).resolve(), db


def _check_keys(raw: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise InputError(
            f"Unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(known)}."
        )


def _dataset(entry: Any, path: Path, base: Path, i: int) -> DatasetCard:
    if isinstance(entry, str):
        card = load_dataset_card(_existing(base / entry, path, f"datasets[{i}]"))
    elif isinstance(entry, Mapping):
        card = dataset_card_from_mapping(entry, where=f"{path}, datasets[{i}]", base=base)
    else:
        raise InputError(f"{path}: datasets[{i}] must be a card file name or a mapping.")
    if card.root is None:
        raise InputError(
            f"{path}: dataset {card.name!r} has no 'root' (the folder of reference masks); "
            "add it to its card."
        )
    return card


def _model(entry: Any, path: Path, base: Path, i: int) -> ModelCard:
    where = f"{path}, models[{i}]"
    if isinstance(entry, str):
        card = load_model_card(_existing(base / entry, path, f"models[{i}]"))
        where = f"model card {base / entry}"
    elif isinstance(entry, Mapping):
        card = model_card_from_mapping(entry, where=where, base=base)
    else:
        raise InputError(f"{path}: models[{i}] must be a card file name or a mapping.")
    if (card.predictions is None) == (card.runner is None):
        raise InputError(
            f"{where}: model {card.name!r} needs exactly one of 'predictions' (a folder of "
            "computed predictions) or 'runner' (a command run per case)."
        )
    return card


def _existing(file: Path, path: Path, key: str) -> Path:
    if not file.is_file():
        raise InputError(f"{path}: {key} names {file}, which does not exist; fix the path.")
    return file


def _spot_check(raw: Any, path: Path) -> SpotCheck | None:
    if raw is False:
        return None
    if raw is True or raw is None:
        return SpotCheck()
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: 'spot_check' must be false or a mapping (cases, min_dice).")
    _check_keys(raw, _SPOT_KEYS, f"{path}, spot_check")
    cases, min_dice = raw.get("cases", 3), raw.get("min_dice", 0.1)
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise InputError(f"{path}: spot_check.cases must be a positive integer, got {cases!r}.")
    if isinstance(min_dice, bool) or not isinstance(min_dice, int | float):
        raise InputError(f"{path}: spot_check.min_dice must be a number, got {min_dice!r}.")
    return SpotCheck(cases=cases, min_dice=float(min_dice))


def _analysis(raw: Any, path: Path) -> dict[str, Any]:
    """Config analysis options -> the keyword arguments of the report's analysis."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: 'analysis' must be a mapping.")
    _check_keys(raw, _ANALYSIS_KEYS, f"{path}, analysis")
    rename = {key: name for name, key in _CONFIG_KEY.items()}
    out: dict[str, Any] = {str(rename.get(k, k)): v for k, v in raw.items()}
    groups = out.get("groups")
    if groups is not None:
        if isinstance(groups, str) or not isinstance(groups, Sequence | Mapping):
            raise InputError(f"{path}: analysis.groups must be a list such as [sex, age:decades].")
        items = groups.items() if isinstance(groups, Mapping) else None
        out["groups"] = (
            {str(k): v for k, v in items}
            if items is not None
            else dict(parse_group_spec(str(g)) for g in groups)
        )
    if "metrics" in out and isinstance(out["metrics"], str):
        out["metrics"] = [out["metrics"]]
    return out
