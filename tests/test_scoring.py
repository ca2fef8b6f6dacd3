"""Scoring folders end to end: layouts, statuses, bad inputs, resume, and a killed run.

Reference values come from the metric engine itself (validated against DeepMind, MONAI and
MedPy in test_metrics_parity.py); here the checks are about pairing, statuses and storage:
equal inputs must give equal stored rows, exactly.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from assay.datasets import DEFAULT_SCHEMA, read_label_map_spec
from assay.errors import InputError, LayoutError
from assay.metrics import PROFILES
from assay.scoring import score
from assay.store import ResultStore
from assay.synthetic import STRUCTURES, write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
N_METRICS = len(PROFILES["default"].metrics)
KEY = ["case_id", "structure", "metric"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(tmp_path_factory.mktemp("bench") / "a", n_cases=3, **SMALL)


@pytest.fixture(scope="module")
def bench_labelmap(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("bench") / "b", n_cases=3, layout="labelmap", **SMALL
    )


def _score(tmp_path: Path, ref: Path, pred: Path, model: str = "m", **kw) -> pd.DataFrame:
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(ref, pred, model=model, dataset="d", store=store, **kw)
    return store.scores(run_ids=[report.run_id]).set_index(KEY).sort_index()


def _copy_predictions(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_layout_a_rows_and_statuses(tmp_path, bench):
    df = _score(tmp_path, bench.reference, bench.predictions["near_perfect"])
    assert len(df) == 3 * len(STRUCTURES) * N_METRICS
    assert set(df["status"]) == {"ok"}
    dsc = df.xs("dsc", level="metric")["value"]
    assert dsc.between(0.9, 1.0).all()


def test_flipped_orientation_is_reoriented_and_scores_like_near_perfect(tmp_path, bench):
    """The simulated flipped model writes the near_perfect arrays flipped with a matching
    affine; after reorientation every stored value must equal near_perfect's exactly."""
    store = ResultStore(tmp_path / "db.sqlite")
    a = score(bench.reference, bench.predictions["near_perfect"], model="a", dataset="d",
              store=store)  # fmt: skip
    b = score(bench.reference, bench.predictions["flipped_orientation"], model="b",
              dataset="d", store=store)  # fmt: skip
    va = store.scores(run_ids=[a.run_id]).set_index(KEY)["value"]
    vb = store.scores(run_ids=[b.run_id]).set_index(KEY)["value"]
    pd.testing.assert_series_equal(va, vb)
    cases = store.cases([b.run_id])
    assert (cases["flags"] == "reoriented").all()
    assert (store.cases([a.run_id])["flags"] == "").all()


def test_labelmap_layout_equals_structure_layout(tmp_path, bench, bench_labelmap):
    """Same seeds, two layouts: identical stored values, for B/B and for A-reference with
    B-predictions (mixed layouts)."""
    labels = read_label_map_spec(bench_labelmap.labels, DEFAULT_SCHEMA)
    a = _score(tmp_path / "a", bench.reference, bench.predictions["dilated"])
    b = _score(tmp_path / "b", bench_labelmap.reference, bench_labelmap.predictions["dilated"],
               labels=labels)  # fmt: skip
    mixed = _score(tmp_path / "c", bench.reference, bench_labelmap.predictions["dilated"],
                   labels=labels)  # fmt: skip
    pd.testing.assert_series_equal(a["value"], b["value"])
    pd.testing.assert_series_equal(a["value"], mixed["value"])
    assert (a["status"] == b["status"]).all()


def test_missing_prediction_and_empty_prediction(tmp_path, bench):
    store = ResultStore(tmp_path / "db.sqlite")
    noisy = score(bench.reference, bench.predictions["boundary_noise"], model="n", dataset="d",
                  store=store)  # fmt: skip
    cases = store.cases([noisy.run_id]).set_index("case_id")
    assert cases.loc["case_0003", "status"] == "missing_prediction"
    rows = store.scores(run_ids=[noisy.run_id])
    last = rows[rows["case_id"] == "case_0003"]
    assert len(last) == len(STRUCTURES) * N_METRICS  # recorded, not dropped
    assert (last["status"] == "missing_prediction").all() and last["value"].isna().all()

    small = score(bench.reference, bench.predictions["misses_small"], model="s", dataset="d",
                  store=store)  # fmt: skip
    rows = store.scores(run_ids=[small.run_id]).set_index(KEY)
    gb = rows.xs(("gallbladder", "dsc"), level=("structure", "metric"))
    assert (gb["status"] == "empty_prediction").all() and (gb["value"] == 0).all()
    hd = rows.xs(("gallbladder", "hd95"), level=("structure", "metric"))
    assert np.isinf(hd["value"]).all()  # +inf survives the database round trip


def _case_file(folder: Path, case: str, structure: str) -> Path:
    return folder / case / f"{structure}.nii.gz"


def test_bad_inputs_are_recorded_and_the_rest_scores(tmp_path, bench):
    pred = _copy_predictions(bench.predictions["near_perfect"], tmp_path / "pred")
    # case_0001: truncated liver file
    liver = _case_file(pred, "case_0001", "liver")
    data = liver.read_bytes()
    liver.write_bytes(data[: len(data) // 2])
    # case_0001: non-binary spleen
    spleen = _case_file(pred, "case_0001", "spleen")
    img = nib.load(spleen)
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 1] = 2
    nib.save(nib.Nifti1Image(arr, img.affine), spleen)
    # case_0001: 4-D stomach
    stomach = _case_file(pred, "case_0001", "stomach")
    img = nib.load(stomach)
    arr = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([arr, arr], axis=-1), img.affine), stomach)
    # case_0002: every file on a grid with another spacing
    for f in (pred / "case_0002").iterdir():
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([7.0, 8.0, 10.0, 1.0])), f)
    # case_0003: a file with an unknown structure name, and the aorta file missing
    shutil.copy(_case_file(pred, "case_0003", "liver"), pred / "case_0003" / "livr.nii.gz")
    _case_file(pred, "case_0003", "aorta").unlink()

    store = ResultStore(tmp_path / "db.sqlite")
    report = score(bench.reference, pred, model="m", dataset="d", store=store)
    rows = store.scores(run_ids=[report.run_id])
    dsc = rows[rows["metric"] == "dsc"].set_index(["case_id", "structure"])
    cases = store.cases([report.run_id]).set_index("case_id")

    def status(case: str, s: str) -> str:
        return dsc.loc[(case, s), "status"]

    def message(case: str, s: str) -> str:
        return dsc.loc[(case, s), "message"]

    assert status("case_0001", "liver") == "failed"
    assert str(liver) in message("case_0001", "liver")
    assert status("case_0001", "spleen") == "failed" and "Non-binary" in message(
        "case_0001", "spleen"
    )
    assert status("case_0001", "stomach") == "failed" and "4-D" in message("case_0001", "stomach")
    assert status("case_0001", "kidney_left") == "ok"  # the rest of the case still scores
    assert cases.loc["case_0001", "status"] == "failed"

    assert (dsc.loc["case_0002", "status"] == "failed").all()
    msg = message("case_0002", "liver")
    assert "case 'case_0002'" in msg and "spacing" in msg and "\n" not in msg

    assert status("case_0003", "aorta") == "missing_prediction"
    assert status("case_0003", "liver") == "ok"
    assert cases.loc["case_0003", "status"] == "partial"
    assert "livr" in cases.loc["case_0003", "message"]
    # every (case, structure, metric) has a row, whatever happened
    assert len(rows) == 3 * len(STRUCTURES) * N_METRICS


def test_resample_nearest_scores_a_different_grid(tmp_path, bench):
    pred = _copy_predictions(bench.predictions["near_perfect"], tmp_path / "pred")
    for f in (pred / "case_0001").iterdir():
        img = nib.load(f)
        affine = img.affine.copy()
        affine[:3, 3] += 0.01  # shifted by 10 µm: another grid, same voxels after resampling
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), f)
    store = ResultStore(tmp_path / "db.sqlite")
    strict = score(bench.reference, pred, model="m", dataset="d", store=store)
    assert store.cases([strict.run_id]).set_index("case_id").loc["case_0001", "status"] == "failed"
    loose = score(bench.reference, pred, model="m2", dataset="d", store=store, resample="nearest")
    cases = store.cases([loose.run_id]).set_index("case_id")
    assert cases.loc["case_0001", "status"] == "ok"
    assert cases.loc["case_0001", "flags"] == "resampled"


def test_corrupt_reference_file_fails_only_that_structure(tmp_path, bench):
    ref = _copy_predictions(bench.reference, tmp_path / "ref")
    target = ref / "case_0002" / "segmentations" / "pancreas.nii.gz"
    target.write_bytes(gzip.compress(b"not a nifti file at all"))
    df = _score(tmp_path, ref, bench.predictions["near_perfect"])
    dsc = df.xs("dsc", level="metric")
    assert dsc.loc[("case_0002", "pancreas"), "status"] == "failed"
    assert "Reference" in dsc.loc[("case_0002", "pancreas"), "message"]
    assert dsc.loc[("case_0002", "liver"), "status"] == "ok"


def test_empty_folders(tmp_path, bench):
    """An empty reference folder is an error before any work; an empty prediction folder is
    a model that predicted nothing: every case recorded as missing, with a note."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match="No cases found"):
        score(empty, bench.predictions["near_perfect"], model="m", dataset="d",
              store=ResultStore(tmp_path / "db.sqlite"))  # fmt: skip
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(bench.reference, empty, model="m", dataset="d", store=store)
    assert any("empty" in n for n in report.notes)
    cases = store.cases([report.run_id])
    assert len(cases) == 3 and (cases["status"] == "missing_prediction").all()
    assert (store.scores(run_ids=[report.run_id])["status"] == "missing_prediction").all()


def test_rerun_skips_stored_cases_and_force_recomputes(tmp_path, bench):
    store = ResultStore(tmp_path / "db.sqlite")
    kw = {"model": "m", "dataset": "d", "store": store}
    first = score(bench.reference, bench.predictions["boundary_noise"], **kw)
    assert (first.n_scored, first.n_skipped) == (3, 0)
    before = store.scores(run_ids=[first.run_id])
    again = score(bench.reference, bench.predictions["boundary_noise"], **kw)
    # the missing case is retried (it is not final); the two ok cases are skipped
    assert (again.n_scored, again.n_skipped) == (1, 2)
    forced = score(bench.reference, bench.predictions["boundary_noise"], force=True, **kw)
    assert (forced.n_scored, forced.n_skipped) == (3, 0)
    pd.testing.assert_frame_equal(before, store.scores(run_ids=[first.run_id]))


def test_profiles_are_separate_runs(tmp_path, bench):
    store = ResultStore(tmp_path / "db.sqlite")
    kw = {"model": "m", "dataset": "d", "store": store}
    a = score(bench.reference, bench.predictions["dilated"], profile="default", **kw)
    b = score(bench.reference, bench.predictions["dilated"], profile="touchstone", **kw)
    assert a.run_id != b.run_id
    runs = store.runs().set_index("run_id")
    assert runs.loc[b.run_id, "manifest"]["protocol"]["nsd_variant"] == "voxel"
    assert runs.loc[b.run_id, "manifest"]["protocol"]["tolerance_mm"] == 1.5
    assert runs.loc[a.run_id, "manifest"]["software"]["numpy"] == np.__version__
    da = store.scores(run_ids=[a.run_id]).set_index(KEY)["value"].xs("dsc", level="metric")
    db = store.scores(run_ids=[b.run_id]).set_index(KEY)["value"].xs("dsc", level="metric")
    assert (db < da).all()  # Touchstone's +1 in the denominator lowers every Dice


def test_parallel_workers_equal_serial(tmp_path, bench):
    serial = _score(tmp_path / "s", bench.reference, bench.predictions["false_positives"])
    parallel = _score(tmp_path / "p", bench.reference, bench.predictions["false_positives"],
                      workers=2)  # fmt: skip
    pd.testing.assert_frame_equal(serial, parallel)


def _stored_cases(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=0.2) as con:
            return con.execute("select count(*) from cases").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the scoring process mid-run, re-run: the database equals an uninterrupted run."""
    paths = write_benchmark(tmp_path / "bench", n_cases=10, models=("boundary_noise",),
                            shape=(128, 128, 80), spacing_mm=(3.0, 3.0, 4.0))  # fmt: skip
    args = ["--reference", str(paths.reference), "--predictions",
            str(paths.predictions["boundary_noise"]), "--model", "m", "--dataset", "d"]  # fmt: skip
    cmd = [sys.executable, "-m", "assay.cli", "score", *args]
    killed_db = tmp_path / "killed.db"
    proc = subprocess.Popen([*cmd, "--db", str(killed_db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while _stored_cases(killed_db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_after_kill = _stored_cases(killed_db)
    assert 2 <= n_after_kill < 10, "the run must be interrupted part-way for this test"

    subprocess.run([*cmd, "--db", str(killed_db)], check=True, capture_output=True)
    clean_db = tmp_path / "clean.db"
    subprocess.run([*cmd, "--db", str(clean_db)], check=True, capture_output=True)

    resumed = ResultStore(killed_db).scores().drop(columns=[])
    clean = ResultStore(clean_db).scores()
    pd.testing.assert_frame_equal(resumed, clean)
    assert len(clean) == 10 * len(STRUCTURES) * N_METRICS
    cols = ["case_id", "status", "message", "flags"]
    pd.testing.assert_frame_equal(ResultStore(killed_db).cases()[cols],
                                  ResultStore(clean_db).cases()[cols])  # fmt: skip


def test_unknown_label_values_are_recorded(tmp_path, bench_labelmap):
    """A prediction label map with a value the schema does not name: the named structures
    still score, and the case is 'partial' with a message naming the value."""
    labels = read_label_map_spec(bench_labelmap.labels, DEFAULT_SCHEMA)
    pred = _copy_predictions(bench_labelmap.predictions["near_perfect"], tmp_path / "pred")
    target = pred / "case_0002.nii.gz"
    img = nib.load(target)
    arr = np.asarray(img.dataobj).copy()
    arr[:3, :3, :3] = 12
    nib.save(nib.Nifti1Image(arr, img.affine), target)
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(bench_labelmap.reference, pred, model="m", dataset="d", store=store,
                   labels=labels)  # fmt: skip
    cases = store.cases([report.run_id]).set_index("case_id")
    assert cases.loc["case_0002", "status"] == "partial"
    assert "values above 9, up to 12" in cases.loc["case_0002", "message"]
    assert cases.loc["case_0001", "status"] == "ok"
    rows = store.scores(run_ids=[report.run_id])
    assert (rows[rows["case_id"] == "case_0002"]["status"] == "ok").all()


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_simpleitk_formats_score_like_nifti(tmp_path, bench, suffix):
    """Predictions converted by SimpleITK to MetaImage/NRRD give identical stored values."""
    import SimpleITK as sitk  # noqa: N813 (conventional alias)

    pred = _copy_predictions(bench.predictions["dilated"], tmp_path / "pred")
    for f in sorted((pred / "case_0001").iterdir()):
        sitk.WriteImage(sitk.ReadImage(str(f)), str(f).replace(".nii.gz", suffix))
        f.unlink()
    nifti = _score(tmp_path / "a", bench.reference, bench.predictions["dilated"])
    other = _score(tmp_path / "b", bench.reference, pred)
    pd.testing.assert_series_equal(nifti["value"], other["value"])
    assert (other["status"] == "ok").all()


def test_reference_problem_never_scores_against_an_assumed_empty_mask(tmp_path, bench):
    """A misnamed reference file ('livr') is skipped by discovery; liver must then be
    'failed' with the problem, not 'empty_reference' with Dice 0."""
    ref = _copy_predictions(bench.reference, tmp_path / "ref")
    seg = ref / "case_0001" / "segmentations"
    (seg / "liver.nii.gz").rename(seg / "livr.nii.gz")
    df = _score(tmp_path, ref, bench.predictions["near_perfect"])
    liver = df.loc[("case_0001", "liver", "dsc")]
    assert liver["status"] == "failed" and "livr" in liver["message"]
    assert df.loc[("case_0001", "spleen", "dsc"), "status"] == "ok"
    assert df.loc[("case_0002", "liver", "dsc"), "status"] == "ok"


def test_structure_in_neither_side_is_both_empty(tmp_path, bench):
    ref = _copy_predictions(bench.reference, tmp_path / "ref")
    pred = _copy_predictions(bench.predictions["near_perfect"], tmp_path / "pred")
    (ref / "case_0001" / "segmentations" / "gallbladder.nii.gz").unlink()
    _case_file(pred, "case_0001", "gallbladder").unlink()
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(ref, pred, model="m", dataset="d", store=store)
    rows = store.scores(run_ids=[report.run_id]).set_index(KEY)
    assert rows.loc[("case_0001", "gallbladder", "dsc"), "status"] == "both_empty"
    assert store.cases([report.run_id]).set_index("case_id").loc["case_0001", "status"] == "ok"


def test_resuming_from_other_inputs_needs_force(tmp_path, bench):
    store = ResultStore(tmp_path / "db.sqlite")
    kw = {"model": "m", "dataset": "d", "store": store}
    first = score(bench.reference, bench.predictions["dilated"], **kw)
    with pytest.raises(InputError, match=r"other inputs.*predictions.*--force"):
        score(bench.reference, bench.predictions["near_perfect"], **kw)
    forced = score(bench.reference, bench.predictions["near_perfect"], force=True, **kw)
    assert forced.run_id == first.run_id and forced.n_scored == 3
    manifest = store.manifest(first.run_id)
    assert manifest is not None
    assert manifest["inputs"]["predictions"] == str(bench.predictions["near_perfect"].resolve())


def test_prediction_dataset_json_wins_over_reference_labels(tmp_path, bench_labelmap):
    """nnU-Net writes its own dataset.json next to its predictions; if its numbering differs
    from the reference's, it must be used for the predictions (not --labels)."""
    import json

    labels = read_label_map_spec(bench_labelmap.labels, DEFAULT_SCHEMA)
    pred = _copy_predictions(bench_labelmap.predictions["near_perfect"], tmp_path / "pred")
    for f in pred.glob("*.nii.gz"):  # swap liver (1) and spleen (2) in the files ...
        img = nib.load(f)
        arr = np.asarray(img.dataobj).copy()
        arr[arr == 1], arr[arr == 2] = 99, 1
        arr[arr == 99] = 2
        nib.save(nib.Nifti1Image(arr, img.affine), f)
    spec = {"labels": {"background": 0, **{n: v for v, n in labels.items()}}}
    spec["labels"]["liver"], spec["labels"]["spleen"] = 2, 1  # ... and in their dataset.json
    (pred / "dataset.json").write_text(json.dumps(spec))
    swapped = _score(tmp_path / "a", bench_labelmap.reference, pred, labels=labels)
    plain = _score(tmp_path / "b", bench_labelmap.reference,
                   bench_labelmap.predictions["near_perfect"], labels=labels)  # fmt: skip
    pd.testing.assert_series_equal(swapped["value"], plain["value"])


def test_undecodable_names_are_skipped_or_escaped(tmp_path, bench):
    ref = _copy_predictions(bench.reference, tmp_path / "ref")
    pred = _copy_predictions(bench.predictions["near_perfect"], tmp_path / "pred")
    bad = os.fsdecode(b"case_\xff9")
    shutil.copytree(ref / "case_0001", ref / bad)
    shutil.copy(_case_file(pred, "case_0002", "liver"),
                pred / "case_0002" / os.fsdecode(b"liv\xffer.nii.gz"))  # fmt: skip
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(ref, pred, model="m", dataset="d", store=store)
    assert any("not valid UTF-8" in n for n in report.notes)
    cases = store.cases([report.run_id]).set_index("case_id")
    assert list(cases.index) == ["case_0001", "case_0002", "case_0003"]
    assert cases.loc["case_0002", "status"] == "partial"
    assert "liv\\udcffer" in cases.loc["case_0002", "message"]  # escaped, storable


def test_stray_image_in_a_structures_prediction_root(tmp_path, bench):
    pred = _copy_predictions(bench.predictions["near_perfect"], tmp_path / "pred")
    shutil.rmtree(pred / "case_0002")
    shutil.copy(bench.reference / "case_0002" / "ct.nii.gz", pred / "case_0002.nii.gz")
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(bench.reference, pred, model="m", dataset="d", store=store,
                   prediction_layout="structures")  # fmt: skip
    cases = store.cases([report.run_id]).set_index("case_id")
    assert cases.loc["case_0002", "status"] == "missing_prediction"
    assert "--prediction-layout labelmap" in cases.loc["case_0002", "message"]
    assert cases.loc["case_0001", "status"] == "ok"


def test_huge_label_value_is_noted_not_fatal(tmp_path, bench_labelmap):
    labels = read_label_map_spec(bench_labelmap.labels, DEFAULT_SCHEMA)
    pred = _copy_predictions(bench_labelmap.predictions["near_perfect"], tmp_path / "pred")
    target = pred / "case_0001.nii.gz"
    img = nib.load(target)
    arr = np.asarray(img.dataobj).astype(np.int32)
    arr[0, 0, 0] = 2**31 - 1
    nib.save(nib.Nifti1Image(arr, img.affine), target)
    store = ResultStore(tmp_path / "db.sqlite")
    report = score(bench_labelmap.reference, pred, model="m", dataset="d", store=store,
                   labels=labels)  # fmt: skip
    case = store.cases([report.run_id]).set_index("case_id").loc["case_0001"]
    assert case["status"] == "partial" and str(2**31 - 1) in case["message"]
    rows = store.scores(run_ids=[report.run_id])
    assert (rows[rows["case_id"] == "case_0001"]["status"] == "ok").all()
