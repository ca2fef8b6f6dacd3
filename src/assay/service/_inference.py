"""Model submissions: run a team's model on the phase's hidden images in the sandbox.

The scorer unpacks the model (:func:`~assay.service._model_archive.extract_model`) into a
fresh workspace, then for each case copies the case's image in, runs the command with
:func:`assay.models.run_case` under a :class:`~assay.models.Sandbox` (no network, user
``nobody``, the phase's ``model`` limits, a clean environment), checks the label map it wrote
against the manifest exactly as an uploaded one (:mod:`~assay.service._archive`), and removes
the image again. A case whose command fails, times out or writes an invalid label map has no
prediction (it is scored as missing, the worst value); why is logged for the organiser only.

The reference and image folders must not be readable by other users (``chmod -R go-rwx``):
the scorer refuses to run models otherwise.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from assay.errors import InputError
from assay.models import InferenceRecord, InferenceTask, RunnerSpec, Sandbox, run_case
from assay.service import _archive
from assay.service._archive import Member, RejectedUpload
from assay.service._model_archive import extract_model
from assay.service._phase import PhaseConfig


def check_private(folder: Path, what: str) -> None:
    """Refuse a folder that other users (the sandbox's) can enter."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise InputError(
            f"The {what} folder {folder} is open to other users (mode {mode:o}); a model "
            f"submission runs as another user: chmod -R go-rwx {folder}."
        )


def case_image(images: Path, case_id: str) -> Path:
    """The input image of ``case_id``: ``IMAGES/CASE.nii.gz`` (or ``.nii``)."""
    for name in (f"{case_id}.nii.gz", f"{case_id}.nii", f"{case_id}/ct.nii.gz"):
        if (images / name).is_file():
            return images / name
    raise InputError(f"No image for case {case_id!r} in {images}; expected {case_id}.nii.gz.")


def run_model(
    archive: Path,
    phase: PhaseConfig,
    manifest: Mapping[str, Any],
    images: Path,
    predictions: Path,
    *,
    log: Callable[[str], None] | None = None,
) -> list[InferenceRecord]:
    """Run the model in ``archive`` on every case of ``manifest``; valid label maps end up
    in ``predictions`` as ``CASE.nii.gz``. Returns one record per case (organiser only)."""
    sandbox = Sandbox(
        memory_mb=phase.model.memory_mb,
        max_processes=phase.model.max_processes,
        cpu_s=int(phase.model.timeout_s) + 1,
    )
    sandbox.check()
    check_private(images, "image")
    say = log or (lambda _m: None)
    workspace = Path(tempfile.mkdtemp(prefix="assay-model-"))
    try:
        workspace.chmod(0o711)  # the sandbox user may enter, not list
        model = workspace / "model"
        spec = extract_model(archive, model, phase.model)
        model.chmod(0o755)
        inputs = workspace / "inputs"
        inputs.mkdir(mode=0o755)
        inputs.chmod(0o755)
        outputs = workspace / "outputs"
        outputs.mkdir()
        sandbox.hand_over(outputs)
        predictions.mkdir(parents=True, exist_ok=True)
        runner = RunnerSpec(
            command=spec["command"],
            timeout_s=phase.model.timeout_s,
            cwd=str(model),
            sandbox=sandbox,
        )
        records = []
        for case_id in sorted(manifest["cases"]):
            source = case_image(images, case_id)
            suffix = ".nii.gz" if source.name.endswith(".gz") else ".nii"
            image = inputs / f"{case_id}{suffix}"
            shutil.copyfile(source, image)
            image.chmod(0o644)
            try:
                record = run_case(InferenceTask(case_id, image, outputs, runner))
            finally:
                image.unlink(missing_ok=True)
            written = outputs / f"{case_id}.nii.gz"
            if record.status == "ok":
                if not written.is_file():
                    record = InferenceRecord(
                        case_id,
                        "failed",
                        record.seconds,
                        record.volume_cm3,
                        "the model wrote no {output_file} label map",
                    )
                else:
                    try:
                        _archive._check_member(
                            Member(written.name, case_id, None, ".nii.gz"),
                            written.read_bytes(),
                            manifest,
                        )
                        shutil.copyfile(written, predictions / written.name)
                    except RejectedUpload as exc:
                        record = InferenceRecord(
                            case_id, "failed", record.seconds, record.volume_cm3, exc.reason
                        )
            written.unlink(missing_ok=True)
            say(f"model case {case_id}: {record.status} {record.message}".rstrip())
            records.append(record)
        return records
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
