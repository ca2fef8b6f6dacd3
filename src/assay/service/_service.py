"""The submission service's operations on its database (no HTTP here; see ``_app``).

Submission states (``STATES``) and who sets them::

    validating -> queued -> scoring -> released | withheld | pending_approval -> released
             \\-> rejected (validation code; free, counts as an attempt)
    any active -> cancelled (refunded before scoring, charged after)
    scoring -> failed_participant (charged) | failed_infra (refunded after the retries)

Quota: recording the submission, charging it and queueing its first job happen in one
transaction (:meth:`Service.submit`), under the team's lock, so concurrent uploads can never
exceed a quota and no submission exists without its job. Whatever touched the reference data
is charged; validation rejects and infrastructure failures are refunded.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update

from assay.errors import AssayError
from assay.service._db import ServiceDB, iso
from assay.service._manifest import manifest_json, phase_manifest
from assay.service._phase import PhaseConfig, check_name, phase_from_dict
from assay.service._release import leaderboard, submission_release
from assay.service._tables import (
    audit,
    case_scores,
    jobs,
    phases,
    quota,
    reference_sets,
    released,
    submissions,
    teams,
)

#: Every submission state.
STATES = (
    "validating",
    "queued",
    "scoring",
    "released",
    "withheld",
    "pending_approval",
    "rejected",
    "cancelled",
    "failed_participant",
    "failed_infra",
    "not_released",
)
#: States that hold a team's active-submission slot.
ACTIVE = ("validating", "queued", "scoring")
#: States after which nothing more happens to a submission.
FINAL_STATES = (
    "released",
    "withheld",
    "rejected",
    "cancelled",
    "failed_participant",
    "failed_infra",
    "not_released",
)
#: Job kinds: upload validation (API side), scoring (reads the reference), leaderboard.
JOB_KINDS = ("validate", "score", "leaderboard")
#: Attempts a job gets before its submission fails as an infrastructure failure.
MAX_ATTEMPTS = 3


class ServiceError(AssayError):
    """An operation the caller may not do now: HTTP ``status``, a ``code`` and one line."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def metadata_key(reference_set: str) -> str:
    """Under which dataset name a reference set's private case metadata is stored."""
    return f"service:{reference_set}"


def not_found(what: str = "submission", name: str | None = None, hint: str = "") -> ServiceError:
    """The one answer for unknown and forbidden ids alike (it names the id asked for, never
    whether it exists for someone else)."""
    shown = f" {name!r}" if name is not None else ""
    return ServiceError(404, "not_found", f"No such {what}{shown}{hint}.")


class Service:
    """Operations of the service on ``db``; ``storage`` holds the quarantine folder."""

    def __init__(self, db: ServiceDB, storage: str | Path | None = None) -> None:
        self.db = db
        self.storage = Path(storage) if storage is not None else None

    @property
    def quarantine(self) -> Path:
        """Where uploads are streamed and kept (created on first use)."""
        if self.storage is None:
            raise ServiceError(500, "no_storage", "This service has no storage folder.")
        folder = self.storage / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def clean_partial_uploads(self) -> int:
        """Delete the service's own unfinished upload files (``*.part``), e.g. after a
        restart mid-upload; returns how many."""
        if self.storage is None:
            return 0
        n = 0
        for part in self.quarantine.glob("*.part"):
            part.unlink(missing_ok=True)
            n += 1
        return n

    # -- organiser ------------------------------------------------------------------------
    def add_team(self, name: str) -> int:
        """Create a team (its name must be new); returns its id."""
        check_name(name, "team name")
        with self.db.write() as con:
            if con.execute(select(teams.c.team_id).where(teams.c.name == name)).first():
                raise ServiceError(409, "exists", f"Team {name!r} exists already.")
            key = con.execute(
                insert(teams).values(name=name, created_at=iso(self.db.now()))
            ).inserted_primary_key
        assert key is not None
        return int(key[0])

    def team_id(self, name: str) -> int:
        """The id of team ``name``."""
        with self.db.read() as con:
            found = con.execute(select(teams.c.team_id).where(teams.c.name == name)).scalar()
        if found is None:
            raise ServiceError(404, "not_found", f"No team {name!r}.")
        return int(found)

    def register_reference(self, manifest: Mapping[str, Any]) -> None:
        """Register (or update) a reference set's digest and public manifest."""
        name = check_name(str(manifest["name"]), "reference set name")
        values = {"digest": str(manifest["digest"]), "manifest": manifest_json(manifest)}
        with self.db.write() as con:
            if con.execute(
                select(reference_sets.c.name).where(reference_sets.c.name == name)
            ).first():
                con.execute(
                    update(reference_sets).where(reference_sets.c.name == name).values(**values)
                )
            else:
                con.execute(
                    insert(reference_sets).values(
                        name=name, created_at=iso(self.db.now()), **values
                    )
                )

    def put_phase(self, phase: PhaseConfig) -> None:
        """Create or update a phase (its reference set must be registered, and must have
        every case the phase lists)."""
        manifest = self.reference_manifest(phase.reference_set)
        missing = sorted(set(phase.cases or ()) - set(manifest["cases"]))
        if missing:
            raise ServiceError(
                422,
                "unknown_case",
                f"Phase {phase.name!r} lists cases that reference set {phase.reference_set!r} "
                f"does not have: {', '.join(missing[:5])}.",
            )
        config = json.dumps(phase.as_dict(), sort_keys=True)
        with self.db.write() as con:
            row = con.execute(
                select(phases.c.name, phases.c.config).where(phases.c.name == phase.name)
            ).first()
            if row:
                self._check_change(con, phase, json.loads(row.config))
                con.execute(
                    update(phases)
                    .where(phases.c.name == phase.name)
                    .values(
                        config=config,
                        reference_set=phase.reference_set,
                        version=phases.c.version + 1,
                    )
                )
            else:
                con.execute(
                    insert(phases).values(
                        name=phase.name,
                        reference_set=phase.reference_set,
                        config=config,
                        version=0,
                        created_at=iso(self.db.now()),
                    )
                )

    def _check_change(self, con: Connection, phase: PhaseConfig, old: Mapping[str, Any]) -> None:
        """Once a phase has submissions, what they were scored on may not change."""
        fixed = ("reference_set", "kind", "cases", "metrics", "profile", "submission_kind")
        new = phase.as_dict()
        changed = [k for k in fixed if new[k] != old.get(k)]
        if not changed:
            return
        n = con.execute(
            select(func.count()).select_from(submissions).where(submissions.c.phase == phase.name)
        ).scalar_one()
        if n:
            raise ServiceError(
                409,
                "phase_in_use",
                f"Phase {phase.name!r} has {n} submission(s): its {', '.join(changed)} cannot "
                "change (their scores would no longer compare); add a new phase instead.",
            )

    def reference_manifest(self, name: str) -> dict[str, Any]:
        """The registered manifest of reference set ``name``."""
        with self.db.read() as con:
            text = con.execute(
                select(reference_sets.c.manifest).where(reference_sets.c.name == name)
            ).scalar()
        if text is None:
            raise ServiceError(
                404,
                "not_found",
                f"No reference set {name!r}; register it with `assay admin reference`.",
            )
        out: dict[str, Any] = json.loads(text)
        return out

    def phase(self, name: str) -> PhaseConfig:
        """Phase ``name`` (404 when unknown)."""
        with self.db.read() as con:
            text = con.execute(select(phases.c.config).where(phases.c.name == name)).scalar()
        if text is None:
            with self.db.read() as con:
                names = con.execute(select(phases.c.name).order_by(phases.c.name)).scalars().all()
            raise not_found("phase", name, f"; phases: {', '.join(names) or 'none yet'}")
        return phase_from_dict(json.loads(text))

    def phases(self) -> list[PhaseConfig]:
        """Every phase, by name."""
        with self.db.read() as con:
            rows = con.execute(select(phases.c.config).order_by(phases.c.name)).scalars().all()
        return [phase_from_dict(json.loads(t)) for t in rows]

    def public_manifest(self, name: str) -> dict[str, Any]:
        """What phase ``name`` publishes of its reference set."""
        phase = self.phase(name)
        return phase_manifest(self.reference_manifest(phase.reference_set), phase.cases)

    # -- quota ----------------------------------------------------------------------------
    def _quota(
        self, con: Connection, team_id: int, phase: PhaseConfig, now: float
    ) -> dict[str, Any]:
        start = now - phase.quota.window_s
        entries = con.execute(
            select(quota.c.submission_id, quota.c.kind, quota.c.at).where(
                quota.c.team_id == team_id, quota.c.phase == phase.name
            )
        ).all()
        refunded = {e.submission_id for e in entries if e.kind == "refund"}
        charges = sorted(
            e.at
            for e in entries
            if e.kind == "charge" and e.at > start and e.submission_id not in refunded
        )
        rejects = sorted(e.at for e in entries if e.kind == "reject" and e.at > start)
        active = con.execute(
            select(func.count())
            .select_from(submissions)
            .where(
                submissions.c.team_id == team_id,
                submissions.c.phase == phase.name,
                submissions.c.state.in_(ACTIVE),
            )
        ).scalar_one()
        limit = phase.quota.submissions
        remaining = max(0, limit - len(charges))
        next_at = None
        if remaining == 0:
            next_at = charges[len(charges) - limit] + phase.quota.window_s
        attempts_left = max(0, phase.quota.attempts - len(rejects))
        if attempts_left == 0:
            free_at = rejects[len(rejects) - phase.quota.attempts] + phase.quota.window_s
            next_at = max(next_at or 0.0, free_at)
        return {
            "phase": phase.name,
            "limit": limit,
            "window_hours": phase.quota.window_hours,
            "used": len(charges),
            "remaining": remaining,
            "active": int(active),
            "max_active": phase.quota.max_active,
            "attempts_remaining": attempts_left,
            "next_submission_at": iso(next_at) if next_at is not None else None,
            "closed": phase.closed,
        }

    def quota_status(self, team_id: int, phase_name: str) -> dict[str, Any]:
        """The team's quota in a phase: ``remaining``, ``next_submission_at``, ..."""
        phase = self.phase(phase_name)
        with self.db.read() as con:
            return self._quota(con, team_id, phase, self.db.now())

    # -- participant ----------------------------------------------------------------------
    def submit(
        self,
        team_id: int,
        phase_name: str,
        *,
        archive: Path,
        sha256: str,
        size: int,
        idempotency_key: str | None = None,
        label: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """Record an uploaded archive, charge the quota and queue its validation, in one
        transaction. Returns (the submission's public view, whether it is new): a repeated
        ``idempotency_key`` returns the first submission and charges nothing.

        Raises
        ------
        ServiceError
            429 ``quota_exhausted`` / ``active_limit`` / ``attempts_exhausted`` (with the
            quota), 409 ``phase_closed``, 404 for an unknown phase.
        """
        phase = self.phase(phase_name)
        now = self.db.now()
        with self.db.write() as con:
            con.execute(select(teams.c.team_id).where(teams.c.team_id == team_id).with_for_update())
            if idempotency_key:
                existing = con.execute(
                    select(
                        submissions.c.submission_id,
                        submissions.c.phase,
                        submissions.c.archive_sha256,
                    ).where(
                        submissions.c.team_id == team_id,
                        submissions.c.idempotency_key == idempotency_key,
                    )
                ).first()
                if existing is not None:
                    if (existing.phase, existing.archive_sha256) != (phase.name, sha256):
                        raise ServiceError(
                            409,
                            "idempotency_conflict",
                            "This Idempotency-Key was used for another upload (a different "
                            "phase or archive); use a new key for a new submission.",
                        )
                    return self._view(con, str(existing.submission_id)), False
            if phase.closed:
                raise ServiceError(
                    409, "phase_closed", f"Phase {phase.name!r} is closed to submissions."
                )
            status = self._quota(con, team_id, phase, now)
            if status["attempts_remaining"] == 0:
                raise ServiceError(
                    429,
                    "attempts_exhausted",
                    f"{phase.quota.attempts} uploads were rejected in the last "
                    f"{phase.quota.window_hours:g} h; fix the archive (see the rejection "
                    f"reasons) and retry at {status['next_submission_at']}.",
                    quota=status,
                )
            if status["active"] >= phase.quota.max_active:
                raise ServiceError(
                    429,
                    "active_limit",
                    f"Your team has {status['active']} submission(s) in progress "
                    f"(at most {phase.quota.max_active}); wait until it finishes.",
                    quota=status,
                )
            if status["remaining"] == 0:
                raise ServiceError(
                    429,
                    "quota_exhausted",
                    f"Your team has used its {status['limit']} submission(s) per "
                    f"{phase.quota.window_hours:g} h; the next is allowed at "
                    f"{status['next_submission_at']}.",
                    quota=status,
                )
            sid = "s_" + secrets.token_hex(8)
            con.execute(
                insert(submissions).values(
                    submission_id=sid,
                    team_id=team_id,
                    phase=phase.name,
                    state="validating",
                    error_code="",
                    reason="",
                    archive=str(archive),
                    archive_sha256=sha256,
                    size_bytes=size,
                    idempotency_key=idempotency_key or None,
                    label=label[:200],
                    final=False,
                    baseline=False,
                    created_at=iso(now),
                    updated_at=iso(now),
                )
            )
            con.execute(
                insert(quota).values(
                    team_id=team_id, phase=phase.name, submission_id=sid, kind="charge", at=now
                )
            )
            self._enqueue(con, "validate", phase.name, sid, f"validate:{sid}")
            return self._view(con, sid), True

    def _enqueue(self, con: Connection, kind: str, phase: str, sid: str | None, key: str) -> None:
        if con.execute(select(jobs.c.job_id).where(jobs.c.key == key)).first():
            return  # idempotent: this job exists already
        con.execute(
            insert(jobs).values(
                key=key,
                kind=kind,
                submission_id=sid,
                phase=phase,
                state="queued",
                attempts=0,
                max_attempts=MAX_ATTEMPTS,
                error="",
                created_at=iso(self.db.now()),
            )
        )

    def _any(self, *conditions: ColumnElement[bool]) -> bool:
        """Whether some job matches (a read, to spare idle polls the write lock)."""
        with self.db.read() as con:
            return (
                con.execute(select(jobs.c.job_id).where(*conditions).limit(1)).first() is not None
            )

    def _team_of(self, con: Connection, sid: str) -> int:
        return int(
            con.execute(
                select(submissions.c.team_id).where(submissions.c.submission_id == sid)
            ).scalar_one()
        )

    def _audit(
        self, con: Connection, actor: str, action: str, subject: str, detail: str = ""
    ) -> None:
        """Append to the audit log (in the caller's transaction)."""
        con.execute(
            insert(audit).values(
                at=iso(self.db.now()), actor=actor, action=action, subject=subject, detail=detail
            )
        )

    def _put_released(
        self,
        con: Connection,
        key: str,
        phase: str,
        sid: str | None,
        state: str,
        version: int,
        text: str,
    ) -> None:
        """Replace the released row ``key`` (a submission's result or a leaderboard)."""
        con.execute(delete(released).where(released.c.key == key))
        con.execute(
            insert(released).values(
                key=key,
                phase=phase,
                submission_id=sid,
                state=state,
                version=version,
                payload=text,
                released_at=iso(self.db.now()),
            )
        )

    def _set_state(
        self, con: Connection, sid: str, state: str, code: str = "", reason: str = ""
    ) -> None:
        con.execute(
            update(submissions)
            .where(submissions.c.submission_id == sid)
            .values(state=state, error_code=code, reason=reason, updated_at=iso(self.db.now()))
        )

    def _view(self, con: Connection, sid: str, team_id: int | None = None) -> dict[str, Any]:
        query = (
            select(submissions, teams.c.name.label("team"))
            .join(teams, teams.c.team_id == submissions.c.team_id)
            .where(submissions.c.submission_id == sid)
        )
        if team_id is not None:
            query = query.where(submissions.c.team_id == team_id)
        row = con.execute(query).mappings().first()
        if row is None:
            raise not_found("submission", sid, " among your team's submissions")
        view: dict[str, Any] = {
            "id": row["submission_id"],
            "phase": row["phase"],
            "team": row["team"],
            "state": row["state"],
            "error_code": row["error_code"] or None,
            "reason": row["reason"] or None,
            "label": row["label"],
            "final": bool(row["final"]),
            "baseline": bool(row["baseline"]),
            "size_bytes": int(row["size_bytes"]),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
        if row["state"] in ("released", "withheld"):
            payload = con.execute(
                select(released.c.payload).where(released.c.key == f"submission:{sid}")
            ).scalar()
            view["result"] = json.loads(payload) if payload else None
        return view

    def submission(self, sid: str, team_id: int | None) -> dict[str, Any]:
        """A submission's public view; ``team_id`` None for the organiser (404 when the id is
        unknown or another team's)."""
        with self.db.read() as con:
            return self._view(con, sid, team_id)

    def submissions(self, team_id: int | None, phase: str | None = None) -> list[dict[str, Any]]:
        """A team's submissions (every team's for the organiser), newest first."""
        query = select(submissions.c.submission_id).order_by(
            submissions.c.created_at.desc(), submissions.c.submission_id
        )
        if team_id is not None:
            query = query.where(submissions.c.team_id == team_id)
        if phase is not None:
            query = query.where(submissions.c.phase == phase)
        with self.db.read() as con:
            ids = con.execute(query).scalars().all()
            return [self._view(con, str(i)) for i in ids]

    def cancel(self, sid: str, team_id: int | None) -> dict[str, Any]:
        """Cancel an active submission: refunded before scoring starts, charged after."""
        with self.db.write() as con:
            view = self._view(con, sid, team_id)
            if view["state"] not in ACTIVE:
                raise ServiceError(
                    409,
                    "not_active",
                    f"Submission {sid} is {view['state']}; only "
                    "submissions being validated, queued or scored can be cancelled.",
                )
            if view["state"] != "scoring":
                self._refund(con, sid)
            con.execute(
                update(jobs)
                .where(jobs.c.submission_id == sid, jobs.c.state.in_(("queued", "running")))
                .values(state="cancelled", finished_at=iso(self.db.now()))
            )
            self._set_state(con, sid, "cancelled")
            return self._view(con, sid)

    def _refund(self, con: Connection, sid: str) -> None:
        row = con.execute(
            select(submissions.c.team_id, submissions.c.phase).where(
                submissions.c.submission_id == sid
            )
        ).one()
        already = con.execute(
            select(quota.c.entry_id).where(quota.c.submission_id == sid, quota.c.kind == "refund")
        ).first()
        if not already:
            con.execute(
                insert(quota).values(
                    team_id=row.team_id,
                    phase=row.phase,
                    submission_id=sid,
                    kind="refund",
                    at=self.db.now(),
                )
            )

    def select_final(self, sid: str, team_id: int | None, *, final: bool = True) -> dict[str, Any]:
        """Select (or unselect) a released submission as the team's final entry of its phase
        (one per team and phase); the leaderboard is recomputed."""
        with self.db.write() as con:
            view = self._view(con, sid, team_id)
            if final and view["state"] != "released":
                raise ServiceError(
                    409,
                    "not_released",
                    f"Submission {sid} is {view['state']}; only "
                    "released submissions can be selected as final.",
                )
            owner = self._team_of(con, sid)
            if final:
                con.execute(
                    update(submissions)
                    .where(submissions.c.team_id == owner, submissions.c.phase == view["phase"])
                    .values(final=False)
                )
            con.execute(
                update(submissions).where(submissions.c.submission_id == sid).values(final=final)
            )
            self._bump(con, view["phase"])
            return self._view(con, sid)

    def _bump(self, con: Connection, phase: str) -> None:
        """A change the leaderboard depends on: new version, and a job to recompute it."""
        con.execute(
            update(phases).where(phases.c.name == phase).values(version=phases.c.version + 1)
        )
        version = con.execute(select(phases.c.version).where(phases.c.name == phase)).scalar_one()
        self._enqueue(con, "leaderboard", phase, None, f"leaderboard:{phase}:{version}")

    def leaderboard(self, phase_name: str) -> dict[str, Any]:
        """The released leaderboard of a phase (an empty one before any release)."""
        phase = self.phase(phase_name)
        with self.db.read() as con:
            text = con.execute(
                select(released.c.payload).where(released.c.key == f"leaderboard:{phase.name}")
            ).scalar()
        if text is None:
            return {
                "phase": phase.name,
                "kind": phase.kind,
                "n_entries": 0,
                "rows": [],
                "tests": [],
                "policy": {"text": phase.policy.describe()},
            }
        out: dict[str, Any] = json.loads(text)
        return out

    # -- jobs -----------------------------------------------------------------------------
    def claim(
        self,
        worker: str,
        kinds: Sequence[str],
        lease_s: float,
        *,
        reference_sets: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """Lease the oldest queued job of ``kinds`` to ``worker`` (PostgreSQL: ``FOR UPDATE
        SKIP LOCKED``; SQLite: under the write lock); None when there is none. With
        ``reference_sets``, only scoring jobs of phases on those reference sets (what the
        worker can score)."""
        now = self.db.now()
        wanted: ColumnElement[bool] = jobs.c.kind.in_(list(kinds))
        if reference_sets is not None:
            scorable = select(phases.c.name).where(phases.c.reference_set.in_(list(reference_sets)))
            wanted = wanted & ((jobs.c.kind != "score") | jobs.c.phase.in_(scorable))
        if not self._any(jobs.c.state == "queued", wanted):
            return None  # an idle poll reads, it does not take the write lock
        with self.db.write() as con:
            job_id = con.execute(
                select(jobs.c.job_id)
                .where(jobs.c.state == "queued", wanted)
                .order_by(jobs.c.job_id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if job_id is None:
                return None
            con.execute(
                update(jobs)
                .where(jobs.c.job_id == job_id)
                .values(
                    state="running",
                    lease_owner=worker,
                    lease_expires_at=now + lease_s,
                    heartbeat_at=now,
                    attempts=jobs.c.attempts + 1,
                )
            )
            job = dict(con.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().one())
            if job["kind"] == "score":
                self._set_state(con, job["submission_id"], "scoring")
            return job

    def heartbeat(self, job_id: int, worker: str, lease_s: float) -> bool:
        """Extend a lease; False when the job is no longer this worker's (re-leased or
        cancelled): the worker must stop."""
        now = self.db.now()
        with self.db.write() as con:
            done = con.execute(
                update(jobs)
                .where(
                    jobs.c.job_id == job_id, jobs.c.lease_owner == worker, jobs.c.state == "running"
                )
                .values(lease_expires_at=now + lease_s, heartbeat_at=now)
            )
        return bool(done.rowcount)

    def _finish(
        self, con: Connection, job_id: int, worker: str, state: str = "done", error: str = ""
    ) -> None:
        done = con.execute(
            update(jobs)
            .where(jobs.c.job_id == job_id, jobs.c.lease_owner == worker, jobs.c.state == "running")
            .values(state=state, error=error, finished_at=iso(self.db.now()))
        )
        if done.rowcount != 1:
            raise ServiceError(
                409, "lease_lost", f"Job {job_id} is not leased to {worker} any more."
            )

    def job(self, job_id: int) -> dict[str, Any]:
        """A job row."""
        with self.db.read() as con:
            row = con.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
        if row is None:
            raise not_found("job")
        return dict(row)

    def archive_of(self, job: Mapping[str, Any]) -> Path:
        """The quarantined archive of a job's submission."""
        with self.db.read() as con:
            path = con.execute(
                select(submissions.c.archive).where(
                    submissions.c.submission_id == job["submission_id"]
                )
            ).scalar_one()
        return Path(path)

    def validated(self, job_id: int, worker: str, rejection: tuple[str, str] | None) -> None:
        """Record a validation result: rejected (free: refund + one attempt) or queued for
        scoring."""
        with self.db.write() as con:
            job = con.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().one()
            sid = job["submission_id"]
            self._finish(con, job_id, worker)
            state = con.execute(
                select(submissions.c.state).where(submissions.c.submission_id == sid)
            ).scalar_one()
            if state != "validating":
                return  # cancelled meanwhile
            if rejection is not None:
                code, reason = rejection
                self._refund(con, sid)
                row = self._team_of(con, sid)
                con.execute(
                    insert(quota).values(
                        team_id=row,
                        phase=job["phase"],
                        submission_id=sid,
                        kind="reject",
                        at=self.db.now(),
                    )
                )
                self._set_state(con, sid, "rejected", code, reason)
                return
            digest = con.execute(
                select(reference_sets.c.digest)
                .join(phases, phases.c.reference_set == reference_sets.c.name)
                .where(phases.c.name == job["phase"])
            ).scalar_one()
            self._set_state(con, sid, "queued")
            self._enqueue(con, "score", job["phase"], sid, f"score:{sid}:{digest}")

    def scoring_context(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """What a scorer needs for a job: the phase, its manifest and the reference digest."""
        phase = self.phase(job["phase"])
        manifest = self.reference_manifest(phase.reference_set)
        return {
            "job_id": int(job["job_id"]),
            "submission_id": job["submission_id"],
            "phase": phase.as_dict(),
            "reference_set": phase.reference_set,
            "reference_digest": manifest["digest"],
            "manifest": phase_manifest(manifest, phase.cases),
        }

    def complete_scoring(self, job_id: int, worker: str, rows: pd.DataFrame) -> str:
        """Store a scored submission's private per-case rows and apply the release gate, in
        one transaction; returns the submission's new state. ``rows``: ``case_id, structure,
        metric, value, status``."""
        job = self.job(job_id)
        if job["lease_owner"] != worker or job["state"] != "running":
            raise ServiceError(
                409, "lease_lost", f"Job {job_id} is not leased to {worker} any more."
            )
        sid = str(job["submission_id"])
        phase = self.phase(job["phase"])
        scores = rows.assign(model=sid)
        with self.db.read() as con:
            team_id = self._team_of(con, sid)
            best = self._best(con, team_id, phase)
        state, payload = submission_release(scores, phase, best=best)
        with self.db.write() as con:
            self._finish(con, job_id, worker)
            current = con.execute(
                select(submissions.c.state).where(submissions.c.submission_id == sid)
            ).scalar_one()
            con.execute(delete(case_scores).where(case_scores.c.submission_id == sid))
            con.execute(
                insert(case_scores),
                [
                    {
                        "submission_id": sid,
                        "case_id": r.case_id,
                        "structure": r.structure,
                        "metric": r.metric,
                        "value": None if pd.isna(r.value) else float(r.value),
                        "status": r.status,
                    }
                    for r in rows.itertuples()
                ],
            )
            if current != "scoring":
                return str(current)  # cancelled while scoring: charged, nothing released
            self._release(con, sid, phase.name, state, payload)
            return state

    def _release(
        self, con: Connection, sid: str, phase: str, state: str, payload: Mapping[str, Any]
    ) -> None:
        key = f"submission:{sid}"
        text = json.dumps(payload, sort_keys=True, allow_nan=False)
        self._put_released(con, key, phase, sid, state, 0, text)
        self._set_state(con, sid, state)
        self._audit(con, "gate", state, sid, text)
        if state == "released":
            self._on_released(con, sid, phase)

    def _on_released(self, con: Connection, sid: str, phase: str) -> None:
        """A final phase's first released submission of a team is its final entry; the
        leaderboard is recomputed when a frozen entry (final or baseline) is released."""
        if self.phase(phase).kind == "final":
            team_id = self._team_of(con, sid)
            has_final = con.execute(
                select(submissions.c.submission_id).where(
                    submissions.c.team_id == team_id,
                    submissions.c.phase == phase,
                    submissions.c.final.is_(True),
                )
            ).first()
            if not has_final:
                con.execute(
                    update(submissions).where(submissions.c.submission_id == sid).values(final=True)
                )
        frozen = con.execute(
            select(submissions.c.final, submissions.c.baseline).where(
                submissions.c.submission_id == sid
            )
        ).one()
        if frozen.final or frozen.baseline:  # only frozen entries are on the leaderboard
            self._bump(con, phase)

    def _best(
        self, con: Connection, team_id: int, phase: PhaseConfig
    ) -> tuple[str, pd.DataFrame, dict[str, Any]] | None:
        """The team's best released submission of the phase by the primary mean."""
        rows = con.execute(
            select(released.c.submission_id, released.c.payload)
            .join(submissions, submissions.c.submission_id == released.c.submission_id)
            .where(
                submissions.c.team_id == team_id,
                released.c.phase == phase.name,
                released.c.state == "released",
            )
        ).all()
        if not rows:
            return None
        from assay.metrics import metric_info

        sign = 1.0 if metric_info(phase.primary).higher_is_better else -1.0
        parsed = [(r.submission_id, json.loads(r.payload)) for r in rows]
        parsed = [p for p in parsed if p[1]["primary"]["mean"] is not None]
        if not parsed:
            return None
        best_id, payload = max(parsed, key=lambda p: (sign * p[1]["primary"]["mean"], p[0]))
        return best_id, self._case_scores(con, [best_id]), payload

    def _case_scores(self, con: Connection, sids: Sequence[str]) -> pd.DataFrame:
        query = (
            select(
                case_scores.c.submission_id.label("model"),
                case_scores.c.case_id,
                case_scores.c.structure,
                case_scores.c.metric,
                case_scores.c.value,
                case_scores.c.status,
            )
            .where(case_scores.c.submission_id.in_(list(sids)))
            .order_by(
                case_scores.c.submission_id,
                case_scores.c.case_id,
                case_scores.c.structure,
                case_scores.c.metric,
            )
        )
        df = pd.DataFrame(
            con.execute(query).mappings().all(),
            columns=["model", "case_id", "structure", "metric", "value", "status"],
        )
        df["value"] = df["value"].astype("float64")
        return df

    def fail_job(self, job_id: int, worker: str, *, infra: bool, code: str, reason: str) -> str:
        """Record a failed job: an infrastructure failure is retried (refunded when the
        retries are spent); a participant failure after the reference was read is charged.
        Returns the submission's state."""
        with self.db.write() as con:
            job = con.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().one()
            self._finish(con, job_id, worker, state="failed", error=f"{code}: {reason}"[:2000])
            sid = job["submission_id"]
            if sid is None:
                return "failed"
            if infra and job["attempts"] < job["max_attempts"]:
                con.execute(
                    update(jobs)
                    .where(jobs.c.job_id == job_id)
                    .values(state="queued", lease_owner=None, lease_expires_at=None)
                )
                if job["kind"] == "score":
                    self._set_state(con, sid, "queued")
                return "queued"
            if infra:
                self._refund(con, sid)
                self._set_state(
                    con, sid, "failed_infra", "infrastructure", "the service failed; not charged"
                )
                return "failed_infra"
            self._set_state(
                con, sid, "failed_participant", code, "scoring failed; the submission is charged"
            )
            return "failed_participant"

    def reap(self) -> int:
        """Re-queue jobs whose lease expired (their worker died); after ``max_attempts`` the
        submission fails as an infrastructure failure and is refunded. Returns how many."""
        now = self.db.now()
        if not self._any(jobs.c.state == "running", jobs.c.lease_expires_at < now):
            return 0  # nothing expired: no write lock
        with self.db.write() as con:
            expired = (
                con.execute(
                    select(jobs)
                    .where(jobs.c.state == "running", jobs.c.lease_expires_at < now)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .all()
            )
            for job in expired:
                if job["attempts"] < job["max_attempts"]:
                    con.execute(
                        update(jobs)
                        .where(jobs.c.job_id == job["job_id"])
                        .values(
                            state="queued",
                            lease_owner=None,
                            lease_expires_at=None,
                            error="lease expired; re-queued",
                        )
                    )
                    if job["kind"] == "score" and job["submission_id"]:
                        self._set_state(con, job["submission_id"], "queued")
                else:
                    con.execute(
                        update(jobs)
                        .where(jobs.c.job_id == job["job_id"])
                        .values(
                            state="failed", error="lease expired too often", finished_at=iso(now)
                        )
                    )
                    if job["submission_id"]:
                        self._refund(con, job["submission_id"])
                        self._set_state(
                            con,
                            job["submission_id"],
                            "failed_infra",
                            "infrastructure",
                            "the service failed; not charged",
                        )
            return len(expired)

    def refresh_leaderboard(
        self, job_id: int, worker: str, *, metadata: pd.DataFrame | None = None
    ) -> None:
        """Compute a phase's leaderboard among its frozen entries from the private scores,
        and release it (never replacing a newer one)."""
        job = self.job(job_id)
        phase = self.phase(job["phase"])
        with self.db.read() as con:
            version = con.execute(
                select(phases.c.version).where(phases.c.name == phase.name)
            ).scalar_one()
            frozen = con.execute(
                select(submissions.c.submission_id, submissions.c.label, teams.c.name)
                .join(teams, teams.c.team_id == submissions.c.team_id)
                .where(
                    submissions.c.phase == phase.name,
                    submissions.c.state == "released",
                    (submissions.c.final.is_(True)) | (submissions.c.baseline.is_(True)),
                )
                .order_by(teams.c.name)
            ).all()
            entries = {r.submission_id: {"team": r.name, "label": r.label} for r in frozen}
            scores = self._case_scores(con, list(entries))
        if metadata is None:
            metadata = self.db.results.metadata(metadata_key(phase.reference_set))
            metadata = metadata if len(metadata) else None
        if entries:
            payload = leaderboard(scores, phase, entries, metadata=metadata)
        else:
            payload = {
                "phase": phase.name,
                "kind": phase.kind,
                "n_entries": 0,
                "rows": [],
                "tests": [],
                "policy": {"text": phase.policy.describe()},
            }
        payload["version"] = int(version)
        key = f"leaderboard:{phase.name}"
        text = json.dumps(payload, sort_keys=True, allow_nan=False)
        with self.db.write() as con:
            self._finish(con, job_id, worker)
            stored = con.execute(select(released.c.version).where(released.c.key == key)).scalar()
            if stored is not None and stored > version:
                return
            self._put_released(con, key, phase.name, None, "released", int(version), text)
            self._audit(con, "gate", "leaderboard", phase.name, text)

    # -- organiser on results ---------------------------------------------------------------
    def approve(self, sid: str, *, approve: bool, actor: str) -> dict[str, Any]:
        """Release (or refuse) a result waiting for approval."""
        with self.db.write() as con:
            view = self._view(con, sid)
            if view["state"] != "pending_approval":
                raise ServiceError(
                    409,
                    "not_pending",
                    f"Submission {sid} is {view['state']}, not pending approval.",
                )
            key = f"submission:{sid}"
            if approve:
                con.execute(update(released).where(released.c.key == key).values(state="released"))
                self._set_state(con, sid, "released")
                self._on_released(con, sid, view["phase"])
            else:
                self._set_state(con, sid, "not_released")
            self._audit(con, actor, "approve" if approve else "reject", sid)
            return self._view(con, sid)

    def set_baseline(self, sid: str, baseline: bool = True) -> dict[str, Any]:
        """Mark a submission as a baseline entry (compared with the finals)."""
        with self.db.write() as con:
            view = self._view(con, sid)
            con.execute(
                update(submissions)
                .where(submissions.c.submission_id == sid)
                .values(baseline=baseline)
            )
            self._bump(con, view["phase"])
            return self._view(con, sid)

    def case_rows(self, sid: str, actor: str) -> pd.DataFrame:
        """An organiser's (audited) read of a submission's private per-case scores."""
        with self.db.write() as con:
            self._view(con, sid)
            self._audit(con, actor, "read_cases", sid)
            return self._case_scores(con, [sid])

    def rerun(self, sid: str, actor: str) -> dict[str, Any]:
        """Score a submission again (e.g. after a scorer fix): a new scoring job; no charge."""
        with self.db.write() as con:
            view = self._view(con, sid)
            if view["state"] in ACTIVE or view["state"] in ("rejected", "cancelled"):
                raise ServiceError(409, "not_rerunnable", f"Submission {sid} is {view['state']}.")
            n = con.execute(
                select(func.count()).select_from(jobs).where(jobs.c.submission_id == sid)
            ).scalar_one()
            self._set_state(con, sid, "queued")
            self._enqueue(con, "score", view["phase"], sid, f"score:{sid}:rerun{n}")
            self._audit(con, actor, "rerun", sid)
            return self._view(con, sid)

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest audit entries."""
        with self.db.read() as con:
            rows = (
                con.execute(select(audit).order_by(audit.c.entry_id.desc()).limit(limit))
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Submissions per state (for the organiser's overview)."""
        with self.db.read() as con:
            rows = con.execute(
                select(submissions.c.state, func.count()).group_by(submissions.c.state)
            ).all()
        return {str(s): int(n) for s, n in rows}
