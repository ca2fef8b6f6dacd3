"""Workers: the scorer (reads the reference set) and the gate (validation, leaderboards).

A worker leases jobs from a :class:`JobSource`: the database itself (``assay worker --db``)
or the service's worker API (``assay worker --url``: a remote scorer inside the data owner's
network that only makes outbound HTTPS requests). While it works it renews its lease from a
heartbeat thread; if it dies, the lease expires and a reaper re-queues the job, which any
worker then redoes from the start (jobs are idempotent: scoring is deterministic and its
rows replace any earlier ones).

Only :func:`score_submission` opens reference files, and only the folder a scorer was given
(``--reference NAME=PATH``), after checking that its content digest is the registered one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from assay.errors import InputError
from assay.service._archive import RejectedUpload, extract_archive, validate_archive
from assay.service._inference import check_private
from assay.service._manifest import phase_manifest, reference_digest
from assay.service._model_archive import validate_model_archive
from assay.service._phase import PhaseConfig, phase_from_dict
from assay.service._service import Service, ServiceError


class JobSource(Protocol):
    """Where a worker gets jobs and returns results (database or worker API)."""

    def claim(
        self, kinds: Sequence[str], reference_sets: Sequence[str] | None = None
    ) -> dict[str, Any] | None: ...

    def heartbeat(self, job_id: int) -> bool: ...

    def fetch_archive(self, ctx: Mapping[str, Any], dest: Path) -> Path: ...

    def complete(self, job_id: int, rows: pd.DataFrame) -> str: ...

    def fail(self, job_id: int, *, infra: bool, code: str, reason: str) -> str: ...

    def reap(self) -> int: ...


def worker_name() -> str:
    """A worker id unique on this host: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class DatabaseSource:
    """Jobs straight from the service database (the worker shares the quarantine disk)."""

    def __init__(
        self, service: Service, *, worker: str | None = None, lease_s: float = 60.0
    ) -> None:
        self.service = service
        self.worker = worker or worker_name()
        self.lease_s = lease_s

    def claim(
        self, kinds: Sequence[str], reference_sets: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        job = self.service.claim(self.worker, kinds, self.lease_s, reference_sets=reference_sets)
        if job is None:
            return None
        if job["kind"] == "score":
            return {**self.service.scoring_context(job), "kind": "score"}
        return {
            "job_id": int(job["job_id"]),
            "kind": job["kind"],
            "phase": job["phase"],
            "submission_id": job["submission_id"],
        }

    def heartbeat(self, job_id: int) -> bool:
        return self.service.heartbeat(job_id, self.worker, self.lease_s)

    def fetch_archive(self, ctx: Mapping[str, Any], dest: Path) -> Path:
        return self.service.archive_of({"submission_id": ctx["submission_id"]})

    def complete(self, job_id: int, rows: pd.DataFrame) -> str:
        return self.service.complete_scoring(job_id, self.worker, rows)

    def fail(self, job_id: int, *, infra: bool, code: str, reason: str) -> str:
        return self.service.fail_job(job_id, self.worker, infra=infra, code=code, reason=reason)

    def reap(self) -> int:
        return self.service.reap()


class _Heartbeat:
    """Renews a job's lease every ``period`` seconds until stopped or the lease is lost."""

    def __init__(self, source: JobSource, job_id: int, period: float) -> None:
        self.lost = threading.Event()
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(period):
                try:
                    if not source.heartbeat(job_id):
                        self.lost.set()
                        return
                except Exception:  # a transient error: try again at the next beat
                    continue

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _MemoryCases:
    """A :class:`~assay.scoring.CaseStore` that keeps a run's cases in memory."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def manifest(self, run_id: str) -> dict[str, Any] | None:
        return None

    def ensure_run(self, run_id: str, **_: Any) -> None:
        return None

    def delete_run(self, run_id: str) -> None:
        self.records.clear()

    def delete_cases(self, run_id: str, case_ids: Sequence[str]) -> None:
        return None

    def stored_cases(self, run_id: str) -> dict[str, str]:
        return {}

    def write_case(self, run_id: str, dataset: str, model: str, record: Any) -> None:
        self.records.append(record)


def score_submission(
    archive: Path,
    phase: PhaseConfig,
    manifest: Mapping[str, Any],
    reference: Path,
    *,
    images: Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Extract a validated archive (or, in a model phase, run the model it holds on the
    phase's ``images`` in the sandbox: :func:`~assay.service._inference.run_model`) and score
    the predictions against the reference folder: the private per-case rows (``case_id,
    structure, metric, value, status``) of the phase's cases and metrics, sorted."""
    from assay.scoring import score

    with tempfile.TemporaryDirectory(prefix="assay-score-") as tmp:
        folder = Path(tmp) / "predictions"
        if phase.submission_kind == "model":
            from assay.service._inference import run_model

            if images is None:
                raise InputError(
                    f"Phase {phase.name!r} takes model submissions: give the worker the cases' "
                    f"images with --images {phase.reference_set}=PATH."
                )
            run_model(archive, phase, manifest, images, folder, log=log)
            layout = "labelmap"
        else:
            layout, _ = extract_archive(
                archive, manifest, folder, allow_missing=phase.allow_missing
            )
        labels = {int(k): v for k, v in manifest["labels"].items()}
        cases = _MemoryCases()
        score(
            reference,
            folder,
            model="submission",
            dataset=phase.reference_set,
            profile=phase.profile,
            store=cases,
            workers=workers,
            scheduler=scheduler,
            prediction_layout=layout,
            prediction_labels=labels if layout == "labelmap" else None,
        )
    wanted_cases = set(manifest["cases"])
    wanted_metrics = set(phase.metrics)
    rows = [
        {
            "case_id": rec.case_id,
            "structure": r.structure,
            "metric": r.metric,
            "value": float(r.value),
            "status": r.status,
        }
        for rec in cases.records
        if rec.case_id in wanted_cases
        for r in rec.rows
        if r.metric in wanted_metrics
    ]
    df = pd.DataFrame(rows, columns=["case_id", "structure", "metric", "value", "status"])
    return df.sort_values(["case_id", "structure", "metric"], kind="stable").reset_index(drop=True)


class Worker:
    """Runs jobs of ``kinds`` from ``source``.

    ``references`` maps a reference set name to its folder (scorers only; the digest is
    checked once per folder); ``images`` maps it to the folder of the cases' input images
    (``CASE.nii.gz``), for phases that take model submissions. Leaderboards (database
    workers and the gate) read the reference set's private case metadata from the database
    for subgroups.
    """

    def __init__(
        self,
        source: JobSource,
        *,
        kinds: Sequence[str] = ("score", "leaderboard"),
        references: Mapping[str, Path] | None = None,
        images: Mapping[str, Path] | None = None,
        service: Service | None = None,
        workers: int = 1,
        scheduler: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.kinds = tuple(kinds)
        self.references = {k: Path(v) for k, v in (references or {}).items()}
        self.images = {k: Path(v) for k, v in (images or {}).items()}
        self.service = service
        self.workers = workers
        self.scheduler = scheduler
        self.log = log or (lambda _m: None)
        self._digests: dict[str, str] = {}

    def check_references(self, registered: Mapping[str, str] | None = None) -> None:
        """Refuse to start with a reference folder that is missing or, given the registered
        digests (name -> digest), differs from what was registered."""
        for name, folder in self.references.items():
            if not folder.is_dir():
                raise InputError(f"--reference {name}={folder}: no such folder; check the path.")
            if registered is not None:
                if name not in registered:
                    known = ", ".join(sorted(registered)) or "none"
                    raise InputError(
                        f"--reference {name}: no reference set {name!r} is registered (registered: "
                        f"{known})."
                    )
                self._digests[name] = reference_digest(folder)
                if self._digests[name] != registered[name]:
                    raise InputError(
                        f"--reference {name}={folder}: its files differ from the registered "
                        f"reference set {name!r} (content digest); point it at the registered "
                        "folder, or register the new content (assay admin reference --replace)."
                    )
        for name, folder in self.images.items():
            if not folder.is_dir():
                raise InputError(f"--images {name}={folder}: no such folder; check the path.")

    def _reference(self, name: str, digest: str) -> Path:
        if name not in self.references:
            raise InputError(
                f"This worker has no folder for reference set {name!r}; pass --reference "
                f"{name}=PATH."
            )
        if name not in self._digests:
            self._digests[name] = reference_digest(self.references[name])
        if self._digests[name] != digest:
            raise InputError(
                f"The folder {self.references[name]} for reference set {name!r} has changed since "
                "it was registered (content digest differs); register it again."
            )
        return self.references[name]

    def run_once(self) -> bool:
        """Reap expired leases, then run one job; False when there was none."""
        self.source.reap()
        job = self.source.claim(
            self.kinds, sorted(self.references) if "score" in self.kinds else None
        )
        if job is None:
            return False
        job_id = int(job["job_id"])
        lease = float(getattr(self.source, "lease_s", 60.0))
        beat = _Heartbeat(self.source, job_id, max(0.2, lease / 3))
        try:
            self._run(job, beat)
        finally:
            beat.stop()
        return True

    def _run(self, job: Mapping[str, Any], beat: _Heartbeat) -> None:
        job_id = int(job["job_id"])
        kind = job["kind"]
        try:
            if kind == "score":
                phase = phase_from_dict(job["phase"])
                reference = self._reference(job["reference_set"], job["reference_digest"])
                with tempfile.TemporaryDirectory(prefix="assay-job-") as tmp:
                    archive = self.source.fetch_archive(job, Path(tmp))
                    if phase.submission_kind == "model":
                        check_private(reference, "reference")
                    rows = score_submission(
                        archive,
                        phase,
                        job["manifest"],
                        reference,
                        images=self.images.get(job["reference_set"]),
                        workers=self.workers,
                        scheduler=self.scheduler,
                        log=self.log,
                    )
                if beat.lost.is_set():
                    self.log(f"job {job_id}: lease lost; another worker redoes it")
                    return
                state = self.source.complete(job_id, rows)
                self.log(f"job {job_id}: submission {job['submission_id']} scored -> {state}")
            elif kind == "validate":
                assert self.service is not None
                self._validate(job)
            elif kind == "leaderboard":
                assert self.service is not None
                worker = getattr(self.source, "worker", "")
                self.service.refresh_leaderboard(job_id, worker)
                self.log(f"job {job_id}: leaderboard of {job['phase']} refreshed")
        except RejectedUpload as exc:  # validated on upload, so the archive changed: not the team's
            self.source.fail(job_id, infra=True, code="archive_changed", reason=exc.reason)
        except ServiceError as exc:
            if exc.code == "lease_lost":
                self.log(f"job {job_id}: lease lost; another worker redoes it")
            else:
                self._infra_failure(job_id, exc)
        except Exception as exc:  # the service's fault, never the team's: retried, then refunded
            self._infra_failure(job_id, exc)

    def _infra_failure(self, job_id: int, exc: Exception) -> None:
        self.log(f"job {job_id}: infrastructure failure: {type(exc).__name__}: {exc}")
        reason = f"{type(exc).__name__}: {exc}"[:500]
        with contextlib.suppress(ServiceError):  # a lost lease: the reaper re-queues the job
            self.source.fail(job_id, infra=True, code="infrastructure", reason=reason)

    def _validate(self, job: Mapping[str, Any]) -> None:
        assert self.service is not None
        phase = self.service.phase(job["phase"])
        manifest = phase_manifest(self.service.reference_manifest(phase.reference_set), phase.cases)
        archive = self.service.archive_of(job)
        worker = getattr(self.source, "worker", "")
        try:
            if phase.submission_kind == "model":
                validate_model_archive(archive, phase.model)
            else:
                validate_archive(archive, manifest, allow_missing=phase.allow_missing)
        except RejectedUpload as exc:
            self.service.validated(int(job["job_id"]), worker, (exc.code, exc.reason))
            self.log(
                f"job {job['job_id']}: submission {job['submission_id']} rejected ({exc.code})"
            )
            return
        self.service.validated(int(job["job_id"]), worker, None)
        self.log(f"job {job['job_id']}: submission {job['submission_id']} valid, queued")

    def run(
        self,
        *,
        poll_s: float = 1.0,
        stop: threading.Event | None = None,
        max_idle_s: float | None = None,
    ) -> None:
        """Run jobs until ``stop`` is set (or ``max_idle_s`` without a job)."""
        stop = stop or threading.Event()
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # e.g. the database is unreachable for a moment
                self.log(f"worker: {type(exc).__name__}: {exc}; retrying")
                worked = False
            if worked:
                idle_since = time.monotonic()
                continue
            if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                return
            stop.wait(poll_s)
