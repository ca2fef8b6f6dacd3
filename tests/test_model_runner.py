"""Model runners (issue 5): real processes on real NIfTI files, every fault, and the baseline.

Inputs are synthetic benchmarks: ``reference/<case>/ct.nii.gz`` on a 48 x 48 x 32 grid of
8 x 8 x 10 mm voxels, so every input volume is 48·48·32 · 8·8·10 mm³ = 47 185.92 cm³ (closed
form). Fault-injection "models" are tiny Python scripts written into ``tmp_path``.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from assay.errors import InputError
from assay.io import read_image
from assay.metrics import dice
from assay.models import InferenceRecord, InferenceTask, RunnerSpec, run_case
from assay.synthetic import LABELS, write_benchmark

SHAPE = (48, 48, 32)
SPACING = (8.0, 8.0, 10.0)
VOLUME_CM3 = 48 * 48 * 32 * 8.0 * 8.0 * 10.0 / 1000.0  # 47185.92, closed form
PY = sys.executable


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    write_benchmark(out, n_cases=2, shape=SHAPE, spacing_mm=SPACING, models=("near_perfect",))
    return out


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


# A model that copies the reference segmentations of its case next to the input image.
COPY_MODEL = """
    import shutil, sys
    from pathlib import Path
    src = Path(sys.argv[1]).parent / "segmentations"
    for f in src.iterdir():
        shutil.copy(f, Path(sys.argv[2]) / f.name)
"""


def _task(
    bench: Path, tmp_path: Path, command: str, case: str = "case_0001", timeout_s: float = 60.0
) -> InferenceTask:
    return InferenceTask(
        case_id=case,
        image=bench / "reference" / case / "ct.nii.gz",
        output_dir=tmp_path / "pred",
        spec=RunnerSpec(command=command, timeout_s=timeout_s),
    )


def test_ok_run_records_time_volume_and_outputs(bench: Path, tmp_path: Path) -> None:
    model = _script(tmp_path, "copy model.py", COPY_MODEL)  # a space in the path: one argument
    task = _task(bench, tmp_path, f"{PY} '{model}' {{input}} {{output}}")
    stale = tmp_path / "pred" / "case_0001" / "stale.nii.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    record = run_case(task)
    assert record == InferenceRecord("case_0001", "ok", record.seconds, record.volume_cm3, "")
    assert record.seconds > 0
    assert record.volume_cm3 == pytest.approx(VOLUME_CM3, rel=1e-12)
    assert record.speed_cm3_per_s == pytest.approx(VOLUME_CM3 / record.seconds)
    written = sorted(p.name for p in (tmp_path / "pred" / "case_0001").iterdir())
    assert written == sorted(f"{name}.nii.gz" for name in LABELS.values())  # stale one removed
    assert pickle.loads(pickle.dumps(task)) == task  # executors ship tasks to other processes


def test_label_map_output_file(bench: Path, tmp_path: Path) -> None:
    model = _script(
        tmp_path,
        "labelmap.py",
        """
        import sys, nibabel as nib, numpy as np
        ct = nib.load(sys.argv[1])
        out = np.asarray(ct.dataobj) > 100
        nib.save(nib.Nifti1Image(out.astype(np.uint8), ct.affine), sys.argv[2])
        """,
    )
    record = run_case(_task(bench, tmp_path, f"{PY} {model} {{input}} {{output_file}}"))
    assert record.status == "ok", record.message
    assert (tmp_path / "pred" / "case_0001.nii.gz").is_file()
    assert not (tmp_path / "pred" / "case_0001").exists()  # the unused {output} folder is gone


FAULTS = {
    "crash": (
        "import sys\nprint('loading weights', file=sys.stderr)\n"
        "print('CUDA out of memory', file=sys.stderr)\nopen(sys.argv[2] + '/liver.nii.gz', 'w')\n"
        "sys.exit(3)\n",
        "failed",
        "model command failed: exit status 3; last stderr line: CUDA out of memory",
    ),
    "nothing": ("import sys\n", "failed", "the model wrote nothing"),
    "junk": (
        "import sys\nopen(sys.argv[2] + '/liver.nii.gz', 'wb').write(b'not a nifti')\n",
        "failed",
        "unreadable output",
    ),
    "not_image": (
        "import sys\nopen(sys.argv[2] + '/log.txt', 'w').write('done')\n",
        "failed",
        "the model wrote no image files",
    ),
    "wrong_geometry": (
        "import sys, nibabel as nib, numpy as np\n"
        "nib.save(nib.Nifti1Image(np.zeros((24, 24, 16), np.uint8), np.eye(4)),"
        " sys.argv[2] + '/liver.nii.gz')\n",
        "failed",
        "wrong geometry: liver.nii.gz has shape (24, 24, 16) vs (48, 48, 32)",
    ),
    "shifted_affine": (
        "import sys, nibabel as nib, numpy as np\n"
        "ct = nib.load(sys.argv[1]); a = ct.affine.copy(); a[0, 3] += 1.0\n"
        "nib.save(nib.Nifti1Image(np.zeros(ct.shape, np.uint8), a),"
        " sys.argv[2] + '/liver.nii.gz')\n",
        "failed",
        "wrong geometry: liver.nii.gz has affine",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_model_faults_are_recorded_and_outputs_removed(
    bench: Path, tmp_path: Path, fault: str
) -> None:
    body, status, message = FAULTS[fault]
    model = tmp_path / f"{fault}.py"
    model.write_text(body, encoding="utf-8")
    record = run_case(_task(bench, tmp_path, f"{PY} {model} {{input}} {{output}}"))
    assert (record.status, record.case_id) == (status, "case_0001")
    assert record.message.startswith(message), record.message
    assert "\n" not in record.message
    assert record.seconds > 0
    assert record.volume_cm3 == pytest.approx(VOLUME_CM3, rel=1e-12)
    assert math.isnan(record.speed_cm3_per_s)
    assert not (tmp_path / "pred" / "case_0001").exists()
    assert not (tmp_path / "pred" / "case_0001.nii.gz").exists()


def test_hang_is_killed_with_its_children(bench: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    model = _script(
        tmp_path,
        "hang.py",
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        open(sys.argv[2] + "/liver.nii.gz", "w").write("half")
        time.sleep(600)
        """,
    )
    start = time.perf_counter()
    record = run_case(_task(bench, tmp_path, f"{PY} {model} {{input}} {{output}}", timeout_s=2))
    assert time.perf_counter() - start < 30
    assert record.status == "timeout"
    assert record.message == "timed out after 2 s; raise runner.timeout_s or check the model"
    assert 2.0 <= record.seconds < 30
    assert not (tmp_path / "pred" / "case_0001").exists()
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild was in the killed process group; wait for its reaping
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_command_not_found(bench: Path, tmp_path: Path) -> None:
    record = run_case(_task(bench, tmp_path, "no-such-model-xyz predict {input} {output}"))
    assert record.status == "failed"
    assert record.message.startswith("command 'no-such-model-xyz' not found")
    assert record.volume_cm3 == pytest.approx(VOLUME_CM3, rel=1e-12)
    assert not (tmp_path / "pred" / "case_0001").exists()


def test_signal_and_unreadable_input(tmp_path: Path) -> None:
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(b"garbage")
    spec = RunnerSpec(command=f"{PY} -c 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'")
    record = run_case(InferenceTask("c1", image, tmp_path / "pred", spec))
    assert record.status == "failed"
    assert record.message == "model command failed: killed by signal SIGSEGV; it printed nothing"
    assert math.isnan(record.volume_cm3)


def test_env_cwd_and_case_placeholders(bench: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(bench / "reference" / "case_0002" / "segmentations" / "liver.nii.gz", workdir)
    model = _script(
        tmp_path,
        "envmodel.py",
        """
        import os, shutil, sys
        assert os.environ["ASSAY_TEST_FLAG"] == "on", os.environ.get("ASSAY_TEST_FLAG")
        assert sys.argv[3] == "case_0002"
        shutil.copy("liver.nii.gz", os.path.join(sys.argv[2], "liver.nii.gz"))
        """,
    )
    spec = RunnerSpec.from_mapping(
        {
            "command": f"{PY} {model} {{input}} {{output}} {{case}}",
            "env": {"ASSAY_TEST_FLAG": "on"},
            "cwd": "work",
            "timeout_s": 60,
        },
        where="model 'envmodel'",
        base=tmp_path,
    )
    assert spec == RunnerSpec(spec.command, 60.0, {"ASSAY_TEST_FLAG": "on"}, str(workdir))
    image = bench / "reference" / "case_0002" / "ct.nii.gz"
    task = InferenceTask("case_0002", image, tmp_path / "pred", spec)
    record = run_case(task)
    assert record.status == "ok", record.message
    assert (tmp_path / "pred" / "case_0002" / "liver.nii.gz").is_file()
    # without the variable the model's assertion fails, and the reason is its last stderr line
    bare_spec = RunnerSpec(spec.command, cwd=spec.cwd)
    bare = InferenceTask(task.case_id, task.image, task.output_dir, bare_spec)
    failed = run_case(bare)
    assert failed.status == "failed"
    expected = "model command failed: exit status 1; last stderr line: KeyError: 'ASSAY_TEST_FLAG'"
    assert failed.message == expected
    missing = RunnerSpec(spec.command, cwd=str(tmp_path / "nowhere"))
    record = run_case(InferenceTask(task.case_id, task.image, task.output_dir, missing))
    assert record.status == "failed" and "working directory" in record.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"command": "m {input}", "gpu": 1}, "Unknown runner key(s) gpu for model 'm'; known: "),
        ({"timeout_s": 3}, "needs a 'command' string"),
        ({"command": "m {input} {outptu}"}, "placeholder(s) {outptu} not known"),
        ({"command": "m {input}", "timeout_s": 0}, "timeout_s 0 is invalid"),
        ({"command": "m {input}", "timeout_s": "long"}, "timeout_s 'long' is invalid"),
        ({"command": "m {input}", "env": ["A=1"]}, "runner.env of model 'm' must map"),
        ({"command": "m '{input}"}, "cannot be parsed"),
        ("m {input}", "must be a mapping"),
    ],
)
def test_runner_spec_from_mapping_errors(raw: object, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        RunnerSpec.from_mapping(raw, where="model 'm'", base=Path("."))  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert "model 'm'" in str(info.value)


def test_invalid_case_id() -> None:
    with pytest.raises(InputError, match="path separators"):
        InferenceTask("../x", Path("ct.nii.gz"), Path("out"), RunnerSpec("m {input}"))


def test_baseline_segments_phantoms(bench: Path, tmp_path: Path) -> None:
    """The shipped baseline, run as a real console script through the runner.

    Measured Dice on the two phantoms of this benchmark (seeds 0 and 1, 8 x 8 x 10 mm):
    liver 0.86/0.86, spleen 0.82/0.80, kidney_left 0.92/0.90, kidney_right 0.88/0.90,
    aorta 0.98/0.89, postcava 0.97/0.86, stomach 0.85/0.83, pancreas 0.38/0.28,
    gallbladder 0.10/0.00. Required here: > 0.5 for liver, kidneys and aorta.
    """
    exe = Path(PY).parent / "assay-baseline"
    assert exe.is_file(), "run `pip install -e .` to install the assay-baseline console script"
    for case in ("case_0001", "case_0002"):
        task = _task(bench, tmp_path, f"{exe} predict -i {{input}} -o {{output}}", case=case)
        record = run_case(task)
        assert record.status == "ok", record.message
        for structure in ("liver", "kidney_left", "kidney_right", "aorta"):
            pred = read_image(tmp_path / "pred" / case / f"{structure}.nii.gz")
            ref = read_image(bench / "reference" / case / "segmentations" / f"{structure}.nii.gz")
            assert pred.array.dtype == np.uint8 and np.allclose(pred.affine, ref.affine)
            value = dice(pred.array.astype(bool), ref.array.astype(bool))
            assert value > 0.5, (case, structure, value)
