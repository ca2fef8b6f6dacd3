"""The service's quick start: a synthetic challenge run end to end on loopback.

Three teams, an open feedback phase (Ladder) and a final phase (scored once, approved by the
organiser), one database worker, everything over the real HTTP API; nothing keeps running
afterwards. Prints each step and where the leaderboard page and JSON are.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assay.service._client import ServiceClient, zip_predictions
from assay.service._config import ChallengeConfig, phase_configs
from assay.service._db import ServiceDB
from assay.service._manifest import build_manifest
from assay.service._server import BackgroundServer
from assay.service._service import Service, metadata_key
from assay.service._synthetic import metadata_path, write_predictions, write_reference
from assay.service._tokens import issue_token
from assay.service._worker import DatabaseSource, Worker

#: Teams of the quick start and the quality of their models (0 = perfect).
TEAMS = {"team-alpha": 0.6, "team-beta": 1.2, "team-gamma": 2.5}


def run_quickstart(
    folder: str | Path, *, n_cases: int = 60, say: Callable[[str], None] = print, keep: bool = True
) -> dict[str, Any]:
    """Run the synthetic challenge in ``folder``; returns the final leaderboard JSON."""
    import pandas as pd

    t0 = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference = write_reference(folder / "reference" / "synth", n_cases)
    db = ServiceDB(folder / "challenge.db")
    service = Service(db, folder / "storage")
    manifest = build_manifest("synth", reference)
    service.register_reference(manifest)
    db.results.write_metadata(
        metadata_key("synth"), pd.read_csv(metadata_path(reference)), id_column="case_id"
    )
    n_feedback = n_cases * 2 // 3
    config = ChallengeConfig(
        title="assay quick-start challenge",
        storage=folder / "storage",
        teams=tuple(TEAMS),
        phases=(
            {
                "name": "feedback",
                "reference_set": "synth",
                "kind": "open",
                "cases": f"first:{n_feedback}",
                "quota": {"submissions": 5},
                "policy": {"n_bootstrap": 1000},
            },
            {
                "name": "final",
                "reference_set": "synth",
                "kind": "final",
                "cases": f"after:{n_feedback}",
                "policy": {"n_bootstrap": 1000},
            },
        ),
    )
    for phase in phase_configs(config, {"synth": manifest}):
        service.put_phase(phase)
    tokens = {}
    for team in TEAMS:
        service.add_team(team)
        tokens[team] = issue_token(db, "participant", team=team)[1]
    organiser = issue_token(db, "organiser")[1]
    say(f"reference set: {n_cases} synthetic cases in {reference} (only the scorer reads it)")
    from assay.service._app import create_app

    stop = threading.Event()
    worker = Worker(
        DatabaseSource(service, lease_s=30.0), references={"synth": reference}, service=service
    )
    thread = threading.Thread(target=worker.run, kwargs={"poll_s": 0.1, "stop": stop}, daemon=True)
    thread.start()
    try:
        with (
            BackgroundServer(create_app(service, title=config.title)) as server,
            contextlib.ExitStack() as stack,
        ):
            say(f"service on {server.url} (a real uvicorn server on loopback), one scorer")
            clients = {
                t: stack.enter_context(ServiceClient(server.url, tok)) for t, tok in tokens.items()
            }
            public = {
                p: clients["team-alpha"].get(f"/v1/phases/{p}")["manifest"]
                for p in ("feedback", "final")
            }
            say(
                f"phases: feedback ({len(public['feedback']['cases'])} cases, open, Ladder), "
                f"final ({len(public['final']['cases'])} cases, scored once, approved)"
            )
            for round_no in (1, 2):
                for team, quality in TEAMS.items():
                    preds = write_predictions(
                        folder / "predictions" / f"feedback-{team}-{round_no}",
                        sorted(public["feedback"]["cases"]),
                        quality / round_no,
                        model_seed=round_no,
                    )
                    sub = clients[team].submit(
                        "feedback", zip_predictions(preds), label=f"v{round_no}"
                    )
                    view = clients[team].wait(sub["id"])
                    result = view.get("result") or {}
                    note = (result.get("ladder") or {}).get("message", "")
                    shown = (
                        view["error_code"]
                        or f"mean DSC {result.get('primary', {}).get('mean')} {note}"
                    )
                    say(f"  feedback {team} v{round_no}: {view['state']}, {shown}".rstrip())
                    if view["state"] == "released":
                        clients[team].post(f"/v1/submissions/{view['id']}/select-final")
            admin = stack.enter_context(ServiceClient(server.url, organiser))
            for team, quality in TEAMS.items():
                preds = write_predictions(
                    folder / "predictions" / f"final-{team}",
                    sorted(public["final"]["cases"]),
                    quality / 2,
                    model_seed=2,
                )
                sub = clients[team].submit("final", zip_predictions(preds), label="final")
                view = clients[team].wait(sub["id"])
                admin.post(f"/v1/admin/results/{view['id']}/approve")
                say(f"  final {team}: scored once, approved by the organiser")
            board: dict[str, Any] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                board = admin.get("/v1/phases/final/leaderboard")
                if board.get("n_entries") == len(TEAMS):
                    break
                time.sleep(0.2)
            say(
                "final leaderboard (rounded as released; 🏆 = not significantly worse than the "
                "best):"
            )
            for row in sorted(board.get("rows", []), key=lambda r: (r["metric"], r["rank"] or 0)):
                if row["structure"] == "average":
                    trophy = " 🏆" if row["winner"] else ""
                    say(
                        f"  {row['metric']} #{row['rank']} {row['team']}: {row['mean']} "
                        f"[{row['ci_low']}, {row['ci_high']}]{trophy}"
                    )
            say(
                f"leaderboard page: {server.url}/phases/final/leaderboard (while running); "
                f"JSON: /v1/phases/final/leaderboard"
            )
            from assay.service._page import render_leaderboard

            if keep:
                page = folder / "final_leaderboard.html"
                page.write_text(
                    render_leaderboard(board, ["feedback", "final"], title=config.title),
                    encoding="utf-8",
                )
                say(f"saved the page as {page}")
            else:
                say("(pass --output DIR to keep the database, files and page)")
            say(f"finished in {time.perf_counter() - t0:.1f} s; nothing is left running")
    finally:
        stop.set()
        thread.join(timeout=30)
        db.close()
    return board
