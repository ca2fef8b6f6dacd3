"""``assay serve``, ``assay worker``, ``assay admin ...``, ``assay submit`` and
``assay challenge-demo``: the private test-set service (DESIGN.md §9)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from assay._console import HelpGroup
from assay.cli import _common as common
from assay.cli._common import _fatal_errors, app
from assay.errors import InputError

if TYPE_CHECKING:
    from assay.service import PhaseConfig, Service, ServiceClient

admin_app = typer.Typer(
    no_args_is_help=True,
    help="Organise a challenge: reference sets, phases, teams, tokens, approvals.",
    rich_markup_mode=None,
    cls=HelpGroup,
)
app.add_typer(admin_app, name="admin")

DbOption = Annotated[str, typer.Option(help="The service database: SQLite file or SQLAlchemy URL.")]


def _say(text: str) -> None:
    common.out.print(escape(text), highlight=False, soft_wrap=True)


def _service(db: str, storage: Path | None = None, *, create: bool = False) -> Service:
    """The service on ``db``; only commands that set a challenge up may create the database
    (a typo in --db is an error elsewhere, not a new empty database)."""
    from assay.service import Service, ServiceDB

    if not create and "://" not in db and not Path(db).is_file():
        raise InputError(
            f"No service database at {db}; pass the --db given to `assay admin reference` and "
            "`assay serve`."
        )
    return Service(ServiceDB(db, create=create), storage)


def _pairs(items: list[str], option: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{option} takes NAME=PATH, got {item!r}.")
        out[name] = Path(path)
    return out


@app.command("serve")
def serve_command(
    config: Annotated[Path, typer.Option(help="challenge.yaml: title, storage, teams, phases.")],
    db: DbOption = "challenge.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Start the submission service (FastAPI on uvicorn): applies the challenge file's teams
    and phases, validates uploads and publishes leaderboards. It never reads reference files;
    run `assay worker` where they are."""
    with _fatal_errors():
        from assay.service import load_challenge, phase_configs
        from assay.service._app import create_app
        from assay.service._server import serve_forever

        challenge = load_challenge(config)
        from assay.service._server import check_port

        check_port(host, port)  # before the challenge file is applied
        service = _service(db, challenge.storage, create=True)
        manifests = {}
        for raw in challenge.phases:
            name = str(raw.get("reference_set"))
            try:
                manifests[name] = service.reference_manifest(name)
            except Exception:  # reported by phase_configs with what to run
                continue
        configured = phase_configs(challenge, manifests)
        for phase in configured:
            service.put_phase(phase)
        for old in service.phases():  # a phase removed from the file stops taking submissions
            if old.name not in {p.name for p in configured} and not old.closed:
                from assay.service._phase import with_changes

                service.put_phase(with_changes(old, closed=True))
                _say(f"phase {old.name!r} is no longer in {config}: closed to submissions")
        for phase in configured:
            warning = _small_phase(service, phase)
            if warning:
                _say(warning)
        existing = {t for t in challenge.teams if _has_team(service, t)}
        for team in challenge.teams:
            if team not in existing:
                service.add_team(team)
        _say(
            f"{challenge.title}: {len(challenge.phases)} phase(s), {len(challenge.teams)} team(s), "
            f"database {service.db.location}, uploads in {challenge.storage / 'quarantine'}"
        )
        _say(f"API on http://{host}:{port}/v1 (description: /v1/openapi.json); leaderboards on /")
        serve_forever(create_app(service, title=challenge.title, log=_say), host=host, port=port)


def _small_phase(service: Service, phase: PhaseConfig) -> str:
    """A warning when a phase has so few cases that its means are released coarsely."""
    from assay.service._release import resolution

    n = len(service.public_manifest(phase.name)["cases"])
    step = resolution(phase.primary, n, phase.policy)
    if step >= 0.1 and phase.policy.mode == "policy":
        return (
            f"warning: phase {phase.name!r} has {n} cases, so its {phase.primary} means are "
            f"released at a resolution of {step:g} (what {n} cases support without revealing "
            "single cases); use more cases for finer results."
        )
    return ""


def _registered(service: Service, name: str) -> bool:
    from assay.service import ServiceError

    try:
        service.reference_manifest(name)
    except ServiceError:
        return False
    return True


def _has_team(service: Service, name: str) -> bool:
    from assay.service import ServiceError

    try:
        service.team_id(name)
    except ServiceError:
        return False
    return True


@app.command("worker")
def worker_command(
    reference: Annotated[list[str], typer.Option(help="NAME=PATH of a reference set (repeat).")],
    images: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH: the cases' images, for model submissions (repeat)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="The service database (workers on the service's side).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="The service URL (a remote scorer: outbound HTTPS only).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="A worker token (with --url).", envvar="ASSAY_TOKEN")
    ] = None,
    lease: Annotated[float, typer.Option(help="Lease in seconds, renewed by a heartbeat.")] = 60.0,
    workers: Annotated[int, typer.Option(help="Local processes per submission.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler to fan a submission out on.")
    ] = None,
    once: Annotated[bool, typer.Option(help="Run at most one job, then stop.")] = False,
    max_idle: Annotated[
        float | None, typer.Option(help="Stop after this many idle seconds.")
    ] = None,
) -> None:
    """Score submissions against reference sets (the only process that reads them)."""
    with _fatal_errors():
        from assay.service import DatabaseSource, HttpSource, Worker

        refs = _pairs(reference, "--reference")
        image_folders = _pairs(images or [], "--images")
        if (db is None) == (url is None):
            raise InputError(
                "Give either --db (a worker next to the service) or --url and --token (remote)."
            )
        if url is not None:
            if not token:
                raise InputError(
                    "--url needs --token (a worker token from `assay admin token --scope worker`)."
                )
            source = HttpSource(url, token, lease_s=lease)
            worker = Worker(
                source,
                kinds=("score",),
                references=refs,
                images=image_folders,
                workers=workers,
                scheduler=scheduler,
                log=_say,
            )
        else:
            assert db is not None
            service = _service(db)
            worker = Worker(
                DatabaseSource(service, lease_s=lease),
                references=refs,
                images=image_folders,
                service=service,
                workers=workers,
                scheduler=scheduler,
                log=_say,
            )
        registered = None
        if url is None:
            registered = {name: service.reference_manifest(name)["digest"] for name in refs
                          if _registered(service, name)}  # fmt: skip
            missing = sorted(set(refs) - set(registered))
            if missing:
                raise InputError(
                    f"--reference {missing[0]}: no reference set {missing[0]!r} is registered in "
                    f"{db}; register it with `assay admin reference {missing[0]} PATH`."
                )
        worker.check_references(registered)
        _say(f"worker for {', '.join(refs) or 'no reference set'}; waiting for jobs")
        try:
            if once:
                worker.run_once()
            else:
                worker.run(max_idle_s=max_idle)
        except KeyboardInterrupt:
            _say("stopped; an unfinished job is re-queued when its lease expires.")
        finally:
            close = getattr(worker.source, "close", None)
            if close is not None:
                close()


@admin_app.command("reference")
def admin_reference(
    name: Annotated[str, typer.Argument(help="Reference set name.")],
    path: Annotated[Path, typer.Argument(help="Folder of the reference masks (stays here).")],
    db: DbOption = "challenge.db",
    metadata: Annotated[
        Path | None, typer.Option(help="Private per-case metadata CSV (subgroups).")
    ] = None,
    id_column: Annotated[str, typer.Option(help="Case id column of the metadata.")] = "case_id",
    replace: Annotated[
        bool, typer.Option(help="Register new content under a name that is registered already.")
    ] = False,
) -> None:
    """Register a reference set: its digest and public manifest (case ids, grids, labels)."""
    with _fatal_errors():
        import pandas as pd

        from assay.service import build_manifest
        from assay.service._service import metadata_key

        service = _service(db, create=True)
        manifest = build_manifest(name, path)
        if _registered(service, name):
            old = service.reference_manifest(name)["digest"]
            if old != manifest["digest"] and not replace:
                raise InputError(
                    f"Reference set {name!r} is registered with other content (digest "
                    f"{old[:12]}, now {manifest['digest'][:12]}); pass --replace to register the "
                    "new content (submissions scored before keep their scores), or check the path."
                )
        service.register_reference(manifest)
        had = len(service.db.results.metadata(metadata_key(name)))
        n_meta: int | str = f"unchanged ({had} cases)" if had else "none"
        if metadata is not None:
            try:
                table = pd.read_csv(metadata)
            except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise InputError(f"Cannot read the metadata CSV {metadata}: {exc}.") from None
            if id_column not in table.columns:
                raise InputError(f"{metadata} has no column {id_column!r}; pass --id-column.")
            n_meta = service.db.results.write_metadata(
                metadata_key(name), table, id_column=id_column
            )
        _say(
            f"registered {name}: {len(manifest['cases'])} cases, structures "
            f"{', '.join(manifest['structures'])}, digest {manifest['digest'][:12]}, "
            f"metadata: {n_meta if isinstance(n_meta, str) else f'{n_meta} cases'}"
        )


@admin_app.command("team")
def admin_team(
    name: Annotated[str, typer.Argument(help="Team name.")], db: DbOption = "challenge.db"
) -> None:
    """Add a team."""
    with _fatal_errors():
        _service(db, create=True).add_team(name)
        _say(f"added team {name}")


@admin_app.command("token")
def admin_token(
    scope: Annotated[str, typer.Option(help="participant, organiser or worker.")],
    team: Annotated[str | None, typer.Option(help="The team (participant tokens).")] = None,
    expires_days: Annotated[float, typer.Option(help="Days until it expires.")] = 90.0,
    label: Annotated[str, typer.Option(help="A note (who holds it).")] = "",
    db: DbOption = "challenge.db",
) -> None:
    """Issue a token; it is printed once and stored only as its SHA-256."""
    with _fatal_errors():
        from assay.service import issue_token

        token_id, token = issue_token(
            _service(db).db, scope, team=team, expires_days=expires_days, label=label
        )
        common.err.print(
            f"token {token_id} ({scope}{', team ' + team if team else ''}); shown once:"
        )
        common.out.print(token, highlight=False)


@admin_app.command("tokens")
def admin_tokens(db: DbOption = "challenge.db") -> None:
    """List tokens (ids, scopes, teams, labels, expiry, revocation; never the tokens)."""
    with _fatal_errors():
        from assay.service._tokens import list_tokens

        for t in list_tokens(_service(db).db):
            state = (
                f"revoked {t['revoked_at']}" if t["revoked_at"] else f"expires {t['expires_at']}"
            )
            _say(f"{t['token_id']}  {t['scope']}  {t['team'] or '-'}  {t['label'] or '-'}  {state}")


@admin_app.command("revoke")
def admin_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id.")], db: DbOption = "challenge.db"
) -> None:
    """Revoke a token."""
    with _fatal_errors():
        from assay.service import revoke_token

        if not revoke_token(_service(db).db, token_id):
            raise InputError(f"No unrevoked token {token_id}.")
        _say(f"revoked token {token_id}")


@admin_app.command("approve")
def admin_approve(
    submission: Annotated[str, typer.Argument(help="Submission id.")],
    reject: Annotated[bool, typer.Option(help="Refuse the release instead.")] = False,
    db: DbOption = "challenge.db",
) -> None:
    """Release (or refuse) a result waiting for approval."""
    with _fatal_errors():
        view = _service(db).approve(submission, approve=not reject, actor="cli")
        _say(f"{submission}: {view['state']}")


@admin_app.command("submissions")
def admin_submissions(
    phase: Annotated[str | None, typer.Option(help="Only this phase.")] = None,
    db: DbOption = "challenge.db",
) -> None:
    """List submissions with their states."""
    with _fatal_errors():
        for view in _service(db).submissions(None, phase):
            code = f" ({view['error_code']})" if view["error_code"] else ""
            _say(
                f"{view['id']}  {view['phase']}  {view['team']}  {view['state']}{code}  "
                f"{view['created_at']}"
            )


@admin_app.command("cases")
def admin_cases(
    submission: Annotated[str, typer.Argument(help="Submission id.")],
    out: Annotated[Path, typer.Option(help="CSV to write the private per-case rows to.")],
    db: DbOption = "challenge.db",
) -> None:
    """Export a submission's private per-case scores (the read is audited)."""
    with _fatal_errors():
        if out.exists():
            raise InputError(
                f"{out} exists; choose a new file (assay never overwrites what it did not write)."
            )
        if not out.parent.is_dir():
            raise InputError(f"No folder {out.parent} for --out {out}; create it first.")
        rows = _service(db).case_rows(submission, actor="cli")
        if rows.empty:
            raise InputError(f"Submission {submission} has no scores (it was not scored).")
        rows.to_csv(out, index=False)
        _say(f"wrote {len(rows)} rows to {out} (audited)")


@admin_app.command("audit")
def admin_audit(
    limit: Annotated[int, typer.Option(help="Entries to show.")] = 50, db: DbOption = "challenge.db"
) -> None:
    """Show the newest audit entries (releases, approvals, private reads)."""
    with _fatal_errors():
        for entry in _service(db).audit_log(limit):
            _say(f"{entry['at']}  {entry['actor']}  {entry['action']}  {entry['subject']}")


@app.command("submit")
def submit_command(
    predictions: Annotated[
        Path, typer.Argument(help="Folder: CASE.nii.gz label maps or CASE/STRUCTURE.nii.gz.")
    ],
    url: Annotated[str, typer.Option(help="The service URL.")],
    phase: Annotated[str, typer.Option(help="Phase to submit to.")],
    token: Annotated[str, typer.Option(help="Your team token.", envvar="ASSAY_TOKEN")],
    label: Annotated[str, typer.Option(help="A label for this submission.")] = "",
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retry-safe key (same key: no second charge).")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until it is scored and print the result.")
    ] = True,
) -> None:
    """Zip a prediction folder and submit it; prints the state, quota and released result."""
    with _fatal_errors():
        from assay.service import ServiceClient

        with ServiceClient(url, token) as client:
            state = _submit(client, predictions, phase, idempotency_key, label, wait)
        if state in ("rejected", "failed_participant", "failed_infra", "cancelled"):
            raise typer.Exit(1)  # scripts can tell a rejected submission from a scored one


def _submit(
    client: ServiceClient,
    predictions: Path,
    phase: str,
    idempotency_key: str | None,
    label: str,
    wait: bool,
) -> str:
    from assay.service import zip_predictions

    view = client.submit(
        phase, zip_predictions(predictions), idempotency_key=idempotency_key, label=label
    )
    quota = view.get("quota", {})
    _say(
        f"submission {view['id']}: {view['state']}; {quota.get('remaining')} of "
        f"{quota.get('limit')} left in the window"
    )
    if wait:
        view = client.wait(view["id"])
        code = f" ({view['error_code']}: {view['reason']})" if view.get("error_code") else ""
        _say(f"submission {view['id']}: {view['state']}{code}")
        if view.get("result"):
            common.out.print(
                json.dumps(view["result"], indent=2, ensure_ascii=False), highlight=False
            )
    return str(view["state"])


@app.command("challenge-demo")
def challenge_demo_command(
    output: Annotated[
        Path | None, typer.Option(help="Folder for its files (default: a temporary one).")
    ] = None,
    cases: Annotated[int, typer.Option(help="Synthetic reference cases.")] = 60,
) -> None:
    """The service's quick start: a synthetic challenge end to end on loopback (about 12 s)."""
    with _fatal_errors():
        from assay.service._quickstart import run_quickstart

        if cases < 30:
            raise InputError("--cases must be at least 30 (20 feedback and 10 final cases).")
        if output is not None and output.exists() and any(output.iterdir()):
            raise InputError(f"{output} is not empty; choose a new folder.")
        if output is None:
            with tempfile.TemporaryDirectory(prefix="assay-challenge-") as tmp:
                run_quickstart(tmp, n_cases=cases, say=_say, keep=False)
        else:
            run_quickstart(output, n_cases=cases, say=_say)
