"""The results bundle and its re-verification (``assay reanalyze``).

A bundle is a folder::

    results.json      format, options, provenance (runs, cards, software, file checksums)
                      and every published statistic, per metric
    scores.parquet    the per-case scores the statistics started from (authoritative)
    scores.csv        the same rows as CSV (floats written so they read back bit-exact)
    metadata.csv      per-case metadata, when a subgroup analysis was run

:func:`reanalyze` reads the per-case scores, recomputes every aggregate, CI, test, winner,
rank, stability and subgroup number with the recorded options and seed, and lists every
number that differs from ``results.json`` (and every per-case value on which the CSV and
the Parquet file disagree).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.datasets import file_sha256
from assay.errors import InputError
from assay.report._data import ReportData
from assay.stats import Analysis, AnalysisOptions, analyze

FORMAT = "assay-results"
FORMAT_VERSION = 2

#: Published frames of an :class:`~assay.stats.Analysis` and the columns that identify a row.
FRAME_KEYS: dict[str, tuple[str, ...]] = {
    "aggregates": ("dataset", "model", "structure", "metric", "contaminated"),
    "pairwise": ("dataset", "structure", "metric", "model_a", "model_b"),
    "inversions": ("dataset", "structure", "metric", "model", "better_than"),
    "rankings": ("dataset", "structure", "metric", "model"),
    "stability": ("dataset", "structure", "metric", "model"),
    "stability_tau": ("dataset", "structure", "metric"),
    "consensus": ("structure", "metric", "model"),
    "subgroups": ("dataset", "structure", "metric", "grouping", "group", "model"),
    "subgroup_tests": (
        "dataset",
        "structure",
        "metric",
        "grouping",
        "model",
        "test",
        "group_a",
        "group_b",
    ),
    "changes": ("dataset", "model", "structure", "metric"),
}

#: Options of :func:`~assay.stats.analyze` a bundle records (plus ``metrics``).
ANALYSIS_OPTIONS = (*AnalysisOptions.names(), "training_data")

#: Relative tolerance when comparing recomputed floats (recomputation is deterministic; this
#: only absorbs the last-bit differences of summation order across library versions).
RTOL = 1e-9
ATOL = 1e-12

SCORE_COLUMNS = ("dataset", "model", "case_id", "structure", "metric", "value", "status")


@dataclass(frozen=True)
class Reanalysis:
    """Outcome of :func:`reanalyze`.

    ``differences`` lists one line per drifted number (or per inconsistent input), naming
    the frame, the row and the column, the published and the recomputed value; empty when
    every number reproduces. ``analyses`` are the recomputed analyses.
    """

    differences: tuple[str, ...]
    analyses: Mapping[str, Analysis]
    n_checked: int

    @property
    def ok(self) -> bool:
        return not self.differences


def analysis_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`~assay.stats.analyze` among ``options``."""
    return {k: options[k] for k in ANALYSIS_OPTIONS if k in options}


def write_bundle(
    data: ReportData, out_dir: str | Path, *, metadata: pd.DataFrame | None = None
) -> list[Path]:
    """Write the results bundle of ``data`` into ``out_dir`` (created; files replaced).

    ``data.options`` must hold ``metrics`` and the :data:`ANALYSIS_OPTIONS` the analyses
    were computed with, so that :func:`reanalyze` can recompute them; ``metadata`` (with
    ``case_id`` and, for several datasets, ``dataset``) is needed when subgroups were
    analysed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = _score_table(data.scores)
    files = [out / "scores.parquet", out / "scores.csv"]
    scores.to_parquet(files[0], index=False)
    scores.to_csv(files[1], index=False, float_format=None)
    if metadata is not None and not metadata.empty:
        metadata.to_csv(out / "metadata.csv", index=False)
        files.append(out / "metadata.csv")
    results = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "title": data.title,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": _jsonable(dict(data.options)),
        "provenance": {
            "software": dict(data.software),
            "files": {p.name: file_sha256(p) for p in files},
            "runs": _records(_public_runs(data.runs)) if not data.runs.empty else [],
            "datasets": {k: v.as_dict() for k, v in data.datasets.items()},
            "models": {k: v.as_dict() for k, v in data.cards.items()},
            "speed": _records(data.speed),
        },
        "analysis": {m: _analysis_json(a) for m, a in data.analyses.items()},
    }
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, allow_nan=False, ensure_ascii=False) + "\n")
    return [path, *files]


def reanalyze(bundle_dir: str | Path, *, update: bool = False) -> Reanalysis:
    """Recompute every published number of a bundle from its per-case scores.

    Parameters
    ----------
    bundle_dir : a folder written by :func:`write_bundle`.
    update : rewrite ``results.json`` with the recomputed numbers and the new file
        checksums (the differences are still returned). Never done otherwise.

    Returns
    -------
    Reanalysis
        Its ``differences`` name each number that drifted, e.g. ``dsc aggregates
        [toy, alpha, liver, dsc]: mean published 0.912 recomputed 0.905``; also each
        per-case value where ``scores.csv`` and ``scores.parquet`` disagree, and each file
        whose checksum changed.
    """
    folder = Path(bundle_dir)
    results = _read_results(folder)
    scores = _read_scores(folder)
    diffs: list[str] = []
    recorded = results.get("provenance", {}).get("files", {})
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            diffs.append(f"{name}: listed in results.json but missing from the bundle")
        elif file_sha256(path) != digest:
            diffs.append(f"{name}: checksum differs from results.json (the file was edited)")
    diffs += _csv_vs_parquet(folder, scores)
    options = results.get("options", {})
    metrics = options.get("metrics") or sorted(results.get("analysis", {}))
    metadata = None
    if (folder / "metadata.csv").is_file():
        metadata = pd.read_csv(folder / "metadata.csv", dtype={"case_id": str})
    kwargs = analysis_options(options)
    legacy = results.get("format_version", 1) < 2
    if legacy:
        # version 1 bundles predate the named winner rules: their 🏆 used Touchstone's rule
        kwargs.setdefault("winner_rule", "touchstone")
        kwargs.setdefault("subgroup_family", "model")  # and subgroup tests per model
    analyses = {}
    n_checked = 0
    for metric in metrics:
        fresh = analyze(scores, metric=metric, metadata=metadata, **kwargs)
        analyses[metric] = fresh
        published = results.get("analysis", {}).get(metric)
        if published is None:
            diffs.append(f"{metric}: not in results.json (nothing published for it)")
            continue
        for frame, keys in FRAME_KEYS.items():
            if legacy and frame not in published:
                continue  # a frame added after version 1
            old = pd.DataFrame(published.get(frame, []))
            new = pd.DataFrame(_records(getattr(fresh, frame)))
            if legacy and len(old):
                new = new.loc[:, [c for c in new.columns if c in old.columns]]
            found, checked = _compare(old, new, keys, f"{metric} {frame}")
            diffs += found
            n_checked += checked
    if update:
        results["analysis"] = {m: _analysis_json(a) for m, a in analyses.items()}
        results["provenance"]["files"] = {
            name: file_sha256(folder / name) for name in recorded if (folder / name).is_file()
        }
        results["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        (folder / "results.json").write_text(
            json.dumps(results, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
        )
    return Reanalysis(differences=tuple(diffs), analyses=analyses, n_checked=n_checked)


def _read_results(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            f"Cannot read {path}: {exc}. Pass the bundle folder written by 'assay report'."
        ) from exc
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise InputError(f"{path} is not an assay results bundle (format {FORMAT!r} expected).")
    if results.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{path} has format version {results['format_version']}; this assay reads up to "
            f"{FORMAT_VERSION}. Upgrade assay."
        )
    return results


def _read_scores(folder: Path) -> pd.DataFrame:
    path = folder / "scores.parquet"
    try:
        scores = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path}: {exc}. The bundle is incomplete.") from exc
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}.")
    return scores


def _score_table(scores: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("run_id", *SCORE_COLUMNS, "message", "profile") if c in scores.columns]
    table = scores[keep].sort_values(["dataset", "model", "metric", "structure", "case_id"])
    return table.reset_index(drop=True)


def _csv_vs_parquet(folder: Path, scores: pd.DataFrame) -> list[str]:
    """Per-case values on which ``scores.csv`` disagrees with ``scores.parquet``."""
    path = folder / "scores.csv"
    if not path.is_file():
        return []
    try:
        csv = pd.read_csv(path, dtype={"case_id": str, "model": str, "dataset": str})
    except (OSError, ValueError) as exc:
        return [f"scores.csv: unreadable ({exc})"]
    key = ["dataset", "model", "case_id", "structure", "metric"]
    if any(c not in csv.columns for c in [*key, "value", "status"]):
        return ["scores.csv: columns differ from scores.parquet"]
    both = scores[[*key, "value", "status"]].merge(
        csv[[*key, "value", "status"]], on=key, how="outer", suffixes=("_pq", "_csv"),
        indicator="side",
    )  # fmt: skip
    differ = np.array(both["side"] != "both", dtype=bool)
    differ |= np.array(both["status_pq"] != both["status_csv"], dtype=bool)
    values = both["value_pq"], both["value_csv"]
    if all(pd.api.types.is_float_dtype(v) for v in values):
        differ |= ~_close(*(v.to_numpy(np.float64) for v in values))
    else:  # a value that is not a number: every row goes through the exact check
        differ[:] = True
    out = []
    for row in both[differ].itertuples(index=False):  # only the rows that disagree
        where = f"[{row.dataset}, {row.model}, {row.case_id}, {row.structure}, {row.metric}]"
        if row.side != "both":
            side = "scores.parquet" if row.side == "left_only" else "scores.csv"
            out.append(f"scores {where}: only in {side}")
        elif not _same(row.value_pq, row.value_csv) or row.status_pq != row.status_csv:
            out.append(
                f"scores {where}: value scores.parquet {row.value_pq!r} ({row.status_pq}) vs "
                f"scores.csv {row.value_csv!r} ({row.status_csv})"
            )
    return out


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`_same` of two float arrays, element by element (NaN equals NaN only, an
    infinity only itself, else :func:`math.isclose` with :data:`RTOL` and :data:`ATOL`)."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    with np.errstate(invalid="ignore", over="ignore"):
        tol = np.maximum(RTOL * np.maximum(np.abs(a), np.abs(b)), ATOL)
        close = np.abs(a - b) <= tol
    close = np.where(np.isinf(a) | np.isinf(b), a == b, close)
    same: np.ndarray = np.where(nan_a | nan_b, nan_a & nan_b, close)
    return same


def _compare(
    old: pd.DataFrame, new: pd.DataFrame, keys: tuple[str, ...], label: str
) -> tuple[list[str], int]:
    """Differences between a published and a recomputed frame, keyed by ``keys``."""
    if old.empty and new.empty:
        return [], 0
    keys = tuple(c for c in keys if c in old.columns or c in new.columns)
    for frame in (old, new):
        for c in keys:
            if c not in frame.columns:
                frame[c] = None
    old_idx = {_key(r, keys): r for r in old.to_dict(orient="records")}
    new_idx = {_key(r, keys): r for r in new.to_dict(orient="records")}
    diffs = []
    checked = 0
    for k in sorted(set(old_idx) | set(new_idx), key=str):
        where = f"{label} [{', '.join(str(x) for x in k if x is not None and x is not False)}]"
        if k not in new_idx:
            diffs.append(f"{where}: published but not recomputed")
            continue
        if k not in old_idx:
            diffs.append(f"{where}: recomputed but not published")
            continue
        a, b = old_idx[k], new_idx[k]
        for col in sorted(set(a) | set(b)):
            if col in keys:
                continue
            checked += 1
            if not _same(a.get(col), b.get(col)):
                diffs.append(f"{where}: {col} published {a.get(col)!r} recomputed {b.get(col)!r}")
    return diffs, checked


def _key(record: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(_plain(record.get(k)) for k in keys)


#: Types whose equal values are the same number or text whatever :func:`_same` would add.
_PLAIN_TYPES = (str, int, bool)


def _same(a: Any, b: Any) -> bool:
    kind = type(a)
    if kind is type(b) and (kind in _PLAIN_TYPES or kind is float) and a == b:
        return True  # the common case, exactly equal (NaN never is)
    a, b = _plain(a), _plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) and type(a) is type(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    return bool(a == b)


def _plain(v: Any) -> Any:
    """JSON-comparable scalar: NaN/NA/NaT -> None, numpy scalars -> Python."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _jsonable(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")
    ]


#: Manifest entries kept out of the bundle: per-case input fingerprints (a resume cache of
#: ``assay score``, tens of bytes per case, not provenance a reader needs).
_PRIVATE_MANIFEST_KEYS = ("case_inputs",)


def _public_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the manifests' :data:`_PRIVATE_MANIFEST_KEYS` left out."""
    if "manifest" not in runs.columns:
        return runs

    def strip(m: Any) -> Any:
        if not isinstance(m, Mapping):
            return m
        return {k: v for k, v in m.items() if k not in _PRIVATE_MANIFEST_KEYS}

    return runs.assign(manifest=runs["manifest"].map(strip))


def _jsonable(v: Any) -> Any:
    kind = type(v)
    if v is None or kind in _PLAIN_TYPES:
        return v
    if kind is float and math.isfinite(v):
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        items = sorted(v, key=str) if isinstance(v, set | frozenset) else v
        return [_jsonable(x) for x in items]
    v = _plain(v)
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _analysis_json(analysis: Analysis) -> dict[str, Any]:
    out: dict[str, Any] = {
        "params": _jsonable(analysis.params),
        "warnings": list(analysis.warnings),
    }
    for frame in FRAME_KEYS:
        out[frame] = _records(getattr(analysis, frame))
    return out
