"""The ``assay`` command line: one command per stage (DESIGN.md §1).

Commands only parse their options, delegate to the library and print; each lives in the
module of its stage:

* :mod:`~assay.cli._score` — ``score``, ``export``;
* :mod:`~assay.cli._imports` — ``import touchstone``;
* :mod:`~assay.cli._analyze` — ``analyze``, ``report``, ``reanalyze``;
* :mod:`~assay.cli._run` — ``run``;
* :mod:`~assay.cli._demo` — ``demo``;
* :mod:`~assay.cli._serve` — ``serve``, ``worker``, ``admin ...``, ``submit``,
  ``challenge-demo`` (the private test-set service);
* :mod:`~assay.cli._common` — the app, the consoles (``out``, ``err``), one-line fatal
  errors, progress and the shared analysis options.
"""

from __future__ import annotations

# Importing a command module registers its commands on the app, in the order of --help.
# isort: off
from assay.cli import _score  # noqa: F401
from assay.cli import _imports  # noqa: F401
from assay.cli import _analyze  # noqa: F401
from assay.cli import _run  # noqa: F401
from assay.cli import _demo  # noqa: F401
from assay.cli import _serve  # noqa: F401

# isort: on
from assay.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app(prog_name="assay")
