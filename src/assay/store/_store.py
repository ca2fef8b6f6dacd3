"""The results store: open a database, register runs, commit cases, read scores back."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from assay.errors import InputError
from assay.scoring import CaseRecord
from assay.store._schema import SCORE_COLUMNS, case_metadata, cases, metadata, runs, scores


def database_url(db: str | Path) -> str:
    """An SQLAlchemy URL for ``db``: URLs pass through, anything else is an SQLite file path
    (its folder is created if needed)."""
    text = str(db)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


#: pg_advisory_xact_lock key held while creating the tables ("assay" in ASCII).
_SCHEMA_LOCK = 0x6173736179


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultStore:
    """A results database (SQLite file by default, any SQLAlchemy URL otherwise).

    Parameters
    ----------
    db : a file path (SQLite) or an SQLAlchemy URL such as ``postgresql+psycopg://...``.
    create : whether a missing SQLite file may be created (False for read-only commands).
    """

    def __init__(self, db: str | Path = "assay.db", *, create: bool = True) -> None:
        if not create and "://" not in str(db) and not Path(db).expanduser().is_file():
            raise InputError(f"No results database at {db}; pass the --db used with `assay score`.")
        self.url = database_url(db)
        try:
            self.engine: Engine = create_engine(self.url, future=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            with self.engine.begin() as con:
                if self.engine.dialect.name == "postgresql":
                    # Processes opening a new database at once would race to create the
                    # tables (duplicate-type errors); the lock serializes them until commit.
                    con.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
                metadata.create_all(con)
        except SQLAlchemyError as exc:
            raise InputError(
                f"Cannot open results database {self.url!r}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}. Check the path or URL given with --db."
            ) from exc

    def close(self) -> None:
        """Close the database connections (the store can be used again; it reconnects)."""
        self.engine.dispose()

    def _sorted(self, column: Any) -> ColumnElement[Any]:
        """``column`` for ORDER BY in byte (code point) order, as SQLite and Python sort,
        whatever the PostgreSQL database's collation."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    # -- runs -------------------------------------------------------------------------------
    def ensure_run(
        self, run_id: str, *, dataset: str, model: str, profile: str, manifest: Mapping[str, Any]
    ) -> None:
        """Create the run, or refresh its manifest if it exists (a resumed run)."""
        text = json.dumps(manifest, sort_keys=True, default=str)
        with self.engine.begin() as con:
            exists = con.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
            if exists:
                con.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id)
                    .values(manifest=text, updated_at=_now())
                )
            else:
                con.execute(
                    insert(runs).values(
                        run_id=run_id,
                        dataset=dataset,
                        model=model,
                        profile=profile,
                        manifest=text,
                        created_at=_now(),
                        updated_at=_now(),
                    )
                )

    def delete_run(self, run_id: str) -> None:
        """Remove every case and score of a run (the run row stays)."""
        with self.engine.begin() as con:
            con.execute(delete(scores).where(scores.c.run_id == run_id))
            con.execute(delete(cases).where(cases.c.run_id == run_id))

    def manifest(self, run_id: str) -> dict[str, Any] | None:
        """The stored manifest of a run, or None if the run does not exist."""
        with self.engine.connect() as con:
            row = con.execute(select(runs.c.manifest).where(runs.c.run_id == run_id)).first()
        return None if row is None else dict(json.loads(row.manifest))

    def delete_cases(self, run_id: str, case_ids: Sequence[str]) -> None:
        """Remove some cases (and their scores) of a run."""
        with self.engine.begin() as con:
            for chunk in range(0, len(case_ids), 500):
                ids = list(case_ids[chunk : chunk + 500])
                con.execute(
                    delete(scores).where(scores.c.run_id == run_id, scores.c.case_id.in_(ids))
                )
                con.execute(delete(cases).where(cases.c.run_id == run_id, cases.c.case_id.in_(ids)))

    def runs(self) -> pd.DataFrame:
        """All runs with their manifests parsed."""
        with self.engine.connect() as con:
            df = pd.read_sql(select(runs).order_by(self._sorted(runs.c.run_id)), con)
        df["manifest"] = [json.loads(m) for m in df["manifest"]]
        return df

    # -- cases ------------------------------------------------------------------------------
    def stored_cases(self, run_id: str) -> dict[str, str]:
        """Case id -> case status for every case stored in a run."""
        with self.engine.connect() as con:
            rows = con.execute(
                select(cases.c.case_id, cases.c.status).where(cases.c.run_id == run_id)
            )
            return {r.case_id: r.status for r in rows}

    def write_case(self, run_id: str, dataset: str, model: str, record: CaseRecord) -> None:
        """Store one case and its score rows in a single transaction (replacing old ones)."""
        self.write_cases(run_id, dataset, model, [record])

    def write_cases(
        self, run_id: str, dataset: str, model: str, records: Sequence[CaseRecord]
    ) -> None:
        """Store several cases in one transaction (replacing old ones): all or none."""
        with self.engine.begin() as con:
            for record in records:
                ResultStore._write_case(con, run_id, dataset, model, record)

    @staticmethod
    def _write_case(con: Any, run_id: str, dataset: str, model: str, record: CaseRecord) -> None:
        case_filter = and_(cases.c.run_id == run_id, cases.c.case_id == record.case_id)
        score_filter = and_(scores.c.run_id == run_id, scores.c.case_id == record.case_id)
        values = [
            {
                "run_id": run_id,
                "case_id": record.case_id,
                "structure": r.structure,
                "metric": r.metric,
                "dataset": dataset,
                "model": model,
                "value": _value(r.value),
                "status": r.status,
                "message": _text(r.message),
            }
            for r in record.rows
        ]
        con.execute(delete(scores).where(score_filter))
        con.execute(delete(cases).where(case_filter))
        con.execute(
            insert(cases).values(
                run_id=run_id,
                case_id=record.case_id,
                status=record.status,
                message=_text(record.message),
                flags=",".join(record.flags),
                seconds=record.seconds,
                finished_at=_now(),
            )
        )
        if values:
            con.execute(insert(scores), values)

    def cases(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored case rows, optionally for some runs only."""
        query = select(cases)
        if run_ids is not None:
            query = query.where(cases.c.run_id.in_(list(run_ids)))
        with self.engine.connect() as con:
            return pd.read_sql(
                query.order_by(self._sorted(cases.c.run_id), self._sorted(cases.c.case_id)), con
            )

    # -- case metadata ----------------------------------------------------------------------
    def write_metadata(self, dataset: str, table: pd.DataFrame, *, id_column: str) -> int:
        """Replace a dataset's per-case metadata with ``table`` (one row per case)."""
        rows = [
            {
                "dataset": dataset,
                "case_id": str(rec[id_column]),
                "data": json.dumps(
                    {k: (None if pd.isna(v) else v) for k, v in rec.items() if k != id_column},
                    default=str,
                ),
            }
            for rec in table.to_dict(orient="records")
        ]
        with self.engine.begin() as con:
            con.execute(delete(case_metadata).where(case_metadata.c.dataset == dataset))
            if rows:
                con.execute(insert(case_metadata), rows)
        return len(rows)

    def metadata(self, dataset: str) -> pd.DataFrame:
        """A dataset's per-case metadata: ``case_id`` plus one column per field."""
        with self.engine.connect() as con:
            rows = con.execute(
                select(case_metadata.c.case_id, case_metadata.c.data)
                .where(case_metadata.c.dataset == dataset)
                .order_by(self._sorted(case_metadata.c.case_id))
            ).all()
        return pd.DataFrame([{"case_id": r.case_id, **json.loads(r.data)} for r in rows])

    # -- scores -----------------------------------------------------------------------------
    def scores(
        self,
        *,
        dataset: str | None = None,
        model: str | None = None,
        profile: str | None = None,
        run_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Long-format scores (``SCORE_COLUMNS`` plus ``profile``); NULL values read as NaN."""
        query = select(*(scores.c[c] for c in SCORE_COLUMNS), runs.c.profile).join(
            runs, runs.c.run_id == scores.c.run_id
        )
        if dataset is not None:
            query = query.where(scores.c.dataset == dataset)
        if model is not None:
            query = query.where(scores.c.model == model)
        if profile is not None:
            query = query.where(runs.c.profile == profile)
        if run_ids is not None:
            query = query.where(scores.c.run_id.in_(list(run_ids)))
        order = ("dataset", "model", "case_id", "structure", "metric")
        query = query.order_by(*(self._sorted(scores.c[c]) for c in order))
        with self.engine.connect() as con:
            df = pd.read_sql(query, con)
        df["value"] = df["value"].astype("float64")
        return df


def _text(message: str) -> str:
    """Free text made storable: undecodable file-name bytes and NUL characters (which
    PostgreSQL text cannot hold) become backslash escapes, on every backend alike."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _value(value: float) -> float | None:
    """A score as stored: NaN as NULL, -0.0 as 0.0 (SQLite cannot keep the sign of zero, so
    every backend drops it), anything else as the same binary64."""
    if math.isnan(value):
        return None
    return 0.0 if value == 0 else float(value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL journal: readers never block the writer; synchronous=NORMAL is crash-safe in WAL."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
