"""The HTTP API of the submission service (FastAPI on uvicorn).

Routes (``/v1``; bearer tokens, see :mod:`~assay.service._tokens`):

* public: ``GET /v1/phases``, ``/v1/phases/{p}`` (manifest), ``/v1/phases/{p}/leaderboard``,
  the HTML leaderboard ``/phases/{p}/leaderboard`` and ``/``, ``/v1/openapi.json``;
* participant: ``POST /v1/phases/{p}/submissions`` (the zip as the request body, streamed,
  ``Idempotency-Key`` header), ``GET /v1/phases/{p}/quota``, ``GET /v1/submissions``,
  ``GET /v1/submissions/{id}``, ``POST /v1/submissions/{id}/cancel``,
  ``POST /v1/submissions/{id}/select-final``;
* organiser: ``/v1/admin/...`` (teams, tokens, phases, submissions, approval, audited case
  rows, reruns, audit log);
* worker (remote scorers): ``POST /v1/worker/claim``, ``GET /v1/worker/jobs/{id}/archive``,
  ``POST /v1/worker/jobs/{id}/heartbeat|complete|fail``.

Participant routes see only their own team's submissions and only released results: an
unknown id and another team's id get the same 404, as does any admin or worker route with a
participant token. The API process never opens reference files: validation reads the public
manifest, and only scorers read the reference.
"""

import hashlib
import json
import secrets
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

import pandas as pd
from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assay.errors import InputError
from assay.service._archive import REJECTIONS
from assay.service._model_archive import MODEL_REJECTIONS
from assay.service._phase import phase_from_mapping
from assay.service._service import STATES, Service, ServiceError, not_found
from assay.service._tokens import Caller, authenticate, issue_token, revoke_token
from assay.service._worker import DatabaseSource, Worker


class ErrorBody(BaseModel):
    """An error: a fixed code and one line."""

    code: str
    message: str


class TeamIn(BaseModel):
    name: str = Field(description="Team name: 1-64 letters, digits, '_', '.', '-'")


class TokenIn(BaseModel):
    scope: str = Field(description="participant, organiser or worker")
    team: str | None = None
    expires_days: float | None = 90.0
    label: str = ""


class ClaimIn(BaseModel):
    kinds: list[str] = Field(default_factory=lambda: ["score"])
    reference_sets: list[str] | None = None


class CompleteIn(BaseModel):
    rows: list[dict[str, Any]]


class FailIn(BaseModel):
    infra: bool = True
    code: str = "infrastructure"
    reason: str = ""


def _error(exc: ServiceError) -> JSONResponse:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status)


def create_app(
    service: Service,
    *,
    title: str = "assay challenge",
    gate: bool = True,
    poll_s: float = 0.2,
    log: Callable[[str], None] | None = None,
) -> FastAPI:
    """The ASGI app of ``service``; with ``gate`` it validates uploads and refreshes
    leaderboards in a background thread (jobs ``validate`` and ``leaderboard``)."""
    stop = threading.Event()
    wake = threading.Event()
    threads: list[threading.Thread] = []

    async def lifespan(app: FastAPI) -> Any:
        service.clean_partial_uploads()
        if gate:
            source = DatabaseSource(service, worker=f"gate:{secrets.token_hex(3)}", lease_s=30.0)
            worker = Worker(source, kinds=("validate", "leaderboard"), service=service, log=log)

            def loop() -> None:
                while not stop.is_set():
                    try:
                        if worker.run_once():
                            continue
                    except Exception as exc:  # keep serving; the job's lease expires and is retried
                        if log:
                            log(f"gate: {type(exc).__name__}: {exc}")
                    wake.wait(poll_s)
                    wake.clear()

            thread = threading.Thread(target=loop, name="assay-gate", daemon=True)
            thread.start()
            threads.append(thread)
        yield
        stop.set()
        wake.set()
        for thread in threads:
            thread.join(timeout=10)

    app = FastAPI(
        title=f"{title} (assay submission service)",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description=(
            "Evaluates submissions on a private reference set and publishes only what the "
            "phase's privacy policy allows. Rejection codes: "
            + "; ".join(f"{k}: {v}" for k, v in {**REJECTIONS, **MODEL_REJECTIONS}.items())
            + ". Submission states: "
            + ", ".join(STATES)
            + "."
        ),
    )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "Invalid request."
        return JSONResponse({"code": "invalid_request", "message": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"code": "invalid", "message": str(exc)}, status_code=422)

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:"
        return response

    def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
        token = None
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        found = authenticate(service.db, token)
        if found is None:
            raise ServiceError(401, "unauthorized", "Missing, unknown, expired or revoked token.")
        return found

    def participant(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.scope not in ("participant", "organiser"):
            raise ServiceError(
                403,
                "wrong_scope",
                f"This route needs a team's token; yours is a {who.scope} token.",
            )
        return who

    def organiser(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.scope != "organiser":
            raise not_found("route")
        return who

    def scorer(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.scope != "worker":
            raise not_found("route")
        return who

    def team_of(who: Caller) -> int | None:
        return None if who.scope == "organiser" else who.team_id

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return run_in_threadpool(fn, *args, **kwargs)

    # -- public ---------------------------------------------------------------------------
    @app.get("/v1/health", tags=["public"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/phases", tags=["public"])
    async def list_phases() -> list[dict[str, Any]]:
        out = []
        for p in await run(service.phases):
            out.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "closed": p.closed,
                    "metrics": list(p.metrics),
                    "n_cases": len(p.cases) if p.cases is not None else None,
                    "quota": p.as_dict()["quota"],
                    "policy": p.policy.describe(),
                }
            )
        return out

    @app.get("/v1/phases/{phase}", tags=["public"])
    async def phase_manifest(phase: str) -> dict[str, Any]:
        p = await run(service.phase, phase)
        manifest = await run(service.public_manifest, phase)
        return {
            "name": p.name,
            "kind": p.kind,
            "metrics": list(p.metrics),
            "policy": p.policy.describe(),
            "allow_missing": p.allow_missing,
            "manifest": manifest,
        }

    @app.get("/v1/phases/{phase}/leaderboard", tags=["public"])
    async def leaderboard_json(phase: str) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.leaderboard, phase)
        return out

    @app.get("/phases/{phase}/leaderboard", response_class=HTMLResponse, tags=["public"])
    async def leaderboard_html(phase: str) -> HTMLResponse:
        from assay.service._page import render_leaderboard

        try:
            board = await run(service.leaderboard, phase)
        except ServiceError as exc:
            from html import escape

            return HTMLResponse(
                f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
                '</title><link rel="icon" href="data:,">'
                '<link rel="stylesheet" href="/assets/site.css">'
                f"</head><body><main><h1>Not found</h1><p>{escape(exc.message)}</p>"
                '<p><a href="/">All phases</a></p></main></body></html>',
                status_code=exc.status,
            )
        names = [p.name for p in await run(service.phases)]
        return HTMLResponse(render_leaderboard(board, names, title=title))

    @app.get("/", response_class=HTMLResponse, tags=["public"])
    async def index() -> HTMLResponse:
        from assay.service._page import render_index

        return HTMLResponse(render_index(await run(service.phases), title=title))

    @app.get("/assets/{name}", tags=["public"])
    async def asset(name: str) -> Response:
        if name not in ("site.css", "site.js"):
            raise not_found("asset")
        text = resources.files("assay.report").joinpath("assets", name).read_text(encoding="utf-8")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(text, media_type=kind)

    # -- participant ----------------------------------------------------------------------
    @app.post(
        "/v1/phases/{phase}/submissions",
        status_code=202,
        tags=["participant"],
        responses={413: {"model": ErrorBody}, 429: {"model": ErrorBody}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def submit(
        phase: str,
        request: Request,
        who: Annotated[Caller, Depends(participant)],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
        x_submission_label: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        if who.team_id is None:
            raise ServiceError(422, "no_team", "Submit with a team member's token.")
        p = await run(service.phase, phase)
        cap = p.quota.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise ServiceError(
                413, "too_large", f"The upload exceeds this phase's cap of {cap} bytes."
            )
        folder = service.quarantine
        stem = secrets.token_hex(12)
        part = folder / f"{stem}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with part.open("wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise ServiceError(
                            413, "too_large", f"The upload exceeds this phase's cap of {cap} bytes."
                        )
                    digest.update(chunk)
                    fh.write(chunk)
            if size == 0:
                raise ServiceError(
                    422, "empty_upload", "The request body is empty; send the zip as the body."
                )
            archive = part.with_suffix(".zip")
            part.rename(archive)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            label = unquote(x_submission_label or "")
            view, created = await run(
                service.submit,
                who.team_id,
                phase,
                archive=archive,
                sha256=digest.hexdigest(),
                size=size,
                idempotency_key=idempotency_key,
                label=label,
            )
        except BaseException:
            archive.unlink(missing_ok=True)
            raise
        if not created:
            archive.unlink(missing_ok=True)
        wake.set()
        view["quota"] = await run(service.quota_status, who.team_id, phase)
        return JSONResponse(view, status_code=202 if created else 200)

    @app.get("/v1/phases/{phase}/quota", tags=["participant"])
    async def get_quota(phase: str, who: Annotated[Caller, Depends(participant)]) -> dict[str, Any]:
        if who.team_id is None:
            raise ServiceError(422, "no_team", "Quotas belong to teams; use a team member's token.")
        out: dict[str, Any] = await run(service.quota_status, who.team_id, phase)
        return out

    @app.get("/v1/submissions", tags=["participant"])
    async def my_submissions(
        who: Annotated[Caller, Depends(participant)], phase: str | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await run(service.submissions, team_of(who), phase)
        return out

    @app.get("/v1/submissions/{sid}", tags=["participant"])
    async def get_submission(
        sid: str, who: Annotated[Caller, Depends(participant)]
    ) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.submission, sid, team_of(who))
        return out

    @app.post("/v1/submissions/{sid}/cancel", tags=["participant"])
    async def cancel(sid: str, who: Annotated[Caller, Depends(participant)]) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.cancel, sid, team_of(who))
        return out

    @app.post("/v1/submissions/{sid}/select-final", tags=["participant"])
    async def select_final(
        sid: str, who: Annotated[Caller, Depends(participant)], final: bool = True
    ) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.select_final, sid, team_of(who), final=final)
        wake.set()
        return out

    # -- organiser ------------------------------------------------------------------------
    @app.post("/v1/admin/teams", tags=["organiser"])
    async def add_team(body: TeamIn, who: Annotated[Caller, Depends(organiser)]) -> dict[str, Any]:
        return {"team_id": await run(service.add_team, body.name), "name": body.name}

    @app.post("/v1/admin/tokens", tags=["organiser"])
    async def add_token(
        body: TokenIn, who: Annotated[Caller, Depends(organiser)]
    ) -> dict[str, Any]:
        token_id, token = await run(
            issue_token,
            service.db,
            body.scope,
            team=body.team,
            expires_days=body.expires_days,
            label=body.label,
        )
        return {"token_id": token_id, "token": token, "scope": body.scope, "team": body.team}

    @app.post("/v1/admin/tokens/{token_id}/revoke", tags=["organiser"])
    async def revoke(token_id: int, who: Annotated[Caller, Depends(organiser)]) -> dict[str, Any]:
        if not await run(revoke_token, service.db, token_id):
            raise not_found("token")
        return {"token_id": token_id, "revoked": True}

    @app.put("/v1/admin/phases/{phase}", tags=["organiser"])
    async def put_phase(
        phase: str,
        who: Annotated[Caller, Depends(organiser)],
        body: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        config = phase_from_mapping({**body, "name": phase})
        await run(service.put_phase, config)
        return config.as_dict()

    @app.get("/v1/admin/submissions", tags=["organiser"])
    async def all_submissions(
        who: Annotated[Caller, Depends(organiser)], phase: str | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await run(service.submissions, None, phase)
        return out

    @app.get("/v1/admin/submissions/{sid}/cases", tags=["organiser"])
    async def case_rows(
        sid: str, who: Annotated[Caller, Depends(organiser)]
    ) -> list[dict[str, Any]]:
        df: pd.DataFrame = await run(service.case_rows, sid, f"token:{who.token_id}")
        return json.loads(df.to_json(orient="records"))  # type: ignore[no-any-return]

    @app.post("/v1/admin/submissions/{sid}/rerun", tags=["organiser"])
    async def rerun(sid: str, who: Annotated[Caller, Depends(organiser)]) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.rerun, sid, f"token:{who.token_id}")
        return out

    @app.post("/v1/admin/submissions/{sid}/baseline", tags=["organiser"])
    async def baseline(
        sid: str, who: Annotated[Caller, Depends(organiser)], baseline: bool = True
    ) -> dict[str, Any]:
        out: dict[str, Any] = await run(service.set_baseline, sid, baseline)
        wake.set()
        return out

    @app.post("/v1/admin/results/{sid}/approve", tags=["organiser"])
    async def approve(sid: str, who: Annotated[Caller, Depends(organiser)]) -> dict[str, Any]:
        out: dict[str, Any] = await run(
            service.approve, sid, approve=True, actor=f"token:{who.token_id}"
        )
        wake.set()
        return out

    @app.post("/v1/admin/results/{sid}/reject", tags=["organiser"])
    async def reject(sid: str, who: Annotated[Caller, Depends(organiser)]) -> dict[str, Any]:
        out: dict[str, Any] = await run(
            service.approve, sid, approve=False, actor=f"token:{who.token_id}"
        )
        return out

    @app.get("/v1/admin/audit", tags=["organiser"])
    async def audit_log(
        who: Annotated[Caller, Depends(organiser)], limit: int = 200
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await run(service.audit_log, min(max(limit, 1), 10000))
        return out

    @app.get("/v1/admin/overview", tags=["organiser"])
    async def overview(who: Annotated[Caller, Depends(organiser)]) -> dict[str, int]:
        out: dict[str, int] = await run(service.counts)
        return out

    # -- worker (remote scorers) ----------------------------------------------------------
    def owner(who: Caller) -> str:
        return f"remote:{who.token_id}"

    @app.post("/v1/worker/claim", tags=["worker"])
    async def claim(
        body: ClaimIn, who: Annotated[Caller, Depends(scorer)], lease_s: float = 60.0
    ) -> dict[str, Any]:
        job = await run(
            service.claim,
            owner(who),
            [k for k in body.kinds if k == "score"],
            min(max(lease_s, 1.0), 3600.0),
            reference_sets=body.reference_sets,
        )
        if job is None:
            return {"job": None}
        return {"job": {**await run(service.scoring_context, job), "kind": "score"}}

    def leased(job_id: int, who: Caller) -> dict[str, Any]:
        job = service.job(job_id)
        if job["lease_owner"] != owner(who) or job["state"] != "running":
            raise not_found("job")
        return job

    @app.get("/v1/worker/jobs/{job_id}/archive", tags=["worker"])
    async def job_archive(job_id: int, who: Annotated[Caller, Depends(scorer)]) -> FileResponse:
        job = await run(leased, job_id, who)
        path: Path = await run(service.archive_of, job)
        return FileResponse(path, media_type="application/zip")

    @app.post("/v1/worker/jobs/{job_id}/heartbeat", tags=["worker"])
    async def job_heartbeat(
        job_id: int, who: Annotated[Caller, Depends(scorer)], lease_s: float = 60.0
    ) -> dict[str, bool]:
        return {
            "ok": await run(service.heartbeat, job_id, owner(who), min(max(lease_s, 1.0), 3600.0))
        }

    @app.post("/v1/worker/jobs/{job_id}/complete", tags=["worker"])
    async def job_complete(
        job_id: int, body: CompleteIn, who: Annotated[Caller, Depends(scorer)]
    ) -> dict[str, str]:
        await run(leased, job_id, who)
        try:
            rows = pd.DataFrame(
                body.rows, columns=["case_id", "structure", "metric", "value", "status"]
            )
            rows["value"] = pd.to_numeric(rows["value"], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise ServiceError(422, "bad_rows", f"Unreadable score rows: {exc}") from None
        state: str = await run(service.complete_scoring, job_id, owner(who), rows)
        wake.set()
        return {"state": state}

    @app.post("/v1/worker/jobs/{job_id}/fail", tags=["worker"])
    async def job_fail(
        job_id: int, body: FailIn, who: Annotated[Caller, Depends(scorer)]
    ) -> dict[str, str]:
        await run(leased, job_id, who)
        state: str = await run(
            service.fail_job,
            job_id,
            owner(who),
            infra=body.infra,
            code=body.code[:100],
            reason=body.reason[:500],
        )
        return {"state": state}

    @app.post("/v1/worker/reap", tags=["worker"])
    async def job_reap(who: Annotated[Caller, Depends(scorer)]) -> dict[str, int]:
        return {"requeued": await run(service.reap)}

    return app
