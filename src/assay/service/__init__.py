"""The private test-set service (DESIGN.md §9): submissions scored on a hidden reference set,
released under a privacy policy.

* :class:`ServiceDB` / :class:`Service` — the service tables and their operations: teams,
  tokens, reference sets, phases, submissions, the quota ledger, the jobs queue, the release
  gate (:mod:`~assay.service._release`);
* :func:`create_app` — the HTTP API (FastAPI, served by uvicorn in ``assay serve``);
* :class:`Worker` with :class:`DatabaseSource` or :class:`HttpSource` — scorers and the gate;
* :func:`validate_archive` — upload checks against the public manifest (:data:`REJECTIONS`);
* :func:`build_manifest` — a reference set's public manifest and digest;
* :class:`PhaseConfig`, :class:`Quota`, :class:`PrivacyPolicy` — a phase and its rules.

FastAPI and uvicorn are imported only by :func:`create_app` and ``assay serve``.
"""

from assay.service._archive import REJECTIONS, RejectedUpload, extract_archive, validate_archive
from assay.service._client import HttpSource, ServiceClient, zip_predictions
from assay.service._config import ChallengeConfig, load_challenge, phase_configs
from assay.service._db import ServiceDB
from assay.service._manifest import build_manifest, phase_manifest, reference_digest
from assay.service._phase import PhaseConfig, PrivacyPolicy, Quota, phase_from_mapping
from assay.service._service import ACTIVE, FINAL_STATES, STATES, Service, ServiceError
from assay.service._tokens import SCOPES, authenticate, digest, issue_token, revoke_token
from assay.service._worker import DatabaseSource, Worker, score_submission


def create_app(service: Service, **kwargs: object) -> object:
    """The FastAPI app of ``service`` (see :func:`assay.service._app.create_app`)."""
    from assay.service._app import create_app as _create

    return _create(service, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "ACTIVE",
    "FINAL_STATES",
    "REJECTIONS",
    "SCOPES",
    "STATES",
    "ChallengeConfig",
    "DatabaseSource",
    "HttpSource",
    "PhaseConfig",
    "PrivacyPolicy",
    "Quota",
    "RejectedUpload",
    "Service",
    "ServiceClient",
    "ServiceDB",
    "ServiceError",
    "Worker",
    "authenticate",
    "build_manifest",
    "create_app",
    "digest",
    "extract_archive",
    "issue_token",
    "load_challenge",
    "phase_configs",
    "phase_from_mapping",
    "phase_manifest",
    "reference_digest",
    "revoke_token",
    "score_submission",
    "validate_archive",
    "zip_predictions",
]
