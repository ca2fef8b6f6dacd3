"""Reports (DESIGN.md §5): leaderboard.md, the results bundle and ``assay reanalyze``.

The leaderboard is a snapshot of a fixed toy benchmark (``report_inputs``): regenerate it
with ``ASSAY_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_report.py`` after a deliberate
change, and review the diff. Every number in it is also checked against the analysis it
formats, so a snapshot cannot silently bless a wrong number.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_inputs import MODELS, make_metadata, make_report_data
from rich.console import Console
from typer.testing import CliRunner

from assay import cli
from assay.datasets import load_dataset_card
from assay.errors import InputError
from assay.report import leaderboard_markdown, reanalyze, write_bundle
from assay.report._collect import cards_from_runs, collect_report_data, speed_from_runs
from assay.scoring import CaseRecord, ScoreRow
from assay.store import ResultStore

SNAPSHOTS = Path(__file__).parent / "snapshots"
runner = CliRunner()


@pytest.fixture(scope="module")
def data():
    return make_report_data()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli._common, "out", Console(width=1000))
    monkeypatch.setattr(cli._common, "err", Console(width=1000, stderr=True))


@pytest.fixture
def bundle(tmp_path, data) -> Path:
    write_bundle(data, tmp_path / "bundle", metadata=make_metadata())
    return tmp_path / "bundle"


# -- leaderboard.md --------------------------------------------------------------------------


def test_leaderboard_matches_snapshot(data):
    text = leaderboard_markdown(data)
    path = SNAPSHOTS / "leaderboard_toy.md"
    if os.environ.get("ASSAY_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def _overall_rows(text: str, metric: str) -> list[list[str]]:
    section = text.split(f"### {metric.upper()}\n")[1].split("<details>")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


@pytest.mark.parametrize("metric", ["dsc", "nsd"])
def test_leaderboard_rows_are_the_analysis_numbers(data, metric):
    """Rank order, 🏆 exactly on the winners, mean ± SD and CI in percent to one decimal."""
    agg = data.analyses[metric].aggregates
    avg = agg[agg["structure"] == "average"].sort_values("rank").reset_index(drop=True)
    rows = _overall_rows(leaderboard_markdown(data), metric)
    assert len(rows) == len(MODELS)
    for row, ref in zip(rows, avg.itertuples(), strict=True):
        rank, model, org, value, paper, code = row
        # ⚠ k flags the model with k missing cases (delta misses case_000 by construction)
        assert model == ref.model + (" ⚠ 1" if ref.model == "delta" else "")
        assert rank == ("🏆 " if ref.winner else "") + str(int(ref.rank))
        expected = (
            f"{100 * ref.mean:.1f} ± {100 * ref.sd:.1f} "
            f"[{100 * ref.ci_low:.1f}, {100 * ref.ci_high:.1f}]"
        )
        assert value == expected
        card = data.cards[ref.model]
        assert org == card.organisation
        assert paper == f"[paper]({card.paper})" and code == f"[code]({card.code})"
    # the toy benchmark's construction: alpha best, delta (one missing case, 0.6) last
    assert rows[0][1] == "alpha" and rows[-1][1] == "delta ⚠ 1"
    assert rows[0][0].startswith("🏆")
    assert "⚠ no usable prediction (missing or failed) for delta: 1 of 24 cases." in (
        leaderboard_markdown(data)
    )


def test_leaderboard_flags_a_co_winner_ranked_below_a_non_winner_and_elides_ranks(
    data, monkeypatch
):
    """Winners set by hand (formatting logic only): a 🏆 at rank 4 below the non-winner at
    rank 3 gets † and the footnote; in a top-2 structure table rank 3 is
    elided with a … row before the rank-4 co-winner (as Touchstone shows a top five)."""
    from dataclasses import replace

    import assay.report._leaderboard as lb

    analysis = data.analyses["dsc"]
    agg = analysis.aggregates.copy()
    agg["winner"] = agg["model"].isin(["alpha", "delta"])
    edited = type(data)(
        title="t", analyses={"dsc": replace(analysis, aggregates=agg)}, scores=data.scores,
        cards=data.cards,
    )  # fmt: skip
    text = leaderboard_markdown(edited)
    rows = _overall_rows(text, "dsc")
    assert [r[0] for r in rows] == ["🏆 1", "2", "3", "🏆 4†"]
    assert "† co-winner ranked below a model that is not" in text
    monkeypatch.setattr(lb, "TOP", 2)
    liver = leaderboard_markdown(edited).split("<summary>liver - alpha & delta 🏆</summary>")[1]
    table = [r for r in liver.split("</details>")[0].splitlines() if r.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in table] == ["🏆 1", "2", "…", "🏆 4†"]


def test_leaderboard_structure_tables_show_top_five_and_every_winner(data):
    text = leaderboard_markdown(data)
    agg = data.analyses["dsc"].aggregates
    for structure in ("liver", "spleen", "pancreas"):
        # Touchstone's summary line: the structure and its co-winners, by rank
        won = agg[(agg["structure"] == structure) & agg["winner"].astype(bool)]
        names = " & ".join(won.sort_values(["rank", "model"])["model"])
        assert f"<summary>{structure} - {names} 🏆</summary>" in text
    n_trophies = len(re.findall(r"^\| 🏆 \d", text, flags=re.MULTILINE))
    agg = pd.concat([a.aggregates for a in data.analyses.values()])
    # one trophy per winner row (overall + per structure); the rule is stated per table
    assert n_trophies == int(agg["winner"].eq(True).sum())
    assert text.count("🏆 winner rule `mean`") == 1 + len(data.analyses)


def test_leaderboard_marks_contaminated_models_excluded():
    data = make_report_data()
    scores = data.scores
    from assay.stats import analyze

    tainted = analyze(scores, metric="dsc", n_bootstrap=100, training_data={"beta": ["toy"]})
    text = leaderboard_markdown(
        type(data)(title="t", analyses={"dsc": tainted}, scores=scores, cards=data.cards)
    )
    rows = _overall_rows(text, "dsc")
    beta = next(r for r in rows if r[1] == "beta")
    assert beta[0] == "excl."
    assert [r[0] for r in rows if r[1] != "beta"] == ["🏆 1", "2", "3"]


# -- bundle and reanalyze --------------------------------------------------------------------


def test_bundle_contents(bundle, data):
    results = json.loads((bundle / "results.json").read_text())
    assert results["format"] == "assay-results"
    assert results["options"]["seed"] == 0 and results["options"]["n_bootstrap"] == 200
    assert set(results["analysis"]) == {"dsc", "nsd"}
    assert len(results["analysis"]["dsc"]["aggregates"]) == len(data.analyses["dsc"].aggregates)
    assert results["provenance"]["datasets"]["toy"]["licence"] == "CC0-1.0"
    assert results["provenance"]["models"]["alpha"]["code"] == "https://github.com/example/alpha"
    pq = pd.read_parquet(bundle / "scores.parquet")
    csv = pd.read_csv(bundle / "scores.csv", dtype={"case_id": str})
    assert len(pq) == len(csv) == len(data.scores)
    # the CSV floats read back bit-exact (pandas writes repr-precision floats)
    np.testing.assert_array_equal(pq["value"].to_numpy(), csv["value"].to_numpy())
    for name, digest in results["provenance"]["files"].items():
        assert len(digest) == 64 and (bundle / name).is_file()


def test_reanalyze_fresh_bundle_reproduces_every_number(bundle):
    result = reanalyze(bundle)
    assert result.ok, result.differences[:5]
    assert result.n_checked > 2000  # every column of every published row was compared
    assert set(result.analyses) == {"dsc", "nsd"}


def _edit(frame: pd.DataFrame, value: float) -> tuple[pd.DataFrame, float]:
    hit = (
        (frame["model"] == "beta")
        & (frame["case_id"] == "case_005")
        & (frame["structure"] == "liver")
        & (frame["metric"] == "dsc")
    )
    old = float(frame.loc[hit, "value"].iloc[0])
    frame.loc[hit, "value"] = value
    return frame, old


def test_reanalyze_names_an_edited_csv_value(bundle):
    csv = pd.read_csv(bundle / "scores.csv", dtype={"case_id": str})
    csv, old = _edit(csv, 0.5)
    csv.to_csv(bundle / "scores.csv", index=False)
    result = reanalyze(bundle)
    assert not result.ok
    text = "\n".join(result.differences)
    assert "scores.csv: checksum differs" in text
    assert f"[toy, beta, case_005, liver, dsc]: value scores.parquet {old!r}" in text
    assert "scores.csv 0.5" in text


def test_reanalyze_names_the_drifted_numbers_of_an_edited_parquet_value(bundle):
    pq = pd.read_parquet(bundle / "scores.parquet")
    pq, old = _edit(pq, 0.1)
    pq.to_parquet(bundle / "scores.parquet", index=False)
    before = json.loads((bundle / "results.json").read_text())
    result = reanalyze(bundle)
    text = "\n".join(result.differences)
    # beta's liver mean moves by (0.1 - old) / 24 cases: named with both values
    published = next(
        r["mean"]
        for r in before["analysis"]["dsc"]["aggregates"]
        if r["model"] == "beta" and r["structure"] == "liver"
    )
    line = next(d for d in result.differences if d.startswith("dsc aggregates [toy, beta, liver"))
    assert "mean" in text
    mean_line = next(
        d
        for d in result.differences
        if d.startswith("dsc aggregates [toy, beta, liver, dsc]: mean ")
    )
    recomputed = float(re.search(r"recomputed (\S+)$", mean_line).group(1))
    assert recomputed == pytest.approx(published + (0.1 - old) / 24, rel=1e-12)
    assert line
    # nothing was rewritten
    assert json.loads((bundle / "results.json").read_text()) == before


def test_reanalyze_update_rewrites_and_then_reproduces(bundle):
    pq = pd.read_parquet(bundle / "scores.parquet")
    pq, _ = _edit(pq, 0.1)
    pq.to_parquet(bundle / "scores.parquet", index=False)
    pq.to_csv(bundle / "scores.csv", index=False)
    first = reanalyze(bundle, update=True)
    assert not first.ok  # it still reports what changed
    assert reanalyze(bundle).ok


def test_reanalyze_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(InputError, match="not an assay results bundle"):
        reanalyze(tmp_path)
    with pytest.raises(InputError, match="Cannot read"):
        reanalyze(tmp_path / "nowhere")


def test_reanalyze_cli_exit_codes(bundle):
    ok = runner.invoke(cli.app, ["reanalyze", str(bundle)])
    assert ok.exit_code == 0, ok.output
    assert "reproduced" in ok.output
    pq = pd.read_parquet(bundle / "scores.parquet")
    pq, _ = _edit(pq, 0.1)
    pq.to_parquet(bundle / "scores.parquet", index=False)
    before = (bundle / "results.json").read_bytes()
    bad = runner.invoke(cli.app, ["reanalyze", str(bundle)])
    assert bad.exit_code == 1
    assert "dsc aggregates [toy, beta, liver, dsc]: mean published" in bad.output
    assert (bundle / "results.json").read_bytes() == before
    fixed = runner.invoke(cli.app, ["reanalyze", str(bundle), "--update"])
    assert fixed.exit_code == 0 and "updated" in fixed.output
    missing = runner.invoke(cli.app, ["reanalyze", str(bundle / "nope")])
    assert missing.exit_code == 2


# -- collecting from the store ---------------------------------------------------------------


def _store_with_toy(path: Path) -> ResultStore:
    """The toy scores written as real runs (with cards and inference timing in manifests)."""
    data = make_report_data()
    store = ResultStore(path)
    for model, part in data.scores.groupby("model"):
        run_id = f"run-{model}"
        manifest = {
            "model": data.cards[str(model)].as_dict(),
            "inference": {"seconds": 10.0, "volume_cm3": 2500.0, "n_cases": 24},
        }
        store.ensure_run(run_id, dataset="toy", model=str(model), profile="default",
                         manifest=manifest)  # fmt: skip
        records = [
            CaseRecord(
                case_id=str(case),
                status="ok",
                seconds=0.1,
                rows=tuple(
                    ScoreRow(r.structure, r.metric, float(r.value), r.status)
                    for r in rows.itertuples()
                ),
            )
            for case, rows in part.groupby("case_id")
        ]
        store.write_cases(run_id, "toy", str(model), records)
    meta = make_metadata().drop(columns="dataset")
    store.write_metadata("toy", meta, id_column="case_id")
    return store


def test_collect_report_data_from_a_store(tmp_path):
    store = _store_with_toy(tmp_path / "a.db")
    data, metadata = collect_report_data(
        store, ["toy"], options={"n_bootstrap": 100, "groups": {"sex": "sex"},
                                 "min_group_size": 5},
    )  # fmt: skip
    assert set(data.analyses) == {"dsc", "nsd"}
    assert data.options["policy"] == "worst" and data.options["n_bootstrap"] == 100
    assert data.cards["alpha"].organisation == "Alpha Lab"
    assert metadata is not None and set(metadata["sex"]) == {"F", "M"}
    assert not data.analyses["dsc"].subgroups.empty
    speed = data.speed.set_index("model")
    assert speed.loc["alpha", "cm3_per_s"] == pytest.approx(250.0)  # 2500 cm³ / 10 s
    with pytest.raises(InputError, match="No scores for metric"):
        collect_report_data(store, ["toy"], options={"metrics": ["hd95"]})
    with pytest.raises(InputError, match="No scores for dataset"):
        collect_report_data(store, ["other"], options={})


def test_collect_report_data_with_a_helper_is_the_same_analysis(tmp_path, monkeypatch):
    """A helper process analyses one of the metrics (another pid): every frame of every
    analysis is exactly the one computed here alone."""
    import os

    from assay.report import _collect
    from assay.report._helpers import HelperPool, run_shared

    store = _store_with_toy(tmp_path / "a.db")
    options = {"n_bootstrap": 100, "groups": {"sex": "sex"}, "min_group_size": 5}
    alone, _ = collect_report_data(store, ["toy"], options=options)
    pids: list[int] = []

    def recording(*args, **kwargs):
        for task, result, pid in run_shared(*args, **kwargs):
            pids.append(pid)
            yield task, result, pid

    monkeypatch.setattr(_collect, "PARALLEL_ANALYSIS_ROWS", 0)  # the toy scores qualify
    monkeypatch.setattr(_collect, "run_shared", recording)
    with HelperPool(1) as helpers:
        shared, _ = collect_report_data(store, ["toy"], options=options, helpers=helpers)
    assert len(pids) == 2 and os.getpid() in pids and len(set(pids)) == 2
    assert list(shared.analyses) == list(alone.analyses) == ["dsc", "nsd"]
    for metric, a in alone.analyses.items():
        b = shared.analyses[metric]
        for name, value in vars(a).items():
            if isinstance(value, pd.DataFrame):
                pd.testing.assert_frame_equal(getattr(b, name), value, check_exact=True)
            else:
                assert getattr(b, name) == value, name


def test_cards_and_speed_from_runs_without_records():
    runs = pd.DataFrame(
        {"run_id": ["r"], "dataset": ["d"], "model": ["m"], "profile": ["p"], "manifest": [{}]}
    )
    assert cards_from_runs(runs)["m"].organisation is None
    assert speed_from_runs(runs).empty


def test_dataset_card(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: toy\nlicence: CC0-1.0\ncitation: Toy 2026\n")
    card = load_dataset_card(path)
    assert (card.name, card.licence, card.citation, card.version) == (
        "toy", "CC0-1.0", "Toy 2026", None,
    )  # fmt: skip
    path.write_text("name: toy\nlicense: CC0\n")
    with pytest.raises(InputError, match=r"Unknown field.*license.*known: name"):
        load_dataset_card(path)
    example = Path(__file__).parents[1] / "examples" / "touchstone_dataset.yaml"
    assert "CC BY-NC-ND 4.0" in (load_dataset_card(example).licence or "")


def test_leaderboard_tied_ranks_are_not_elided(data, monkeypatch):
    """Ranks 1, 1, 3 shown in a top-3 table: the jump from 1 to 3 is a tie, not a gap, so
    no … row; the model ranked 4 is left out (not a winner) with nothing after it."""
    from dataclasses import replace

    import assay.report._leaderboard as lb

    analysis = data.analyses["dsc"]
    agg = analysis.aggregates.copy()
    liver = agg["structure"] == "liver"
    agg.loc[liver, "rank"] = agg.loc[liver, "model"].map(
        {"alpha": 1.0, "beta": 1.0, "gamma": 3.0, "delta": 4.0}
    )
    agg.loc[liver, "winner"] = agg.loc[liver, "model"].isin(["alpha", "beta"])
    edited = type(data)(
        title="t", analyses={"dsc": replace(analysis, aggregates=agg)}, scores=data.scores,
        cards=data.cards,
    )  # fmt: skip
    monkeypatch.setattr(lb, "TOP", 3)
    section = leaderboard_markdown(edited).split("<summary>liver - alpha & beta 🏆</summary>")[1]
    table = [r for r in section.split("</details>")[0].splitlines() if r.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in table] == ["🏆 1", "🏆 1", "3"]


TOUCHSTONE = Path(__file__).resolve().parents[1].parent / "shared/data/touchstone_totalsegmentator"


@pytest.mark.realdata
def test_touchstone_bundle_reanalyzes_and_leaderboard_flags_missing_cases(tmp_path):
    """Real data (19 models × 743 cases): the bundle re-verifies; STU-Net-H and STU-Net-L lack
    87 of the 743 cases (656 published rows, see the data README) and are flagged ⚠; the
    overall table's first row is the analysis' rank-1 model with its trophy."""
    from assay.models import load_model_cards
    from assay.store import import_touchstone

    root = Path(__file__).resolve().parents[1]
    store = ResultStore(tmp_path / "ts.db")
    cards = load_model_cards(root / "examples/touchstone_models.yaml")
    import_touchstone(store, TOUCHSTONE / "results", dataset="ts", cards=cards,
                      metadata=TOUCHSTONE / "metaTotalSeg.csv")  # fmt: skip
    data, metadata = collect_report_data(
        store, ["ts"], options={"n_bootstrap": 200, "groups": {"gender": "gender"}},
        dataset_cards={"ts": load_dataset_card(root / "examples/touchstone_dataset.yaml")},
    )  # fmt: skip
    write_bundle(data, tmp_path / "bundle", metadata=metadata)
    check = reanalyze(tmp_path / "bundle")
    assert check.ok, check.differences[:5]
    text = leaderboard_markdown(data)
    assert "STU-Net-H: 87 of 743 cases" in text and "STU-Net-L: 87 of 743 cases" in text
    agg = data.analyses["dsc"].aggregates
    best = agg[(agg["structure"] == "average") & (agg["rank"] == 1)]["model"].item()
    first = _overall_rows(text, "dsc")[0]
    assert first[0] == "🏆 1" and first[1] == best
    assert "CC BY-NC-ND 4.0" in text


# -- figure formats ----------------------------------------------------------------------------


def test_figure_formats_option_and_config_key_are_validated(tmp_path):
    """A bad --figure-formats (report, demo) or figure_formats key is one error line, exit 2,
    before anything is written."""
    for args in (
        ["report", "--db", str(tmp_path / "x.db"), "--dataset", "d", "--out", str(tmp_path / "s")],
        ["demo", "--out", str(tmp_path / "demo")],
    ):
        result = runner.invoke(cli.app, [*args, "--figure-formats", "svg,jpeg"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "'jpeg'" in lines[0] and "svg, pdf, png" in lines[0]
    assert not (tmp_path / "s").exists() and not (tmp_path / "demo").exists()
    from assay.runs._config import load_benchmark

    config = tmp_path / "bench.yaml"
    config.write_text("datasets: [{name: d, root: .}]\nmodels: [{name: m, predictions: .}]\n")
    assert load_benchmark(config).figure_formats == ("svg",)
    config.write_text(config.read_text() + "figure_formats: [png, pdf]\n")
    assert load_benchmark(config).figure_formats == ("svg", "pdf", "png")
    config.write_text(config.read_text().replace("png, pdf", "tiff"))
    with pytest.raises(InputError, match=r"bench.yaml: figure_formats: unknown .*'tiff'"):
        load_benchmark(config)
