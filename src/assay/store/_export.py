"""Export stored scores: tidy long CSV/Parquet, or the Touchstone per-model layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from assay.errors import InputError
from assay.scoring import AVERAGED
from assay.store._store import ResultStore

FORMATS = ("csv", "parquet", "touchstone")

#: File name suffixes that name a format (an --out that contradicts --format is an error).
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}

#: Touchstone files and the metric each holds.
TOUCHSTONE_FILES = {"dsc.csv": "dsc", "nsd.csv": "nsd"}


def export_scores(
    store: ResultStore,
    fmt: str,
    out: Path,
    *,
    dataset: str | None = None,
    model: str | None = None,
    profile: str | None = None,
) -> list[Path]:
    """Write the selected scores to ``out`` and return the files written.

    ``csv``/``parquet`` write one long table (columns: run_id, dataset, model, case_id,
    structure, metric, value, status, message, profile) to the file ``out``; when the
    selection holds detection runs, their lesion rows go to ``<out stem>_lesions.<ext>`` next
    to it (columns :data:`~assay.store.LESION_COLUMNS`). ``touchstone``
    writes ``out/<model>/dsc.csv`` and ``nsd.csv``: a ``name`` column with the case id and one
    column per structure (sorted), values as fractions; cases whose prediction is missing
    have no row (as in Touchstone's published results). Path separators in model names
    become ``_`` in folder names.
    """
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    out = Path(out)
    named = _SUFFIX_FORMATS.get(out.suffix.lower())
    if named is not None and named != fmt:  # e.g. scores.parquet written as CSV
        raise InputError(
            f"--out {out} is named like a {named} file but the format is {fmt}; pass "
            f"--format {named}, or name the output {out.with_suffix(_SUFFIXES.get(fmt, ''))}."
        )
    df = store.scores(dataset=dataset, model=model, profile=profile)
    if df.empty:
        raise InputError(
            f"No scores in {store.location} for dataset={dataset!r}, model={model!r}, "
            f"profile={profile!r}. Run `assay score` first or relax the filters."
        )
    if fmt == "touchstone" and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; the Touchstone layout needs a folder.")
    if fmt != "touchstone" and out.is_dir():
        raise InputError(
            f"--out {out} is a folder; {fmt} export writes one file, e.g. {out}/scores.{fmt}."
        )
    try:
        if fmt == "touchstone":
            return _export_touchstone(df, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        written = [out]
        detection = sorted(df.loc[df["profile"].str.startswith("detection:"), "run_id"].unique())
        lesions = store.lesions(run_ids=detection) if detection else None
        if fmt == "csv":
            df.to_csv(out, index=False)
        else:
            df.to_parquet(out, index=False)
        if lesions is not None:
            path = out.with_name(f"{out.stem}_lesions{out.suffix or _SUFFIXES[fmt]}")
            if fmt == "csv":
                lesions.to_csv(path, index=False)
            else:
                lesions.to_parquet(path, index=False)
            written.append(path)
    except OSError as exc:
        raise InputError(
            f"Cannot write {out}: {exc.strerror or exc}. Check the --out path."
        ) from exc
    return written


def _export_touchstone(df: pd.DataFrame, out: Path) -> list[Path]:
    runs_per_model = df.groupby("model")["run_id"].nunique()
    ambiguous = sorted(runs_per_model[runs_per_model > 1].index)
    if ambiguous:
        raise InputError(
            f"Model(s) {', '.join(ambiguous)} have scores from several runs (datasets or "
            "profiles); the Touchstone layout holds one per model. Pass --dataset and --profile."
        )
    written: list[Path] = []
    for model, part in df.groupby("model", sort=True):
        folder = out / _folder_name(str(model))
        folder.mkdir(parents=True, exist_ok=True)
        missing = part.groupby("case_id")["status"].agg(lambda s: (s == "missing_prediction").all())
        keep = part[~part["case_id"].isin(missing[missing].index)]
        for filename, metric in TOUCHSTONE_FILES.items():
            rows = keep[keep["metric"] == metric].copy()
            rows.loc[~rows["status"].isin(AVERAGED), "value"] = float("nan")  # as Touchstone
            table = rows.pivot(index="case_id", columns="structure", values="value")
            table = table.reindex(columns=sorted(table.columns)).sort_index()
            table.index.name = "name"
            table.columns.name = None
            path = folder / filename
            table.reset_index().to_csv(path, index=False)
            written.append(path)
    return written


def _folder_name(model: str) -> str:
    """A model name as one folder name: path separators become '_', '.'/'..' are escaped."""
    name = model.replace("/", "_").replace("\\", "_")
    return f"_{name}" if name in (".", "..") else name
