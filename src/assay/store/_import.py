"""Import published per-case results (Touchstone layout) and case metadata into the store.

Touchstone publishes ``<model_dir>/dsc.csv`` and ``nsd.csv``: a ``name`` column with the case
id and one column per structure, fractions in [0, 1]. An empty cell means the structure was
not evaluated for that case (absent from the reference); a case with no row has no published
prediction. Both are kept, with their status, never dropped:

* a value -> status ``ok``;
* an empty cell -> status ``empty_reference``, value NaN (not applicable);
* no row for a case that other models have -> status ``missing_prediction``, value NaN.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from assay.datasets import DEFAULT_SCHEMA, LabelSchema
from assay.errors import InputError
from assay.metrics import PROFILES
from assay.models import ModelCard
from assay.scoring import CaseRecord, ScoreRow, run_id_for, software_versions
from assay.store._store import ResultStore

#: Touchstone result files and the metric each holds.
TOUCHSTONE_FILES = {"dsc.csv": "dsc", "nsd.csv": "nsd"}

_NOT_EVALUATED = "not evaluated in the published results (structure absent from the reference)"


@dataclass(frozen=True)
class ImportedModel:
    """One imported model: its folder, display name, run and case counts."""

    folder: str
    name: str
    run_id: str
    n_cases: int
    n_missing: int


@dataclass(frozen=True)
class ImportReport:
    dataset: str
    models: tuple[ImportedModel, ...]
    n_metadata: int
    structures: tuple[str, ...]


def read_metadata(path: str | Path, *, id_column: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a case-metadata table (CSV with ``,`` or ``;``, with or without a byte-order mark).

    The id column is ``id_column`` or the first column; ids must be unique. Returns the
    table and the id column's name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
        table = pd.read_csv(path, sep=dialect.delimiter, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, IndexError) as exc:
        raise InputError(f"Cannot read metadata {path}: {exc}. Check the file.") from exc
    column = id_column or str(table.columns[0])
    if column not in table.columns:
        raise InputError(
            f"Metadata {path} has no column {column!r}; columns: {', '.join(table.columns)}."
        )
    table[column] = table[column].astype(str)
    dupes = table[column][table[column].duplicated()].unique()
    if len(dupes):
        raise InputError(f"Metadata {path} repeats case ids {list(dupes[:5])}; ids must be unique.")
    return table, column


def import_touchstone(
    store: ResultStore,
    results_dir: str | Path,
    *,
    dataset: str,
    cards: Mapping[str, ModelCard],
    metadata: str | Path | None = None,
    id_column: str | None = None,
    schema: LabelSchema = DEFAULT_SCHEMA,
) -> ImportReport:
    """Load a Touchstone-layout results folder (and case metadata) into ``store``.

    Every model folder must have a card (an unmapped folder is an error that names it; names
    are never guessed from folder names). Each model becomes one run with the ``touchstone``
    profile (DSC with +1 in the denominator, NSD voxel variant at 1.5 mm, as published);
    importing again replaces that run.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(f"Results folder {root} does not exist; pass the Touchstone results/.")
    folders = sorted(
        p for p in root.iterdir() if p.is_dir() and any((p / f).is_file() for f in TOUCHSTONE_FILES)
    )
    if not folders:
        raise InputError(
            f"No model folders with {' or '.join(TOUCHSTONE_FILES)} in {root}; expected "
            "RESULTS/<model_dir>/dsc.csv and nsd.csv."
        )
    unmapped = [p.name for p in folders if p.name not in cards]
    if unmapped:
        raise InputError(
            f"No model card for folder(s) {', '.join(unmapped)} in {root}; add them to the "
            f"models file (it maps: {', '.join(sorted(cards)) or 'nothing'})."
        )
    tables = {p.name: _read_model(p, schema) for p in folders}
    structures = tuple(
        sorted({s for t in tables.values() for df in t.values() for s in df.columns})
    )
    universe = sorted({c for t in tables.values() for df in t.values() for c in df.index})
    profile = PROFILES["touchstone"]
    software = software_versions()
    imported = []
    for folder, per_metric in tables.items():
        card = cards[folder]
        run_id = run_id_for(dataset, card.name, profile)
        manifest = {
            "dataset": {"name": dataset},
            "model": card.as_dict() | {"folder": folder},
            "protocol": profile.params(),
            "source": {"format": "touchstone", "path": str((root / folder).resolve())},
            "structures": list(structures),
            "n_cases": len(universe),
            "software": software,
        }
        store.ensure_run(
            run_id, dataset=dataset, model=card.name, profile=profile.name, manifest=manifest
        )
        records = _case_records(universe, per_metric, structures, folder)
        store.write_cases(run_id, dataset, card.name, records, replace_run=True)
        n_missing = sum(r.status == "missing_prediction" for r in records)
        imported.append(ImportedModel(folder, card.name, run_id, len(records), n_missing))
    n_meta = 0
    if metadata is not None:
        table, column = read_metadata(metadata, id_column=id_column)
        n_meta = store.write_metadata(dataset, table, id_column=column)
    return ImportReport(dataset, tuple(imported), n_meta, structures)


def _read_model(folder: Path, schema: LabelSchema) -> dict[str, pd.DataFrame]:
    """Metric -> table (index case id, one float column per canonical structure)."""
    out: dict[str, pd.DataFrame] = {}
    for filename, metric in TOUCHSTONE_FILES.items():
        path = folder / filename
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path, dtype={"name": str}, encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise InputError(f"Cannot read {path}: {exc}. Check the file.") from exc
        if "name" not in df.columns:
            raise InputError(f"{path} has no 'name' column (the case id); columns: {list(df)}.")
        df = df.set_index("name")
        if df.index.duplicated().any():
            raise InputError(
                f"{path} repeats case ids {list(df.index[df.index.duplicated()][:5])}."
            )
        df.columns = [schema.canonical(str(c), where=f"the header of {path}") for c in df.columns]
        values = df.apply(pd.to_numeric, errors="coerce")
        bad = values.isna() & df.notna()
        bad |= (values < 0) | (values > 1)
        if bad.to_numpy().any():
            case, col = next(iter(bad.stack()[lambda s: s].index))
            raise InputError(
                f"{path}, case {case!r}, column {col!r}: {df.loc[case, col]!r} is not a fraction "
                "in [0, 1]; fix the file."
            )
        out[metric] = values.astype(np.float64)
    return out


def _case_records(
    universe: list[str],
    per_metric: Mapping[str, pd.DataFrame],
    structures: tuple[str, ...],
    folder: str,
) -> list[CaseRecord]:
    """One record per case of ``universe``: per metric (in file order) one row per structure.

    A value is ``ok``; an empty cell (or a structure the file lacks) ``empty_reference``; a
    case without a row in a metric's file ``missing_prediction`` for every structure.
    """
    tables = []  # (metric, values (case x structure, NaN where absent), case has a row)
    for metric, table in per_metric.items():
        values = table.reindex(index=universe, columns=list(structures)).to_numpy(np.float64)
        present = set(table.index)
        has_row = [c in present for c in universe]
        tables.append((metric, values, has_row))
    not_evaluated = {
        (s, m): ScoreRow(s, m, np.nan, "empty_reference", _NOT_EVALUATED)
        for m, _, _ in tables
        for s in structures
    }
    no_row = {
        m: tuple(
            ScoreRow(s, m, np.nan, "missing_prediction",
                     f"no row for this case in {folder}/{m}.csv: no published prediction")
            for s in structures
        )
        for m, _, _ in tables
    }  # fmt: skip
    records = []
    for i, case_id in enumerate(universe):
        rows: list[ScoreRow] = []
        missing_any = present_any = False
        for metric, values, has_row in tables:
            if not has_row[i]:
                missing_any = True
                rows += no_row[metric]
                continue
            present_any = True
            for j, value in enumerate(values[i].tolist()):
                s = structures[j]
                if math.isnan(value):
                    rows.append(not_evaluated[s, metric])
                else:
                    rows.append(ScoreRow(s, metric, value, "ok"))
        status = "ok" if not missing_any else ("partial" if present_any else "missing_prediction")
        records.append(CaseRecord(case_id=case_id, status=status, seconds=0.0, rows=tuple(rows)))
    return records
