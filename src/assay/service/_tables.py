"""Tables of the submission service, in the results database (SQLAlchemy Core).

Participant endpoints read only ``svc_released`` (and the public parts of phases and
reference sets); ``svc_case_scores`` is private: only the release gate and audited
organiser routes read it.

* ``svc_teams`` — one row per team; the row a submission locks (PostgreSQL ``FOR UPDATE``)
  so that quota checks of one team are serialized.
* ``svc_tokens`` — SHA-256 digests of bearer tokens, with scope, team, expiry, revocation.
* ``svc_reference_sets`` — a registered reference set: its content digest and its public
  manifest (case ids, grid, labels). Never a path: the files stay with the scorer.
* ``svc_phases`` — a challenge phase: reference set, the cases it uses, metrics, quota and
  privacy policy (JSON), and a version counter the leaderboard is computed from.
* ``svc_submissions`` — one upload: state, error code and reason, archive location,
  idempotency key, final selection.
* ``svc_jobs`` — the work queue: kind, state, lease, heartbeat, attempts, idempotency key.
* ``svc_quota`` — the quota ledger: ``charge``, ``refund`` and ``reject`` entries.
* ``svc_case_scores`` — private per-case scores of a submission (long format).
* ``svc_released`` — what was released of a submission, or of a phase's leaderboard.
* ``svc_audit`` — every release and every organiser read of private rows.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

service_metadata = MetaData()

teams = Table(
    "svc_teams",
    service_metadata,
    Column("team_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String, nullable=False, unique=True),
    Column("created_at", String, nullable=False),
)

tokens = Table(
    "svc_tokens",
    service_metadata,
    Column("token_id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String, nullable=False, unique=True),
    Column("scope", String, nullable=False),
    Column("team_id", Integer, ForeignKey("svc_teams.team_id"), nullable=True),
    Column("label", String, nullable=False, default=""),
    Column("created_at", String, nullable=False),
    Column("expires_at", String, nullable=True),
    Column("revoked_at", String, nullable=True),
)

reference_sets = Table(
    "svc_reference_sets",
    service_metadata,
    Column("name", String, primary_key=True),
    Column("digest", String, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("created_at", String, nullable=False),
)

phases = Table(
    "svc_phases",
    service_metadata,
    Column("name", String, primary_key=True),
    Column("reference_set", String, ForeignKey("svc_reference_sets.name"), nullable=False),
    Column("config", Text, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", String, nullable=False),
)

submissions = Table(
    "svc_submissions",
    service_metadata,
    Column("submission_id", String, primary_key=True),
    Column("team_id", Integer, ForeignKey("svc_teams.team_id"), nullable=False),
    Column("phase", String, ForeignKey("svc_phases.name"), nullable=False),
    Column("state", String, nullable=False),
    Column("error_code", String, nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("archive", Text, nullable=False),
    Column("archive_sha256", String, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("idempotency_key", String, nullable=True),
    Column("label", String, nullable=False, default=""),
    Column("final", Boolean, nullable=False, default=False),
    Column("baseline", Boolean, nullable=False, default=False),
    Column("created_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    UniqueConstraint("team_id", "idempotency_key", name="uq_svc_submission_idempotency"),
)

Index("ix_svc_submissions_team_phase", submissions.c.team_id, submissions.c.phase)

jobs = Table(
    "svc_jobs",
    service_metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=True),
    Column("key", String, nullable=False, unique=True),
    Column("kind", String, nullable=False),
    Column("submission_id", String, ForeignKey("svc_submissions.submission_id"), nullable=True),
    Column("phase", String, nullable=False),
    Column("state", String, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_owner", String, nullable=True),
    Column("lease_expires_at", Double, nullable=True),
    Column("heartbeat_at", Double, nullable=True),
    Column("error", Text, nullable=False, default=""),
    Column("created_at", String, nullable=False),
    Column("finished_at", String, nullable=True),
)

Index("ix_svc_jobs_state_kind", jobs.c.state, jobs.c.kind)

quota = Table(
    "svc_quota",
    service_metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("team_id", Integer, ForeignKey("svc_teams.team_id"), nullable=False),
    Column("phase", String, nullable=False),
    Column("submission_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("at", Double, nullable=False),
)

Index("ix_svc_quota_team_phase", quota.c.team_id, quota.c.phase)

case_scores = Table(
    "svc_case_scores",
    service_metadata,
    Column("submission_id", String, ForeignKey("svc_submissions.submission_id"), primary_key=True),
    Column("case_id", String, primary_key=True),
    Column("structure", String, primary_key=True),
    Column("metric", String, primary_key=True),
    Column("value", Double, nullable=True),
    Column("status", String, nullable=False),
)

released = Table(
    "svc_released",
    service_metadata,
    Column("key", String, primary_key=True),
    Column("phase", String, nullable=False),
    Column("submission_id", String, nullable=True),
    Column("state", String, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    Column("payload", Text, nullable=False),
    Column("released_at", String, nullable=False),
)

audit = Table(
    "svc_audit",
    service_metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("at", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("action", String, nullable=False),
    Column("subject", String, nullable=False),
    Column("detail", Text, nullable=False),
)
