"""Shared set-up for the service tests: a synthetic challenge, a real uvicorn server on
loopback, a database worker, and clients.

``make_challenge`` registers a synthetic reference set (``assay.service._synthetic``), phases,
teams and tokens in a fresh database; ``running`` serves it with the API's gate thread
(validation, leaderboards) and one scoring worker thread, and stops both afterwards.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from assay.service import (
    DatabaseSource,
    Service,
    ServiceClient,
    ServiceDB,
    Worker,
    build_manifest,
    issue_token,
    phase_from_mapping,
    zip_predictions,
)
from assay.service._app import create_app
from assay.service._server import BackgroundServer
from assay.service._service import metadata_key
from assay.service._synthetic import metadata_path, write_predictions, write_reference


@dataclass
class Challenge:
    """A registered synthetic challenge."""

    root: Path
    reference: Path
    db_url: str
    service: Service
    manifest: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    organiser: str = ""
    worker_token: str = ""

    def cases(self, phase: str) -> list[str]:
        """The case ids of a phase."""
        return sorted(self.service.public_manifest(phase)["cases"])

    def archive(self, phase: str, quality: float, *, name: str = "sub", **kwargs: Any) -> bytes:
        """A zip of a model's label maps for a phase's cases."""
        folder = self.root / "predictions" / f"{name}-{phase}-{quality}-{kwargs}"
        if not folder.exists():
            write_predictions(folder, self.cases(phase), quality, **kwargs)
        return zip_predictions(folder)


def make_challenge(
    root: Path,
    *,
    n_cases: int = 30,
    phases: tuple[Mapping[str, Any], ...] | None = None,
    teams: tuple[str, ...] = ("alpha", "beta"),
    db_url: str | None = None,
    clock: Any = None,
) -> Challenge:
    """Write and register a synthetic challenge under ``root`` (default phases: ``open`` on
    all cases with a quota of 5, one active submission)."""
    reference = write_reference(root / "reference" / "synth", n_cases)
    url = db_url or str(root / "challenge.db")
    db = ServiceDB(url, clock=clock) if clock is not None else ServiceDB(url)
    service = Service(db, root / "storage")
    manifest = build_manifest("synth", reference)
    service.register_reference(manifest)
    db.results.write_metadata(
        metadata_key("synth"), pd.read_csv(metadata_path(reference)), id_column="case_id"
    )
    for raw in phases or (
        {"name": "open", "reference_set": "synth", "kind": "open", "policy": {"n_bootstrap": 200}},
    ):
        service.put_phase(phase_from_mapping(raw))
    challenge = Challenge(root, reference, url, service, manifest)
    for team in teams:
        service.add_team(team)
        challenge.tokens[team] = issue_token(db, "participant", team=team)[1]
    challenge.organiser = issue_token(db, "organiser")[1]
    challenge.worker_token = issue_token(db, "worker")[1]
    return challenge


@contextmanager
def running(challenge: Challenge, *, scorer: bool = True) -> Iterator[BackgroundServer]:
    """Serve the challenge on loopback (gate included), with a scoring worker thread."""
    stop = threading.Event()
    threads = []
    if scorer:
        worker = Worker(
            DatabaseSource(challenge.service, lease_s=10.0),
            kinds=("score",),
            references={"synth": challenge.reference},
            service=challenge.service,
        )
        thread = threading.Thread(
            target=worker.run, kwargs={"poll_s": 0.05, "stop": stop}, daemon=True
        )
        thread.start()
        threads.append(thread)
    try:
        with BackgroundServer(create_app(challenge.service, poll_s=0.05)) as server:
            yield server
    finally:
        while _CLIENTS:
            _CLIENTS.pop().close()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


#: Clients made by :func:`client`, closed when :func:`running` stops the server.
_CLIENTS: list[ServiceClient] = []


def client(server: BackgroundServer, token: str) -> ServiceClient:
    """A client of ``server`` with ``token`` (closed with the server)."""
    made = ServiceClient(server.url, token, timeout=60)
    _CLIENTS.append(made)
    return made


def zip_bytes(members: Mapping[str, bytes]) -> bytes:
    """A zip of ``name -> bytes`` (deflated)."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()
