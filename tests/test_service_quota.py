"""Quotas, the state table and the jobs queue of the service, on the service's operations
with a controlled clock (no HTTP: the API only forwards to these)."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from service_helpers import make_challenge

from assay.service import DatabaseSource, ServiceError, Worker

WINDOW_H = 24.0


class Clock:
    """A controlled clock: epoch seconds that only move when told."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path):
    clock = Clock()
    phases = (
        {
            "name": "open",
            "reference_set": "synth",
            "policy": {"n_bootstrap": 200},
            "quota": {"submissions": 3, "window_hours": WINDOW_H, "attempts": 2, "max_active": 2},
        },
    )
    ch = make_challenge(tmp_path, n_cases=12, phases=phases, clock=clock)
    return ch, clock


def _upload(ch, data: bytes, *, key: str | None = None, team: str = "alpha"):
    path = ch.service.quarantine / f"{hashlib.sha256(data).hexdigest()[:12]}-{key}.zip"
    path.write_bytes(data)
    team_id = ch.service.team_id(team)
    return ch.service.submit(
        team_id, "open", archive=path, sha256="x", size=len(data), idempotency_key=key
    )


def _work(ch, kinds=("validate", "score", "leaderboard")) -> None:
    """Run every queued job of ``kinds``."""
    worker = Worker(
        DatabaseSource(ch.service, lease_s=30),
        kinds=kinds,
        references={"synth": ch.reference},
        service=ch.service,
    )
    while worker.run_once():
        pass


def _quota(ch, team="alpha"):
    return ch.service.quota_status(ch.service.team_id(team), "open")


def test_charged_when_recorded_and_rolling_window_frees_it(setup):
    ch, clock = setup
    good = ch.archive("open", 1.0)
    first, created = _upload(ch, good, key="a")
    assert created and first["state"] == "validating"
    assert _quota(ch)["remaining"] == 2
    _work(ch)
    assert ch.service.submission(first["id"], None)["state"] == "released"
    assert _quota(ch)["remaining"] == 2  # scoring touched the reference: charged
    clock.t += 3600
    _upload(ch, good, key="b")
    _work(ch)
    clock.t += 3600
    _upload(ch, good, key="c")
    _work(ch)
    status = _quota(ch)
    assert status["remaining"] == 0
    # The first charge leaves the rolling window 24 h after it was made.
    assert status["next_submission_at"] == "2027-01-16T08:00:00+00:00"
    with pytest.raises(ServiceError) as refused:
        _upload(ch, good, key="d")
    assert refused.value.status == 429 and refused.value.code == "quota_exhausted"
    assert refused.value.extra["quota"]["next_submission_at"] == status["next_submission_at"]
    clock.t += (WINDOW_H - 2) * 3600 - 1  # one second before the first charge expires
    assert _quota(ch)["remaining"] == 0
    clock.t += 1
    assert _quota(ch)["remaining"] == 1


def test_idempotency_key_never_charges_twice(setup):
    ch, _ = setup
    data = ch.archive("open", 1.0)
    first, created = _upload(ch, data, key="same")
    again, created_again = _upload(ch, data, key="same")
    assert created and not created_again
    assert again["id"] == first["id"]
    assert _quota(ch)["used"] == 1


def test_validation_rejects_are_free_but_limited_by_attempts(setup):
    ch, clock = setup
    bad = b"not a zip at all"
    for key in ("r1", "r2"):
        view, _ = _upload(ch, bad, key=key)
        _work(ch)
        done = ch.service.submission(view["id"], None)
        assert (done["state"], done["error_code"]) == ("rejected", "not_a_zip")
    status = _quota(ch)
    assert status["used"] == 0 and status["remaining"] == 3  # refunded
    assert status["attempts_remaining"] == 0
    with pytest.raises(ServiceError) as refused:
        _upload(ch, bad, key="r3")
    assert refused.value.code == "attempts_exhausted"
    clock.t += WINDOW_H * 3600 + 1
    assert _quota(ch)["attempts_remaining"] == 2


def test_active_limit(setup):
    ch, _ = setup
    data = ch.archive("open", 1.0)
    _upload(ch, data, key="1")
    _upload(ch, data, key="2")
    with pytest.raises(ServiceError) as refused:
        _upload(ch, data, key="3")
    assert refused.value.code == "active_limit"
    _work(ch)
    _upload(ch, data, key="3")  # the slots are free again once scored


def test_cancel_before_scoring_is_refunded_after_is_charged(setup):
    ch, _ = setup
    data = ch.archive("open", 1.0)
    early, _ = _upload(ch, data, key="early")
    assert ch.service.cancel(early["id"], None)["state"] == "cancelled"
    assert _quota(ch)["used"] == 0
    late, _ = _upload(ch, data, key="late")
    _work(ch, kinds=("validate",))
    job = ch.service.claim("w1", ["score"], 30.0)  # scoring has started
    assert ch.service.submission(late["id"], None)["state"] == "scoring"
    assert ch.service.cancel(late["id"], None)["state"] == "cancelled"
    assert _quota(ch)["used"] == 1
    # The worker's late completion is refused: nothing is released.
    rows = pd.DataFrame(columns=["case_id", "structure", "metric", "value", "status"])
    with pytest.raises(ServiceError) as lost:
        ch.service.complete_scoring(job["job_id"], "w1", rows)
    assert lost.value.code == "lease_lost"
    assert ch.service.submission(late["id"], None)["state"] == "cancelled"


def test_participant_failure_is_charged(setup):
    ch, _ = setup
    view, _ = _upload(ch, ch.archive("open", 1.0), key="p")
    _work(ch, kinds=("validate",))
    job = ch.service.claim("w1", ["score"], 30.0)
    state = ch.service.fail_job(job["job_id"], "w1", infra=False, code="scoring_failed", reason="x")
    assert state == "failed_participant"
    assert ch.service.submission(view["id"], None)["error_code"] == "scoring_failed"
    assert _quota(ch)["used"] == 1


def test_infrastructure_failures_are_retried_then_refunded(setup):
    ch, _ = setup
    view, _ = _upload(ch, ch.archive("open", 1.0), key="i")
    _work(ch, kinds=("validate",))
    for attempt in range(1, 4):
        job = ch.service.claim(f"w{attempt}", ["score"], 30.0)
        assert job is not None and job["attempts"] == attempt
        state = ch.service.fail_job(
            job["job_id"], f"w{attempt}", infra=True, code="infra", reason="disk"
        )
        assert state == ("queued" if attempt < 3 else "failed_infra")
    assert ch.service.submission(view["id"], None)["state"] == "failed_infra"
    assert _quota(ch)["used"] == 0


def test_expired_lease_is_requeued_and_finishes_once(setup):
    ch, clock = setup
    view, _ = _upload(ch, ch.archive("open", 1.0), key="l")
    _work(ch, kinds=("validate",))
    dead = ch.service.claim("dead-worker", ["score"], 30.0)
    assert ch.service.reap() == 0  # the lease is still valid
    clock.t += 31
    assert ch.service.reap() == 1
    assert ch.service.submission(view["id"], None)["state"] == "queued"
    assert not ch.service.heartbeat(dead["job_id"], "dead-worker", 30.0)  # it lost the job
    _work(ch)
    done = ch.service.submission(view["id"], None)
    assert done["state"] == "released"
    assert _quota(ch)["used"] == 1


def test_idempotency_key_reused_for_another_upload_is_refused(setup):
    ch, _ = setup
    _upload(ch, ch.archive("open", 1.0), key="k")
    other = ch.archive("open", 2.0)
    path = ch.service.quarantine / "other.zip"
    path.write_bytes(other)
    with pytest.raises(ServiceError) as refused:
        ch.service.submit(
            ch.service.team_id("alpha"),
            "open",
            archive=path,
            sha256="y",
            size=len(other),
            idempotency_key="k",
        )
    assert refused.value.status == 409 and refused.value.code == "idempotency_conflict"
    assert _quota(ch)["used"] == 1
