"""``assay score --task detection`` and ``assay analyze --task detection`` end to end.

A toy tumour benchmark of NIfTI files: 12 patients, 8 with a pancreas tumour (two of them
with a second, small one) and 4 controls; model ``good`` finds every large tumour and has
one false positive on a control, model ``poor`` finds a quarter of them. Expected values are
counted from that construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import wide_console  # noqa: F401 - autouse fixture
from typer.testing import CliRunner

from assay import cli
from assay.io import write_image

AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(cli.app, [str(a) for a in args])


def write(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, mask.astype(np.uint8), AFFINE)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("det")
    for c in range(12):
        ref = np.zeros((40, 40, 30), dtype=bool)
        positive = c < 8
        if positive:
            ref[5:12, 5:12, 5:10] = True
        if c in (0, 1):
            ref[25:28, 25:28, 20:22] = True  # a second, small tumour nobody finds
        write(root / "ref" / f"c{c:02d}" / "pancreas_tumor.nii.gz", ref)
        good = np.zeros_like(ref)
        poor = np.zeros_like(ref)
        if positive:
            good[6:12, 6:12, 5:9] = True
            if c % 4 == 0:
                poor[6:12, 6:12, 5:9] = True
        if c == 8:
            good[30:33, 30:33, 20:23] = True  # one false positive on a control
        write(root / "good" / f"c{c:02d}" / "pancreas_tumor.nii.gz", good)
        write(root / "poor" / f"c{c:02d}" / "pancreas_tumor.nii.gz", poor)
    return root


def test_score_and_analyze_detection(toy: Path, tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    for model in ("good", "poor"):
        r = invoke("score", "--reference", toy / "ref", "--predictions", toy / model,
                   "--model", model, "--dataset", "toy", "--task", "detection",
                   "--db", db)  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "Detection summary" in r.output and "profile detection:atlas2" in r.output
    out = tmp_path / "out"
    r = invoke("analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out", out,
               "--bootstrap", 200)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "P-Sen (%)" in r.output and "🏆" in r.output and "fallback" in r.output
    summary = pd.read_csv(out / "detection_summary.csv").set_index(["model", "metric"])
    assert summary.loc[("good", "p_sen"), "value"] == 1.0
    assert summary.loc[("poor", "p_sen"), "value"] == 0.25
    assert summary.loc[("good", "t_sen"), "value"] == 8 / 10  # micro over 10 tumours
    assert summary.loc[("good", "spe"), "value"] == 3 / 4
    assert summary.loc[("poor", "spe"), "value"] == 1.0
    comp = pd.read_csv(out / "detection_comparisons.csv")
    p_sen = comp[comp["metric"] == "p_sen"].set_index("model")
    # poor misses 6 positives good finds, never the reverse: exact one-sided p = 0.5**6.
    assert p_sen.loc["poor", "p"] == 0.5**6 and not p_sen.loc["poor", "winner"]
    spe = comp[comp["metric"] == "spe"].set_index("model")
    assert spe.loc["poor", "best"] == "poor" and spe.loc["good", "p"] == 0.5  # 1 discordant
    sizes = pd.read_csv(out / "detection_by_size.csv").set_index(["model", "size_bin"])
    assert sizes.loc[("good", "<5 mm"), "tumours"] == 2
    assert sizes.loc[("good", "<5 mm"), "value"] == 0.0
    lesions = pd.read_csv(out / "lesions.csv")
    assert set(lesions["kind"]) == {"reference", "predicted"}
    # Exact binomial intervals on request.
    r = invoke("analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out", out,
               "--bootstrap", 100, "--proportion-ci", "clopper_pearson")  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out / "detection_summary.csv")
    assert set(summary.loc[summary["metric"] == "p_sen", "ci_method"]) == {"clopper-pearson"}


def test_bad_detection_options_are_one_line_errors(toy: Path, tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    r = invoke("score", "--reference", toy / "ref", "--predictions", toy / "good", "--model",
               "m", "--dataset", "toy", "--task", "detection", "--protocol", "bratz",
               "--db", db)  # fmt: skip
    assert r.exit_code == 2 and "Unknown detection protocol 'bratz'" in r.output
    r = invoke("score", "--reference", toy / "ref", "--predictions", toy / "good", "--model",
               "m", "--dataset", "toy", "--task", "detection", "--profile", "touchstone",
               "--db", db)  # fmt: skip
    assert r.exit_code == 2 and "choose a --protocol instead" in r.output
    invoke(
        "score",
        "--reference",
        toy / "ref",
        "--predictions",
        toy / "good",
        "--model",
        "m",
        "--dataset",
        "toy",
        "--db",
        db,
    )  # fmt: skip  (a segmentation run only)
    r = invoke("analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out",
               tmp_path / "o")  # fmt: skip
    assert r.exit_code == 2 and "No detection scores" in r.output
    r = invoke("analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out",
               tmp_path / "o", "--policy", "paper")  # fmt: skip
    assert r.exit_code == 2 and "--policy 'paper' is not one of worst, empty, exclude" in r.output


def test_segmentation_analysis_ignores_detection_runs(toy: Path, tmp_path: Path) -> None:
    """One dataset scored both ways: the organ analysis reads only the segmentation run."""
    db = tmp_path / "a.db"
    base = ["score", "--reference", toy / "ref", "--predictions", toy / "good", "--model",
            "good", "--dataset", "toy", "--db", db]  # fmt: skip
    assert invoke(*base).exit_code == 0
    assert invoke(*base, "--task", "detection").exit_code == 0
    r = invoke("analyze", "--dataset", "toy", "--db", db, "--out", tmp_path / "seg",
               "--bootstrap", 100)  # fmt: skip
    assert r.exit_code == 0, r.output
    aggregates = pd.read_csv(tmp_path / "seg" / "aggregates.csv")
    assert set(aggregates["metric"]) == {"dsc"}
    assert set(aggregates["structure"]) >= {"pancreas_tumor"}


def test_patient_scores_from_a_csv_file(toy: Path, tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    csv = tmp_path / "scores.csv"
    rows = [f"c{c:02d},{0.9 if c < 8 else 0.1}" for c in range(12)]
    csv.write_text("case_id,score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    r = invoke("score", "--reference", toy / "ref", "--predictions", toy / "poor", "--model",
               "poor", "--dataset", "toy", "--task", "detection", "--db", db,
               "--patient-scores", csv)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out",
               tmp_path / "out", "--bootstrap", 100)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Patient scores from a CSV file: poor" in r.output and "fallback" not in r.output
    summary = pd.read_csv(tmp_path / "out" / "detection_summary.csv").set_index("metric")
    assert summary.loc["auc", "value"] == 1.0  # the file's scores separate perfectly


def test_controls_default_to_the_protocols_own(toy: Path, tmp_path: Path) -> None:
    """rsuper counts per-organ controls; without --control-scope its analysis says so, and
    --control-scope overrides it."""
    db = tmp_path / "a.db"
    r = invoke("score", "--reference", toy / "ref", "--predictions", toy / "good", "--model",
               "good", "--dataset", "toy", "--task", "detection", "--protocol", "rsuper",
               "--db", db)  # fmt: skip
    assert r.exit_code == 0, r.output
    args = ["analyze", "--dataset", "toy", "--task", "detection", "--db", db, "--out",
            tmp_path / "o", "--bootstrap", 100]  # fmt: skip
    r = invoke(*args)
    assert r.exit_code == 0 and "controls: type negative" in r.output, r.output
    assert "without a tumour of the row's type" in (tmp_path / "o" / "leaderboard.md").read_text()
    r = invoke(*args, "--control-scope", "any_type")
    assert r.exit_code == 0 and "controls: any type" in r.output, r.output
