"""The release gate: rounding to what n supports, outward CIs, no min/max, medians only for
n >= 50, the Ladder, and leaderboards identical to assay's own analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.service import phase_from_mapping
from assay.service._release import leaderboard, resolution, round_to, subgroups, submission_release
from assay.stats import analyze


def _phase(**policy):
    return phase_from_mapping(
        {
            "name": "p",
            "reference_set": "r",
            "metrics": ["dsc"],
            "policy": {"n_bootstrap": 300, **policy},
        }
    )


def _scores(model: str, values: np.ndarray, structures=("liver", "spleen")) -> pd.DataFrame:
    rows = []
    for i, row in enumerate(np.atleast_2d(values)):
        for s, v in zip(structures, row, strict=True):
            rows.append(
                {
                    "model": model,
                    "case_id": f"c{i:04d}",
                    "structure": s,
                    "metric": "dsc",
                    "value": float(v),
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("metric", "n", "step"),
    [
        ("dsc", 30, 0.1),
        ("dsc", 500, 0.01),
        ("dsc", 2000, 0.001),
        ("dsc", 5160, 0.001),
        ("nsd", 100, 0.1),
        ("hd95", 5160, 0.1),
        ("hd95", 500, 1.0),
    ],
)
def test_resolution_is_what_n_supports(metric, n, step):
    # 10^ceil(log10(2R/n)); R = 1 for fractions, 100 mm for distances (research §9.3).
    assert resolution(metric, n, _phase().policy) == pytest.approx(step)


def test_rounding_directions():
    assert round_to(0.8149, 0.01) == 0.81
    assert round_to(0.8149, 0.01, "down") == 0.81
    assert round_to(0.8101, 0.01, "up") == 0.82
    assert round_to(0.81, 0.01, "up") == 0.81  # exact multiples stay
    assert round_to(float("nan"), 0.01) is None


def test_release_is_analyze_rounded_outward():
    rng = np.random.default_rng(3)
    values = rng.beta(8, 2, size=(80, 2))
    scores = _scores("s1", values)
    phase = _phase()
    state, payload = submission_release(scores, phase)
    assert state == "released"
    frame = scores.assign(dataset="r", run_id="s1", message="")
    agg = analyze(frame, metric="dsc", n_bootstrap=300, seed=0).aggregates.set_index("structure")
    for row in payload["results"]:
        ref = agg.loc[row["structure"]]
        step = row["resolution"]
        assert step == 0.1  # n = 80: 2/80 = 0.025 -> 0.1
        assert row["mean"] == round_to(ref["mean"], step)
        assert row["median"] == round_to(ref["median"], step)  # n >= 50
        assert row["ci_low"] <= ref["ci_low"] and row["ci_high"] >= ref["ci_high"]
        assert set(row) >= {"n_evaluable", "n_failed"} and not {"min", "max", "sd"} & set(row)
    _, raw = submission_release(scores, _phase(mode="raw"))
    exact = {r["structure"]: r["mean"] for r in raw["results"]}
    assert exact["liver"] == agg.loc["liver", "mean"]  # raw: the unrounded analysis
    assert "RAW" in raw["policy"]["text"]


def test_median_withheld_below_50_cases():
    _, payload = submission_release(_scores("s1", np.full((49, 2), 0.7)), _phase())
    assert all(r["median"] is None for r in payload["results"])


def test_ladder_releases_only_clear_improvements():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.5, 0.9, size=(200, 2))
    phase = _phase()
    old = _scores("s1", base)
    _, best_payload = submission_release(old, phase)
    tiny = _scores("s2", np.clip(base + rng.normal(0, 0.05, base.shape) + 0.001, 0, 1))
    state, payload = submission_release(tiny, phase, best=("s1", old, best_payload))
    assert state == "withheld"
    assert payload["results"] == []
    assert payload["primary"]["mean"] == best_payload["primary"]["mean"]  # the best, repeated
    assert "not significantly better than your best" in payload["ladder"]["message"]
    clear = _scores("s3", np.clip(base + 0.05, 0, 1))
    state, payload = submission_release(clear, phase, best=("s1", old, best_payload))
    assert state == "released" and payload["ladder"]["released"]
    # Without the Ladder (final phases) every result is released for approval.
    final = phase_from_mapping(
        {
            "name": "f",
            "reference_set": "r",
            "kind": "final",
            "metrics": ["dsc"],
            "policy": {"n_bootstrap": 300},
        }
    )
    assert submission_release(tiny, final, best=("s1", old, best_payload))[0] == "pending_approval"


def test_leaderboard_winners_and_ranks_are_assays():
    rng = np.random.default_rng(11)
    truth = rng.uniform(0.6, 0.9, size=(120, 2))
    entries = {}
    frames = []
    for k, shift in enumerate((0.0, -0.005, -0.1)):
        sid = f"s{k}"
        entries[sid] = {"team": f"team{k}", "label": ""}
        frames.append(_scores(sid, np.clip(truth + shift + rng.normal(0, 0.02, truth.shape), 0, 1)))
    scores = pd.concat(frames, ignore_index=True)
    final = phase_from_mapping(
        {
            "name": "f",
            "reference_set": "r",
            "kind": "final",
            "metrics": ["dsc"],
            "policy": {"n_bootstrap": 300},
        }
    )
    board = leaderboard(scores, final, entries)
    frame = scores.assign(dataset="r", run_id=scores["model"], message="")
    agg = analyze(frame, metric="dsc", n_bootstrap=300, seed=0).aggregates
    for row in board["rows"]:
        ref = agg[(agg["model"] == row["entry"]) & (agg["structure"] == row["structure"])].iloc[0]
        assert row["rank"] == int(ref["rank"])
        assert row["winner"] == bool(ref["winner"])
    avg = {r["entry"]: r for r in board["rows"] if r["structure"] == "average"}
    assert avg["s0"]["winner"] and not avg["s2"]["winner"]
    assert all(isinstance(t["p_holm"], float) for t in board["tests"])
    open_board = leaderboard(scores, _phase(), entries)
    assert {t["p_holm"] for t in open_board["tests"]} <= {"<0.001", "<0.01", "<0.05", ">=0.05"}


def test_subgroups_need_20_cases_and_hide_complements():
    values = np.full((60, 2), 0.8)
    scores = _scores("s0", values)
    meta = pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(60)],
            "scanner": ["A"] * 35 + ["B"] * 15 + ["C"] * 10,
            "sex": ["F"] * 30 + ["M"] * 30,
        }
    )
    phase = phase_from_mapping(
        {"name": "f", "reference_set": "r", "kind": "final", "metrics": ["dsc"]}
    )
    cells = {(c["grouping"], c["group"]): c for c in subgroups(scores, phase, meta, {"s0": {}})}
    # Groups under 20 cases are left out, their names too (a rare site or scanner is private).
    assert ("scanner", "B") not in cells and ("scanner", "C") not in cells
    assert not cells[("scanner", "A")]["suppressed"]
    assert cells[("scanner", "A")]["n"] == 35
    assert not cells[("sex", "F")]["suppressed"] and cells[("sex", "M")]["means"]["s0"] == 0.8
    # One small group alone would be recoverable from the total: a neighbour is hidden too.
    meta2 = meta.assign(scanner=["A"] * 25 + ["B"] * 25 + ["C"] * 10)
    cells2 = {(c["grouping"], c["group"]): c for c in subgroups(scores, phase, meta2, {"s0": {}})}
    assert ("scanner", "C") not in cells2
    assert [k[1] for k, c in cells2.items() if k[0] == "scanner" and c["suppressed"]] == ["A"]
    assert cells2[("scanner", "A")]["n"] == ">=20" and "means" not in cells2[("scanner", "A")]
    assert cells2[("scanner", "B")]["means"]["s0"] == 0.8
