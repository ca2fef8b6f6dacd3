"""Test-suite configuration.

Hypothesis runs derandomized by default, so CI is deterministic. For a deeper, randomized
search run ``HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_metrics_properties.py``.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pg_server
import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25)
settings.register_profile("thorough", derandomize=False, deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- markers: select parts of the suite with -m (e.g. `-m "not browser and not postgres"`) --

#: The real published Touchstone results (../shared/data, see its README); never committed.
TOUCHSTONE = Path(__file__).resolve().parents[2] / "shared" / "data" / "touchstone_totalsegmentator"

#: Fixtures that mean a test needs a real part: marker given to every test that uses one.
_FIXTURE_MARKERS = {"driver": "browser", "pg": "postgres", "pg_store": "postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the real parts they use (Chromium, PostgreSQL) from their fixtures; a
    ``realdata`` test cannot run without the data, which is not part of a clone: it says so."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, marker))
        if item.get_closest_marker("realdata") and not TOUCHSTONE.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"real Touchstone data not at {TOUCHSTONE}"))


@pytest.fixture(scope="session")
def pg() -> Iterator[pg_server.PgServer]:
    """A throwaway PostgreSQL server for the whole session (tests/pg_server.py)."""
    try:
        server = pg_server.start()
    except pg_server.ServerUnavailableError as exc:
        reason = str(exc)
    else:
        yield server
        server.stop()
        return
    pytest.fail(  # outside the except block: one line, no chained traceback
        f"No PostgreSQL server for the store tests: {reason}. Install PostgreSQL with "
        f"`{pg_server.INSTALL}` (or set {pg_server.ENV} to a server's URL).",
        pytrace=False,
    )
