"""``assay run`` of a ``task: detection`` benchmark config, end to end and resumed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import wide_console  # noqa: F401 - autouse fixture
from typer.testing import CliRunner

from assay import cli
from assay.errors import InputError
from assay.runs import load_benchmark
from assay.synthetic import write_tumour_benchmark

runner = CliRunner()


def config(root: Path, **extra: object) -> Path:
    paths = write_tumour_benchmark(root / "data", n_cases=9)
    spec = {
        "name": "tumours",
        "task": "detection",
        "protocol": "panoptica",
        "output": "out",
        "db": "assay.db",
        "datasets": [{"name": "t", "root": str(paths.reference), "layout": "labelmap"}],
        "models": [
            {
                "name": "near_perfect",
                "predictions": str(paths.predictions["near_perfect"]),
                "paper": "https://example.org/paper",
            },
            {
                "name": "probabilistic",
                "predictions": str(paths.predictions["probabilistic"]),
                "probabilities": str(paths.probabilities["probabilistic"]),
            },
        ],
        "analysis": {"bootstrap": 200, "proportion_ci": "wilson"},
        **extra,
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_detection_benchmark_runs_and_resumes(tmp_path: Path) -> None:
    path = config(tmp_path)
    r = runner.invoke(cli.app, ["run", str(path)])
    assert r.exit_code == 0, r.output
    report = tmp_path / "out" / "report"
    text = (report / "leaderboard.md").read_text(encoding="utf-8")
    assert "Protocol `detection:panoptica`" in text and "[paper](https://example.org/paper)" in text
    assert (report / "detection.html").is_file()
    summary = pd.read_csv(report / "detection_summary.csv")
    assert set(summary["model"]) == {"near_perfect", "probabilistic"}
    p_sen = summary[summary["metric"] == "p_sen"]
    assert set(p_sen["ci_method"]) == {"wilson"}
    froc = pd.read_csv(report / "detection_froc.csv")
    assert set(froc["model"]) == {"probabilistic"}  # the model with probability maps
    again = runner.invoke(cli.app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    assert "9 cases already scored, 0 to score" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"profile": "default"}, "takes a 'protocol' instead"),
        ({"protocol": "bratz"}, "Unknown detection protocol 'bratz'"),
        ({"analysis": {"policy": "paper"}}, "analysis.policy 'paper' is not one of"),
        ({"analysis": {"metrics": ["dsc"]}}, "Unknown key(s) metrics"),
        ({"task": "classification"}, "task 'classification' is not one of"),
    ],
)
def test_bad_detection_configs_are_one_line_errors(tmp_path: Path, extra, message) -> None:
    path = config(tmp_path, **extra)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_benchmark(path)
