"""The service's HTML pages in real Chromium: the leaderboard of a final phase with three
teams' approved entries, and the index page.

A real uvicorn server on loopback serves a synthetic challenge (``service_helpers``); each
team's first released submission of the final phase is its final entry once the organiser
approves it. Expected values come from the released JSON leaderboard, never from the page.
The browser is Debian's Chromium (the ``driver`` fixture of test_report_site.py); its
console log must be free of errors (a Content-Security-Policy violation is one) and its
performance log must show requests to the loopback server only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from service_helpers import client, make_challenge, running
from test_report_site import (  # the module-scoped Chromium fixture
    _requested_urls,
    driver,  # noqa: F401
)

pytestmark = pytest.mark.service

#: A team name of the longest allowed length (64): shown whole, never cut.
LONG = "team-with-a-rather-long-name_that.keeps-going.until-64-characters"[:64]
#: A label with markup: shown as text, never interpreted.
EVIL_LABEL = '<script>document.title="pwned"</script><b>beta</b> & co'
TEAMS = {"alpha": (0.5, "alpha-v1"), "beta": (2.0, EVIL_LABEL), LONG: (0.6, "long-v1")}
PHASES = (
    {"name": "final", "reference_set": "synth", "kind": "final", "policy": {"n_bootstrap": 200}},
    {"name": "open", "reference_set": "synth", "kind": "open", "policy": {"n_bootstrap": 200}},
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server after three final entries are approved, and the released leaderboard."""
    ch = make_challenge(
        tmp_path_factory.mktemp("page"), n_cases=30, phases=PHASES, teams=tuple(TEAMS)
    )
    with running(ch) as server:
        admin = client(server, ch.organiser)
        ids = {}
        for team, (quality, label) in TEAMS.items():
            archive = ch.archive("final", quality, name=f"t{len(ids)}")
            ids[team] = client(server, ch.tokens[team]).submit("final", archive, label=label)["id"]
        for team, sid in ids.items():
            view = client(server, ch.tokens[team]).wait(sid, timeout_s=120, poll_s=0.2)
            assert view["state"] == "pending_approval", view
            assert "result" not in view  # nothing released before approval
            assert admin.post(f"/v1/admin/results/{sid}/approve")["state"] == "released"
        deadline = time.monotonic() + 60
        board = {}
        while time.monotonic() < deadline:
            board = httpx.get(f"{server.url}/v1/phases/final/leaderboard").json()
            if board["n_entries"] == len(TEAMS):
                break
            time.sleep(0.1)
        assert board["n_entries"] == len(TEAMS), board
        yield {"url": server.url, "board": board, "ids": ids}


def _visit(driver, url: str) -> tuple[list[dict], list[str]]:  # noqa: F811
    """Load ``url``; its console entries and the URLs the browser requested meanwhile."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(url)
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    return driver.get_log("browser"), [u for u, _ in _requested_urls(driver.get_log("performance"))]


def _only_loopback(requests: list[str], base: str) -> list[str]:
    """The requests that went anywhere but ``base`` (the loopback server) or ``data:``."""
    origin = urlsplit(base)
    assert origin.hostname == "127.0.0.1"
    return [
        u
        for u in requests
        if urlsplit(u).scheme != "data"
        and (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)
    ]


def _table(driver, metric: str):  # noqa: F811
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"board-{metric}")


def _column(table, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].text.strip() for r in rows]


def _first_number(text: str) -> str:
    """The first number in a cell's text (the badge's hidden "🏆" and the CI line aside)."""
    return text.replace("🏆", " ").split()[0]


def _average_rows(board: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    rows = [r for r in board["rows"] if r["metric"] == metric and r["structure"] == "average"]
    return sorted(rows, key=lambda r: r["rank"])


def test_leaderboard_page_loads_cleanly_from_loopback_only(served, driver) -> None:  # noqa: F811
    url = f"{served['url']}/phases/final/leaderboard"
    console, requests = _visit(driver, url)
    severe = [e for e in console if e.get("level") == "SEVERE"]
    assert not severe, severe
    # the log works: the page, its stylesheet and its script were requested from the server
    assert url in requests, requests
    assert f"{served['url']}/assets/site.css" in requests
    assert f"{served['url']}/assets/site.js" in requests
    assert not _only_loopback(requests, served["url"]), requests
    # the stylesheet applied (the report site's look): the header bar is a flex row
    display = driver.execute_script(
        "return getComputedStyle(document.querySelector('.site-header .bar')).display;"
    )
    assert display == "flex"
    # the label's markup is text: no script of its own ran, only site.js is on the page
    assert driver.title.endswith("final") and "pwned" not in driver.title
    scripts = driver.execute_script(
        "return Array.from(document.scripts).map(s => s.getAttribute('src'));"
    )
    assert scripts == ["/assets/site.js"]


def test_leaderboard_table_shows_ranks_trophies_and_whole_team_names(served, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    board = served["board"]
    _visit(driver, f"{served['url']}/phases/final/leaderboard")
    for metric in ("dsc", "nsd"):
        expected = _average_rows(board, metric)
        table = _table(driver, metric)
        labels = [h.text.strip() for h in table.find_elements(By.CSS_SELECTOR, "thead th")]
        assert labels[:4] == ["Rank", "Team", "Entry", "average"], labels
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == len(TEAMS)
        assert [_first_number(c) for c in _column(table, 0)] == [str(r["rank"]) for r in expected]
        assert _column(table, 1) == [r["team"] for r in expected]
        assert _column(table, 2) == [r["label"] for r in expected]  # EVIL_LABEL as text
        means = [_first_number(c) for c in _column(table, 3)]
        assert means == [str(r["mean"]) for r in expected]
        # 🏆 in the rank cell exactly for the JSON's co-winners of the average
        winners = {r["team"] for r in expected if r["winner"]}
        shown = set()
        for row in rows:
            cells = row.find_elements(By.TAG_NAME, "td")
            badges = cells[0].find_elements(By.CSS_SELECTOR, ".trophy")
            if badges:
                assert len(badges) == 1
                assert "🏆" in badges[0].get_attribute("aria-label")
                assert "🏆" in badges[0].get_attribute("textContent")
                svg = badges[0].find_element(By.TAG_NAME, "svg")
                assert svg.size["width"] > 0 and svg.size["height"] > 0  # drawn, no emoji font
                shown.add(cells[1].text.strip())
        assert shown == winners and winners, (metric, shown, winners)
        # the 64-character team name is whole and not clipped by its cell
        cell = next(
            r.find_elements(By.TAG_NAME, "td")[1]
            for r in rows
            if r.find_elements(By.TAG_NAME, "td")[1].text.strip() == LONG
        )
        assert len(LONG) == 64
        clipped = driver.execute_script(
            "const c = arguments[0]; return c.scrollWidth > c.clientWidth;", cell
        )
        assert not clipped
    # alpha (quality 0.5) beats beta (quality 2.0) clearly: first, and a co-winner
    dsc = _average_rows(board, "dsc")
    assert dsc[0]["team"] == "alpha" and dsc[0]["winner"] and dsc[-1]["team"] == "beta"
    assert not dsc[-1]["winner"]


def test_sorting_by_clicking_a_header(served, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    _visit(driver, f"{served['url']}/phases/final/leaderboard")
    table = _table(driver, "dsc")
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    labels = [h.text.strip() for h in headers]
    team, average, rank = (headers[labels.index(x)] for x in ("Team", "average", "Rank"))
    assert average.get_attribute("aria-sort") == "none"

    def means() -> list[float]:
        return [float(_first_number(c)) for c in _column(table, labels.index("average"))]

    average.click()
    ascending = means()
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    assert average.get_attribute("aria-sort") == "ascending"
    average.click()
    assert means() == sorted(ascending, reverse=True)
    assert average.get_attribute("aria-sort") == "descending"
    team.click()
    names = _column(table, labels.index("Team"))
    assert names == sorted(names) and set(names) == set(TEAMS)
    assert team.get_attribute("aria-sort") == "ascending"
    assert average.get_attribute("aria-sort") == "none"
    rank.click()
    rank.click()  # descending: 3, 2, 1 (numbers, not text)
    assert [_first_number(c) for c in _column(table, labels.index("Rank"))] == ["3", "2", "1"]


def test_index_page_lists_the_phases_and_links_to_their_leaderboards(served, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    console, requests = _visit(driver, f"{served['url']}/")
    assert not [e for e in console if e.get("level") == "SEVERE"], console
    assert f"{served['url']}/" in requests and f"{served['url']}/assets/site.css" in requests
    assert not _only_loopback(requests, served["url"]), requests
    links = {a.text.strip(): a for a in driver.find_elements(By.CSS_SELECTOR, "main a[href]")}
    assert {"final", "open"} <= set(links)
    links["final"].click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "board-dsc"))
    assert driver.find_element(By.TAG_NAME, "h1").text.startswith("Leaderboard: final")
    # a phase without entries says so, and loads as cleanly
    console, requests = _visit(driver, f"{served['url']}/phases/open/leaderboard")
    assert not [e for e in console if e.get("level") == "SEVERE"], console
    assert not _only_loopback(requests, served["url"]), requests
    assert "No entries yet" in driver.find_element(By.CSS_SELECTOR, "main .lead").text
    assert not driver.find_elements(By.CSS_SELECTOR, "table.leaderboard")
