"""A ready-to-run ``benchmark.yaml`` for the synthetic benchmark (``assay demo``'s data)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

from assay.synthetic import MODELS, BenchmarkPaths


def write_demo_config(paths: BenchmarkPaths, out_dir: str | Path, *, workers: int = 2) -> Path:
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
    path = out / "benchmark.yaml"
    _dump(path, config)
    return path


def _dump(path: Path, data: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
