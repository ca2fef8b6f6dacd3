"""The service's database handle: the results store's engine plus write transactions.

:meth:`ServiceDB.write` is the one way to change service tables. On SQLite it opens the
transaction with ``BEGIN IMMEDIATE`` (the database's write lock, taken before anything is
read, so a check-then-insert cannot race); on PostgreSQL it is an ordinary transaction in
which callers lock the rows they check (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from assay.service._tables import service_metadata
from assay.store import ResultStore

#: pg_advisory_xact_lock key held while creating the service tables ("svc" in ASCII).
_SCHEMA_LOCK = 0x737663


def iso(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC with seconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class ServiceDB:
    """The service tables in the results database ``db`` (SQLite path or URL).

    ``clock`` returns the current epoch time in seconds (tests pass a controlled clock);
    ``create=False`` refuses a database file that does not exist.
    """

    def __init__(
        self, db: str | Path, *, clock: Callable[[], float] = time.time, create: bool = True
    ) -> None:
        self.results = ResultStore(db, create=create)
        self.engine: Engine = self.results.engine
        self.clock = clock
        with self.engine.connect() as con:
            if self.dialect == "sqlite":
                con.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                con.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            service_metadata.create_all(con)
            con.commit()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    @property
    def location(self) -> str:
        """The database as messages show it (no password)."""
        return self.results.location

    def now(self) -> float:
        """The service clock, in epoch seconds."""
        return float(self.clock())

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (committed on success, rolled back on any exception)."""
        with self.engine.connect() as con:
            if self.dialect == "sqlite":
                con.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection."""
        with self.engine.connect() as con:
            yield con

    def close(self) -> None:
        """Close the connections."""
        self.engine.dispose()
