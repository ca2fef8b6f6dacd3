"""The submission service end to end over HTTP: a real uvicorn server on loopback, a real
SQLite (and PostgreSQL) database, the gate thread and a scoring worker."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from service_helpers import client, make_challenge, running

pytestmark = pytest.mark.service


def test_submission_is_validated_scored_and_released(tmp_path):
    ch = make_challenge(tmp_path)
    with running(ch) as server:
        alpha = client(server, ch.tokens["alpha"])
        view = alpha.submit("open", ch.archive("open", 1.0), label="v1")
        assert view["state"] == "validating"
        assert view["quota"]["remaining"] == 4  # charged when recorded: 5 - 1
        done = alpha.wait(view["id"], timeout_s=60)
        assert done["state"] == "released", done
        result = done["result"]
        rows = {(r["structure"], r["metric"]): r for r in result["results"]}
        # 30 cases: resolution 10^ceil(log10(2/30)) = 0.1; medians need 50 cases.
        avg = rows[("average", "dsc")]
        assert avg["resolution"] == 0.1 and avg["median"] is None
        assert avg["ci_low"] <= avg["mean"] <= avg["ci_high"]
        assert "min" not in avg and "max" not in avg
        assert result["policy"]["text"].startswith("No per-case scores")
        # The private per-case rows exist, for the organiser only.
        admin = client(server, ch.organiser)
        cases = admin.get(f"/v1/admin/submissions/{view['id']}/cases")
        assert len(cases) == 30 * 3 * 2  # cases x structures x metrics
        audit = admin.get("/v1/admin/audit")
        assert any(e["action"] == "read_cases" and e["subject"] == view["id"] for e in audit)


def _race(ch, server, n: int = 20) -> list[int]:
    """``n`` concurrent uploads by one team; their HTTP statuses."""
    data = ch.archive("open", 1.0)

    def post(i: int) -> int:
        r = httpx.post(
            f"{server.url}/v1/phases/open/submissions",
            content=data,
            headers={"Authorization": f"Bearer {ch.tokens['alpha']}", "Idempotency-Key": f"k{i}"},
            timeout=60,
        )
        if r.status_code == 429:
            assert r.json()["code"] == "quota_exhausted", r.json()
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(post, range(n)))


RACE_PHASE = (
    {
        "name": "open",
        "reference_set": "synth",
        "policy": {"n_bootstrap": 200},
        "quota": {"submissions": 3, "max_active": 20},
    },
)


def test_concurrent_uploads_never_exceed_the_quota_sqlite(tmp_path):
    ch = make_challenge(tmp_path, n_cases=10, phases=RACE_PHASE)
    with running(ch, scorer=False) as server:
        statuses = _race(ch, server)
        assert sorted(statuses) == [202] * 3 + [429] * 17
        assert client(server, ch.tokens["alpha"]).get("/v1/phases/open/quota")["used"] == 3


def test_concurrent_uploads_never_exceed_the_quota_postgres(tmp_path, pg):
    ch = make_challenge(tmp_path, n_cases=10, phases=RACE_PHASE, db_url=pg.database())
    try:
        with running(ch, scorer=False) as server:
            statuses = _race(ch, server)
            assert sorted(statuses) == [202] * 3 + [429] * 17
    finally:
        ch.service.db.close()


def test_postgres_end_to_end_with_a_remote_scorer(tmp_path, pg):
    """PostgreSQL store, and a scorer that only talks to the API (outbound requests)."""
    from assay.service import HttpSource, Worker

    ch = make_challenge(tmp_path, n_cases=10, db_url=pg.database())
    try:
        with running(ch, scorer=False) as server:
            alpha = client(server, ch.tokens["alpha"])
            view = alpha.submit("open", ch.archive("open", 1.0))
            source = HttpSource(server.url, ch.worker_token, lease_s=20)
            remote = Worker(source, kinds=("score",), references={"synth": ch.reference})
            deadline = time.monotonic() + 60
            while not remote.run_once():
                assert time.monotonic() < deadline, "no scoring job was queued"
                time.sleep(0.05)
            source.close()
            done = alpha.wait(view["id"], timeout_s=60)
            assert done["state"] == "released"
            assert done["result"]["primary"]["mean"] is not None
    finally:
        ch.service.db.close()


def test_access_is_scoped_and_unknown_equals_forbidden(tmp_path):
    ch = make_challenge(tmp_path, n_cases=10)
    with running(ch) as server:
        alpha = client(server, ch.tokens["alpha"])
        view = alpha.submit("open", ch.archive("open", 1.0))
        alpha.wait(view["id"], timeout_s=60)

        def call(method: str, path: str, token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.request(method, server.url + path, headers=headers, timeout=30)

        beta = ch.tokens["beta"]
        sid = view["id"]
        for method, path in (
            ("GET", f"/v1/submissions/{sid}"),
            ("POST", f"/v1/submissions/{sid}/cancel"),
            ("POST", f"/v1/submissions/{sid}/select-final"),
        ):
            theirs = call(method, path, beta)
            unknown = call(method, path.replace(sid, "s_0000000000000000"), beta)
            assert theirs.status_code == unknown.status_code == 404
            # The same answer, but for the id each names.
            assert theirs.json()["message"].replace(sid, "ID") == unknown.json()["message"].replace(
                "s_0000000000000000", "ID"
            )
        assert all(s["id"] != sid for s in call("GET", "/v1/submissions", beta).json())
        # Admin and worker routes: a participant gets the same 404; no token gets 401.
        for method, path in (
            ("GET", "/v1/admin/audit"),
            ("GET", f"/v1/admin/submissions/{sid}/cases"),
            ("POST", f"/v1/admin/results/{sid}/approve"),
            ("POST", "/v1/worker/reap"),
        ):
            assert call(method, path, ch.tokens["alpha"]).status_code == 404
            assert call(method, path, None).status_code == 401
            assert call(method, path, "assay_" + "x" * 43).status_code == 401
        assert call("GET", "/v1/admin/audit", ch.organiser).status_code == 200
        # A revoked token is refused at once; so is an expired one.
        made = client(server, ch.organiser).post(
            "/v1/admin/tokens", {"scope": "participant", "team": "beta", "expires_days": 1}
        )
        assert call("GET", "/v1/submissions", made["token"]).status_code == 200
        client(server, ch.organiser).post(f"/v1/admin/tokens/{made['token_id']}/revoke")
        assert call("GET", "/v1/submissions", made["token"]).status_code == 401
        from assay.service import issue_token

        db = ch.service.db
        _, short = issue_token(db, "participant", team="beta", expires_days=1e-9)
        time.sleep(0.01)
        assert call("GET", "/v1/submissions", short).status_code == 401


def test_tokens_are_stored_only_as_digests(tmp_path):
    from sqlalchemy import text

    from assay.service import digest

    ch = make_challenge(tmp_path, n_cases=10)
    with ch.service.db.read() as con:
        stored = {r[0] for r in con.execute(text("SELECT digest FROM svc_tokens"))}
    for token in (*ch.tokens.values(), ch.organiser, ch.worker_token):
        assert len(token) == len("assay_") + 43  # 32 random bytes, URL-safe base64
        assert token not in stored and digest(token) in stored


def test_the_service_side_never_records_where_the_reference_is(tmp_path):
    """Zone A holds no path to the reference: not in any service table, not in the config."""
    from sqlalchemy import text

    ch = make_challenge(tmp_path, n_cases=10)
    with running(ch) as server:
        alpha = client(server, ch.tokens["alpha"])
        view = alpha.submit("open", ch.archive("open", 1.0))
        assert alpha.wait(view["id"], timeout_s=60)["state"] == "released"
    with ch.service.db.read() as con:
        tables = [
            r[0] for r in con.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        ]
        dump = "".join(
            str(row)
            for t in tables
            if t.startswith("svc_")
            for row in con.execute(text(f"SELECT * FROM {t}"))
        )
    assert len(dump) > 1000  # the tables were read
    assert str(ch.reference.parent) not in dump  # .../reference, the folder of the masks
    assert "case0000" in dump  # case ids are public (manifest), the masks' location is not
