"""Tables of the results database (SQLAlchemy Core; SQLite or PostgreSQL).

* ``runs`` — one row per (dataset, model, metric protocol) with its JSON manifest.
* ``cases`` — one row per scored case of a run: case status, message, flags, timing. A case
  row and its score rows are written in one transaction, so a case is either fully stored or
  absent, which is what makes runs resumable.
* ``case_metadata`` — per-case metadata of a dataset (age, sex, scanner, ...) as JSON.
* ``lesions`` — detection runs only: one row per reference lesion and per retained predicted
  lesion of a (case, tumour type), written in the case's transaction.
* ``scores`` — the long-format score rows of DESIGN.md §2: one per (case, structure, metric),
  with its status. NaN is stored as NULL (its status says why); ±inf is stored as such.

Text columns have no length limit (PostgreSQL enforces VARCHAR lengths, SQLite does not, and
names come from users and file names), and floats are IEEE-754 binary64 on every backend
(``Double``: DOUBLE PRECISION on PostgreSQL, REAL affinity on SQLite), so both keep the same
rows.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("dataset", String, nullable=False),
    Column("model", String, nullable=False),
    Column("profile", String, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("case_id", String, primary_key=True),
    Column("status", String, nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("flags", String, nullable=False, default=""),
    Column("seconds", Double, nullable=False),
    Column("finished_at", String, nullable=False),
)

scores = Table(
    "scores",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("case_id", String, primary_key=True),
    Column("structure", String, primary_key=True),
    Column("metric", String, primary_key=True),
    Column("dataset", String, nullable=False),
    Column("model", String, nullable=False),
    Column("value", Double, nullable=True),
    Column("status", String, nullable=False),
    Column("message", Text, nullable=False, default=""),
)

Index("ix_scores_dataset_model", scores.c.dataset, scores.c.model)

lesions = Table(
    "lesions",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("case_id", String, primary_key=True),
    Column("structure", String, primary_key=True),
    Column("kind", String, primary_key=True),  # reference | predicted
    Column("lesion", Integer, primary_key=True),
    Column("voxels", Integer, nullable=False),
    Column("volume_ml", Double, nullable=False),
    Column("diameter_mm", Double, nullable=True),
    Column("equivalent_diameter_mm", Double, nullable=False),
    Column("status", String, nullable=False),
    Column("dice", Double, nullable=True),
    Column("confidence", Double, nullable=True),
    Column("matched", String, nullable=False, default=""),
)

case_metadata = Table(
    "case_metadata",
    metadata,
    Column("dataset", String, primary_key=True),
    Column("case_id", String, primary_key=True),
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

#: Column order of exported lesion tables.
LESION_COLUMNS = (
    "run_id",
    "dataset",
    "model",
    "case_id",
    "structure",
    "kind",
    "lesion",
    "voxels",
    "volume_ml",
    "diameter_mm",
    "equivalent_diameter_mm",
    "status",
    "dice",
    "confidence",
    "matched",
)
