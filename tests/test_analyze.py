"""`analyze` end to end: outputs, parameters, policies, reproducibility.

Statistics themselves are checked against scipy/statsmodels in test_stats_core.py and
test_stats_resampling.py; here: the pieces are joined correctly and every choice is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import TOUCHSTONE
from typer.testing import CliRunner

from assay import cli
from assay.scoring import score
from assay.stats import analyze
from assay.store import ResultStore
from assay.synthetic import write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> ResultStore:
    root = tmp_path_factory.mktemp("an")
    paths = write_benchmark(root / "bench", n_cases=4, **SMALL)
    store = ResultStore(root / "db.sqlite")
    for name, folder in paths.predictions.items():
        score(paths.reference, folder, model=name, dataset="synthetic", store=store)
    return store


def test_policies_change_what_they_say(scored):
    scores = scored.scores(dataset="synthetic")
    worst = analyze(scores, policy="worst", n_bootstrap=200)
    paper = analyze(scores, policy="paper", n_bootstrap=200)
    w = worst.aggregates.set_index(["model", "structure"])
    p = paper.aggregates.set_index(["model", "structure"])
    # boundary_noise has no prediction for the last case: worst = 0 there, paper drops it
    assert w.loc[("boundary_noise", "liver"), "n_set_worst"] == 1
    assert p.loc[("boundary_noise", "liver"), "n_dropped"] == 1
    assert w.loc[("boundary_noise", "liver"), "n"] == 4
    assert p.loc[("boundary_noise", "liver"), "n"] == 3
    assert w.loc[("boundary_noise", "liver"), "mean"] < p.loc[("boundary_noise", "liver"), "mean"]
    assert (w.loc[("near_perfect", "liver"), ["mean", "n"]] ==
            p.loc[("near_perfect", "liver"), ["mean", "n"]]).all()  # fmt: skip
    assert worst.warnings  # n = 4 < 50


def test_aggregates_join_ci_rank_and_winner(scored):
    result = analyze(scored.scores(dataset="synthetic"), n_bootstrap=300, seed=3)
    agg = result.aggregates
    assert {"ci_low", "ci_high", "rank", "winner", "n_set_worst"} <= set(agg.columns)
    assert (agg["ci_low"] <= agg["mean"] + 1e-12).all() and (
        agg["mean"] <= agg["ci_high"] + 1e-12
    ).all()
    for _, part in agg.groupby("structure"):
        best = part.loc[part["mean"].idxmax()]
        assert best["rank"] == 1 and bool(best["winner"])
    again = analyze(scored.scores(dataset="synthetic"), n_bootstrap=300, seed=3)
    pd.testing.assert_frame_equal(result.aggregates, again.aggregates)  # same seed, same output


def test_cli_writes_every_output(tmp_path, scored):
    db = Path(scored.url.removeprefix("sqlite:///"))
    out = tmp_path / "analysis"
    result = CliRunner().invoke(cli.app, ["analyze", "--db", str(db), "--dataset", "synthetic",
                                          "--out", str(out), "--bootstrap", "200",
                                          "--seed", "7"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("aggregates.csv", "pairwise.csv", "stability.csv", "rankings.csv",
                 "policy_changes.csv", "analysis.json"):  # fmt: skip
        assert (out / name).is_file(), name
    stability = pd.read_csv(out / "stability.csv")
    assert {"p_rank1", "rank_ci_low", "rank_ci_high", "tau_median"} <= set(stability.columns)
    info = json.loads((out / "analysis.json").read_text())
    assert info["params"]["bootstrap"] == {"resamples": 200, "seed": 7, "method": "percentile",
                                           "paired": True, "confidence": 0.95}  # fmt: skip
    assert info["params"]["policy"] == "worst" and info["software"]["numpy"]
    assert "🏆" in result.stdout
    bad = CliRunner().invoke(cli.app, ["analyze", "--db", str(db), "--dataset", "synthetic",
                                       "--out", str(out), "--policy", "median"])  # fmt: skip
    assert bad.exit_code == 2


def test_contamination_excludes_what_the_cards_declare(scored):
    scores = scored.scores(dataset="synthetic")
    result = analyze(scores, n_bootstrap=200, training_data={
        "dilated": ["synthetic"],  # trained on the whole test set
        "near_perfect": ["synthetic:case_0001", "other:case_0002"],  # one test case
    })  # fmt: skip
    agg = result.aggregates.set_index(["model", "structure"])
    assert bool(agg.loc[("dilated", "liver"), "contaminated"])
    assert pd.isna(agg.loc[("dilated", "liver"), "rank"])
    assert not agg.loc[("near_perfect", "liver"), "contaminated"]
    assert agg.loc[("near_perfect", "liver"), "n"] == 3
    assert agg.loc[("near_perfect", "liver"), "n_contaminated"] == 1
    assert "dilated" not in set(result.pairwise["model_a"]) | set(result.pairwise["model_b"])
    assert any("dilated was trained on synthetic" in w for w in result.warnings)
    assert any("near_perfect: 1 case(s)" in w for w in result.warnings)


def test_several_datasets_give_a_consensus(scored):
    scores = scored.scores(dataset="synthetic")
    two = pd.concat([scores, scores.assign(dataset="copy")], ignore_index=True)
    result = analyze(two, n_bootstrap=200)
    assert not result.consensus.empty
    one = analyze(scores, n_bootstrap=200).rankings
    avg_one = one[one["structure"] == "average"].set_index("model")["rank_by_mean"]
    cons = result.consensus[result.consensus["structure"] == "average"].set_index("model")
    # identical datasets: the mean rank over both equals the rank on one
    pd.testing.assert_series_equal(cons["mean_rank"].sort_index(), avg_one.sort_index(),
                                   check_names=False, check_dtype=False)  # fmt: skip


def test_explicit_missing_where_the_reference_is_empty_is_not_applicable():
    """An imported Touchstone case with no prediction (explicit missing_prediction rows) must
    not be set to the worst value for a structure that case does not have."""
    from assay.stats import apply_policy

    rows = [
        ("A", "c1", "gallbladder", 0.9, "ok"), ("B", "c1", "gallbladder", float("nan"),
                                                 "missing_prediction"),
        ("A", "c2", "gallbladder", float("nan"), "empty_reference"),
        ("B", "c2", "gallbladder", float("nan"), "missing_prediction"),
    ]  # fmt: skip
    scores = pd.DataFrame(rows, columns=["model", "case_id", "structure", "value", "status"])
    scores = scores.assign(dataset="d", metric="dsc")
    values, changes = apply_policy(scores, policy="worst")
    b = values[values["model"] == "B"]
    assert b["case_id"].tolist() == ["c1"] and b["value"].tolist() == [0.0]
    row = changes.set_index("model").loc["B"]
    assert (row["n_set_worst"], row["n_not_applicable"]) == (1, 1)


@pytest.mark.realdata
def test_touchstone_policies_and_subgroups(tmp_path):
    """Real data: STU-Net-H has 656 of 743 rows. Under `paper` its missing cases are dropped,
    under `worst` they count 0 wherever the structure exists; both are counted in the output.
    Paper + touchstone aggregation = the published conventions (pandas mean/std oracle)."""
    from assay.models import load_model_cards
    from assay.store import import_touchstone

    store = ResultStore(tmp_path / "db.sqlite")
    cards = load_model_cards(
        Path(__file__).resolve().parents[1] / "examples/touchstone_models.yaml"
    )
    import_touchstone(store, TOUCHSTONE / "results", dataset="ts", cards=cards,
                      metadata=TOUCHSTONE / "metaTotalSeg.csv")  # fmt: skip
    scores = store.scores(dataset="ts")
    paper = analyze(scores, policy="paper", aggregation="touchstone", n_bootstrap=200,
                    metadata=store.metadata("ts"), groups={"sex": "gender"})  # fmt: skip
    worst = analyze(scores, policy="worst", aggregation="touchstone", n_bootstrap=200)
    p = paper.aggregates.set_index(["model", "structure"])
    w = worst.aggregates.set_index(["model", "structure"])
    liver_missing = p.loc[("STU-Net-H", "liver"), "n_dropped"]
    assert liver_missing == w.loc[("STU-Net-H", "liver"), "n_set_worst"] > 0
    assert w.loc[("STU-Net-H", "liver"), "n"] == p.loc[("STU-Net-H", "liver"), "n"] + liver_missing
    assert w.loc[("STU-Net-H", "average"), "mean"] < p.loc[("STU-Net-H", "average"), "mean"]
    # the published conventions, independently: empty cells skipped, mean and sample SD
    published = pd.read_csv(TOUCHSTONE / "results/nnU-Net_STU-Net_H/dsc.csv").drop(columns="name")
    means = published.mean()
    assert p.loc[("STU-Net-H", "liver"), "mean"] == pytest.approx(means["liver"], rel=1e-12)
    assert p.loc[("STU-Net-H", "average"), "mean"] == pytest.approx(means.mean(), rel=1e-12)
    assert p.loc[("STU-Net-H", "average"), "sd"] == pytest.approx(published.std().mean(), rel=1e-12)
    groups = set(paper.subgroups["group"])
    assert {"f", "m"} <= groups  # TotalSegmentator metadata: gender f/m (some blank)


def test_cli_contamination_distances_and_groups_over_datasets(tmp_path, scored):
    """A model trained on the test set is shown as 'excl.'; infinite distances need a cap
    (--worst-value), recorded in analysis.json; metadata is matched per dataset."""
    import yaml

    db = Path(scored.url.removeprefix("sqlite:///"))
    cards = tmp_path / "cards.yaml"
    card = {"name": "dilated", "training_data": ["synthetic"]}
    cards.write_text(yaml.safe_dump({"models": {"d": card}}))
    base = ["analyze", "--db", str(db), "--dataset", "synthetic", "--bootstrap", "100"]
    run = CliRunner().invoke(cli.app, [*base, "--out", str(tmp_path / "a"), "--models", str(cards)])
    assert run.exit_code == 0, run.output
    assert "excl." in run.stdout and "dilated" in run.stdout

    no_cap = CliRunner().invoke(cli.app, [*base, "--out", str(tmp_path / "b"), "--metric", "hd95"])
    assert no_cap.exit_code == 2 and "--worst-value hd95=" in no_cap.stderr
    capped = CliRunner().invoke(cli.app, [*base, "--out", str(tmp_path / "b"), "--metric", "hd95",
                                          "--worst-value", "hd95=550"])  # fmt: skip
    assert capped.exit_code == 0, capped.output
    params = json.loads((tmp_path / "b" / "analysis.json").read_text())["params"]
    assert params["worst_values"] == {"hd95": 550.0} and params["infinite_values_capped"] > 0
    agg = pd.read_csv(tmp_path / "b" / "aggregates.csv")
    assert agg["mean"].map(lambda v: v < float("inf")).all()

    scores = scored.scores(dataset="synthetic")
    two = pd.concat([scores, scores.assign(dataset="copy")], ignore_index=True)
    meta = pd.DataFrame({"case_id": [f"case_{i:04d}" for i in range(1, 5)],
                         "sex": ["F", "M", "F", "M"]})  # fmt: skip
    both = pd.concat([meta.assign(dataset="synthetic"), meta.assign(dataset="copy")])
    result = analyze(two, n_bootstrap=100, metadata=both, groups={"sex": "sex"}, min_group_size=1)
    assert set(result.subgroups["dataset"]) == {"synthetic", "copy"}


def test_warns_when_no_pair_can_be_significant():
    """Closed form: with n paired cases the exact one-sided Wilcoxon p is >= 2**-n, and Holm
    multiplies the smallest of K ordered pairs by K. 4 models -> K = 12; n = 5 -> 12/32 =
    0.375 > 0.05: every model is a co-winner by construction, and the analysis says so.
    With all 24 cases the floor is 12 / 2**24 and no such warning is given."""
    from report_inputs import make_scores  # tests/ is on sys.path under pytest

    scores = make_scores()
    few = scores[scores["case_id"].isin([f"case_{i:03d}" for i in range(1, 6)])]
    result = analyze(few, metric="dsc", n_bootstrap=100)
    (warning,) = [w for w in result.warnings if w.startswith("Too few cases")]
    assert "n = 5 paired cases and 12 ordered pairs" in warning
    assert "p is 0.375 > alpha = 0.05" in warning
    assert result.aggregates["winner"].eq(True).all()
    assert (result.pairwise["p_holm"] >= 0.375 - 1e-12).all()
    full = analyze(scores, metric="dsc", n_bootstrap=100)
    assert not [w for w in full.warnings if w.startswith("Too few cases")]


def test_volume_is_refused_as_a_measurement_before_the_policy(tmp_path, scored):
    """A volume has no better direction (metric registry: higher_is_better is None): analyze
    and ``assay analyze --metric volume_ref_ml`` say so in one line, instead of the missing-
    value policy asking for a worst value (boundary_noise misses a case)."""
    from assay.errors import InputError

    scores = scored.scores(dataset="synthetic")
    volume = scores[scores["metric"] == "volume_ref_ml"]
    assert (volume["status"] == "missing_prediction").any()  # the policy would need a worst value
    with pytest.raises(InputError) as info:
        analyze(scores, metric="volume_ref_ml", n_bootstrap=100)
    assert "measurement" in str(info.value) and "worst value" not in str(info.value)

    db = Path(scored.url.removeprefix("sqlite:///"))
    args = ["analyze", "--db", str(db), "--dataset", "synthetic", "--out", str(tmp_path / "v")]
    run = CliRunner().invoke(cli.app, [*args, "--metric", "volume_ref_ml"])
    assert run.exit_code == 2, run.output
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "measurement" in lines[0] and "cannot be ranked" in lines[0]
    assert "worst value" not in run.stderr and "Traceback" not in run.output
