"""Model submissions: a team's model run by the scorer in the sandbox (no network, user
``nobody``, limits, a clean environment) on hidden images; a hostile model is contained."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest
from service_helpers import client, make_challenge, running

from assay.service import phase_from_mapping, zip_predictions
from assay.service._inference import run_model
from assay.service._synthetic import write_images, write_model

pytestmark = pytest.mark.service

MODEL_PHASE = {
    "name": "models",
    "reference_set": "synth",
    "kind": "open",
    "submission_kind": "model",
    "policy": {"n_bootstrap": 200},
    "model": {"timeout_s": 60, "memory_mb": 1024, "max_processes": 16},
}


def _zip_folder(folder: Path) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()


def _private(folder: Path) -> Path:
    folder.chmod(0o700)
    return folder


def test_model_submission_is_run_in_the_sandbox_and_released(tmp_path):
    ch = make_challenge(tmp_path, n_cases=10, phases=(MODEL_PHASE,))
    _private(ch.reference)
    images = _private(write_images(tmp_path / "images", 10))
    from assay.service import DatabaseSource, Worker

    with running(ch, scorer=False) as server:
        import threading

        stop = threading.Event()
        worker = Worker(
            DatabaseSource(ch.service, lease_s=30),
            kinds=("score",),
            references={"synth": ch.reference},
            images={"synth": images},
            service=ch.service,
        )
        thread = threading.Thread(target=worker.run, kwargs={"poll_s": 0.05, "stop": stop})
        thread.start()
        try:
            alpha = client(server, ch.tokens["alpha"])
            good = alpha.wait(
                alpha.submit("models", _zip_folder(write_model(tmp_path / "m")))["id"],
                timeout_s=120,
            )
            assert good["state"] == "released", good
            assert good["result"]["primary"]["mean"] == 1.0  # the thresholds recover every mask
            crash = write_model(
                tmp_path / "crash", "import sys\nprint('SECRET-LOG')\nsys.exit(3)\n"
            )
            bad = alpha.wait(alpha.submit("models", _zip_folder(crash))["id"], timeout_s=120)
            # It ran on the hidden data: charged and scored (every case missing: DSC 0), and
            # nothing of what it printed or why it failed reaches the team.
            assert bad["state"] == "withheld"  # DSC 0 everywhere: not better than 1.0
            assert "SECRET-LOG" not in json.dumps(bad) and bad["reason"] is None
            assert alpha.get("/v1/phases/models/quota")["used"] == 2
            # Not a model: rejected at validation, free.
            plain = alpha.wait(
                alpha.submit("models", zip_predictions(write_images(tmp_path / "x", 1)))["id"],
                timeout_s=60,
            )
            assert (plain["state"], plain["error_code"]) == ("rejected", "no_model_file")
        finally:
            stop.set()
            thread.join(60)


HOSTILE = """\
import json, os, socket, sys
report = {{}}
def attempt(name, fn):
    try:
        fn()
        report[name] = "allowed"
    except BaseException as exc:
        report[name] = type(exc).__name__
attempt("read_reference", lambda: open({reference!r}, "rb").read())
attempt("list_reference", lambda: os.listdir({reference_dir!r}))
attempt("write_reference", lambda: open(os.path.join({reference_dir!r}, "x"), "wb"))
attempt("read_database", lambda: open({database!r}, "rb").read())
def connect(host, port):
    s = socket.socket()
    s.settimeout(2)
    s.connect((host, port))
attempt("connect_loopback", lambda: connect("127.0.0.1", {port}))
attempt("connect_outside", lambda: connect("1.1.1.1", 53))
attempt("allocate_100gb", lambda: bytearray(100 * 1024 ** 3))
forks = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            import time; time.sleep(3); os._exit(0)
        forks += 1
except OSError:
    pass
report["forks"] = forks
report["uid"] = os.getuid()
report["env"] = sorted(os.environ)
print("x" * 100000)
with open(os.path.join({report_dir!r}, "report.json"), "w") as fh:
    json.dump(report, fh)
sys.exit(1)
"""


def test_hostile_model_is_contained(tmp_path, monkeypatch):
    ch = make_challenge(tmp_path, n_cases=1, phases=(MODEL_PHASE,))
    _private(ch.reference)
    images = _private(write_images(tmp_path / "images", 1))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    report_dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="assay-hostile-"))
    report_dir.chmod(0o777)
    monkeypatch.setenv("ASSAY_TOKEN", "secret-token-of-the-worker")
    reference = next(ch.reference.rglob("*.nii.gz"))
    script = HOSTILE.format(
        reference=str(reference),
        reference_dir=str(ch.reference),
        database=str(tmp_path / "challenge.db"),
        port=listener.getsockname()[1],
        report_dir=str(report_dir),
    )
    archive = tmp_path / "hostile.zip"
    archive.write_bytes(_zip_folder(write_model(tmp_path / "hostile", textwrap.dedent(script))))
    phase = phase_from_mapping(MODEL_PHASE)
    out = tmp_path / "predictions"
    try:
        records = run_model(archive, phase, ch.service.public_manifest("models"), images, out)
        report = json.loads((report_dir / "report.json").read_text())
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever reached the listener
    finally:
        listener.close()
        for file in report_dir.iterdir():
            file.unlink()
        report_dir.rmdir()
    assert report["read_reference"] == "PermissionError"
    assert report["list_reference"] == "PermissionError"
    assert report["write_reference"] == "PermissionError"
    assert report["read_database"] == "PermissionError"
    assert report["connect_loopback"] in ("OSError", "ConnectionRefusedError", "TimeoutError")
    assert report["connect_outside"] in ("OSError", "TimeoutError")
    assert report["allocate_100gb"] == "MemoryError"
    assert report["forks"] < 16  # RLIMIT_NPROC of the sandbox user
    assert report["uid"] == 65534 and report["uid"] != os.getuid()
    assert set(report["env"]) <= {"PATH", "HOME", "LANG", "PWD"}  # nothing of the worker's
    assert [r.status for r in records] == ["failed"]  # exit status 1: no prediction
    assert not list(out.iterdir())
