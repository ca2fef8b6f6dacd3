"""``assay run BENCHMARK.yaml`` (DESIGN.md §6): config validation before any work, models run
per case with faults recorded, spot checks, resumption, Dask, and the report at the end.

Real processes, real NIfTI files, a real SQLite database and a real Dask LocalCluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_helpers import wide_console  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from assay import cli
from assay.errors import InputError
from assay.io import read_image, write_image
from assay.runs import load_benchmark, run_benchmark
from assay.runs._demo import write_demo_config
from assay.store import ResultStore
from assay.synthetic import write_benchmark

SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}
KEY = ["model", "case_id", "structure", "metric"]
runner = CliRunner()

CRASH = "import sys; sys.stderr.write('CUDA out of memory\\n'); sys.exit(3)"
HANG = "import time; time.sleep(60)"
NOTHING = "pass"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_benchmark(
        tmp_path_factory.mktemp("run") / "data", n_cases=4,
        models=("near_perfect", "boundary_noise"), **SMALL,
    )  # fmt: skip


def _config(tmp: Path, bench, models: list[dict], **extra) -> Path:
    """A benchmark.yaml in ``tmp`` with the synthetic dataset and ``models`` inline."""
    config = {
        "name": "test benchmark",
        "output": "out",
        "db": "out/assay.db",
        "workers": 1,
        "datasets": [{"name": "synthetic", "root": str(bench.reference),
                      "metadata": str(bench.metadata), "licence": "CC0-1.0"}],
        "models": models,
        "analysis": {"bootstrap": 100},
        "report": False,
        **extra,
    }  # fmt: skip
    path = tmp / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _edited_config(tmp: Path, bench, edit: dict) -> Path:
    """A valid one-model config with the top-level keys of ``edit`` replaced."""
    path = _config(tmp, bench, [{"name": "m", "predictions": str(
        bench.predictions["near_perfect"])}])  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw.update(edit)
    path.write_text(yaml.safe_dump(raw))
    return path


def _script_model(tmp: Path, name: str, body: str, timeout_s: float = 30) -> dict:
    script = tmp / f"{name}.py"
    script.write_text(body)
    return {"name": name, "runner": {"command": f"{sys.executable} {script} {{input}} {{output}}",
                                     "timeout_s": timeout_s}}  # fmt: skip


BASELINE = {
    "name": "baseline",
    "runner": {"command": f"{sys.executable} -m assay.models.baseline predict -i {{input}} "
               "-o {output}", "timeout_s": 120},
}  # fmt: skip


# -- configuration errors: before any work ---------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"colour": "blue"}, "Unknown key(s) colour in benchmark config"),
        ({"models": [{"name": "m"}]}, "needs exactly one of 'predictions'"),
        ({"models": [{"name": "m", "predictions": "nowhere"}]}, "predictions folder"),
        ({"models": [{"name": "m", "runner": {"cmd": "x"}}]}, "cmd"),
        ({"datasets": [{"name": "d", "root": "missing"}]}, "root"),
        ({"datasets": [{"name": "d"}]}, "has no 'root'"),
        ({"profile": "nope"}, "profile 'nope' is unknown"),
        ({"analysis": {"bootstraps": 3}}, "Unknown key(s) bootstraps in"),
        ({"spot_check": {"case": 3}}, "Unknown key(s) case in"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, bench, edit, expected):
    path = _edited_config(tmp_path, bench, edit)
    with pytest.raises(InputError) as info:
        load_benchmark(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value) or "card" in str(info.value)
    result = runner.invoke(cli.app, ["run", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing was started


def test_groups_without_metadata_is_an_error_before_work(tmp_path, bench):
    path = _config(tmp_path, bench, [{"name": "m", "predictions": str(
        bench.predictions["near_perfect"])}], analysis={"groups": ["sex"]})  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    del raw["datasets"][0]["metadata"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"analysis\.groups needs case metadata"):
        load_benchmark(path)


# -- a whole run with model faults -----------------------------------------------------------


def test_run_records_faults_and_goes_on_then_resumes_without_redoing(tmp_path, bench):
    models = [
        {"name": "near_perfect", "predictions": str(bench.predictions["near_perfect"])},
        BASELINE,
        _script_model(tmp_path, "crasher", CRASH),
        _script_model(tmp_path, "hanger", HANG, timeout_s=2),
        _script_model(tmp_path, "lazy", NOTHING),
    ]
    path = _config(tmp_path, bench, models, spot_check=False)
    summary = run_benchmark(load_benchmark(path))
    by = {o.model: o for o in summary.outcomes}
    assert by["near_perfect"].case_statuses == {"ok": 4}
    assert by["baseline"].case_statuses == {"ok": 4}
    assert by["baseline"].speed_cm3_per_s is not None and by["baseline"].speed_cm3_per_s > 0
    for name, reason in (("crasher", "exit status 3"), ("hanger", "timed out after 2"),
                         ("lazy", "wrote nothing")):  # fmt: skip
        assert by[name].case_statuses == {"failed": 4}, name
        assert all(reason in msg and "inference failed" in msg for _, msg in by[name].failures)
    crash_msg = by["crasher"].failures[0][1]
    assert "CUDA out of memory" in crash_msg  # the model's own last stderr line
    store = ResultStore(tmp_path / "out" / "assay.db")
    scores = store.scores()
    assert set(scores["model"]) == {"near_perfect", "baseline", "crasher", "hanger", "lazy"}
    failed = scores[scores["model"] == "crasher"]
    assert (failed["status"] == "failed").all() and failed["value"].isna().all()
    runs = store.runs().set_index("model")
    manifest = runs.loc["baseline", "manifest"]
    assert manifest["inference"]["n_cases"] == 4 and manifest["inference"]["seconds"] > 0
    assert len(manifest["dataset"]["content_hash"]) == 64
    assert manifest["dataset"]["licence"] == "CC0-1.0"
    assert manifest["model"]["runner"]["command"].startswith(sys.executable)
    # the inference log holds one line per case and model run
    log = tmp_path / "out" / "inference" / "synthetic" / "baseline.jsonl"
    assert len(log.read_text().splitlines()) == 4
    before = _rows(store)
    # resume: nothing is predicted or scored again (failed inference is retried, and fails)
    again = run_benchmark(load_benchmark(path))
    assert len(log.read_text().splitlines()) == 4
    assert {o.model: o.case_statuses for o in again.outcomes} == {
        o.model: o.case_statuses for o in summary.outcomes
    }
    pd.testing.assert_frame_equal(_rows(store), before)


def _rows(store: ResultStore) -> pd.DataFrame:
    frame = store.scores()[[*KEY, "value", "status"]]
    return frame.sort_values(KEY).reset_index(drop=True)


def test_wrong_geometry_output_is_a_failed_case(tmp_path, bench):
    body = (
        "import sys, numpy as np, nibabel as nib\n"
        "from pathlib import Path\n"
        "img = nib.load(sys.argv[1])\n"
        "out = Path(sys.argv[2]); out.mkdir(exist_ok=True)\n"
        "mask = np.zeros((10, 10, 10), np.uint8)\n"
        "nib.save(nib.Nifti1Image(mask, img.affine), out / 'liver.nii.gz')\n"
    )
    path = _config(tmp_path, bench, [_script_model(tmp_path, "warped", body)], spot_check=False)
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert outcome.case_statuses == {"failed": 4}
    assert all("wrong geometry" in msg for _, msg in outcome.failures)


# -- spot checks -----------------------------------------------------------------------------


def _derived(bench, out: Path, transform) -> Path:
    """A copy of near_perfect's predictions with ``transform(structure, array)`` applied."""
    src = bench.predictions["near_perfect"]
    for case in sorted(p for p in src.iterdir() if p.is_dir()):
        (out / case.name).mkdir(parents=True)
        for f in case.iterdir():
            image = read_image(f)
            name, array = transform(f.name.removesuffix(".nii.gz"), image.array)
            write_image(out / case.name / f"{name}.nii.gz", array.astype(np.uint8), image.affine)
    return out


def test_spot_check_flags_mirrored_outputs(tmp_path, bench):
    mirrored = _derived(bench, tmp_path / "mirrored", lambda s, a: (s, np.flip(a, axis=0)))
    path = _config(tmp_path, bench, [{"name": "mirror", "predictions": str(mirrored)}])
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert outcome.status == "spot_check_failed"
    assert "mirrored" in outcome.spot.finding and "left–right" in outcome.spot.finding
    assert ResultStore(tmp_path / "out" / "assay.db").scores().empty  # nothing published


def test_spot_check_flags_swapped_labels(tmp_path, bench):
    """Every structure file renamed to the next structure's name: Dice ~0 for each, but
    each matches the reference of the structure it was named after."""
    names = ["liver", "spleen", "kidney_left", "kidney_right", "gallbladder", "pancreas",
             "stomach", "aorta", "postcava"]  # fmt: skip
    shift = dict(zip(names, names[1:] + names[:1], strict=True))
    swapped = _derived(bench, tmp_path / "swapped", lambda s, a: (shift[s], a))
    path = _config(tmp_path, bench, [{"name": "swap", "predictions": str(swapped)}])
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert outcome.status == "spot_check_failed"
    assert "labels look swapped" in outcome.spot.finding


def test_spot_check_passes_reoriented_predictions(tmp_path, bench):
    """An axis permutation written in the affine is repaired when scoring (flag
    `reoriented`), so it is not a finding."""
    flipped = write_benchmark(tmp_path / "f", n_cases=4, models=("flipped_orientation",), **SMALL)
    path = _config(tmp_path, bench, [{"name": "flipped", "predictions": str(
        flipped.predictions["flipped_orientation"])}])  # fmt: skip
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert outcome.status == "ok" and outcome.spot is not None and outcome.spot.ok
    assert outcome.spot.mean_dice > 0.9


# -- the demo config, report, CLI, Dask ------------------------------------------------------


def test_demo_config_runs_end_to_end_with_report(tmp_path):
    paths = write_benchmark(tmp_path / "data", n_cases=3,
                            models=("near_perfect", "boundary_noise"), **SMALL)  # fmt: skip
    config = write_demo_config(paths, tmp_path, workers=1)
    raw = yaml.safe_load(config.read_text())
    raw["analysis"]["bootstrap"] = 100
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(cli.app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert "Benchmark run" in result.stdout and "threshold_baseline" in result.stdout
    report = tmp_path / "run" / "report"
    assert (report / "index.html").is_file() and (report / "speed.html").is_file()
    results = json.loads((report / "bundle" / "results.json").read_text())
    speed = {r["model"]: r for r in results["provenance"]["speed"]}
    assert speed["threshold_baseline"]["cm3_per_s"] > 0
    assert runner.invoke(cli.app, ["reanalyze", str(report / "bundle")]).exit_code == 0


def test_dask_run_equals_local_run(tmp_path, bench):
    from distributed import LocalCluster

    models = [{"name": "near_perfect", "predictions": str(bench.predictions["near_perfect"])},
              BASELINE]  # fmt: skip
    local_dir, dask_dir = tmp_path / "local", tmp_path / "dask"
    local_dir.mkdir()
    dask_dir.mkdir()
    run_benchmark(load_benchmark(_config(local_dir, bench, models)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:  # fmt: skip
        run_benchmark(load_benchmark(_config(dask_dir, bench, models)),
                      scheduler=cluster.scheduler_address)  # fmt: skip
    local = _rows(ResultStore(local_dir / "out" / "assay.db"))
    remote = _rows(ResultStore(dask_dir / "out" / "assay.db"))
    pd.testing.assert_frame_equal(local, remote)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, bench):
    """SIGKILL `assay run` once the baseline has predicted its first case; re-running
    completes the remaining cases, and the rows equal an uninterrupted run's."""
    models = [BASELINE]
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    whole_dir.mkdir()
    cut_dir.mkdir()
    run_benchmark(load_benchmark(_config(whole_dir, bench, models, spot_check=False)))
    config = _config(cut_dir, bench, models, spot_check=False)
    exe = shutil.which("assay", path=str(Path(sys.executable).parent)) or "assay"
    proc = subprocess.Popen([exe, "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    log = cut_dir / "out" / "inference" / "synthetic" / "baseline.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(log.read_text().splitlines())
    assert 1 <= n_before < 4, "the run should have been cut after its first case"
    result = runner.invoke(cli.app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert len(log.read_text().splitlines()) == 4  # only the remaining cases were run
    pd.testing.assert_frame_equal(
        _rows(ResultStore(cut_dir / "out" / "assay.db")),
        _rows(ResultStore(whole_dir / "out" / "assay.db")),
    )


def test_provenance_turns_training_sources_into_contaminated_test_cases(tmp_path, bench):
    """A test set built partly from source 'AtlasX' (cases 1-2) and a model trained on
    AtlasX: those two cases are excluded from that model's values (n_contaminated = 2 per
    structure with a value there), the other model keeps all four; a source that makes up the
    whole test set contaminates the whole dataset (not ranked)."""
    from assay.datasets import DatasetCard
    from assay.models import ModelCard
    from assay.report._collect import collect_report_data
    from assay.runs._pipeline import training_overlap

    part = DatasetCard(name="synthetic", provenance={"AtlasX": ("case_0001", "case_0002")})
    whole = DatasetCard(name="other", provenance={"AtlasY": ()})
    trained = ModelCard(name="near_perfect", training_data=("AtlasX", "AtlasY"))
    clean = ModelCard(name="boundary_noise", training_data=("Elsewhere",))
    overlap = training_overlap([trained, clean], [part, whole])
    assert overlap == {
        "near_perfect": ["AtlasX", "AtlasY", "other", "synthetic:case_0001", "synthetic:case_0002"],
        "boundary_noise": ["Elsewhere"],
    }
    models = [{"name": n, "predictions": str(bench.predictions[n])}
              for n in ("near_perfect", "boundary_noise")]  # fmt: skip
    path = _config(tmp_path, bench, models, spot_check=False)
    run_benchmark(load_benchmark(path))
    store = ResultStore(tmp_path / "out" / "assay.db")
    options = {"n_bootstrap": 100, "training_data": overlap}
    data, _ = collect_report_data(store, ["synthetic"], options=options)
    agg = data.analyses["dsc"].aggregates.set_index(["model", "structure"])
    assert agg.loc[("near_perfect", "liver"), "n_contaminated"] == 2
    assert agg.loc[("near_perfect", "liver"), "n"] == 2
    assert agg.loc[("boundary_noise", "liver"), "n_contaminated"] == 0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"workers": True}, "'workers' must be a positive integer"),
        ({"report": "no"}, "'report' must be true or false"),
        ({"spot_check": {"cases": -1}}, "spot_check.cases must be a positive integer"),
        ({"analysis": {"metrics": ["dcs"]}}, "analysis.metrics ['dcs'] are not computed"),
        ({"analysis": {"policy": "median"}}, "analysis.policy 'median' is not one of"),
        ({"analysis": {"winner_rule": "wilcoxon"}}, "analysis.winner_rule 'wilcoxon' is not one"),
        ({"analysis": {"subgroup_family": "x"}}, "analysis.subgroup_family 'x' is not one of"),
        ({"datasets": [{"name": "d", "root": ".", "image": "{case_id}/ct.nii.gz"}]},
         "is not a valid template"),
        ({"models": [{"name": "m", "runner": {"command": "x {input}", "cwd": "nowhere"}}]},
         "runner.cwd"),
        ({"models": [{"name": "m", "runner": {"command": "x"}, "min_speed_cm3_s": "fast"}]},
         "min_speed_cm3_s must be a number"),
    ],
)  # fmt: skip
def test_more_config_errors_before_any_work(tmp_path, bench, edit, expected):
    path = _edited_config(tmp_path, bench, edit)
    with pytest.raises(InputError) as info:
        load_benchmark(path)
    assert expected in str(info.value)


def test_missing_input_image_stops_before_any_work(tmp_path, bench):
    path = _config(tmp_path, bench, [BASELINE], spot_check=False)
    raw = yaml.safe_load(path.read_text())
    raw["datasets"][0]["image"] = "{case}/missing.nii.gz"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"input image of case 'case_0001' is not at .*missing"):
        run_benchmark(load_benchmark(path))
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_changed_runner_redoes_and_rescores_its_predictions(tmp_path, bench):
    """Same model name, new command (an empty-mask model): every case is predicted again and
    its stored scores are replaced (Dice 0 where the reference has the structure)."""
    empty = (
        "import sys, numpy as np, nibabel as nib\n"
        "from pathlib import Path\n"
        "img = nib.load(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(exist_ok=True)\n"
        "nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), "
        "out / 'liver.nii.gz')\n"
    )
    path = _config(tmp_path, bench, [BASELINE], spot_check=False)
    run_benchmark(load_benchmark(path))
    store = ResultStore(tmp_path / "out" / "assay.db")
    liver = lambda: store.scores().query("metric == 'dsc' and structure == 'liver'")  # noqa: E731
    assert (liver()["value"] > 0.5).all()
    changed = _script_model(tmp_path, "baseline", empty)
    raw = yaml.safe_load(path.read_text())
    raw["models"] = [changed]
    path.write_text(yaml.safe_dump(raw))
    run_benchmark(load_benchmark(path))
    log = tmp_path / "out" / "inference" / "synthetic" / "baseline.jsonl"
    assert len(log.read_text().splitlines()) == 8  # four cases, run twice
    assert (liver()["status"] == "empty_prediction").all()  # the new, empty masks


def test_spot_check_of_a_label_map_runner_uses_the_reference_labels(tmp_path):
    """A model run per case that writes a mirrored label map ({output_file}); the reference
    is a label-map benchmark with a dataset.json: the spot check reads the predictions with
    the reference's labels (as scoring does) and flags the mirroring."""
    paths = write_benchmark(tmp_path / "lm", n_cases=3, models=("near_perfect",),
                            layout="labelmap", **SMALL)  # fmt: skip
    body = (
        "import sys, numpy as np, nibabel as nib\n"
        f"ref = nib.load('{paths.reference}/' + sys.argv[3] + '.nii.gz')\n"
        "data = np.flip(np.asarray(ref.dataobj), axis=0).astype(np.uint8)\n"
        "nib.save(nib.Nifti1Image(data, ref.affine), sys.argv[2])\n"
    )
    script = tmp_path / "mirror.py"
    script.write_text(body)
    model = {"name": "mirror", "runner": {
        "command": f"{sys.executable} {script} {{input}} {{output_file}} {{case}}"}}  # fmt: skip
    assert (tmp_path / "lm" / "images" / "case_0001_0000.nii.gz").is_file()
    config = {
        "datasets": [{"name": "lm", "root": str(paths.reference),
                      "image": "../images/{case}_0000.nii.gz"}],
        "models": [model], "output": "out", "db": "out/a.db", "report": False,
    }  # fmt: skip
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert outcome.status == "spot_check_failed", outcome
    assert "mirrored" in outcome.spot.finding


def test_batch_runner_runs_once_per_batch_and_equals_per_case_runs(tmp_path, bench):
    """A folder-to-folder model (nnU-Net style) with batch_size 3 on 4 cases: called twice,
    every case predicted from its linked `{case}_0000.nii.gz`; the scores equal the per-case
    baseline's (the same segmentation), and each case gets a share of the batch's time."""
    calls = tmp_path / "calls.txt"
    body = (
        "import pathlib, subprocess, sys\n"
        "inp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
        f"open({str(calls)!r}, 'a').write('call\\n')\n"
        "for f in sorted(inp.iterdir()):\n"
        "    case = f.name.removesuffix('_0000.nii.gz')\n"
        "    subprocess.run([sys.executable, '-m', 'assay.models.baseline', 'predict', '-i',\n"
        "                    str(f), '-o', str(out / case)], check=True)\n"
    )
    script = tmp_path / "batch_model.py"
    script.write_text(body)
    command = f"{sys.executable} {script} {{input_dir}} {{output_dir}}"
    batch = {"name": "baseline", "runner": {"command": command, "batch_size": 3}}
    per_case_dir, batch_dir = tmp_path / "per_case", tmp_path / "batch"
    per_case_dir.mkdir()
    batch_dir.mkdir()
    run_benchmark(load_benchmark(_config(per_case_dir, bench, [BASELINE], spot_check=False)))
    (outcome,) = run_benchmark(
        load_benchmark(_config(batch_dir, bench, [batch], spot_check=False))
    ).outcomes  # fmt: skip
    assert calls.read_text().splitlines() == ["call", "call"]
    assert outcome.case_statuses == {"ok": 4} and outcome.speed_cm3_per_s > 0
    pd.testing.assert_frame_equal(
        _rows(ResultStore(batch_dir / "out" / "assay.db")),
        _rows(ResultStore(per_case_dir / "out" / "assay.db")),
    )
    log = batch_dir / "out" / "inference" / "synthetic" / "baseline.jsonl"
    seconds = [json.loads(line)["seconds"] for line in log.read_text().splitlines()]
    assert len(seconds) == 4 and all(s > 0 for s in seconds)


def test_a_card_can_opt_out_of_the_spot_check(tmp_path, bench):
    """The mirrored model again, with `spot_check: false` in its card: scored (and poor)."""
    mirrored = _derived(bench, tmp_path / "mirrored", lambda s, a: (s, np.flip(a, axis=0)))
    model = {"name": "mirror", "predictions": str(mirrored), "spot_check": False}
    (outcome,) = run_benchmark(load_benchmark(_config(tmp_path, bench, [model]))).outcomes
    assert outcome.status == "ok" and outcome.spot is None
    assert outcome.case_statuses == {"ok": 4}


def test_content_hash_changes_with_content_and_the_cache_gives_the_same_hash(tmp_path):
    from assay.datasets import DatasetCard, content_hash

    root = tmp_path / "ref"
    (root / "c1").mkdir(parents=True)
    (root / "c1" / "liver.nii.gz").write_bytes(b"abc")
    (root / "c1" / "spleen.nii.gz").write_bytes(b"def")
    card = DatasetCard(name="d", root=root)
    plain = content_hash(card)
    cache = tmp_path / "cache.json"
    assert content_hash(card, cache=cache) == plain == content_hash(card, cache=cache)
    assert len(json.loads(cache.read_text())) == 2
    (root / "c1" / "spleen.nii.gz").write_bytes(b"deF")  # same size, new bytes and mtime
    changed = content_hash(card, cache=cache)
    assert changed != plain and changed == content_hash(card)
    (root / "c1" / "spleen.nii.gz").unlink()
    assert content_hash(card) not in (plain, changed)


def test_retry_failed_false_keeps_failures_on_resume(tmp_path, bench):
    models = [_script_model(tmp_path, "crasher", CRASH)]
    path = _config(tmp_path, bench, models, spot_check=False, retry_failed=False)
    run_benchmark(load_benchmark(path))
    log = tmp_path / "out" / "inference" / "synthetic" / "crasher.jsonl"
    assert len(log.read_text().splitlines()) == 4
    (outcome,) = run_benchmark(load_benchmark(path)).outcomes
    assert len(log.read_text().splitlines()) == 4  # not run again
    assert outcome.case_statuses == {"failed": 4}


# -- re-runs: scoring, analysis and report skipped when their inputs are unchanged -----------


def _fake_report(calls: list[str]):
    """A stand-in for the pipeline's report step (the figures take a minute): a small
    report folder whose bundle records the stored scores, counting the builds."""
    from assay.runs._pipeline import KeptReport

    def build(bench, store, scored, ui):
        report = bench.output / "report"
        (report / "bundle").mkdir(parents=True, exist_ok=True)
        (report / "index.html").write_text(f"build {len(calls)}")
        (report / "leaderboard.md").write_text(str(dict(bench.analysis)))
        store.scores(run_ids=[o.run_id for o in scored]).to_csv(report / "bundle" / "s.csv")
        calls.append("built")
        return KeptReport(index=report / "index.html", leaderboard=report / "leaderboard.md",
                          bundle=report / "bundle", figures=report / "figures", n_figures=0,
                          pages=(report / "index.html",), formats=("svg",))  # fmt: skip

    return build


def test_unchanged_rerun_skips_analysis_and_a_change_redoes_it(tmp_path, bench, monkeypatch):
    from assay.runs import _pipeline

    calls: list[str] = []
    monkeypatch.setattr(_pipeline, "_report", _fake_report(calls))
    predictions = tmp_path / "predictions"
    shutil.copytree(bench.predictions["near_perfect"], predictions)
    models = [
        {"name": "near_perfect", "predictions": str(predictions)},
        {"name": "boundary_noise", "predictions": str(bench.predictions["boundary_noise"])},
    ]
    path = _config(tmp_path, bench, models, report=True)
    first = run_benchmark(load_benchmark(path))
    assert calls == ["built"] and first.report is not None
    assert "synthetic / near_perfect: 0 cases already scored, 4 scored now" in first.resumed
    assert "analysis and report rebuilt (no report stamp of an earlier run)" in first.resumed[-1]
    stamp = json.loads((tmp_path / "out" / _pipeline.STAMP_NAME).read_text())
    assert set(stamp["files"]) == {"index.html", "leaderboard.md", "bundle/s.csv"}
    store = ResultStore(tmp_path / "out" / "assay.db")
    rows = _rows(store)

    # unchanged: nothing scored, the analysis and report kept, and said so
    again = run_benchmark(load_benchmark(path))
    assert calls == ["built"]
    assert "synthetic / near_perfect: 4 cases already scored, 0 to score" in again.resumed
    assert again.resumed[-1].startswith("7 cases already scored, analysis unchanged")
    assert isinstance(again.report, _pipeline.KeptReport)
    assert again.report.index == tmp_path / "out" / "report" / "index.html"
    pd.testing.assert_frame_equal(_rows(store), rows)

    # one prediction changed: that case rescored, the analysis redone (it is joint)
    mask = predictions / "case_0002" / "liver.nii.gz"
    image = read_image(mask)
    array = np.asarray(image.array).copy()
    array.flat[int(np.flatnonzero(array)[0])] = 0
    write_image(mask, array.astype(np.uint8), image.affine)
    changed = run_benchmark(load_benchmark(path))
    assert calls == ["built", "built"]
    assert ("synthetic / near_perfect: 3 cases already scored, 1 scored now (1 changed since "
            "the last run)") in changed.resumed  # fmt: skip
    # boundary_noise misses one prediction: that case is retried on every run, unchanged
    assert ("synthetic / boundary_noise: 3 cases already scored, 1 scored now (1 failed, "
            "partial or missing before, retried)") in changed.resumed  # fmt: skip
    assert "scores of synthetic / near_perfect changed" in changed.resumed[-1]
    assert "joint across models" in changed.resumed[-1]
    after = _rows(store)
    differ = after.merge(rows, on=KEY, suffixes=("", "_old"))
    differ = differ[~np.isclose(differ["value"], differ["value_old"], equal_nan=True)]
    assert set(differ["case_id"]) == {"case_0002"} and set(differ["model"]) == {"near_perfect"}
    assert run_benchmark(load_benchmark(path)).resumed[-1].startswith("7 cases already scored")
    assert calls == ["built", "built"]

    # a changed analysis option redoes the analysis; so does an edited or removed report file
    raw = yaml.safe_load(path.read_text())
    raw["analysis"]["bootstrap"] = 200
    path.write_text(yaml.safe_dump(raw))
    option = run_benchmark(load_benchmark(path))
    assert calls == ["built"] * 3
    assert "the analysis or report options or the cards changed" in option.resumed[-1]
    (tmp_path / "out" / "report" / "leaderboard.md").write_text("edited")
    edited = run_benchmark(load_benchmark(path))
    assert calls == ["built"] * 4
    assert "report file leaderboard.md was edited or removed" in edited.resumed[-1]
    (tmp_path / "out" / "report" / "bundle" / "s.csv").unlink()
    assert "bundle/s.csv was edited" in run_benchmark(load_benchmark(path)).resumed[-1]
    assert calls == ["built"] * 5


def test_an_interrupted_report_build_leaves_no_stamp(tmp_path, bench, monkeypatch):
    from assay.runs import _pipeline

    calls: list[str] = []
    monkeypatch.setattr(_pipeline, "_report", _fake_report(calls))
    models = [{"name": "near_perfect", "predictions": str(bench.predictions["near_perfect"])}]
    path = _config(tmp_path, bench, models, report=True)
    run_benchmark(load_benchmark(path))
    stamp = tmp_path / "out" / _pipeline.STAMP_NAME
    assert stamp.is_file()
    raw = yaml.safe_load(path.read_text())
    raw["analysis"]["seed"] = 7
    path.write_text(yaml.safe_dump(raw))

    def crash(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_pipeline, "_report", crash)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(load_benchmark(path))
    assert not stamp.exists()  # the old stamp can never vouch for a half-written report
    monkeypatch.setattr(_pipeline, "_report", _fake_report(calls))
    assert "no report stamp" in run_benchmark(load_benchmark(path)).resumed[-1]
