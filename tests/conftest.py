"""Test-suite configuration.

Hypothesis runs derandomized by default, so CI is deterministic. For a deeper, randomized
search run ``HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_metrics_properties.py``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25)
settings.register_profile("thorough", derandomize=False, deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
