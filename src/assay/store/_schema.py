"""Tables of the results database (SQLAlchemy Core; SQLite or PostgreSQL).

* ``runs`` — one row per (dataset, model, metric protocol) with its JSON manifest.
* ``cases`` — one row per scored case of a run: case status, message, flags, timing. A case
  row and its score rows are written in one transaction, so a case is either fully stored or
  absent, which is what makes runs resumable.
* ``case_metadata`` — per-case metadata of a dataset (age, sex, scanner, ...) as JSON.
* ``scores`` — the long-format score rows of DESIGN.md §2: one per (case, structure, metric),
  with its status. NaN is stored as NULL (its status says why); ±inf is stored as such.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id"), primary_key=True),
    Column("case_id", String(200), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("flags", String(200), nullable=False, default=""),
    Column("seconds", Float, nullable=False),
    Column("finished_at", String(40), nullable=False),
)

scores = Table(
    "scores",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id"), primary_key=True),
    Column("case_id", String(200), primary_key=True),
    Column("structure", String(100), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("value", Float, nullable=True),
    Column("status", String(32), nullable=False),
    Column("message", Text, nullable=False, default=""),
)

Index("ix_scores_dataset_model", scores.c.dataset, scores.c.model)

case_metadata = Table(
    "case_metadata",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("case_id", String(200), primary_key=True),
    Column("data", Text, nullable=False),  # JSON object: column -> value
)

#: Column order of exported score tables.
SCORE_COLUMNS = (
    "run_id",
    "dataset",
    "model",
    "case_id",
    "structure",
    "metric",
    "value",
    "status",
    "message",
)
