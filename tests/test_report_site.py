"""The static HTML site (DESIGN.md §5): pages, links, figures, sorting, no network requests.

The browser checks drive Debian's headless Chromium through Selenium (chromedriver from the
system, never downloaded by Selenium Manager). Expected values come from the fixture's own
analysis frames (``tests/report_inputs.py``): the 🏆 rows are the ``winner`` rows of the
``average`` aggregates, the sorted column orders are Python's ``sorted`` of the cells read.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
from markupsafe import escape
from report_inputs import make_report_data

from assay.errors import InputError
from assay.report import _tables
from assay.report._data import SPEED_COLUMNS
from assay.report._site import FIGURE_KINDS, figure_stem, render_figures, slugify, write_site
from assay.stats import AVERAGE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "Install them with: apt-get install chromium chromium-driver"


@pytest.fixture(scope="module")
def data():
    return make_report_data()


@pytest.fixture(scope="module")
def site(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    figures = render_figures(data, out, formats=("svg",))
    write_site(data, out, figures)
    # the results bundle is written by the report builder, not by write_site; the footer
    # links to it, so a stand-in keeps the link check meaningful for every other link
    (out / "bundle").mkdir()
    (out / "bundle" / "results.json").write_text("{}", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"Headless browser test needs {' and '.join(missing)}, not found. {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def _pages(site: Path) -> list[Path]:
    return sorted(site.glob("*.html"))


@pytest.fixture(scope="module")
def visits(site, driver):
    """Load every page once: per page, its console entries and the URLs it requested."""
    out = {}
    driver.get("about:blank")  # leave the start page, then drop its log entries
    driver.get_log("browser")
    driver.get_log("performance")
    for page in _pages(site):
        driver.get(page.as_uri())
        driver.execute_script("return document.readyState")
        out[page.name] = {
            "console": driver.get_log("browser"),
            "requests": _requested_urls(driver.get_log("performance")),
        }
    return out


def _requested_urls(entries: list[dict]) -> list[tuple[str, str]]:
    """(URL, URL of the document that asked for it) of every request in a performance log."""
    urls = []
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            urls.append((params["request"]["url"], params.get("documentURL", "")))
    return urls


# ------------------------------------------------------------------- without a browser


def test_write_site_pages(data, tmp_path):
    figures = {("heatmap", "toy", "dsc", "liver"): tmp_path / "elsewhere.svg"}
    figures[("heatmap", "toy", "dsc", "liver")].write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="360pt" height="270pt"></svg>'
    )
    written = write_site(data, tmp_path / "site", figures)
    names = [p.name for p in written]
    pages = [
        "index.html",
        "toy--average.html",
        "toy--liver.html",
        "toy--pancreas.html",
        "toy--spleen.html",
        "stability.html",
        "subgroups.html",
        "subgroups--toy--liver.html",
        "subgroups--toy--pancreas.html",
        "subgroups--toy--spleen.html",
        "speed.html",
        "methods.html",
    ]
    assert names == [*pages, "site.css", "site.js"]
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    methods = (tmp_path / "site" / "methods.html").read_text(encoding="utf-8")
    assert "CC0-1.0" in methods
    assert "Toy et al. 2026" in methods
    seed = data.analyses["dsc"].params["bootstrap"]["seed"]
    assert f"seed {seed}" in methods
    assert "nsd_tolerance_mm" in methods  # the run's metric protocol
    liver = (tmp_path / "site" / "toy--liver.html").read_text(encoding="utf-8")
    # a figure outside the site is copied in; 360 pt x 270 pt = 480 x 360 CSS px
    assert (tmp_path / "site" / "svg" / "elsewhere.svg").exists()
    assert '<img src="svg/elsewhere.svg"' in liver
    assert 'width="480" height="360"' in liver


def _read(site: Path, name: str) -> str:
    return (site / name).read_text(encoding="utf-8")


def test_average_column_labelled_by_convention(data, tmp_path):
    html = _read(write_site(data, tmp_path, {})[0].parent, "index.html")
    assert "average (per case)" in html
    assert "mean over cases of each case&#39;s mean over the structures it contains" in html
    touchstone = {
        m: dataclasses.replace(a, params={**a.params, "aggregation": "touchstone"})
        for m, a in data.analyses.items()
    }
    write_site(dataclasses.replace(data, analyses=touchstone), tmp_path / "t", {})
    html = _read(tmp_path / "t", "index.html")
    assert "average (of structures)" in html and "average (per case)" not in html
    assert "the mean of the structure means" in html


def test_units_and_missing_cases(data, tmp_path):
    write_site(data, tmp_path, {})
    index = _read(tmp_path, "index.html")
    assert ">values set worst<" in index and "structure × case values" in index
    assert ">missing cases<" in index
    # delta lacks case_000 (every structure): one missing case, flagged
    assert _tables.missing_cases(data, "dsc", "toy") == {"delta": 1}
    assert "⚠ 1" in index
    assert "cases contain at least one evaluated structure" not in index  # all evaluated
    extra = data.scores[data.scores["case_id"] == "case_000"].assign(
        case_id="case_999", value=float("nan"), status="missing_prediction"
    )
    more = dataclasses.replace(data, scores=pd.concat([data.scores, extra], ignore_index=True))
    assert _tables.case_coverage(more, "toy") == (24, 25)
    write_site(more, tmp_path / "more", {})
    note = "24 of 25 cases contain at least one evaluated structure"
    assert note in _read(tmp_path / "more", "index.html")


def test_trophy_note_when_winner_below_non_winner():
    """† only for a co-winner below a ranked non-winner (contaminated rows ignored); the note
    says "lower" for Dice and "higher (worse)" for a distance, where lower is better."""
    from assay.report._format import mark_notes, row_marks

    rows = pd.DataFrame(
        {
            "model": ["a", "b", "c"],
            "rank": [1.0, 2.0, 3.0],
            "winner": [True, False, True],
            "contaminated": [False, False, False],
        }
    )
    params = {"winner_rule": "touchstone", "ranked_by": "mean"}
    marks = row_marks(rows, None)
    assert [marks[m].suffix for m in "abc"] == ["", "", "†"]
    (note,) = mark_notes(marks, params, "dsc")
    assert note.startswith("† co-winner ranked below") and "mean is lower than" in note
    (note,) = mark_notes(marks, params, "hd95")
    assert "mean is higher (worse) than" in note and "lower" not in note
    assert mark_notes(row_marks(rows.assign(winner=[True, True, False]), None), params, "dsc") == []
    excl = rows.assign(contaminated=[False, True, False])
    assert mark_notes(row_marks(excl, None), params, "dsc") == []


def test_index_warning_box(data, tmp_path):
    write_site(data, tmp_path, {})
    index = _read(tmp_path, "index.html")
    assert 'class="warning-box"' in index
    for analysis in data.analyses.values():
        for warning in analysis.warnings:
            assert str(escape(str(warning))) in index
    # the box comes before the first leaderboard
    assert index.index("warning-box") < index.index("sortable leaderboard")


def test_structure_page_tables_and_hints(site):
    liver = _read(site, "toy--liver.html")
    assert liver.count('class="sortable results"') == 2  # one per metric
    assert liver.count('class="sortable rankings"') == 2
    for scheme in ("aggregate-then-rank", "rank-then-aggregate", "test-then-rank"):
        assert f'<button type="button">{scheme}</button>' in liver
    assert "P(rank 1)" in liver and "rank 95 % interval" in liver
    assert liver.count('class="hint"') >= 2 * 3  # heatmap, cases, blobs per metric
    assert "Each dot is one case" in liver


def test_subgroups_pages(site, data):
    html = _read(site, "subgroups.html")
    assert "all models" in html
    # the correction family is stated: every model, grouping and structure of dataset and metric
    assert html.count("Bonferroni (family-wise error rate) over every Mann–Whitney U test") >= 2
    assert "200 resamples" in html  # the CIs' bootstrap, B from the analysis
    # summary of significant gaps, one per (dataset, metric)
    assert html.count('id="gaps-toy-') == len(data.analyses)
    # one wide table per (metric, grouping) of the average structure: models + all models
    assert html.count('class="sortable subgroup-means"') == len(data.analyses)
    groups = sorted(set(data.analyses["dsc"].subgroups["group"]))
    for g in groups:
        assert f'<button type="button">{g}</button>' in html
    # a figure for the average structure of every (metric, grouping)
    for metric in data.analyses:
        assert f"svg/subgroup--toy--{metric}--sex.svg" in html
    means, tests = _tables.subgroup_tables(data, "dsc", "toy", "sex")
    assert [r[0].text for r in means.rows][-1] == "all models"
    assert len(means.rows) == len(data.model_order("dsc", "toy")) + 1
    assert all(c.text.endswith(")") and "[" in c.text for r in means.rows for c in r[1:])
    # two groups: no Kruskal–Wallis rows (the Mann–Whitney test says the same)
    assert all(r[1].text != "Kruskal–Wallis" for r in tests.rows)
    assert "uncorrected" in tests.caption and "every Mann–Whitney U test" in tests.caption
    # per-structure pages, linked from the overview, with their own tables
    liver = _read(site, "subgroups--toy--liver.html")
    assert 'href="subgroups--toy--liver.html"' in html
    assert liver.count('class="sortable subgroup-means"') == len(data.analyses)
    a = data.analyses["dsc"]
    hit = a.subgroup_tests[
        (a.subgroup_tests["structure"] == "liver") & a.subgroup_tests["significant"]
    ]
    assert ("svg/subgroup--toy--dsc--sex-liver" in liver) == (not hit.empty)
    if hit.empty:
        assert "No figure: no pair of groups differs significantly" in liver


def test_methods_page_readable(site, data):
    html = _read(site, "methods.html")
    assert "delta on toy: 1 of 24 cases have no prediction" in html
    assert "Missing predictions" in html
    assert "No warnings" not in html
    assert ">{}<" not in html and "..<" not in html and "..\n" not in html
    assert html.count('id="training-data"') == 1
    assert "<dt>training_data</dt>" not in html  # not repeated per metric


def test_params_items():
    items = _tables.params_items(
        {"infinite_values_capped": 0, "worst_values": {}, "seed": 0, "groups": ["a", "b"]}
    )
    assert items == [
        ("infinite_values_capped", "none"),
        ("worst_values", "none"),
        ("seed", "0"),
        ("groups", "a, b"),
    ]


def test_no_speed_page_without_speed(data, tmp_path):
    no_speed = dataclasses.replace(data, speed=pd.DataFrame(columns=list(SPEED_COLUMNS)))
    written = write_site(no_speed, tmp_path, {})
    assert "speed.html" not in [p.name for p in written]
    assert not (tmp_path / "speed.html").exists()
    assert "speed.html" not in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_html_is_escaped(data, tmp_path):
    evil = dataclasses.replace(data, title="<script>alert(1)</script>")
    write_site(evil, tmp_path, {})
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("liver", "liver"),
        ("toy_2", "toy_2"),
        ("Liver", "liver-"),
        ("a b/../c", "a-b-c-"),
        ("", "x-"),
    ],
)
def test_slugify(name, slug):
    out = slugify(name)
    assert out.startswith(slug)
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def test_slugify_distinct_names_distinct_slugs():
    names = ["liver", "Liver", "LIVER", "li ver", "li-ver", "li/ver"]
    assert len({slugify(n) for n in names}) == len(names)
    assert figure_stem(("speed", "toy", "", "")) == "speed--toy"
    assert figure_stem(("heatmap", "toy", "dsc", "liver")) == "heatmap--toy--dsc--liver"


def test_render_figures_layout(site, data):
    svgs = sorted(p.name for p in (site / "svg").glob("*.svg"))
    assert "heatmap--toy--dsc--liver.svg" in svgs
    assert "speed--toy.svg" in svgs
    assert "tau--toy--nsd.svg" in svgs
    assert "robustness--toy--dsc--average.svg" in svgs
    assert not (site / "figures").exists()  # formats=("svg",): no publication figures


# ------------------------------------------------------------------- in the browser


def test_pages_load_without_console_errors(site, visits):
    assert set(visits) == {p.name for p in _pages(site)}
    for name, visit in visits.items():
        severe = [e for e in visit["console"] if e.get("level") == "SEVERE"]
        assert not severe, f"{name}: {severe}"


def test_no_network_requests(visits):
    for name, visit in visits.items():
        assert visit["requests"], f"{name}: no request logged (performance log not working?)"
        ours = [u for u, doc in visit["requests"] if urlsplit(doc).scheme == "file"]
        assert any(u.endswith(name) for u in ours), f"{name}: page load not logged"
        remote = [u for u in ours if urlsplit(u).scheme not in ("file", "data")]
        # nothing in the browser may go to the network while the site is open, whoever asks
        remote += [
            u
            for u, _ in visit["requests"]
            if urlsplit(u).scheme in ("http", "https", "ws", "wss", "ftp")
        ]
        assert not remote, f"{name} requested {remote}"


def test_figures_render(site, driver):
    from selenium.webdriver.support.ui import WebDriverWait

    n_images = 0
    for page in _pages(site):
        driver.get(page.as_uri())
        # the load event normally covers images; allow a slow SVG decode a few seconds more
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete);")
        )
        sizes = driver.execute_script(
            """
            const imgs = Array.from(document.images).map(i => {
              const r = i.getBoundingClientRect();
              return [i.getAttribute('src'), i.complete, i.naturalWidth, r.width, r.height];
            });
            const figs = Array.from(document.querySelectorAll('figure')).map(f => {
              const r = f.getBoundingClientRect();
              return [r.width, r.height];
            });
            return [imgs, figs];
            """
        )
        images, figures = sizes
        for src, complete, natural, width, height in images:
            assert complete and natural > 0, f"{page.name}: {src} did not load"
            assert width > 0 and height > 0, f"{page.name}: {src} has no size"
        for width, height in figures:
            assert width > 0 and height > 0, f"{page.name}: empty figure"
        n_images += len(images)
    # heatmap, cases and blobs on 4 structure pages x 2 metrics; tau and robustness x 2
    assert n_images >= 4 * 2 * 3 + 2 * 2


def test_sortable_table(site, driver):
    from selenium.webdriver.common.by import By

    driver.get((site / "toy--liver.html").as_uri())
    table = driver.find_element(By.CSS_SELECTOR, "table.results")
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    labels = [h.text.strip() for h in headers]
    mean = headers[labels.index("Mean")]
    model = headers[labels.index("Model")]

    def column(index: int) -> list[str]:
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        return [r.find_elements(By.TAG_NAME, "td")[index].text.strip() for r in rows]

    i_mean, i_model = labels.index("Mean"), labels.index("Model")
    assert mean.get_attribute("aria-sort") == "none"
    mean.click()
    ascending = [float(v) for v in column(i_mean)]
    assert ascending == sorted(ascending)
    assert mean.get_attribute("aria-sort") == "ascending"
    mean.click()
    descending = [float(v) for v in column(i_mean)]
    assert descending == sorted(ascending, reverse=True)
    assert mean.get_attribute("aria-sort") == "descending"
    assert len(set(descending)) > 1  # the order really changed
    model.click()
    assert column(i_model) == sorted(column(i_model))
    assert model.get_attribute("aria-sort") == "ascending"
    assert mean.get_attribute("aria-sort") == "none"


def test_relative_links_exist(site, driver):
    n_links = 0
    for page in _pages(site):
        driver.get(page.as_uri())
        hrefs = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]'))"
            ".map(a => [a.getAttribute('href'), a.href]);"
        )
        for raw, resolved in hrefs:
            if urlsplit(raw).scheme:  # absolute: papers and code, never fetched
                assert urlsplit(raw).scheme in ("http", "https", "mailto"), raw
                continue
            parts = urlsplit(resolved)
            assert parts.scheme == "file", resolved
            target = Path(unquote(parts.path))
            assert target.exists(), f"{page.name}: link {raw!r} -> missing {target}"
            assert site.resolve() in target.resolve().parents, f"{page.name}: {raw} leaves the site"
            if parts.fragment and target.suffix == ".html":
                html = target.read_text(encoding="utf-8")
                assert f'id="{parts.fragment}"' in html, f"{page.name}: no anchor {raw!r}"
            n_links += 1
    assert n_links > 0


def test_index_trophies_and_screenshot(site, driver, data, tmp_path_factory):
    from selenium.webdriver.common.by import By

    driver.get((site / "index.html").as_uri())
    for metric, analysis in data.analyses.items():
        agg = analysis.aggregates
        avg = agg[(agg["dataset"] == "toy") & (agg["structure"] == AVERAGE)]
        winners = zip(avg["model"], avg["winner"], strict=True)
        expected = {str(m) for m, w in winners if pd.notna(w) and bool(w)}
        assert expected  # at least the best model
        section = driver.find_element(By.ID, f"toy-{metric}")
        board = section.find_element(By.CSS_SELECTOR, "table.leaderboard")
        shown = set()
        for row in board.find_elements(By.CSS_SELECTOR, "tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            badges = cells[0].find_elements(By.CSS_SELECTOR, ".trophy")
            if badges:
                # an inline SVG (drawn without any emoji font), "🏆" for screen readers
                assert len(badges) == 1
                assert "🏆" in badges[0].get_attribute("aria-label")
                svg = badges[0].find_element(By.TAG_NAME, "svg")
                assert svg.size["width"] > 0 and svg.size["height"] > 0
                shown.add(cells[1].text.strip())
        assert shown == expected, metric
        heading = section.find_element(By.TAG_NAME, "h3").text
        assert "toy" in heading and AVERAGE in heading
    shot = tmp_path_factory.mktemp("screenshot") / "index.png"
    assert driver.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


# ------------------------------------------------------------------- figure formats


def test_parse_figure_formats_validates_and_keeps_svg():
    from assay.report._render import parse_figure_formats

    assert parse_figure_formats(None) == ("svg",)
    assert parse_figure_formats("") == ("svg",)
    assert parse_figure_formats("png, PDF") == ("svg", "pdf", "png")
    assert parse_figure_formats(["svg", "pdf"]) == ("svg", "pdf")
    with pytest.raises(InputError, match=r"--figure-formats: unknown figure format\(s\) 'jpg'"):
        parse_figure_formats("svg,jpg")


def test_registry_names_every_figure_kind(data):
    from assay.report._render import FIGURES, _figure_jobs

    assert tuple(FIGURES) == FIGURE_KINDS
    assert {key[0] for key, _ in _figure_jobs(data)} <= set(FIGURES)
    for spec in FIGURES.values():
        module, _, name = spec.draw.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_render_figures_in_parallel_writes_the_same_files_once(data, tmp_path):
    """Two worker processes write byte-identical files to one process, each figure once,
    and publication formats only when asked."""
    serial = render_figures(data, tmp_path / "serial", formats=("svg", "pdf", "png"))
    stems: list[str] = []
    parallel = render_figures(
        data, tmp_path / "parallel", formats=("svg", "pdf", "png"), workers=2,
        on_figure=stems.append,
    )  # fmt: skip
    assert list(parallel) == list(serial) and len(stems) == len(set(stems)) == len(serial)
    for key, path in serial.items():
        assert path.read_bytes() == parallel[key].read_bytes(), path.name
    pdfs = sorted(p.stem for p in (tmp_path / "parallel" / "figures").glob("*.pdf"))
    assert pdfs == sorted(figure_stem(k) for k in serial)
    for ext in ("pdf", "png"):
        for stem in pdfs:
            one = (tmp_path / "serial" / "figures" / f"{stem}.{ext}").read_bytes()
            two = (tmp_path / "parallel" / "figures" / f"{stem}.{ext}").read_bytes()
            assert one == two, f"{stem}.{ext}"


def test_figures_are_shared_between_this_process_and_a_helper(data, tmp_path):
    """With one helper, this process and the helper both draw (different pids), every figure
    once, byte-identical to drawing them all here."""
    import os

    from assay.report._helpers import HelperPool
    from assay.report._render import _draw_all, _figure_jobs, _render

    keys = _figure_jobs(data)[:8]  # the helper gets 3 at once: both processes draw
    jobs = [(key, draw, tmp_path / "shared", ("svg",)) for key, draw in keys]
    alone = dict(_render((key, draw, tmp_path / "alone", ("svg",))) for key, draw in keys)
    stems: list[str] = []
    with HelperPool(1) as helpers:
        drawn = list(_draw_all(jobs, helpers, stems.append))
    pids = {pid for _key, _path, pid in drawn}
    assert os.getpid() in pids and len(pids) == 2
    assert sorted(key for key, _path, _pid in drawn) == sorted(alone)
    assert sorted(stems) == sorted(figure_stem(k) for k in alone)
    for key, path, _pid in drawn:
        expected = alone[key]
        assert path is not None and expected is not None, key
        assert path.read_bytes() == expected.read_bytes(), path.name


def test_a_helper_that_dies_is_a_worker_error():
    from report_inputs import exit_in_helper

    from assay.report._helpers import HelperPool, run_shared
    from assay.scoring import WorkerError

    helpers = HelperPool(1, warm=())
    with pytest.raises(WorkerError, match="helper process died while drawing"), helpers:
        list(run_shared(range(6), exit_in_helper, helpers, what="drawing"))
    assert [r for _t, r, _p in run_shared(range(3), exit_in_helper, None)] == [0, 1, 2]


def test_figure_job_list_is_built_once_per_report_data(data):
    """The progress total and the drawing share one job list (built once per ReportData)."""
    from assay._console import figure_total
    from assay.report._render import _figure_jobs

    fresh = dataclasses.replace(data)
    n = figure_total(fresh)
    jobs = _figure_jobs(fresh)
    assert n == len(jobs) > 0
    assert all(a[1] is b[1] for a, b in zip(jobs, _figure_jobs(fresh), strict=True))
    assert fresh == data  # the cache is not part of the data


def test_rebuilt_report_removes_only_its_own_stale_figures(data, tmp_path):
    """A rebuild with fewer formats removes the PDF/PNG figures the first build listed in
    its manifest, and no other file (a user's file, an unlisted figure-like file)."""
    from assay.report._render import FIGURE_MANIFEST

    out = tmp_path / "site"
    first = render_figures(data, out, formats=("svg", "pdf", "png"))
    mine = out / "figures" / "my-notes.pdf"
    mine.write_text("keep me")
    unlisted = out / "svg" / "not-from-assay.svg"
    unlisted.write_text("<svg/>")
    outside = tmp_path / "outside.png"
    outside.write_text("keep me too")
    manifest = json.loads((out / FIGURE_MANIFEST).read_text())
    assert len(manifest["files"]) == 3 * len(first)
    manifest["files"].append("figures/../../outside.png")  # never followed
    (out / FIGURE_MANIFEST).write_text(json.dumps(manifest))
    second = render_figures(data, out)  # SVG only
    assert list(second) == list(first)
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["my-notes.pdf"]
    assert unlisted.exists() and outside.exists()
    assert {p.name for p in (out / "svg").glob("*.svg")} == {
        *(p.name for p in second.values()),
        unlisted.name,
    }
    assert json.loads((out / FIGURE_MANIFEST).read_text())["files"] == sorted(
        f"svg/{p.name}" for p in second.values()
    )


def test_render_figures_refuses_unknown_format(data, tmp_path):
    with pytest.raises(InputError, match="jpg"):
        render_figures(data, tmp_path, formats=("svg", "jpg"))
