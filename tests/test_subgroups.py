"""Subgroup statistics (src/assay/stats/_subgroups.py): correction families, tests, CIs.

Every number is recomputed independently: Kruskal–Wallis and Mann–Whitney U with SciPy on
the group samples, the corrections with ``statsmodels.stats.multitest.multipletests`` over the
family the analysis states, and the group-mean CIs with a direct bootstrap loop (and
``scipy.stats.bootstrap``) with the same seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TOUCHSTONE
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import InputError
from assay.stats import analyze
from assay.stats._subgroups import (
    FAMILY_KEYS,
    adjust_subgroup_tests,
    subgroup_analysis,
    subgroup_members,
)

TOL = 1e-12
MODELS = ("a", "b", "c")
STRUCTURES = ("liver", "spleen")


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, pd.DataFrame]:
    """60 cases, three models, two structures; model c is worse for women, b lacks 4 cases."""
    rng = np.random.default_rng(11)
    n = 60
    meta = pd.DataFrame(
        {
            "case_id": [f"c{i:03d}" for i in range(n)],
            "sex": np.where(np.arange(n) % 2 == 0, "f", "m"),
            "age": np.linspace(20, 89, n),
        }
    )
    rows = []
    for s, structure in enumerate(STRUCTURES):
        for j, model in enumerate(MODELS):
            for i, case in enumerate(meta["case_id"]):
                if model == "b" and i < 4:
                    continue
                value = 0.8 - 0.05 * j + 0.03 * s + rng.normal(0, 0.05)
                if model == "c" and meta.loc[i, "sex"] == "f":
                    value -= 0.15
                rows.append(("d", model, case, structure, "dsc", value))
    values = pd.DataFrame(
        rows, columns=["dataset", "model", "case_id", "structure", "metric", "value"]
    )
    return values, meta


GROUPINGS = {"sex": "sex", "age:20,40,60,90": "age:20,40,60,90"}


def _samples(values, meta, structure, model, grouping, group):
    """The sample the analysis tests: a model's (or the per-case average's) values of a group."""
    part = values[values["structure"] == structure]
    wide = part.pivot(index="case_id", columns="model", values="value").sort_index()
    column = wide.mean(axis=1) if model == "average" else wide[model]
    members = subgroup_members(meta, GROUPINGS)
    cases = members[(members["grouping"] == grouping) & (members["group"] == group)]["case_id"]
    return column.reindex(sorted(cases)).dropna().to_numpy()


def test_tests_against_scipy(cohort) -> None:
    values, meta = cohort
    _, tests = subgroup_analysis(values, meta, GROUPINGS, min_size=5, n_bootstrap=50)
    assert set(tests["model"]) == {*MODELS, "average"}
    for row in tests.itertuples(index=False):
        if row.test == "kruskal":
            groups = ["f", "m"] if row.grouping == "sex" else ["[20, 40)", "[40, 60)", "[60, 90)"]
            samples = [
                _samples(values, meta, row.structure, row.model, row.grouping, g) for g in groups
            ]
            assert row.p == pytest.approx(stats.kruskal(*samples).pvalue, abs=TOL)
            assert row.n_a == sum(len(x) for x in samples)
        else:
            x = _samples(values, meta, row.structure, row.model, row.grouping, row.group_a)
            y = _samples(values, meta, row.structure, row.model, row.grouping, row.group_b)
            ref = stats.mannwhitneyu(x, y, alternative="two-sided")
            assert (row.statistic, row.p) == pytest.approx((ref.statistic, ref.pvalue), abs=TOL)
            assert (row.n_a, row.n_b) == (len(x), len(y))
            assert (row.mean_a, row.mean_b) == pytest.approx((x.mean(), y.mean()), abs=TOL)


@pytest.mark.parametrize("correction", ["bonferroni", "fdr_bh"])
@pytest.mark.parametrize("family", ["all", "model"])
def test_corrections_against_statsmodels(cohort, correction, family) -> None:
    """p_adj = multipletests over exactly the stated family, in any row order."""
    values, meta = cohort
    _, tests = subgroup_analysis(
        values, meta, GROUPINGS, min_size=5, correction=correction, family=family, alpha=0.1,
        n_bootstrap=50,
    )  # fmt: skip
    keys = list(FAMILY_KEYS[family])
    n_families = 0
    for _, fam in tests.groupby(keys):
        reject, adjusted, _, _ = multipletests(fam["p"], alpha=0.1, method=correction)
        np.testing.assert_allclose(fam["p_adj"], adjusted, rtol=0, atol=TOL)
        assert fam["significant"].tolist() == (adjusted < 0.1).tolist() == reject.tolist()
        assert (fam["family_size"] == len(fam)).all()
        n_families += 1
    assert (tests["correction"] == correction).all() and (tests["family"] == family).all()
    if family == "all":
        # one Kruskal–Wallis and one Mann–Whitney family for the whole (dataset, metric):
        # 4 models (with average) × 2 structures × (1 + 3) pairs
        assert n_families == 2
        mwu = tests[tests["test"] == "mannwhitneyu"]
        assert len(mwu) == 4 * 2 * (1 + 3) == mwu["family_size"].iloc[0]
    # the adjustment is a pure function of the rows: shuffling them changes nothing
    shuffled = tests.sample(frac=1.0, random_state=3)
    again = adjust_subgroup_tests(
        shuffled.drop(columns=["p_adj", "significant", "family_size"]),
        correction=correction, family=family, alpha=0.1,
    ).sort_index()  # fmt: skip
    np.testing.assert_allclose(again["p_adj"], tests["p_adj"], rtol=0, atol=TOL)


def test_family_all_is_at_least_as_strict_as_per_model(cohort) -> None:
    values, meta = cohort
    _, per_model = subgroup_analysis(values, meta, GROUPINGS, family="model", n_bootstrap=20)
    _, every = subgroup_analysis(values, meta, GROUPINGS, family="all", n_bootstrap=20)
    np.testing.assert_array_equal(per_model["p"], every["p"])
    assert (every["p_adj"] >= per_model["p_adj"] - TOL).all()
    assert every["significant"].sum() <= per_model["significant"].sum()
    # the planted effect (model c, sex) survives the stricter family
    hit = every[(every["test"] == "mannwhitneyu") & every["significant"]]
    assert {("c", "sex")} <= set(zip(hit["model"], hit["grouping"], strict=True))


def test_null_models_are_not_flagged_by_chance() -> None:
    """30 models without any group effect: per-model Bonferroni flags some by chance at
    alpha = 0.05 (expected ≈ 0.05 × 30 × 2 structures), the family over all tests none."""
    rng = np.random.default_rng(5)
    n = 80
    meta = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n)], "sex": ["f", "m"] * 40})
    rows = [
        ("d", f"m{j:02d}", f"c{i:03d}", s, "dsc", rng.normal(0.8, 0.05))
        for s in STRUCTURES
        for j in range(30)
        for i in range(n)
    ]
    values = pd.DataFrame(
        rows, columns=["dataset", "model", "case_id", "structure", "metric", "value"]
    )
    _, per_model = subgroup_analysis(values, meta, {"sex": "sex"}, family="model", n_bootstrap=5)
    _, every = subgroup_analysis(values, meta, {"sex": "sex"}, n_bootstrap=5)
    mw = per_model["test"] == "mannwhitneyu"
    assert per_model.loc[mw, "significant"].sum() > 0
    assert every.loc[every["test"] == "mannwhitneyu", "significant"].sum() == 0
    assert (every.loc[every["test"] == "mannwhitneyu", "family_size"] == 31 * 2).all()


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_group_mean_ci_against_direct_bootstrap(cohort, method) -> None:
    """Resample the group's cases (sorted ids) with default_rng(seed), as the docs say."""
    values, meta = cohort
    b, seed = 400, 17
    groups, _ = subgroup_analysis(
        values, meta, GROUPINGS, min_size=5, n_bootstrap=b, seed=seed, ci_method=method
    )
    members = subgroup_members(meta, GROUPINGS)
    for (structure, grouping, group), rows in groups[~groups["skipped"]].groupby(
        ["structure", "grouping", "group"]
    ):
        part = values[values["structure"] == structure]
        wide = part.pivot(index="case_id", columns="model", values="value").sort_index()
        wide["average"] = wide.mean(axis=1)
        ids = members[(members["grouping"] == grouping) & (members["group"] == group)]
        block = wide.loc[sorted(ids["case_id"])]
        idx = np.random.default_rng(seed).integers(0, len(block), size=(b, len(block)))
        for row in rows.itertuples(index=False):
            column = block[row.model].to_numpy()
            boot = np.nanmean(column[idx], axis=1)  # paired: the same cases for every model
            if method == "percentile":
                expected = np.quantile(boot, [0.025, 0.975])
            else:  # BCa as scipy.stats.bootstrap defines it
                theta = np.nanmean(column)
                z0 = stats.norm.ppf(((boot < theta).sum() + (boot <= theta).sum()) / (2 * b))
                x = column[np.isfinite(column)]
                loo = (x.sum() - x) / (len(x) - 1)
                u = (len(x) - 1) * (loo.mean() - loo)
                acc = (u**3).sum() / (6 * ((u**2).sum()) ** 1.5)
                z = stats.norm.ppf([0.025, 0.975])
                expected = np.quantile(boot, stats.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z))))
            assert (row.ci_low, row.ci_high) == pytest.approx(tuple(expected), abs=TOL)
            assert row.ci_low <= row.mean <= row.ci_high
            if np.isfinite(column).all():  # a complete column: exactly scipy.stats.bootstrap
                ref = stats.bootstrap(
                    (column,), np.mean, n_resamples=b, method=method.upper()
                    if method == "bca" else method, random_state=np.random.default_rng(seed),
                    vectorized=True, batch=b,
                ).confidence_interval  # fmt: skip
                assert (row.ci_low, row.ci_high) == pytest.approx((ref.low, ref.high), abs=TOL)


def test_skipped_groups_have_no_ci_and_members_exclude_specials(cohort) -> None:
    values, meta = cohort
    groups, _ = subgroup_analysis(values, meta, {"age:decades": "age:decades"}, min_size=8)
    skipped = groups[groups["skipped"]]
    assert len(skipped) and skipped["ci_low"].isna().all() and skipped["ci_high"].isna().all()
    kept = groups[~groups["skipped"]]
    assert kept["ci_low"].notna().all()
    members = subgroup_members(meta.assign(age=meta["age"].where(meta.index > 0)),
                               {"age:decades": "age:decades"})  # fmt: skip
    assert "(unassigned)" not in set(members["group"]) and len(members) == len(meta) - 1


def test_choices_are_checked(cohort) -> None:
    values, meta = cohort
    with pytest.raises(InputError, match="family"):
        subgroup_analysis(values, meta, {"sex": "sex"}, family="everything")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="alpha"):
        subgroup_analysis(values, meta, {"sex": "sex"}, alpha=1.5)
    with pytest.raises(InputError, match="n_bootstrap"):
        subgroup_analysis(values, meta, {"sex": "sex"}, n_bootstrap=0)


def test_analyze_passes_family_seed_and_bootstrap(cohort) -> None:
    values, meta = cohort
    scores = values.assign(status="ok", run_id="r-" + values["model"])
    result = analyze(scores, metadata=meta, groups={"sex": "sex"}, n_bootstrap=300, seed=4,
                     min_group_size=5, alpha=0.1)  # fmt: skip
    sub = result.params["subgroups"]
    assert sub["family"] == "all" and sub["alpha"] == 0.1
    assert "every Mann–Whitney U test of one (dataset, metric)" in sub["family_description"]
    assert "300 resamples" in sub["ci"]
    direct, _ = subgroup_analysis(
        result.values, meta, {"sex": "sex"}, min_size=5, n_bootstrap=300, seed=4, alpha=0.1
    )
    pd.testing.assert_frame_equal(result.subgroups, direct)
    # the structure "average" is in the family too: models × structures (+ average) × 1 pair
    mw = result.subgroup_tests[result.subgroup_tests["test"] == "mannwhitneyu"]
    assert set(mw["structure"]) == {*STRUCTURES, "average"}
    assert (mw["family_size"] == 4 * 3).all()
    members = result.subgroup_cases
    assert set(members.columns) == {"dataset", "grouping", "group", "case_id"}
    assert len(members) == len(meta)
    per_model = analyze(scores, metadata=meta, groups={"sex": "sex"}, n_bootstrap=300, seed=4,
                        min_group_size=5, subgroup_family="model")  # fmt: skip
    assert per_model.params["subgroups"]["family"] == "model"
    assert (per_model.subgroup_tests["family_size"] == 1).all()


def _touchstone_scores(metric: str = "dsc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The published per-case files as tidy scores (empty cells dropped: policy ``paper``)."""
    parts = []
    for folder in sorted((TOUCHSTONE / "results").iterdir()):
        frame = pd.read_csv(folder / f"{metric}.csv").rename(columns={"name": "case_id"})
        long = frame.melt(id_vars="case_id", var_name="structure", value_name="value").dropna()
        parts.append(long.assign(model=folder.name))
    scores = pd.concat(parts, ignore_index=True).assign(
        dataset="ts", metric=metric, status="ok", run_id="r"
    )
    meta = pd.read_csv(TOUCHSTONE / "metaTotalSeg.csv", sep=";", encoding="utf-8-sig")
    return scores, meta.rename(columns={"image_id": "case_id"})[["case_id", "gender", "age"]]


@pytest.mark.realdata
def test_touchstone_gender_flags_under_both_families() -> None:
    """Real data: per-model correction flags models on gender that the family over all
    19 models (+ average) × 2 groupings × 10 structures does not; every corrected p is
    multipletests over that family."""
    scores, meta = _touchstone_scores()
    groups = {"gender": "gender", "age:decades": "age:decades"}
    kw = {"policy": "paper", "n_bootstrap": 100, "metadata": meta, "groups": groups}
    every = analyze(scores, **kw).subgroup_tests
    per_model = analyze(scores, subgroup_family="model", **kw).subgroup_tests
    mw = every[every["test"] == "mannwhitneyu"]
    assert mw["structure"].nunique() == 10 and mw["model"].nunique() == 20
    reject, adjusted, _, _ = multipletests(mw["p"], alpha=0.05, method="bonferroni")
    np.testing.assert_allclose(mw["p_adj"], adjusted, rtol=0, atol=TOL)
    assert mw["significant"].tolist() == reject.tolist()
    assert (mw["family_size"] == len(mw)).all()

    def flagged(tests: pd.DataFrame, grouping: str) -> set[str]:
        hit = tests[
            (tests["test"] == "mannwhitneyu")
            & tests["significant"]
            & (tests["grouping"] == grouping)
            & (tests["structure"] == "average")
            & (tests["model"] != "average")
        ]
        return set(hit["model"])

    assert flagged(per_model, "gender")  # some models look different by sex, per model...
    assert flagged(every, "gender") < flagged(per_model, "gender")  # ...fewer survive


def test_cli_subgroup_family_option(tmp_path) -> None:
    """`assay analyze --subgroup-family model` records and applies the family; default all;
    an unknown family is a one-line error."""
    import json

    from typer.testing import CliRunner

    from assay import cli
    from assay.models import ModelCard
    from assay.store import ResultStore, import_touchstone

    rng = np.random.default_rng(2)
    cases = [f"s{i:04d}" for i in range(24)]
    for model in ("m1", "m2"):
        folder = tmp_path / "results" / model
        folder.mkdir(parents=True)
        for metric in ("dsc", "nsd"):
            frame = pd.DataFrame({"name": cases, "liver": rng.uniform(0.7, 0.95, len(cases)),
                                  "spleen": rng.uniform(0.6, 0.9, len(cases))})  # fmt: skip
            frame.to_csv(folder / f"{metric}.csv", index=False)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"image_id": cases, "gender": ["f", "m"] * 12}).to_csv(meta, index=False)
    db = tmp_path / "db.sqlite"
    cards = {m: ModelCard(name=m.upper()) for m in ("m1", "m2")}
    import_touchstone(ResultStore(db), tmp_path / "results", dataset="t", cards=cards,
                      metadata=meta)  # fmt: skip
    base = ["analyze", "--db", str(db), "--dataset", "t", "--bootstrap", "100",
            "--groups", "gender", "--min-group-size", "5"]  # fmt: skip
    for family, size in (("model", 1), ("all", 3 * 3)):  # (2 models + average) × 3 structures
        out = tmp_path / family
        extra = [] if family == "all" else ["--subgroup-family", family]
        run = CliRunner().invoke(cli.app, [*base, *extra, "--out", str(out)])
        assert run.exit_code == 0, run.output
        params = json.loads((out / "analysis.json").read_text())["params"]["subgroups"]
        assert params["family"] == family
        tests = pd.read_csv(out / "subgroup_tests.csv")
        mw = tests[tests["test"] == "mannwhitneyu"]
        assert (mw["family"] == family).all() and (mw["family_size"] == size).all()
        assert {"ci_low", "ci_high"} <= set(pd.read_csv(out / "subgroups.csv").columns)
    bad = CliRunner().invoke(cli.app, [*base, "--subgroup-family", "x", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--subgroup-family 'x'" in bad.stderr
