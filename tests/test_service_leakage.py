"""Leakage tests of the private test-set service (research/hidden_test_service.md §9-§10).

* Canaries: marker values among the private per-case scores (planted by the scorer before
  release, and over SQL after it, followed by re-released leaderboards), a marker file in
  the reference folder and a marker value in the private case metadata. Every route of the
  OpenAPI spec is walked with schemathesis as an anonymous caller, as a participant of
  another team and as the owning participant, with the real submission ids; no response may
  contain a marker, a server path, a case-level field, or a number finer than the policy's
  resolution. The organiser's audited route shows that the markers really are there.
* Probing: two submissions that differ in one case are told apart under raw reporting and
  not under the default policy (the Ladder).
* Boosting (Blum & Hardt 2015): majority-voting the random submissions that scored above
  chance overfits the raw scores and gains nothing under the Ladder.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from service_helpers import Challenge, client, make_challenge, running
from sqlalchemy import text

from assay.service import DatabaseSource, Worker, build_manifest, phase_from_mapping
from assay.service._release import resolution, submission_release

pytestmark = pytest.mark.service

#: Planted by the scorer in one per-case row of every submission, before the release gate.
CANARY_SCORED = 0.123456789
#: Written over SQL into one per-case row after release; leaderboards are then recomputed.
CANARY_SQL = 0.987654321
#: A scanner name in the private case metadata of two cases (too few for a subgroup).
CANARY_META = "zqxMetaCanary"
#: The name (and content) of a file in the reference folder.
CANARY_FILE = "zqxFileCanary"
N_CASES = 48
WALK_PHASES = (
    {"name": "open", "reference_set": "synth", "kind": "open",
     "policy": {"n_bootstrap": 200}, "quota": {"submissions": 10}},
    {"name": "final", "reference_set": "synth", "kind": "final",
     "policy": {"n_bootstrap": 200}},
)  # fmt: skip
#: Keys of per-case data; none may appear in what participants or the public get.
CASE_KEYS = {"case_id", "case_ids", "case", "cases", "per_case", "value", "values", "min",
             "max", "minimum", "maximum", "q0", "q100", "scores", "case_scores"}  # fmt: skip
NUMBER_KEYS = ("mean", "median", "ci_low", "ci_high")


# ---------------------------------------------------------------------------------- set-up


class CanarySource(DatabaseSource):
    """A database job source whose scorer plants :data:`CANARY_SCORED` in the first
    ``dsc`` row of case0000 before the release gate sees the rows."""

    def complete(self, job_id: int, rows: pd.DataFrame) -> str:
        rows = rows.copy()
        hit = rows.index[(rows["case_id"] == "case0000") & (rows["metric"] == "dsc")][0]
        rows.loc[hit, "value"] = CANARY_SCORED
        return super().complete(job_id, rows)


@contextmanager
def canary_scorer(ch: Challenge) -> Iterator[None]:
    stop = threading.Event()
    worker = Worker(
        CanarySource(ch.service, lease_s=10.0),
        kinds=("score",),
        references={"synth": ch.reference},
        service=ch.service,
    )
    thread = threading.Thread(target=worker.run, kwargs={"poll_s": 0.05, "stop": stop}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def _plant_reference_and_metadata(ch: Challenge) -> None:
    """A canary file in the reference folder (registered again: its digest changes) and a
    canary scanner name in the private metadata of case0000 and case0001."""
    (ch.reference / "case0000" / f"{CANARY_FILE}.txt").write_text(CANARY_FILE)
    ch.service.register_reference(build_manifest("synth", ch.reference))
    with ch.service.db.write() as con:
        for case in ("case0000", "case0001"):
            data = json.loads(
                con.execute(
                    text("SELECT data FROM case_metadata WHERE dataset = :d AND case_id = :c"),
                    {"d": "service:synth", "c": case},
                ).scalar_one()
            )
            data["scanner"] = CANARY_META
            con.execute(
                text("UPDATE case_metadata SET data = :x WHERE dataset = :d AND case_id = :c"),
                {"x": json.dumps(data), "d": "service:synth", "c": case},
            )


def _plant_sql_canary(ch: Challenge, sids: list[str]) -> None:
    with ch.service.db.write() as con:
        done = con.execute(
            text(
                "UPDATE svc_case_scores SET value = :v WHERE case_id = 'case0001' AND "
                "structure = 'spleen' AND metric = 'nsd' AND submission_id IN "
                f"({', '.join(repr(s) for s in sids)})"
            ),
            {"v": CANARY_SQL},
        )
        assert done.rowcount == len(sids)


def _leaderboard_after(url: str, ch: Challenge, phase: str, n_entries: int) -> dict[str, Any]:
    """The phase's leaderboard once it is computed from the current phase version."""
    deadline = time.monotonic() + 60
    while True:
        with ch.service.db.read() as con:
            version = con.execute(
                text("SELECT version FROM svc_phases WHERE name = :p"), {"p": phase}
            ).scalar_one()
        board: dict[str, Any] = httpx.get(f"{url}/v1/phases/{phase}/leaderboard").json()
        if board.get("version") == version and board["n_entries"] == n_entries:
            return board
        assert time.monotonic() < deadline, (board.get("version"), version, board["n_entries"])
        time.sleep(0.1)


@dataclass
class Walk:
    """Every response of the walk, and what it needs to judge them."""

    ch: Challenge
    ids: dict[str, str]
    operations: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    organiser_cases: str = ""
    boards: dict[str, dict[str, Any]] = field(default_factory=dict)


def _walk_spec(
    url: str,
    tokens: Mapping[str, str | None],
    known: Mapping[str, list[Any]],
    zips: list[bytes],
    budget_s: float,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Call every operation of the served OpenAPI spec with schemathesis-generated requests,
    as each identity in ``tokens``: path parameters from ``known`` (every value, then freely
    generated ones), bodies of ``application/zip`` from ``zips``."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    schemathesis.openapi.media_type("application/zip", st.sampled_from(zips))
    spec = httpx.get(f"{url}/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    records: list[dict[str, Any]] = []
    session = requests.Session()
    deadline = time.monotonic() + budget_s

    def run(op: Any, who: str, token: str | None, path: dict[str, Any] | None, n: int) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else None
        strategy = op.as_strategy(path_parameters=path, headers=headers)

        @settings(
            max_examples=n,
            database=None,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        @given(case=strategy)
        def call(case: Any) -> None:
            try:
                response = case.call(base_url=url, session=session, timeout=30)
            except requests.RequestException as exc:  # e.g. a header requests cannot send
                records.append({"who": who, "op": op.label, "status": None, "error": str(exc)})
                return
            kind = [v[0] for k, v in response.headers.items() if k.lower() == "content-type"]
            records.append(
                {
                    "who": who,
                    "op": op.label,
                    "url": response.request.url,
                    "status": response.status_code,
                    "type": kind[0] if kind else "",
                    "text": response.content.decode("utf-8", errors="replace"),
                }
            )

        call()

    for op in operations:
        names = [p.name for p in op.path_parameters]
        combos = [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(known[n] for n in names))
        ]
        for who, token in tokens.items():
            if not names:
                run(op, who, token, None, 5 if time.monotonic() < deadline else 1)
                continue
            for combo in combos:
                run(op, who, token, combo, 3 if time.monotonic() < deadline else 1)
            run(op, who, token, None, 5 if time.monotonic() < deadline else 1)
    session.close()
    return [op.label for op in operations], records


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    ch = make_challenge(tmp_path_factory.mktemp("leak"), n_cases=N_CASES, phases=WALK_PHASES)
    _plant_reference_and_metadata(ch)
    with running(ch, scorer=False) as server, canary_scorer(ch):
        alpha, beta = client(server, ch.tokens["alpha"]), client(server, ch.tokens["beta"])
        admin = client(server, ch.organiser)
        ids: dict[str, str] = {}

        def submit(key: str, who: Any, phase: str, quality: float, state: str) -> None:
            sid = who.submit(phase, ch.archive(phase, quality, name=key), label=key)["id"]
            view = who.wait(sid, timeout_s=120, poll_s=0.2)
            assert view["state"] == state, view
            ids[key] = sid

        submit("a_open", alpha, "open", 1.0, "released")
        submit("b_open", beta, "open", 1.5, "released")
        submit("a_withheld", alpha, "open", 1.6, "withheld")  # Ladder: not better than a_open
        rejected = alpha.submit("open", b"not a zip", label="junk")["id"]
        assert alpha.wait(rejected, timeout_s=60, poll_s=0.1)["state"] == "rejected"
        ids["a_rejected"] = rejected
        submit("a_final", alpha, "final", 1.0, "pending_approval")
        submit("b_final", beta, "final", 1.5, "pending_approval")
        beta.post(f"/v1/submissions/{ids['b_open']}/select-final")
        # the SQL canary after release, then re-released leaderboards from the private rows
        _plant_sql_canary(ch, [ids["a_open"], ids["a_final"], ids["b_final"]])
        alpha.post(f"/v1/submissions/{ids['a_open']}/select-final")
        admin.post(f"/v1/admin/results/{ids['a_final']}/approve")
        admin.post(f"/v1/admin/results/{ids['b_final']}/approve")
        out = Walk(ch, ids, [])
        out.boards = {p: _leaderboard_after(server.url, ch, p, 2) for p in ("open", "final")}
        out.organiser_cases = json.dumps(admin.get(f"/v1/admin/submissions/{ids['a_open']}/cases"))
        with ch.service.db.read() as con:
            job_ids = [int(j) for j in con.execute(text("SELECT job_id FROM svc_jobs")).scalars()]
        known = {
            "phase": ["open", "final"],
            "sid": [
                ids[k]
                for k in ("a_open", "a_withheld", "a_rejected", "a_final", "b_open", "b_final")
            ],
            "job_id": job_ids[:2],
            "token_id": [1],
            "name": ["site.css", "site.js"],
        }
        zips = [b"not a zip", b"PK\x05\x06" + bytes(18), ch.archive("open", 1.2, name="walk")]
        tokens = {"anonymous": None, "other_team": ch.tokens["beta"], "owner": ch.tokens["alpha"]}
        out.operations, out.records = _walk_spec(server.url, tokens, known, zips, budget_s=60)
        # the public pages and the submission views once more, after anything the walk queued
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for path in (
                "/",
                "/phases/open/leaderboard",
                "/phases/final/leaderboard",
                "/v1/submissions",
                *(f"/v1/submissions/{s}" for s in known["sid"]),
            ):
                r = httpx.get(f"{server.url}{path}", headers=headers, timeout=30)
                out.records.append(
                    {
                        "who": who,
                        "op": f"GET {path}",
                        "url": str(r.url),
                        "status": r.status_code,
                        "type": r.headers.get("content-type", ""),
                        "text": r.text,
                    }
                )
        yield out


# ----------------------------------------------------------------------------- the checks


def _responses(walk: Walk) -> list[dict[str, Any]]:
    return [r for r in walk.records if r.get("status") is not None]


def _json(record: Mapping[str, Any]) -> Any:
    if "json" not in record["type"]:
        return None
    return json.loads(record["text"])


def _without_rejection_reasons(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_without_rejection_reasons(v) for v in obj]
    if isinstance(obj, dict):
        rejected = obj.get("state") == "rejected"
        return {
            k: _without_rejection_reasons(v)
            for k, v in obj.items()
            if not (rejected and k == "reason")
        }
    return obj


def _public_part(record: Mapping[str, Any]) -> Any:
    """A JSON response without what is public by design: the manifest (case ids, grids) and
    upload rejection reasons (checked against that manifest, e.g. "no prediction: case0000")."""
    body = _json(record)
    if record["op"] == "GET /v1/phases/{phase}" and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "manifest"}
    return _without_rejection_reasons(body)


def _walk_json(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every key and leaf of a JSON value; keys as ``path/key`` with None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}/{k}", None
            yield from _walk_json(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_json(v, f"{path}[{i}]")
    else:
        yield path, obj


def _renderings(value: float) -> set[str]:
    """How ``value`` could show up in a body: in full, and rounded to 4-9 decimals."""
    out = {repr(value), f"{value:.10g}"}
    for d in range(4, 10):
        out.add(f"{round(value, d)!r}")
        out.add(f"{value:.{d}f}")
    return out


def test_walk_reached_every_route_as_every_caller(walk: Walk) -> None:
    reached = {(r["who"], r["op"]) for r in _responses(walk)}
    for who in ("anonymous", "other_team", "owner"):
        missing = [op for op in walk.operations if (who, op) not in reached]
        assert not missing, (who, missing)
    assert len(walk.operations) >= 30
    # the walk really saw the owner's released result and the policy refusing others
    own = f"/v1/submissions/{walk.ids['a_open']}"
    seen = [r for r in _responses(walk) if r["url"].endswith(own)]
    owner = [r for r in seen if r["who"] == "owner" and r["status"] == 200]
    assert owner and all(json.loads(r["text"])["result"]["results"] for r in owner)
    assert {r["status"] for r in seen if r["who"] == "other_team"} == {404}
    assert {r["status"] for r in seen if r["who"] == "anonymous"} == {401}
    assert {
        r["status"]
        for r in _responses(walk)
        if r["op"].split()[1].startswith("/v1/admin") and r["who"] != "anonymous"
    } == {404}
    # five-second sanity of the markers: they are in the private data the service holds
    assert repr(CANARY_SCORED) in walk.organiser_cases
    assert repr(CANARY_SQL) in walk.organiser_cases
    assert walk.boards["final"]["n_entries"] == 2 and "subgroups" in walk.boards["final"]
    meta = walk.ch.service.db.results.metadata("service:synth")
    assert (meta["scanner"] == CANARY_META).sum() == 2
    assert (walk.ch.reference / "case0000" / f"{CANARY_FILE}.txt").exists()


def test_no_canary_value_in_any_response(walk: Walk) -> None:
    markers = _renderings(CANARY_SCORED) | _renderings(CANARY_SQL)
    hits = [(r["who"], r["op"], m) for r in _responses(walk) for m in markers if m in r["text"]]
    assert not hits, hits[:10]
    for r in _responses(walk):  # however a number is written: none is a canary rounded
        for where, value in _walk_json(_json(r)):
            if isinstance(value, float):
                for canary in (CANARY_SCORED, CANARY_SQL):
                    assert abs(value - canary) >= 5e-5, (r["who"], r["op"], where, value)


def test_no_metadata_canary_in_any_response(walk: Walk) -> None:
    """A metadata value of two cases (a rare scanner) is data about fewer than
    ``min_subgroup`` cases: not even its name may be published (a suppressed cell that names
    its group tells everyone that such cases exist, and which value they have)."""
    hits = [(r["who"], r["op"]) for r in _responses(walk) if CANARY_META in r["text"]]
    assert not hits, hits[:10]


def test_no_reference_file_server_path_or_case_id_in_any_response(walk: Walk) -> None:
    ch = walk.ch
    secrets = [CANARY_FILE, str(ch.reference), str(ch.root), f"{ch.reference.name}/case0000"]
    hits = [(r["who"], r["op"], s) for r in _responses(walk) for s in secrets if s in r["text"]]
    assert not hits, hits[:10]
    # case ids are public only in the manifest; no result, leaderboard or page names one
    cases = [f"case{i:04d}" for i in range(N_CASES)]
    for r in _responses(walk):
        body = _public_part(r)
        shown = json.dumps(body) if body is not None else r["text"]
        named = [c for c in cases if c in shown]
        assert not named, (r["who"], r["op"], named[:3])


def test_no_case_level_fields_in_any_response(walk: Walk) -> None:
    for r in _responses(walk):
        for where, value in _walk_json(_public_part(r)):
            if value is None and where:
                key = where.rsplit("/", 1)[-1]
                assert key not in CASE_KEYS, (r["who"], r["op"], where)


def _on_grid(value: float, step: float) -> bool:
    decimals = max(0, -round(math.log10(step)))
    return abs(value / step - round(value / step)) < 1e-9 and value == round(value, decimals)


def _check_rows(rows: list[dict[str, Any]], phase: Any, where: str) -> int:
    checked = 0
    for row in rows:
        step = row["resolution"]
        assert step == resolution(row["metric"], row["n_evaluable"], phase.policy), (where, row)
        for key in NUMBER_KEYS:
            if row.get(key) is not None:
                assert _on_grid(row[key], step), (where, key, row)
                checked += 1
    return checked


def test_released_numbers_are_no_finer_than_the_policy_resolution(walk: Walk) -> None:
    ch = walk.ch
    phases = {p: ch.service.phase(p) for p in ("open", "final")}
    checked = 0
    for r in _responses(walk):
        body = _public_part(r)
        if body is None or r["status"] != 200:
            continue
        # nothing a participant or the public gets has more decimals than max_decimals (4)
        for where, value in _walk_json(body):
            if isinstance(value, float) and math.isfinite(value):
                assert value == round(value, 4), (r["who"], r["op"], where, value)
        if r["op"].startswith("GET /v1/submissions"):
            views = body if isinstance(body, list) else [body]
            for view in views:
                result = view.get("result")
                if not result:
                    continue
                phase = phases[view["phase"]]
                checked += _check_rows(result["results"], phase, r["op"])
                avg = [
                    x
                    for x in result["results"]
                    if x["structure"] == "average" and x["metric"] == phase.primary
                ]
                step = (
                    avg[0]["resolution"]
                    if avg
                    else resolution(phase.primary, N_CASES, phase.policy)
                )
                assert _on_grid(result["primary"]["mean"], step), (r["op"], result["primary"])
        if r["op"] == "GET /v1/phases/{phase}/leaderboard" and body.get("rows"):
            phase = phases[body["phase"]]
            checked += _check_rows(body["rows"], phase, r["op"])
            for cell in body.get("subgroups", []):
                if not cell["suppressed"]:
                    assert cell["n"] >= phase.policy.min_subgroup
                    for value in cell["means"].values():
                        assert value is None or _on_grid(value, cell["resolution"]), cell
    assert checked > 100  # the walk saw many released numbers


# ------------------------------------------------------------------------------- probing

PROBE_CASES = 40
PROBE_PHASES = (
    {"name": "raw", "reference_set": "synth", "policy": {"mode": "raw", "n_bootstrap": 200},
     "quota": {"submissions": 10, "max_active": 1}},
    {"name": "policy", "reference_set": "synth", "policy": {"n_bootstrap": 200},
     "quota": {"submissions": 10, "max_active": 1}},
)  # fmt: skip
FLIP = 3  # the probed case: an empty prediction for case0003


def test_one_case_probe_is_visible_raw_and_invisible_under_the_policy(tmp_path) -> None:
    ch = make_challenge(tmp_path, n_cases=PROBE_CASES, phases=PROBE_PHASES)
    with running(ch) as server:
        alpha, beta = client(server, ch.tokens["alpha"]), client(server, ch.tokens["beta"])
        admin = client(server, ch.organiser)

        def release(who: Any, phase: str, flip: int | None) -> dict[str, Any]:
            data = ch.archive(phase, 1.0, name="probe", flip=flip)
            view = who.wait(who.submit(phase, data)["id"], timeout_s=120, poll_s=0.2)
            assert view["state"] in ("released", "withheld"), view
            return view

        # raw reporting: the probe tells the team what case0003 contributes
        base, probe = release(alpha, "raw", None), release(alpha, "raw", FLIP)
        assert base["state"] == probe["state"] == "released"
        gap = base["result"]["primary"]["mean"] - probe["result"]["primary"]["mean"]
        rows = pd.DataFrame(admin.get(f"/v1/admin/submissions/{base['id']}/cases"))
        case = rows[(rows["case_id"] == f"case{FLIP:04d}") & (rows["metric"] == "dsc")]
        assert gap > 0.01 and gap == pytest.approx(case["value"].mean() / PROBE_CASES, abs=1e-9)
        # the default policy: the Ladder withholds both directions of the one-case change,
        # and repeats the released best; the team learns nothing about case0003
        for who, first_flip, second_flip in ((alpha, None, FLIP), (beta, FLIP, None)):
            first = release(who, "policy", first_flip)
            second = release(who, "policy", second_flip)
            assert first["state"] == "released", first
            assert second["state"] == "withheld", (second["result"]["ladder"], first["result"])
            assert second["result"]["primary"] == first["result"]["primary"]
            assert second["result"]["results"] == []
            rounded = {(r["structure"], r["metric"]): r for r in first["result"]["results"]}
            assert rounded[("average", "dsc")]["resolution"] == 0.1  # 40 cases


def test_ladder_never_releases_a_one_case_improvement() -> None:
    """A change in one case is exactly at the Ladder's threshold (mean paired gain d/n, its
    standard error d/n too), so it must be withheld however floating point rounds."""
    phase = phase_from_mapping(
        {"name": "p", "reference_set": "r", "metrics": ["dsc"], "policy": {"n_bootstrap": 100}}
    )
    rng = np.random.default_rng(12)
    released = []
    for trial in range(12):
        n = int(rng.integers(30, 61))
        ids = [f"case{i:04d}" for i in range(n)]
        values = rng.uniform(0.3, 0.9, n).round(6)
        better = values.copy()
        better[int(rng.integers(n))] += float(rng.uniform(0.01, 0.1))

        def frame(sid: str, v: np.ndarray, ids: list[str] = ids) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "model": sid,
                    "case_id": ids,
                    "structure": "target",
                    "metric": "dsc",
                    "value": v,
                    "status": "ok",
                }
            )

        best = frame("s_best", values)
        state, payload = submission_release(best, phase)
        assert state == "released"
        state, _ = submission_release(frame("s_new", better), phase, best=("s_best", best, payload))
        if state != "withheld":
            released.append((trial, n, state))
    assert not released, f"{len(released)} of 12 one-case improvements released: {released}"


# ------------------------------------------------------------------------------ boosting

BOOST_N, BOOST_K = 400, 200
SE = math.sqrt(0.25 / BOOST_N)  # SE of an accuracy near 0.5 over 400 cases


def _boost_frame(sid: str, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": sid,
            "case_id": [f"case{i:04d}" for i in range(BOOST_N)],
            "structure": "target",
            "metric": "dsc",
            "value": values,
            "status": "ok",
        }
    )


def _vote(guesses: np.ndarray, keep: np.ndarray) -> np.ndarray:
    assert keep.any()
    return (guesses[keep].mean(axis=0) > 0.5).astype(int)


def test_boosting_attack_overfits_raw_scores_and_gains_nothing_under_the_ladder() -> None:
    """k random label guesses scored per case (1 when right); the attacker keeps those whose
    released score beats 0.5 and majority-votes them (Blum & Hardt 2015, §4)."""
    rng = np.random.default_rng(0)
    hidden = rng.integers(0, 2, BOOST_N)
    holdout = rng.integers(0, 2, BOOST_N)  # fresh cases: new hidden labels
    guesses = rng.integers(0, 2, (BOOST_K, BOOST_N))
    scores = (guesses == hidden).astype(float)
    spec = {"name": "p", "reference_set": "r", "metrics": ["dsc"], "policy": {"n_bootstrap": 100}}
    ladder = phase_from_mapping(spec)
    raw = phase_from_mapping({**spec, "policy": {"n_bootstrap": 100, "mode": "raw"}})

    # raw reporting releases the exact means (checked on a few through the gate)
    raw_released = scores.mean(axis=1)
    for i in (0, 1, 2):
        state, payload = submission_release(_boost_frame(f"s{i:03d}", scores[i]), raw)
        assert state == "released" and payload["primary"]["mean"] == pytest.approx(
            raw_released[i], abs=1e-12
        )
    vote = _vote(guesses, raw_released > 0.5)
    _, payload = submission_release(_boost_frame("vote", (vote == hidden) * 1.0), raw)
    assert payload["primary"]["mean"] == pytest.approx((vote == hidden).mean(), abs=1e-12)
    assert payload["primary"]["mean"] > 0.5 + 4 * SE  # the power check: the attack works raw
    assert abs((vote == holdout).mean() - 0.5) < 3 * SE  # and is pure overfitting

    # the Ladder, through the gate: what the attacker sees is the released primary mean
    best: tuple[str, pd.DataFrame, dict[str, Any]] | None = None
    best_raw = -1.0
    seen, n_released, skipped = [], 0, []
    for i in range(BOOST_K):
        sid = f"s{i:03d}"
        if best is not None and raw_released[i] <= best_raw:
            # a mean paired gain <= 0 is never above its standard error: withheld
            skipped.append(i)
            seen.append(best[2]["primary"]["mean"])
            continue
        state, payload = submission_release(_boost_frame(sid, scores[i]), ladder, best=best)
        seen.append(payload["primary"]["mean"])
        if state == "released":
            n_released += 1
            if best is None or (payload["primary"]["mean"], sid) > (
                best[2]["primary"]["mean"],
                best[0],
            ):
                best, best_raw = (sid, _boost_frame(sid, scores[i]), payload), raw_released[i]
        else:
            assert state == "withheld" and best is not None
            assert payload["primary"]["mean"] == best[2]["primary"]["mean"]
    assert best is not None
    for i in skipped[:: max(1, len(skipped) // 4)][:4]:  # the shortcut agrees with the gate
        state, payload = submission_release(_boost_frame(f"x{i}", scores[i]), ladder, best=best)
        assert state == "withheld" and payload["primary"]["mean"] == best[2]["primary"]["mean"]
    assert n_released < 15  # the Ladder released few of the 200 scores
    vote = _vote(guesses, np.array(seen) > 0.5)
    assert abs((vote == hidden).mean() - 0.5) < 2 * SE, (vote == hidden).mean()
    assert abs((vote == holdout).mean() - 0.5) < 3 * SE
    # submitted, the vote does not move the team's released score
    state, payload = submission_release(
        _boost_frame("vote", (vote == hidden) * 1.0), ladder, best=best
    )
    assert state == "withheld" and payload["primary"] == best[2]["primary"]
