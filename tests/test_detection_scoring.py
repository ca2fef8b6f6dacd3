"""Detection runs end to end: NIfTI files -> score_case -> results database (scores + lesions).

Expected values are closed-form: boxes on a 0.8 x 0.8 x 1.5 mm grid. NIfTI stores the
spacing as float32, so one voxel is float32(0.8)² x float32(1.5) = 0.960000023 mm³.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.errors import AssayError, InputError
from assay.io import write_image
from assay.metrics import DETECTION_CASE_METRICS, detection_profile, get_profile
from assay.scoring import score
from assay.store import LESION_COLUMNS, ResultStore

AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])
S = float(np.float32(0.8))
VOXEL_MM3 = S * S * float(np.float32(1.5))
VOXEL_ML = VOXEL_MM3 / 1000


def write_case(root: Path, case: str, masks: dict[str, np.ndarray]) -> None:
    (root / case).mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        write_image(root / case / f"{name}.nii.gz", mask.astype(np.uint8), AFFINE)


def empty() -> np.ndarray:
    return np.zeros((40, 40, 30), dtype=bool)


@pytest.fixture()
def benchmark(tmp_path: Path) -> Path:
    """p1: one pancreas tumour found; p2: two tumours, one found; c1: a control with a false
    positive; c2: a control with no prediction file at all."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    t1 = empty()
    t1[5:12, 5:12, 5:10] = True  # 245 voxels
    write_case(ref, "p1", {"pancreas_tumor": t1, "pancreas": t1})
    write_case(pred, "p1", {"pancreas_tumor": t1})
    t2 = empty()
    t2[5:9, 5:9, 5:8] = True
    t2[25:30, 25:30, 20:24] = True
    found = empty()
    found[25:30, 25:30, 20:24] = True
    write_case(ref, "p2", {"pancreas_tumor": t2})
    write_case(pred, "p2", {"pancreas_tumor": found})
    fp = empty()
    fp[30:33, 30:33, 20:23] = True
    write_case(ref, "c1", {"pancreas_tumor": empty()})
    write_case(pred, "c1", {"pancreas_tumor": fp})
    write_case(ref, "c2", {"pancreas_tumor": empty()})
    (pred / "c2").mkdir()
    return tmp_path


def values(store: ResultStore) -> dict[tuple[str, str], float]:
    s = store.scores()
    return {(r.case_id, r.metric): r.value for r in s.itertuples()}


def test_detection_run_stores_case_values_and_lesions(benchmark: Path) -> None:
    store = ResultStore(benchmark / "a.db")
    report = score(
        benchmark / "ref",
        benchmark / "pred",
        model="m",
        dataset="d",
        profile=detection_profile("atlas2"),
        store=store,
    )
    assert any("not scored: pancreas" in n for n in report.notes)
    v = values(store)
    assert set(store.scores()["metric"]) == set(DETECTION_CASE_METRICS)
    assert (v["p1", "lesion_tp"], v["p1", "dsc"], v["p1", "patient_call"]) == (1, 1.0, 1)
    assert (v["p2", "lesions_ref"], v["p2", "lesion_tp"], v["p2", "lesion_fn"]) == (2, 1, 1)
    assert (v["c1", "lesion_fp"], v["c1", "patient_call"]) == (1, 1)
    # Without probabilities the patient score is the retained volume (mm³), flagged below.
    assert v["c1", "patient_score"] == pytest.approx(27 * VOXEL_MM3, abs=1e-12)
    assert v["c1", "retained_volume_ml"] == pytest.approx(27 * VOXEL_ML, abs=1e-15)
    # c2 has no prediction: recorded as missing, scored as an empty prediction.
    statuses = store.scores().groupby("case_id")["status"].first()
    assert statuses["c2"] == "missing_prediction" and v["c2", "patient_call"] == 0
    lesions = store.lesions()
    assert list(lesions.columns) == list(LESION_COLUMNS)
    p2 = lesions[(lesions["case_id"] == "p2") & (lesions["kind"] == "reference")]
    assert sorted(p2["status"]) == ["detected", "missed"]
    assert sorted(p2["voxels"]) == [48, 100]
    big = p2[p2["voxels"] == 100].iloc[0]
    assert big["volume_ml"] == pytest.approx(100 * VOXEL_ML, abs=1e-15)
    assert big["diameter_mm"] == pytest.approx(math.hypot(5 * S, 5 * S), abs=1e-12)
    assert math.isnan(big["confidence"])
    c1 = lesions[lesions["case_id"] == "c1"]
    assert list(c1["kind"]) == ["predicted"] and list(c1["status"]) == ["fp"]
    # The protocol is recorded with the run and names the run's profile.
    runs = store.runs()
    manifest = runs["manifest"].iloc[0]
    assert runs["profile"].iloc[0] == "detection:atlas2"
    assert manifest["protocol"]["detection"]["match"] == "overlap"


def test_rerun_skips_and_force_rewrites_lesions(benchmark: Path) -> None:
    store = ResultStore(benchmark / "a.db")
    kwargs = {"model": "m", "dataset": "d", "profile": "detection:brats", "store": store}
    score(benchmark / "ref", benchmark / "pred", **kwargs)
    n = len(store.lesions())
    again = score(benchmark / "ref", benchmark / "pred", **kwargs)
    # Finished cases are skipped; the case without a prediction is retried (not final).
    assert again.n_scored == 1 and again.n_skipped == 3
    score(benchmark / "ref", benchmark / "pred", force=True, **kwargs)
    assert len(store.lesions()) == n  # replaced, not duplicated


def test_detection_needs_tumour_structures(tmp_path: Path) -> None:
    write_case(tmp_path / "ref", "a", {"liver": empty()})
    write_case(tmp_path / "pred", "a", {"liver": empty()})
    with pytest.raises(InputError, match="No tumour structures"):
        score(
            tmp_path / "ref",
            tmp_path / "pred",
            model="m",
            dataset="d",
            profile="detection:atlas2",
            store=ResultStore(tmp_path / "a.db"),
        )


def test_detection_profiles_by_name() -> None:
    assert get_profile("detection:picai").detection.match == "iou_hungarian"
    with pytest.raises(InputError, match="Unknown detection protocol"):
        get_profile("detection:nope")
    # Segmentation profiles keep their parameters (and so their run ids).
    assert "detection" not in get_profile("default").params()


def write_map(root: Path, case: str, structure: str, array: np.ndarray) -> None:
    (root / case).mkdir(parents=True, exist_ok=True)
    write_image(root / case / f"{structure}.nii.gz", array.astype(np.float32), AFFINE)


def test_probability_maps_give_confidences_scores_and_predictions(benchmark: Path) -> None:
    probs = benchmark / "probs"
    t1 = empty()
    t1[5:12, 5:12, 5:10] = True
    write_map(probs, "p1", "pancreas_tumor", np.where(t1, 0.75, 0.125))
    fp = empty()
    fp[30:33, 30:33, 20:23] = True
    write_map(probs, "c1", "pancreas_tumor", np.where(fp, 0.625, 0.0))
    # c2 has no mask but a map: the map (binarised at > 0.5) is its prediction: no lesion.
    write_map(probs, "c2", "pancreas_tumor", np.full(empty().shape, 0.25))
    # p2's map holds logits, not probabilities: that structure fails with its reason.
    write_map(probs, "p2", "pancreas_tumor", np.full(empty().shape, 3.0))
    store = ResultStore(benchmark / "a.db")
    score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
          profile="detection:atlas2", store=store, probabilities=probs)  # fmt: skip
    v = values(store)
    rows = store.scores().groupby("case_id")[["status", "message"]].first()
    assert v["p1", "patient_score"] == 0.75  # max probability in the retained region
    assert v["c1", "patient_score"] == 0.625
    cases = store.cases().set_index("case_id")
    assert cases.loc["c2", "status"] == "ok"  # no longer a missing prediction
    assert rows.loc["c2", "status"] == "both_empty" and v["c2", "patient_call"] == 0
    assert v["c2", "patient_score"] == 0.0  # nothing retained (score_region="retained")
    assert rows.loc["p2", "status"] == "failed"
    assert "outside [0, 1]" in rows.loc["p2", "message"]
    assert v["p2", "lesions_ref"] == 2  # still counted (as an empty prediction)
    lesions = store.lesions()
    p1 = lesions[(lesions["case_id"] == "p1") & (lesions["kind"] == "predicted")]
    assert list(p1["confidence"]) == [0.75]
    ref_p1 = lesions[(lesions["case_id"] == "p1") & (lesions["kind"] == "reference")]
    assert list(ref_p1["confidence"]) == [0.75]
    # The whole-map maximum is the score under score_region="map" (PI-CAI).
    store2 = ResultStore(benchmark / "b.db")
    score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
          profile="detection:picai", store=store2, probabilities=probs)  # fmt: skip
    assert values(store2)["c2", "patient_score"] == 0.25


def test_probability_maps_need_detection(benchmark: Path) -> None:
    with pytest.raises(InputError, match="for tumour detection"):
        score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
              store=ResultStore(benchmark / "a.db"), probabilities=benchmark / "pred")  # fmt: skip


def test_export_writes_the_lesion_table_next_to_the_scores(benchmark: Path) -> None:
    from assay.store import export_scores

    store = ResultStore(benchmark / "a.db")
    score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
          profile="detection:atlas2", store=store)  # fmt: skip
    files = export_scores(store, "csv", benchmark / "out" / "scores.csv")
    assert [f.name for f in files] == ["scores.csv", "scores_lesions.csv"]
    table = pd.read_csv(files[1])
    assert list(table.columns) == list(LESION_COLUMNS)
    assert len(table) == len(store.lesions())
    files = export_scores(store, "parquet", benchmark / "out" / "scores.parquet")
    assert pd.read_parquet(files[1]).equals(store.lesions())


def test_bad_detection_inputs_are_recorded_and_the_run_goes_on(benchmark: Path) -> None:
    """A probability map on another grid, a prediction case without a reference, an unknown
    structure file and an empty prediction folder: one-line messages, statuses, and the other
    cases scored."""
    probs = benchmark / "probs"
    (probs / "p1").mkdir(parents=True)
    bad = np.zeros((40, 40, 29), dtype=np.float32)  # one slice short of the reference grid
    write_image(probs / "p1" / "pancreas_tumor.nii.gz", bad, AFFINE)
    write_case(benchmark / "pred", "stray", {"pancreas_tumor": empty()})  # no reference case
    write_case(benchmark / "pred", "p2", {"pancreas_tumour_v2": empty()})  # unknown name
    store = ResultStore(benchmark / "a.db")
    report = score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
                   profile="detection:atlas2", store=store, probabilities=probs)  # fmt: skip
    rows = store.scores().groupby("case_id")[["status", "message"]].first()
    assert rows.loc["p1", "status"] == "failed"
    assert "probability map" in rows.loc["p1", "message"] and "shape" in rows.loc["p1", "message"]
    assert "\n" not in rows.loc["p1", "message"]
    assert any("have no reference" in n and "stray" in n for n in report.notes)
    cases = store.cases().set_index("case_id")
    assert "pancreas_tumour_v2" in cases.loc["p2", "message"]
    assert set(rows.index) == {"p1", "p2", "c1", "c2"}  # every reference case has its rows
    # An empty prediction folder: every case is a missing prediction, scored as empty.
    empty_folder = benchmark / "nothing"
    empty_folder.mkdir()
    report = score(benchmark / "ref", empty_folder, model="e", dataset="d",
                   profile="detection:atlas2", store=store)  # fmt: skip
    assert any("is empty" in n for n in report.notes)
    e = store.scores(model="e")
    assert set(e["status"]) == {"missing_prediction"}
    assert e.loc[e["metric"] == "lesions_ref", "value"].sum() == 3  # tumours still counted


def test_label_map_values_that_are_no_tumour_type_are_noted(tmp_path: Path) -> None:
    import json

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "liver_tumor": 1, "pancreas_tumor": 2}})
    )
    m = np.zeros((30, 30, 20), dtype=np.uint8)
    m[5:10, 5:10, 5:10] = 1
    write_image(ref / "a.nii.gz", m, AFFINE)
    p = m.copy()
    p[20:23, 20:23, 10:13] = 7  # a label value the schema does not name
    write_image(pred / "a.nii.gz", p, AFFINE)
    store = ResultStore(tmp_path / "a.db")
    score(ref, pred, model="m", dataset="d", profile="detection:atlas2", store=store)
    case = store.cases().iloc[0]
    assert case["status"] == "partial"
    assert "does not name (values above 2, up to 7)" in case["message"]
    s = store.scores()
    liver = s[s["structure"] == "liver_tumor"].set_index("metric")["value"]
    assert liver["lesion_tp"] == 1 and liver["lesion_fp"] == 0  # value 7 is no lesion


def test_organ_gate_uses_the_predicted_organ_and_protocol_options(benchmark: Path) -> None:
    """--protocol-option organ_gate=multiply keeps only predicted tumour voxels inside the
    model's own pancreas mask (c1's false positive lies outside it); a case without the
    organ mask fails that structure with its reason."""
    from assay.metrics import get_detection_protocol

    pancreas = empty()
    pancreas[0:20, 0:20, 0:15] = True  # holds the tumours of p1 and p2's first, not c1's FP
    for case in ("p1", "c1"):
        write_case(benchmark / "pred", case, {"pancreas": pancreas})
    protocol = get_detection_protocol("atlas2").with_text_options(
        ["organ_gate=multiply", "organ_dilation_voxels=1"]
    )
    assert protocol.name == "atlas2+custom" and protocol.organ_dilation_voxels == 1
    store = ResultStore(benchmark / "a.db")
    score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
          profile=detection_profile(protocol), store=store)  # fmt: skip
    v = values(store)
    rows = store.scores().groupby("case_id")[["status", "message"]].first()
    assert v["p1", "lesion_tp"] == 1 and v["c1", "lesion_fp"] == 0  # the FP was gated out
    assert rows.loc["p2", "status"] == "failed" and "no pancreas mask" in rows.loc["p2", "message"]
    with pytest.raises(InputError, match="organ_dilation_voxels='x' is invalid: give int"):
        protocol.with_text_options(["organ_dilation_voxels=x"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        protocol.with_text_options(["organ_gate"])


def test_patient_score_csv_replaces_the_score_and_is_fingerprinted(benchmark: Path) -> None:
    """A per-case score CSV (case_id, score, optional structure) gives the patient scores for
    AUC; a changed file is another input (refused without --force); bad rows are one-line
    errors naming the row."""
    csv = benchmark / "scores.csv"
    csv.write_text("case_id,score\np1,0.9\np2,0.8\nc1,0.2\nstray,0.5\n", encoding="utf-8")
    store = ResultStore(benchmark / "a.db")
    report = score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
                   profile="detection:atlas2", store=store, patient_scores=csv)  # fmt: skip
    v = values(store)
    assert (v["p1", "patient_score"], v["p2", "patient_score"], v["c1", "patient_score"]) == (
        0.9, 0.8, 0.2,
    )  # fmt: skip
    assert v["c2", "patient_score"] == 0.0  # not in the file: the volume score (nothing)
    assert any("not in the reference" in n and "stray" in n for n in report.notes)
    assert any("have no patient score" in n and "c2" in n for n in report.notes)
    csv.write_text("case_id,score\np1,0.1\n", encoding="utf-8")
    with pytest.raises(InputError, match="patient_scores differ"):
        score(benchmark / "ref", benchmark / "pred", model="m", dataset="d",
              profile="detection:atlas2", store=store, patient_scores=csv)  # fmt: skip
    for text, message in (
        ("case_id,value\np1,1\n", "lacks column"),
        ("case_id,score\np1,high\n", "Row 2 .* score 'high' is not a finite number"),
        ("case_id,score,structure\np1,1,pancreas_tumor\np1,2,pancreas_tumor\n", "second score"),
        ("case_id,score,structure\np1,1,tumourX\n", "tumourX"),
    ):
        csv.write_text(text, encoding="utf-8")
        with pytest.raises(AssayError, match=message):
            score(benchmark / "ref", benchmark / "pred", model="x", dataset="d",
                  profile="detection:atlas2", store=store, patient_scores=csv)  # fmt: skip
