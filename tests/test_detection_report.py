"""The tumour-detection report: leaderboard.md, detection.html in Chromium, ROC points.

The benchmark is the demo's synthetic tumour benchmark (9 patients, three of its models),
scored and analysed through the CLI. The browser is Debian's Chromium (the ``driver``
fixture of test_report_site.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from cli_helpers import wide_console  # noqa: F401 - autouse fixture
from sklearn.metrics import roc_curve
from test_report_site import (  # the module-scoped Chromium fixture
    _requested_urls,
    driver,  # noqa: F401
)
from typer.testing import CliRunner

from assay import cli
from assay.report._detection import roc_points
from assay.synthetic import write_tumour_benchmark

runner = CliRunner()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detreport")
    paths = write_tumour_benchmark(root / "data", n_cases=9)
    db = root / "a.db"
    for model in ("near_perfect", "finds_large", "probabilistic"):
        args = ["score", "--reference", paths.reference, "--predictions",
                paths.predictions[model], "--model", model, "--dataset", "t", "--task",
                "detection", "--db", db]  # fmt: skip
        if model in paths.probabilities:
            args += ["--probabilities", paths.probabilities[model]]
        r = runner.invoke(cli.app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    out = root / "out"
    r = runner.invoke(cli.app, ["analyze", "--dataset", "t", "--task", "detection", "--db",
                                str(db), "--out", str(out), "--bootstrap", "200"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "detection.html" in r.output
    return out


def test_leaderboard_markdown(report: Path) -> None:
    text = (report / "leaderboard.md").read_text(encoding="utf-8")
    assert text.startswith("# Tumour detection — t")
    assert "Protocol `detection:atlas2`" in text and "reading of the AbdomenAtlas 2.0" in text
    header = "| model | paper | code | P-Sen (%) | T-Sen (%) | Spe (%) | AUC (%) | DSC (%) |"
    assert text.count(header) == 3  # one table per tumour type
    assert "## liver_tumor" in text and "## pancreas_tumor" in text and "🏆" in text
    assert "T-Sen by longest axial diameter" in text and "<20 mm" in text
    assert "McNemar" in text and "DeLong" in text and "fallback" in text
    figures = sorted(p.name for p in (report / "figures").glob("*.svg"))
    assert "detection_liver_tumor_roc.svg" in figures
    assert any(f.endswith("_froc.svg") for f in figures)  # probabilistic has confidences


def test_roc_points_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(40) < 0.4
    s = np.round(rng.random(40), 1)
    fpr, tpr = roc_points(s, y)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr, atol=1e-15) and np.allclose(tpr, ref_tpr, atol=1e-15)


def test_detection_page_in_chromium(report: Path, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get((report / "detection.html").as_uri())
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete);")
    )
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
    requested = _requested_urls(driver.get_log("performance"))
    remote = [u for u, _ in requested if urlsplit(u).scheme not in ("file", "data")]
    assert not remote, remote
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]);"
    )
    assert len(images) >= 6 and all(width > 0 for _, width in images), images
    # The per-lesion table sorts by diameter when its header is clicked.
    table = driver.find_elements(By.CSS_SELECTOR, "table.lesions")[0]
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    labels = [h.text.strip() for h in headers]
    column = labels.index("diameter (mm)")
    headers[column].click()
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    values = [float(r.find_elements(By.TAG_NAME, "td")[column].text) for r in rows]
    assert values == sorted(values) and len(values) >= 3
    assert headers[column].get_attribute("aria-sort") == "ascending"


def test_reanalyze_reproduces_the_bundle_and_finds_drift(report: Path, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(report / "bundle", bundle)
    r = runner.invoke(cli.app, ["reanalyze", str(bundle)])
    assert r.exit_code == 0, r.output
    assert "reproduced" in r.output and "detection numbers match" in r.output
    # An edited published number is drift, named with its row.
    summary = bundle / "detection_summary.csv"
    lines = summary.read_text(encoding="utf-8").splitlines()
    row = next(i for i, line in enumerate(lines) if ",p_sen," in line)
    cells = lines[row].split(",")
    cells[3] = "0.123"
    lines[row] = ",".join(cells)
    summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = runner.invoke(cli.app, ["reanalyze", str(bundle)])
    assert r.exit_code == 1 and "detection_summary" in r.output and "0.123" in r.output
    # An edited input is refused in one line.
    scores = bundle / "scores.csv"
    scores.write_text(scores.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    r = runner.invoke(cli.app, ["reanalyze", str(bundle)])
    assert r.exit_code == 2 and "changed since the bundle was written" in r.output
