"""The submission service end to end over HTTP: a real uvicorn server on loopback, a real
SQLite (and PostgreSQL) database, the gate thread and a scoring worker."""

from __future__ import annotations

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
