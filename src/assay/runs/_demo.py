"""``assay demo``'s folder: claimed without touching what assay did not write there, and a
ready-to-run ``benchmark.yaml`` for its synthetic benchmark.

The demo writes a marker file, ``.assay-demo`` (JSON), into its folder before anything
else: first the top-level entries it is about to create, and when it has finished every file
it wrote with its size and modification time. A later demo into the same folder removes
exactly those files (and the folders they leave empty) and nothing else; it refuses a folder
that is not empty and holds no marker, and a previous demo whose files were changed since
(e.g. a database others' scores were added to).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError
from assay.synthetic import MODELS, BenchmarkPaths

#: The marker file `assay demo` writes into its folder.
DEMO_MARKER = ".assay-demo"

#: Top-level names the demo writes in its folder (the database with SQLite's side files).
DEMO_ENTRIES = (
    "data", "assay.db", "assay.db-wal", "assay.db-shm", "assay.db-journal", "scores.csv",
    "touchstone", "report", "models", "datasets", "benchmark.yaml", "detection",
)  # fmt: skip

#: Files that change by being opened (SQLite's side files): not checked for changes.
_VOLATILE = ("assay.db-wal", "assay.db-shm", "assay.db-journal")


def check_demo_options(*, cases: int, profile: str) -> None:
    """Check ``assay demo``'s options before its folder is touched (InputError otherwise)."""
    from assay.metrics import get_profile
    from assay.synthetic._benchmark import MAX_CASES

    get_profile(profile)
    if isinstance(cases, bool) or not isinstance(cases, int) or not 2 <= cases <= MAX_CASES:
        raise InputError(f"--cases must be a whole number from 2 to {MAX_CASES} (got {cases!r}).")


def prepare_demo_folder(out_dir: str | Path) -> str:
    """Make ``out_dir`` ready for a new demo, touching nothing that a demo did not write.

    A missing or empty folder is used as it is. A folder holding a previous demo (its
    marker) has that demo's files removed, and only those. The marker is then (re)written
    listing the entries this demo is about to create.

    Returns
    -------
    str
        ``""``, or ``"replacing the previous demo in DIR"`` (with what was kept, if anything).

    Raises
    ------
    InputError
        ``out_dir`` is a file, a non-empty folder without a demo's marker, or a previous demo
        whose files have changed since it wrote them (nothing is removed then).
    """
    out = Path(out_dir)
    message = ""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a new or empty folder for the demo.")
    marker = out / DEMO_MARKER
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise InputError(
                f"--out {out} is not empty and holds no previous assay demo (no {DEMO_MARKER} "
                "file); the demo writes only into a new or empty folder, or over an earlier "
                "demo: choose another --out."
            )
        kept = _remove_previous_demo(out, _read_marker(marker))
        message = f"replacing the previous demo in {out}" + (
            f" ({kept} other file(s) kept)" if kept else ""
        )
    out.mkdir(parents=True, exist_ok=True)
    foreign = sorted(_files_under(out, DEMO_ENTRIES))  # not the demo's, though in its folders
    _write_marker(marker, {"complete": False, "entries": list(DEMO_ENTRIES), "foreign": foreign})
    return message


def finish_demo_folder(out_dir: str | Path) -> Path:
    """Record in the marker every file the demo wrote (call when the demo has finished)."""
    out = Path(out_dir)
    marker = out / DEMO_MARKER
    manifest = _read_marker(marker)
    entries, foreign = manifest.get("entries", []), set(manifest.get("foreign", []))
    files = {rel: _stamp(out / rel) for rel in sorted(_files_under(out, entries) - foreign)}
    folders = sorted(_folders_under(out, entries))
    _write_marker(marker, {"complete": True, "entries": entries, "folders": folders,
                           "files": files})  # fmt: skip
    return marker


def _files_under(out: Path, entries: Any) -> set[str]:
    """Files (and links) at or below the top-level ``entries`` of ``out``, relative."""
    found: set[str] = set()
    for entry in entries:
        path = _inside(out, entry)
        if path.is_symlink() or path.is_file():
            found.add(path.relative_to(out).as_posix())
        elif path.is_dir():
            found.update(p.relative_to(out).as_posix() for p in path.rglob("*")
                         if p.is_symlink() or not p.is_dir())  # fmt: skip
    return found


def _folders_under(out: Path, entries: Any) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        path = _inside(out, entry)
        if path.is_dir() and not path.is_symlink():
            found.add(entry)
            found.update(p.relative_to(out).as_posix() for p in path.rglob("*")
                         if p.is_dir() and not p.is_symlink())  # fmt: skip
    return found


def _stamp(path: Path) -> list[int]:
    st = path.lstat()
    return [st.st_size, st.st_mtime_ns]


def _read_marker(marker: Path) -> dict[str, Any]:
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("assay_demo") != 1:
            raise ValueError("not an assay demo marker")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{marker} cannot be read as an assay demo marker ({exc}); nothing was removed. "
            "Choose another --out, or delete the old demo folder yourself."
        ) from exc
    return raw


def _write_marker(marker: Path, content: dict[str, Any]) -> None:
    text = json.dumps({"assay_demo": 1, **content}, indent=1, sort_keys=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(marker)  # never a half-written marker


def _inside(out: Path, rel: object) -> Path:
    """``out / rel`` for a relative path that stays inside ``out`` (a marker is data)."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise InputError(
            f"{out / DEMO_MARKER} lists {rel!r}, which is not a path inside {out}; nothing was "
            "removed. Delete the old demo folder yourself or choose another --out."
        )
    return out / rel


def _remove_previous_demo(out: Path, manifest: dict[str, Any]) -> int:
    """Remove what the previous demo wrote; return how many other files remain in ``out``."""
    entries = manifest.get("entries", [])
    if not manifest.get("complete"):
        # An interrupted demo: every file in its entries but those that were there before.
        foreign = set(manifest.get("foreign", []))
        for rel in _files_under(out, entries) - foreign:
            (out / rel).unlink()
        folders = [out / rel for rel in _folders_under(out, entries)]
    else:
        files = {rel: _inside(out, rel) for rel in manifest.get("files", {})}
        changed = [
            rel for rel, stamp in manifest.get("files", {}).items()
            if Path(rel).name not in _VOLATILE and (files[rel].exists() or files[rel].is_symlink())
            and _stamp(files[rel]) != list(stamp)
        ]  # fmt: skip
        if changed:
            shown = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
            raise InputError(
                f"The previous demo in {out} was changed since it was written ({shown}); "
                "nothing was removed. Move those files away, or choose another --out."
            )
        for path in files.values():
            if path.is_symlink() or path.is_file():
                path.unlink()
        folders = [_inside(out, rel) for rel in manifest.get("folders", [])]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    (out / DEMO_MARKER).unlink()
    return sum(1 for p in out.rglob("*") if not p.is_dir())


def write_demo_config(
    paths: BenchmarkPaths,
    out_dir: str | Path,
    *,
    workers: int = 2,
    figure_formats: tuple[str, ...] = ("svg",),
) -> Path:
    """Write dataset and model cards and ``benchmark.yaml`` next to a synthetic benchmark.

    The models are the simulated ones (prediction folders) plus the threshold baseline,
    which is *run* per case (``python -m assay.models.baseline predict -i {input} -o
    {output}``, with this interpreter), so the runner path is exercised for real.
    """
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "datasets").mkdir(parents=True, exist_ok=True)
    dataset = {
        "name": "synthetic",
        "version": "assay demo",
        "description": "Synthetic abdominal CT phantoms with nine organs (assay.synthetic).",
        "licence": "CC0-1.0 (generated data)",
        "citation": "assay synthetic benchmark",
        "root": str(paths.reference.resolve()),
        "metadata": str(paths.metadata.resolve()),
        "image": "{case}/ct.nii.gz",
        "provenance": {"assay.synthetic": []},
    }
    _dump(out / "datasets" / "synthetic.yaml", dataset)
    model_files = []
    for name, folder in paths.predictions.items():
        card = {"name": name, "organisation": "assay (simulated)", "notes": MODELS[name],
                "predictions": str(folder.resolve())}  # fmt: skip
        model_files.append(f"models/{name}.yaml")
        _dump(out / model_files[-1], card)
    python = shlex.quote(sys.executable)
    baseline = {
        "name": "threshold_baseline",
        "organisation": "assay",
        "framework": "numpy + cc3d",
        "notes": "Intensity thresholds and connected components (assay.models.baseline).",
        "runner": {
            "command": f"{python} -m assay.models.baseline predict -i {{input}} -o {{output}}",
            "timeout_s": 300,
        },
        "min_speed_cm3_s": 100.0,
    }
    model_files.append("models/threshold_baseline.yaml")
    _dump(out / model_files[-1], baseline)
    config = {
        "name": "assay demo: synthetic abdominal CT benchmark",
        "output": "run",
        "db": "run/assay.db",
        "profile": "default",
        "workers": workers,
        "datasets": ["datasets/synthetic.yaml"],
        "models": model_files,
        "spot_check": {"cases": 3, "min_dice": 0.1},
        "analysis": {"metrics": ["dsc", "nsd"], "groups": ["sex"], "min_group_size": 3},
        "report": True,
    }
    if tuple(figure_formats) != ("svg",):
        config["figure_formats"] = list(figure_formats)
    path = out / "benchmark.yaml"
    _dump(path, config)
    return path


def _dump(path: Path, data: Mapping[str, object]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
