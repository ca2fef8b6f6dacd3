"""The service's commands as an organiser and a team use them: `assay admin ...`,
`assay serve`, `assay worker`, `assay submit`, `assay challenge-demo`."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml
from cli_helpers import wide_console  # noqa: F401
from typer.testing import CliRunner

from assay.cli import app
from assay.service._server import free_port, wait_until_serving
from assay.service._synthetic import metadata_path, write_predictions, write_reference

pytestmark = pytest.mark.service

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_organiser_and_team_commands_end_to_end(tmp_path):
    db = str(tmp_path / "challenge.db")
    ref = write_reference(tmp_path / "ref" / "synth", 12)
    out = _ok(
        "admin", "reference", "synth", str(ref), "--db", db, "--metadata", str(metadata_path(ref))
    )
    assert "registered synth: 12 cases" in out and "metadata: 12 cases" in out
    config = tmp_path / "challenge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "title": "CLI challenge",
                "storage": "data",
                "teams": ["red"],
                "phases": [
                    {
                        "name": "open",
                        "reference_set": "synth",
                        "cases": "first:8",
                        "policy": {"n_bootstrap": 200},
                    }
                ],
            }
        )
    )
    token = runner.invoke(
        app, ["admin", "token", "--scope", "participant", "--team", "red", "--db", db]
    )
    assert token.exit_code == 2 and "No team 'red'" in token.output  # serve creates it
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assay.cli",
            "serve",
            "--db",
            db,
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assay.cli",
            "worker",
            "--db",
            db,
            "--reference",
            f"synth={ref}",
            "--lease",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, serve, log=tmp_path / "serve.log")
        secret = runner.invoke(
            app, ["admin", "token", "--scope", "participant", "--team", "red", "--db", db]
        )
        assert secret.exit_code == 0
        team_token = secret.stdout.strip().splitlines()[-1]
        assert team_token.startswith("assay_")
        cases = sorted(httpx.get(url + "/v1/phases/open", timeout=10).json()["manifest"]["cases"])
        assert len(cases) == 8
        preds = write_predictions(tmp_path / "preds", cases, 1.0)
        out = _ok("submit", str(preds), "--url", url, "--phase", "open", "--token", team_token)
        assert "validating; 4 of 5 left" in out and ": released" in out and '"mean"' in out
        listing = _ok("admin", "submissions", "--db", db)
        assert "red  released" in listing
        rows = tmp_path / "rows.csv"
        sid = listing.split()[0]
        assert "wrote 48 rows" in _ok("admin", "cases", sid, "--out", str(rows), "--db", db)
        assert "exists" in _fails("admin", "cases", sid, "--out", str(rows), "--db", db)
        nowhere = str(tmp_path / "no" / "rows.csv")
        assert "create it first" in _fails("admin", "cases", sid, "--out", nowhere, "--db", db)
        page = httpx.get(url + "/phases/nope/leaderboard", timeout=10)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "No such phase &#x27;nope&#x27;; phases: open" in page.text
        assert "read_cases" in _ok("admin", "audit", "--db", db)
        # A prediction folder with a case the phase does not have: rejected with its code, and
        # the command exits 1 (scripts can tell); a label in any script is kept.
        write_predictions(tmp_path / "extra", [*cases, "case0011"], 1.0)
        rejected = runner.invoke(
            app,
            [
                "submit",
                str(tmp_path / "extra"),
                "--url",
                url,
                "--phase",
                "open",
                "--token",
                team_token,
                "--label",
                "modèle ü",
            ],
        )
        assert rejected.exit_code == 1 and "rejected (unknown_case" in rejected.output
        mine = httpx.get(
            url + "/v1/submissions", headers={"Authorization": f"Bearer {team_token}"}, timeout=10
        ).json()
        assert any(v["label"] == "modèle ü" for v in mine)
        bad = runner.invoke(
            app, ["submit", str(preds), "--url", url, "--phase", "open", "--token", "assay_nope"]
        )
        assert bad.exit_code == 2 and "401" in bad.output
        common = ["--url", url, "--token", team_token]
        assert "No such phase 'opne'; phases: open" in _fails(
            "submit", str(preds), "--phase", "opne", *common
        )
        assert "at most 200" in _fails(
            "submit", str(preds), "--phase", "open", *common, "--label", "x" * 201
        )
        no_scheme = ["--url", url.removeprefix("http://"), "--token", team_token]
        assert "needs its scheme" in _fails("submit", str(preds), "--phase", "open", *no_scheme)
        down = ["--url", f"http://127.0.0.1:{free_port()}", "--token", team_token]
        assert "Cannot reach the service" in _fails("submit", str(preds), "--phase", "open", *down)
        # A worker pointed at the wrong folder refuses to start instead of failing jobs.
        assert "no such folder" in _fails(
            "worker", "--db", db, "--reference", f"synth={tmp_path}/nope"
        )
        assert "is registered" in _fails("worker", "--db", db, "--reference", f"other={ref}")
        # A changed phase definition is refused once the phase has submissions.
        changed = yaml.safe_load(config.read_text())
        changed["phases"][0]["cases"] = "first:6"
        config.write_text(yaml.safe_dump(changed))
        assert "its cases cannot change" in _fails(
            "serve", "--db", db, "--config", str(config), "--port", str(free_port())
        )
    finally:
        for proc in (worker, serve):
            proc.terminate()
            proc.wait(30)
        log.close()


def test_reference_registration_is_guarded(tmp_path):
    db = str(tmp_path / "c.db")
    ref = write_reference(tmp_path / "ref" / "synth", 10)
    _ok("admin", "reference", "synth", str(ref), "--db", db)
    assert "metadata: none" in _ok("admin", "reference", "synth", str(ref), "--db", db)
    other = write_reference(tmp_path / "ref2" / "synth", 10, seed=3)
    assert "--replace" in _fails("admin", "reference", "synth", str(other), "--db", db)
    _ok("admin", "reference", "synth", str(other), "--db", db, "--replace")
    # The worker now refuses the old folder: its content is not what is registered.
    assert "differ from the registered" in _fails(
        "worker", "--db", db, "--reference", f"synth={ref}"
    )
    assert "No service database" in _fails(
        "admin", "submissions", "--db", str(tmp_path / "typo.db")
    )
    assert not (tmp_path / "typo.db").exists()
    assert "admin team red" in _fails(
        "admin", "token", "--scope", "participant", "--team", "red", "--db", db
    )


def test_bad_challenge_files_and_options_are_one_line_errors(tmp_path):
    db = str(tmp_path / "c.db")
    config = tmp_path / "c.yaml"
    config.write_text("phases: [{name: open, reference_set: nowhere}]\n")
    assert "not registered" in _fails("serve", "--db", db, "--config", str(config))
    config.write_text("phasez: []\n")
    assert "Unknown key(s) phasez" in _fails("serve", "--db", db, "--config", str(config))
    ref = write_reference(tmp_path / "ref" / "synth", 10)
    _ok("admin", "reference", "synth", str(ref), "--db", db)
    config.write_text("phases: [{name: open, reference_set: synth, quota: {submissions: 0}}]\n")
    assert "quota.submissions must be at least 1" in _fails(
        "serve", "--db", db, "--config", str(config)
    )
    config.write_text("phases: [{name: open, reference_set: synth, cases: first:99}]\n")
    assert "first:N" in _fails("serve", "--db", db, "--config", str(config))
    config.write_text("phases: [{name: open, reference_set: synth, metrics: [dice]}]\n")
    assert "dice" in _fails("serve", "--db", db, "--config", str(config))
    assert "scope" in _fails("admin", "token", "--scope", "root", "--db", db)
    assert "NAME=PATH" in _fails("worker", "--db", db, "--reference", "synth")
    bad = {
        "phases: [{name: open, reference_set: synth, cases: []}]": "cases is empty",
        "phases: [{name: o, reference_set: synth, quota: {window_hours: 1.0e+308}}]": "window_h",
        "phases: [{name: a, reference_set: synth}, {name: a, reference_set: synth}]": "named 'a'",
        "phases: [{name: a, reference_set: synth\n": "at line 3, column 1",
        "phases: [{name: a, reference_set: synth, policy: {min_subgroup: 0}}]": "min_subgroup",
        "phases: [{name: a, reference_set: synth, metrics: [dsc, dsc]}]": "twice",
    }
    for text, expected in bad.items():
        config.write_text(text + "\n")
        assert expected in _fails("serve", "--db", db, "--config", str(config)), text
    assert "either --db" in _fails("worker", "--reference", f"synth={ref}")


def test_challenge_demo_runs_end_to_end(tmp_path):
    out = _ok("challenge-demo", "--output", str(tmp_path / "demo"), "--cases", "30")
    assert "final leaderboard" in out and "🏆" in out and "nothing is left running" in out
    assert (tmp_path / "demo" / "final_leaderboard.html").is_file()
    assert "not empty" in _fails("challenge-demo", "--output", str(tmp_path / "demo"))
