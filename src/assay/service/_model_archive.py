"""Validate and unpack a model submission: a zip of a model's files with ``assay-model.yaml``.

``assay-model.yaml`` names the command run per case, e.g.
``command: python3 model.py {input} {output_file}`` — ``{input}`` is the case's image,
``{output_file}`` the label map to write (the manifest's label values), ``{case}`` the case id.
The archive passes the same entry checks as a prediction archive (names, links, encryption,
compression, overlapping entries; see :mod:`~assay.service._archive`), and its declared and
real sizes are bounded by the phase's ``model.max_model_mb``. Additional codes:
``no_model_file`` and ``bad_model_file``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError
from assay.service import _archive
from assay.service._archive import RejectedUpload
from assay.service._phase import ModelLimits

#: The file naming a model's command, at the root of the archive.
MODEL_FILE = "assay-model.yaml"
#: Rejection codes of model archives, in addition to the prediction archive's.
MODEL_REJECTIONS: Mapping[str, str] = {
    "no_model_file": f"the archive has no {MODEL_FILE} at its root",
    "bad_model_file": f"{MODEL_FILE} is not a mapping with a valid 'command'",
}
_MAX_MEMBERS = 20000


def _total(infos: list[zipfile.ZipInfo], limits: ModelLimits) -> None:
    total = sum(i.file_size for i in infos)
    cap = int(limits.max_model_mb * 1024 * 1024)
    if total > cap:
        raise RejectedUpload("too_large", f"the model unpacks to {total} bytes; the cap is {cap}")


def _spec(text: bytes) -> dict[str, Any]:
    from assay.models import RunnerSpec, Sandbox

    try:
        raw = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RejectedUpload("bad_model_file", f"{MODEL_FILE} is not YAML ({exc})") from None
    if not isinstance(raw, Mapping) or set(raw) - {"command"} or "command" not in raw:
        raise RejectedUpload(
            "bad_model_file", f"{MODEL_FILE} must be a mapping with one key, command"
        )
    try:
        RunnerSpec(command=raw["command"], sandbox=Sandbox())
    except InputError as exc:
        raise RejectedUpload("bad_model_file", str(exc)) from None
    if "{output_file}" not in raw["command"] or "{input}" not in raw["command"]:
        raise RejectedUpload(
            "bad_model_file", "the command must use {input} (the image) and {output_file}"
        )
    return {"command": str(raw["command"])}


def _model_file(zf: zipfile.ZipFile, starts: list[int]) -> dict[str, Any]:
    infos = zf.infolist()
    named = [i for i in range(len(infos)) if infos[i].orig_filename == MODEL_FILE]
    if not named:
        raise RejectedUpload("no_model_file", f"put {MODEL_FILE} at the root of the archive")
    info = infos[named[0]]
    if info.file_size > 64 * 1024:
        raise RejectedUpload("bad_model_file", f"{MODEL_FILE} is larger than 64 KiB")
    return _spec(_archive.read_entry(zf, info, starts[named[0]]))


def validate_model_archive(path: str | Path, limits: ModelLimits) -> dict[str, Any]:
    """Check a model archive without unpacking it; returns its spec (``command``)."""
    with _archive.checked_zip(Path(path), _MAX_MEMBERS) as (zf, starts):
        _total(zf.infolist(), limits)
        return _model_file(zf, starts)


def extract_model(path: str | Path, dest: str | Path, limits: ModelLimits) -> dict[str, Any]:
    """Validate and unpack a model archive under ``dest`` (regular files only, each name
    checked, each entry inflated to exactly its declared size); returns its spec."""
    dest = Path(dest)
    root = dest.resolve()
    with _archive.checked_zip(Path(path), _MAX_MEMBERS) as (zf, starts):
        infos = zf.infolist()
        _total(infos, limits)
        spec = _model_file(zf, starts)
        for info, start in zip(infos, starts, strict=True):
            target = dest / info.filename
            if not target.resolve().is_relative_to(root):
                raise RejectedUpload(
                    "unsafe_path", f"entry {info.filename!r} would leave the folder"
                )
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_archive.read_entry(zf, info, start))
            target.chmod(0o644)
    return spec
