"""Faults: a scorer killed mid-scoring, a server killed mid-upload (real processes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from service_helpers import client, make_challenge, running
from sqlalchemy import text

from assay.service._server import free_port, wait_until_serving

pytestmark = pytest.mark.service

ASSAY = [sys.executable, "-m", "assay.cli"]


def _state(ch, sid: str) -> str:
    return str(ch.service.submission(sid, None)["state"])


def _released(ch, sid: str) -> tuple[dict, list]:
    with ch.service.db.read() as con:
        payload = con.execute(
            text("SELECT payload FROM svc_released WHERE key = :k"), {"k": f"submission:{sid}"}
        ).scalar_one()
        rows = con.execute(
            text(
                "SELECT case_id, structure, metric, value, status FROM svc_case_scores "
                "WHERE submission_id = :s ORDER BY case_id, structure, metric"
            ),
            {"s": sid},
        ).all()
    return json.loads(payload), [tuple(r) for r in rows]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_scorer_job_is_requeued_and_result_bit_identical(tmp_path):
    n = 160  # enough cases that scoring takes a few seconds
    phases = ({"name": "open", "reference_set": "synth", "policy": {"n_bootstrap": 500}},)
    ch = make_challenge(tmp_path / "a", n_cases=n, phases=phases)
    data = ch.archive("open", 1.5)
    with running(ch, scorer=False) as server:
        alpha = client(server, ch.tokens["alpha"])
        sid = alpha.submit("open", data)["id"]
        _wait(lambda: _state(ch, sid) == "queued", 60, "validation")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [
            *ASSAY,
            "worker",
            "--db",
            ch.db_url,
            "--reference",
            f"synth={ch.reference}",
            "--lease",
            "2",
            "--max-idle",
            "30",
        ]
        doomed = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait(lambda: _state(ch, sid) == "scoring", 60, "scoring to start")
            time.sleep(0.5)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
        assert _state(ch, sid) == "scoring"  # the job died with its worker
        survivor = subprocess.run(
            [*cmd[:-2], "--max-idle", "4"], env=env, capture_output=True, text=True, timeout=300
        )
        assert survivor.returncode == 0, survivor.stdout + survivor.stderr
        assert _state(ch, sid) == "released", survivor.stdout
        with ch.service.db.read() as con:
            job = con.execute(
                text("SELECT attempts, state FROM svc_jobs WHERE kind = 'score'")
            ).one()
        assert tuple(job) == (2, "done")  # leased twice, completed once
        assert alpha.get("/v1/phases/open/quota")["used"] == 1  # charged once
    killed = _released(ch, sid)

    # The same archive scored without interruption, in a fresh service.
    fresh = make_challenge(tmp_path / "b", n_cases=n, phases=phases)
    with running(fresh) as server:
        beta = client(server, fresh.tokens["alpha"])
        other = beta.submit("open", data)["id"]
        assert beta.wait(other, timeout_s=300)["state"] == "released"
    clean = _released(fresh, other)
    assert killed[1] == clean[1]  # every private per-case value, bit for bit
    assert killed[0] == clean[0]  # the released payload, CIs included


def _serve(tmp_path: Path, ch, port: int) -> subprocess.Popen:
    config = tmp_path / "challenge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "title": "fault test",
                "storage": str(tmp_path / "storage"),
                "phases": [{"name": "open", "reference_set": "synth"}],
            }
        )
    )
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*ASSAY, "serve", "--db", ch.db_url, "--config", str(config), "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    wait_until_serving(f"http://127.0.0.1:{port}", proc, log=log)
    return proc


def test_server_killed_mid_upload_charges_nothing(tmp_path):
    ch = make_challenge(tmp_path, n_cases=10)
    port = free_port()
    data = ch.archive("open", 1.0)
    proc = _serve(tmp_path, ch, port)
    quarantine = tmp_path / "storage" / "quarantine"
    sent = threading.Event()

    def slow_body():
        yield data[: len(data) // 2]
        sent.set()
        time.sleep(30)  # the server dies before the rest arrives
        yield data[len(data) // 2 :]

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the connection dies with the server
            httpx.post(
                f"http://127.0.0.1:{port}/v1/phases/open/submissions",
                content=slow_body(),
                headers={"Authorization": f"Bearer {ch.tokens['alpha']}"},
                timeout=60,
            )

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    try:
        assert sent.wait(30)
        _wait(lambda: any(quarantine.glob("*.part")), 30, "the partial upload on disk")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ch.service.submissions(None) == []  # nothing was recorded, nothing charged
    proc = _serve(tmp_path, ch, port)  # the restart removes its own partial file
    try:
        assert not list(quarantine.glob("*.part"))
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/phases/open/quota",
            headers={"Authorization": f"Bearer {ch.tokens['alpha']}"},
            timeout=10,
        )
        assert r.json()["used"] == 0 and r.json()["remaining"] == 5
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/phases/open/submissions",
            content=data,
            headers={"Authorization": f"Bearer {ch.tokens['alpha']}"},
            timeout=60,
        )
        assert r.status_code == 202
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
