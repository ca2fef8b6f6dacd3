"""Time a whole report at Touchstone scale: analysis, leaderboard, bundle, figures, reanalyze.

Synthetic per-case scores shaped like Touchstone's TotalSegmentator results (19 models,
743 cases, 9 structures, Dice and NSD, two models missing 87 cases, one subgroup grouping),
so it runs anywhere. The two analyses run one after the other, then shared between this
process and one helper process (as ``assay report --workers 2``). Figures are drawn as SVG
(the site's default) by this process alone and by this process plus one helper (its start
included), then in all three formats (``--figure-formats svg,pdf,png``) with the helper.

    .venv/bin/python benchmarks/bench_report.py [--bootstrap 2000] [--out /tmp/bench-report]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from assay.report import ReportData, leaderboard_markdown, reanalyze, write_bundle
from assay.report._collect import _analyze_task
from assay.report._helpers import HelperPool, run_shared
from assay.report._render import render_figures
from assay.report._site import write_site
from assay.stats import analyze

N_MODELS, N_CASES = 19, 743
STRUCTURES = ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
              "postcava", "spleen", "stomach")  # fmt: skip


def make_scores(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    models = [f"model_{i:02d}_with_a_long_name" for i in range(N_MODELS)]
    cases = [f"s{i:04d}" for i in range(N_CASES)]
    level = np.linspace(0.9, 0.4, N_MODELS)
    names = ["model", "case_id", "structure", "metric"]
    grid = pd.MultiIndex.from_product(
        [models, cases, STRUCTURES, ("dsc", "nsd")], names=names
    ).to_frame(index=False)
    m = grid["model"].map(dict(zip(models, level, strict=True))).to_numpy()
    grid["value"] = np.clip(m + rng.normal(0, 0.08, len(grid)), 0, 1)
    grid["status"] = "ok"
    absent = rng.random(len(grid)) < 0.1
    grid.loc[absent, ["value", "status"]] = [np.nan, "empty_reference"]
    missing = grid["model"].isin(models[5:7]) & grid["case_id"].isin(cases[:87])
    grid.loc[missing, ["value", "status"]] = [np.nan, "missing_prediction"]
    grid.insert(0, "dataset", "bench")
    grid.insert(0, "run_id", "run-" + grid["model"])
    grid["message"] = ""
    grid["profile"] = "default"
    meta = pd.DataFrame({"case_id": cases, "sex": rng.choice(["F", "M"], N_CASES),
                         "dataset": "bench"})  # fmt: skip
    return grid, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-report-"))
    scores, meta = make_scores()
    times: dict[str, float] = {}
    t = time.perf_counter()
    options = {"n_bootstrap": args.bootstrap, "groups": {"sex": "sex"}}
    analyses = {
        m: analyze(
            scores, metric=m, n_bootstrap=args.bootstrap, metadata=meta, groups={"sex": "sex"}
        )
        for m in ("dsc", "nsd")
    }
    times["analysis (dsc + nsd), 1 process"] = time.perf_counter() - t
    t = time.perf_counter()
    with HelperPool(1) as helpers:  # started here: its start-up is part of the time
        tasks = [(scores, m, meta, {"n_bootstrap": args.bootstrap, "groups": {"sex": "sex"}})
                 for m in ("dsc", "nsd")]  # fmt: skip
        shared = {task[1]: a for task, a, _ in run_shared(tasks, _analyze_task, helpers, queued=0)}
    times["analysis (dsc + nsd), 2 processes"] = time.perf_counter() - t
    for m, a in analyses.items():  # the same numbers wherever they were computed
        pd.testing.assert_frame_equal(shared[m].aggregates, a.aggregates, check_exact=True)
    data = ReportData(title="bench", analyses=analyses, scores=scores,
                      options={"metrics": ["dsc", "nsd"], **options})  # fmt: skip
    t = time.perf_counter()
    (out / "leaderboard.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(leaderboard_markdown(data))
    times["leaderboard.md"] = time.perf_counter() - t
    t = time.perf_counter()
    write_bundle(data, out / "bundle", metadata=meta)
    times["bundle"] = time.perf_counter() - t
    for formats, workers in ((("svg",), 1), (("svg",), 2), (("svg", "pdf", "png"), 2)):
        shutil.rmtree(out / "svg", ignore_errors=True)
        shutil.rmtree(out / "figures", ignore_errors=True)
        t = time.perf_counter()
        figures = render_figures(data, out, formats=formats, workers=workers)
        what = f"{len(figures)} figures ({', '.join(formats)}), {workers} process(es)"
        times[what] = time.perf_counter() - t
    t = time.perf_counter()
    write_site(data, out, figures)
    times["HTML pages"] = time.perf_counter() - t
    t = time.perf_counter()
    check = reanalyze(out / "bundle")
    times[f"reanalyze ({check.n_checked} numbers, ok={check.ok})"] = time.perf_counter() - t
    print(f"{N_MODELS} models × {N_CASES} cases × {len(STRUCTURES)} structures, "
          f"B = {args.bootstrap}; output in {out}")  # fmt: skip
    for name, seconds in times.items():
        print(f"  {name:<48} {seconds:7.1f} s")


if __name__ == "__main__":
    main()
