"""The results store: open a database, register runs, commit cases, read scores back."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Engine,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from assay.errors import InputError, StoreError
from assay.scoring import CaseRecord
from assay.store._schema import (
    LESION_COLUMNS,
    SCORE_COLUMNS,
    case_metadata,
    cases,
    lesions,
    metadata,
    runs,
    scores,
)


def database_url(db: str | Path) -> str:
    """An SQLAlchemy URL for ``db``: URLs pass through, anything else is an SQLite file path
    (its folder is created if needed)."""
    text = str(db)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the folder {path.parent} for the results database {path}: "
            f"{exc.strerror or exc}. Pass --db a path in a writable folder."
        ) from exc
    return f"sqlite:///{path}"


#: pg_advisory_xact_lock key held while creating the tables ("assay" in ASCII).
_SCHEMA_LOCK = 0x6173736179

#: Backends assay's schema and queries are written and tested for.
_BACKENDS = ("sqlite", "postgresql")

#: What to install when a database driver (the part after ``+`` in a URL) is missing.
_DRIVER_PACKAGES = {
    "psycopg": 'pip install "assay[postgres]" (psycopg 3)',
    "psycopg2": (
        "pip install psycopg2-binary, or use postgresql+psycopg://... after pip install "
        '"assay[postgres]"'
    ),
    "pg8000": "pip install pg8000",
}

#: Seconds an SQLite connection waits for another process's write lock before failing.
_SQLITE_BUSY_TIMEOUT_S = 60.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultStore:
    """A results database (SQLite file by default, any SQLAlchemy URL otherwise).

    Parameters
    ----------
    db : a file path (SQLite) or an SQLAlchemy URL such as ``postgresql+psycopg://...``.
    create : whether a missing SQLite file may be created (False for read-only commands).
        With True the database must be writable: that is checked when it is opened.

    Raises
    ------
    InputError
        A malformed or unsupported URL, or (``create=False``) no database file.
    StoreError
        The database cannot be opened or (``create=True``) written: a read-only or locked
        file, an unreachable server, a driver that is not installed.

    Notes
    -----
    Opening creates any missing table. Several processes may open a new database at once:
    on SQLite the tables are created under the database's write lock (``BEGIN IMMEDIATE``),
    on PostgreSQL under an advisory lock, so exactly one creates them and the others find
    them.
    """

    def __init__(self, db: str | Path = "assay.db", *, create: bool = True) -> None:
        if "://" not in str(db) and Path(db).expanduser().is_dir():
            raise InputError(
                f"--db {db} is a folder; pass the database file in it, e.g. "
                f"{Path(db) / 'assay.db'}."
            )
        if not create and "://" not in str(db) and not Path(db).expanduser().is_file():
            raise InputError(f"No results database at {db}; pass the --db used with `assay score`.")
        self.url = database_url(db)
        self._shown = _shown_url(self.url)
        self.engine: Engine = _create_engine(self.url, self._shown)
        with self._guard("open", every=True):
            self._create_schema(write=create)

    def _create_schema(self, *, write: bool) -> None:
        """Create missing tables; with ``write``, also prove the database is writable."""
        dialect = self.engine.dialect.name
        with self.engine.connect() as con:
            if not write and set(metadata.tables) <= set(inspect(con).get_table_names()):
                return  # a complete database opened for reading: take no write lock
            con.rollback()
            if dialect == "sqlite":
                # The write lock, taken before looking for the tables: processes opening a
                # new file at once wait here for each other instead of racing to CREATE.
                con.exec_driver_sql("BEGIN IMMEDIATE")
            elif dialect == "postgresql":
                # Processes opening a new database at once would race to create the
                # tables (duplicate-type errors); the lock serializes them until commit.
                con.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            metadata.create_all(con)
            if dialect == "sqlite" and write:
                # Prove the file is writable now, not at the first case an hour later: a
                # read-only file takes BEGIN IMMEDIATE but refuses any write (same value).
                version = con.exec_driver_sql("PRAGMA user_version").scalar()
                con.exec_driver_sql(f"PRAGMA user_version = {int(version or 0)}")
            con.commit()

    @contextmanager
    def _guard(self, action: str, *, every: bool = False) -> Iterator[None]:
        """Database errors from the environment (``every``: all of them, e.g. a file that is
        not a database) as one-line :class:`StoreError` messages that say what to do."""
        try:
            yield
        except SQLAlchemyError as exc:
            if not every and not _environmental(exc):
                raise  # a bug in a query, or rows that break a constraint: not the user's
            raise _store_error(self._shown, action, exc) from exc

    @property
    def location(self) -> str:
        """The database as messages show it: an SQLite file's path, a URL without password."""
        return self._shown

    def close(self) -> None:
        """Close the database connections (the store can be used again; it reconnects)."""
        self.engine.dispose()

    def _sorted(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """``column`` for ORDER BY in byte (code point) order, as SQLite and Python sort,
        whatever the PostgreSQL database's collation."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    # -- runs -------------------------------------------------------------------------------
    def ensure_run(
        self, run_id: str, *, dataset: str, model: str, profile: str, manifest: Mapping[str, Any]
    ) -> None:
        """Create the run, or refresh its manifest if it exists (a resumed run)."""
        text = json.dumps(manifest, sort_keys=True, default=str)
        with self._guard(f"store run {run_id} in"), self.engine.begin() as con:
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
        with self._guard(f"delete run {run_id} from"), self.engine.begin() as con:
            con.execute(delete(scores).where(scores.c.run_id == run_id))
            con.execute(delete(lesions).where(lesions.c.run_id == run_id))
            con.execute(delete(cases).where(cases.c.run_id == run_id))

    def manifest(self, run_id: str) -> dict[str, Any] | None:
        """The stored manifest of a run, or None if the run does not exist."""
        with self._guard("read"), self.engine.connect() as con:
            row = con.execute(select(runs.c.manifest).where(runs.c.run_id == run_id)).first()
        return None if row is None else dict(json.loads(row.manifest))

    def delete_cases(self, run_id: str, case_ids: Sequence[str]) -> None:
        """Remove some cases (and their scores) of a run."""
        with self._guard(f"delete cases of run {run_id} from"), self.engine.begin() as con:
            for chunk in range(0, len(case_ids), 500):
                ids = list(case_ids[chunk : chunk + 500])
                con.execute(
                    delete(scores).where(scores.c.run_id == run_id, scores.c.case_id.in_(ids))
                )
                con.execute(
                    delete(lesions).where(lesions.c.run_id == run_id, lesions.c.case_id.in_(ids))
                )
                con.execute(delete(cases).where(cases.c.run_id == run_id, cases.c.case_id.in_(ids)))

    def runs(self) -> pd.DataFrame:
        """All runs with their manifests parsed."""
        with self._guard("read"), self.engine.connect() as con:
            df = pd.read_sql(select(runs).order_by(self._sorted(runs.c.run_id)), con)
        df["manifest"] = [json.loads(m) for m in df["manifest"]]
        return df

    # -- cases ------------------------------------------------------------------------------
    def stored_cases(self, run_id: str) -> dict[str, str]:
        """Case id -> case status for every case stored in a run."""
        with self._guard("read"), self.engine.connect() as con:
            rows = con.execute(
                select(cases.c.case_id, cases.c.status).where(cases.c.run_id == run_id)
            )
            return {r.case_id: r.status for r in rows}

    def write_case(self, run_id: str, dataset: str, model: str, record: CaseRecord) -> None:
        """Store one case and its score rows in a single transaction (replacing old ones)."""
        self.write_cases(run_id, dataset, model, [record])

    def write_cases(
        self,
        run_id: str,
        dataset: str,
        model: str,
        records: Sequence[CaseRecord],
        *,
        replace_run: bool = False,
    ) -> None:
        """Store several cases in one transaction (replacing old ones): all or none.

        Parameters
        ----------
        run_id, dataset, model : the run the cases belong to.
        records : the cases; a case given twice is stored as its last record.
        replace_run : also remove every other stored case of the run (a whole run replaced,
            e.g. by an import), in the same transaction.

        Notes
        -----
        The rows go in as two bulk inserts (one for the cases, one for their scores), so a
        whole run costs one transaction, not one statement per case.
        """
        latest = {r.case_id: r for r in records}
        if not latest and not replace_run:
            return
        what = f"case {next(iter(latest))!r}" if len(latest) == 1 else f"{len(latest)} cases"
        now = _now()
        texts: dict[str, str] = {}  # messages repeat: each made storable once

        def storable(message: str) -> str:
            out = texts.get(message)
            if out is None:
                out = texts[message] = _text(message)
            return out

        case_rows = [
            (run_id, r.case_id, r.status, storable(r.message), ",".join(r.flags), r.seconds, now)
            for r in latest.values()
        ]
        score_rows = [
            (run_id, record.case_id, r.structure, r.metric, dataset, model, _value(r.value),
             r.status, storable(r.message))
            for record in latest.values()
            for r in record.rows
        ]  # fmt: skip
        lesion_rows = [
            (run_id, record.case_id, x.structure, x.kind, x.index, x.voxels, x.volume_ml,
             _value(x.diameter_mm), x.equivalent_diameter_mm, x.status, _value(x.dice),
             _value(x.confidence), x.matched)
            for record in latest.values()
            for x in record.lesions
        ]  # fmt: skip
        with self._guard(f"store {what} in"), self.engine.begin() as con:
            if replace_run:
                con.execute(delete(scores).where(scores.c.run_id == run_id))
                con.execute(delete(lesions).where(lesions.c.run_id == run_id))
                con.execute(delete(cases).where(cases.c.run_id == run_id))
            else:
                ids = list(latest)
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    con.execute(
                        delete(scores).where(scores.c.run_id == run_id, scores.c.case_id.in_(part))
                    )
                    con.execute(
                        delete(lesions).where(
                            lesions.c.run_id == run_id, lesions.c.case_id.in_(part)
                        )
                    )
                    con.execute(
                        delete(cases).where(cases.c.run_id == run_id, cases.c.case_id.in_(part))
                    )
            _insert_many(con, cases, _CASE_COLUMNS, case_rows)
            _insert_many(con, scores, _SCORE_ROW_COLUMNS, score_rows)
            _insert_many(con, lesions, _LESION_ROW_COLUMNS, lesion_rows)

    def cases(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored case rows, optionally for some runs only."""
        query = select(cases)
        if run_ids is not None:
            query = query.where(cases.c.run_id.in_(list(run_ids)))
        with self._guard("read"), self.engine.connect() as con:
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
        with self._guard(f"store metadata of {dataset!r} in"), self.engine.begin() as con:
            con.execute(delete(case_metadata).where(case_metadata.c.dataset == dataset))
            if rows:
                con.execute(insert(case_metadata), rows)
        return len(rows)

    def metadata(self, dataset: str) -> pd.DataFrame:
        """A dataset's per-case metadata: ``case_id`` plus one column per field."""
        with self._guard("read"), self.engine.connect() as con:
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
        with self._guard("read"), self.engine.connect() as con:
            df = pd.read_sql(query, con)
        df["value"] = df["value"].astype("float64")
        return df

    def lesions(
        self, *, run_ids: Sequence[str] | None = None, dataset: str | None = None
    ) -> pd.DataFrame:
        """Lesion rows of detection runs (``LESION_COLUMNS``); NULL values read as NaN."""
        query = select(
            *(lesions.c[c] for c in _LESION_ROW_COLUMNS[:2]),
            runs.c.dataset,
            runs.c.model,
            *(lesions.c[c] for c in _LESION_ROW_COLUMNS[2:]),
        ).join(runs, runs.c.run_id == lesions.c.run_id)
        if run_ids is not None:
            query = query.where(lesions.c.run_id.in_(list(run_ids)))
        if dataset is not None:
            query = query.where(runs.c.dataset == dataset)
        order = (lesions.c.run_id, lesions.c.case_id, lesions.c.structure, lesions.c.kind)
        query = query.order_by(*(self._sorted(c) for c in order), lesions.c.lesion)
        with self._guard("read"), self.engine.connect() as con:
            df = pd.read_sql(query, con)
        for column in ("volume_ml", "diameter_mm", "equivalent_diameter_mm", "dice", "confidence"):
            df[column] = df[column].astype("float64")
        return df[list(LESION_COLUMNS)]


#: Column order of the tuples :meth:`ResultStore.write_cases` inserts.
_CASE_COLUMNS = ("run_id", "case_id", "status", "message", "flags", "seconds", "finished_at")
_SCORE_ROW_COLUMNS = (
    "run_id", "case_id", "structure", "metric", "dataset", "model", "value", "status", "message",
)  # fmt: skip
_LESION_ROW_COLUMNS = (
    "run_id", "case_id", "structure", "kind", "lesion", "voxels", "volume_ml", "diameter_mm",
    "equivalent_diameter_mm", "status", "dice", "confidence", "matched",
)  # fmt: skip


def _insert_many(
    con: Any, table: Any, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) with one DB-API ``executemany``.

    The statement is compiled once for the connection's dialect and the rows go to the
    driver as they are: SQLAlchemy's per-row parameter processing (which the column types
    here, text and binary64, do not need) costs more than the insert itself.
    """
    if not rows:
        return
    compiled = insert(table).compile(dialect=con.dialect, column_keys=list(columns))
    if compiled.positional:
        order = [columns.index(k) for k in compiled.positiontup or ()]
        same = order == list(range(len(columns)))
        params: Sequence[Any] = rows if same else [tuple(r[i] for i in order) for r in rows]
    else:
        params = [dict(zip(columns, r, strict=True)) for r in rows]
    con.exec_driver_sql(str(compiled), params)


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


def _use_wal(cur: sqlite3.Cursor) -> None:
    """Switch the file to the WAL journal, waiting as long as the busy timeout for the lock.

    WAL is a property of the file, so once it is set nothing is locked. The switch itself
    needs the file to itself and SQLite fails it at once (``database is locked``, no busy
    wait) when another connection is busy, as when processes open a new database together:
    retry with backoff, and stop as soon as one of them has switched it. A read-only file
    keeps its journal mode.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    pause = 0.001
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            code = str(getattr(exc, "sqlite_errorname", ""))
            if code.startswith("SQLITE_READONLY"):
                return
            if not code.startswith("SQLITE_BUSY") or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL journal: readers never block the writer; synchronous=NORMAL is crash-safe in WAL."""
    cur = dbapi_connection.cursor()
    _use_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _shown_url(url: str) -> str:
    """``url`` as it may be printed: an SQLite file as its path, a password as ``***``."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _create_engine(url: str, shown: str) -> Engine:
    """An engine for ``url``, or a one-line error naming what to change or install."""
    example = "an SQLite file path or postgresql+psycopg://USER@HOST/DB"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InputError(
            f"Invalid results database URL {shown!r} ({exc}); give --db {example}."
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        raise InputError(
            f"Unknown database scheme 'postgres' in {shown!r}; write postgresql+psycopg:// "
            "(SQLAlchemy's name for PostgreSQL)."
        )
    if backend not in _BACKENDS:
        raise InputError(
            f"Unsupported results database {shown!r}: assay stores results in SQLite or "
            f"PostgreSQL, not {backend}; give --db {example}."
        )
    try:
        dialect = parsed.get_dialect()
        driver = driver or str(dialect.driver)  # the backend's default driver
        if getattr(dialect, "is_async", False):
            raise InputError(
                f"The database driver {driver!r} in {shown!r} is asynchronous; assay needs a "
                f"synchronous one: give --db {example}."
            )
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        advice = _DRIVER_PACKAGES.get(driver, f"pip install the {driver!r} package")
        raise StoreError(
            f"The database driver {driver!r} for {shown!r} is not installed "
            f"(No module named {exc.name!r}); {advice}."
        ) from exc
    except SQLAlchemyError as exc:  # an unknown driver name
        raise InputError(
            f"Cannot use the results database URL {shown!r}: {_first_line(exc)}; give --db "
            f"{example}."
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: SQLSTATE classes and codes of PostgreSQL errors that the environment causes (connection,
#: resources, shutdown, no privilege, a read-only transaction or server).
_PG_ENVIRONMENT = ("08", "53", "57", "58", "42501", "25006")


def _environmental(exc: SQLAlchemyError) -> bool:
    """Whether a database error comes from the environment (a file, a lock, a server, a
    privilege) rather than from assay's own queries or rows."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    return sqlstate.startswith(_PG_ENVIRONMENT)


def _store_error(shown: str, action: str, exc: SQLAlchemyError) -> StoreError:
    """One line for a database error: what failed, on which database, and what to do."""
    detail = _first_line(exc)
    code = str(getattr(getattr(exc, "orig", None), "sqlite_errorname", ""))
    where = f"the results database {shown}"
    if code.startswith("SQLITE_READONLY"):
        return StoreError(
            f"Cannot {action} {where}: it is read-only ({detail}). Make the file and its "
            "folder writable (SQLite writes -wal and -shm files beside it), or pass --db "
            "another file."
        )
    if code.startswith("SQLITE_CANTOPEN"):
        return StoreError(
            f"Cannot {action} {where} ({detail}): check that the file and its folder exist "
            "and are readable and writable, or pass --db another file."
        )
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            f"Cannot {action} {where}: another process held its lock for more than "
            f"{_SQLITE_BUSY_TIMEOUT_S:g} s ({detail}). Retry when it has finished, or use "
            "PostgreSQL for many concurrent writers."
        )
    if code.startswith("SQLITE_NOTADB"):
        return StoreError(
            f"Cannot {action} {where}: it is not an SQLite database ({detail}); pass --db a "
            "database written by assay, or a new file."
        )
    if code.startswith("SQLITE_FULL"):
        return StoreError(f"Cannot {action} {where}: the disk is full ({detail}).")
    return StoreError(
        f"Cannot {action} {where}: {type(exc).__name__}: {detail}. Check the path or URL "
        "given with --db."
    )
