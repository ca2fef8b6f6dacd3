"""The metric registry is the one place a metric's facts live (issue 10 §3)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from assay.errors import InputError
from assay.metrics import (
    METRICS,
    PROFILES,
    MetricInfo,
    UnknownMetricError,
    metric_info,
    metric_label,
    metric_title,
    register_metric,
)
from assay.report._format import NumberFormat, is_percent
from assay.stats import LOWER_IS_BETTER, analyze, default_worst_value, higher_is_better_for


def test_every_metric_a_profile_computes_is_registered():
    for profile in PROFILES.values():
        for metric in profile.metrics:
            assert metric_info(metric).key == metric.split("@")[0]


def test_directions_and_worst_values_come_from_the_registry():
    lower = {k for k, m in METRICS.items() if m.higher_is_better is False}
    assert lower <= set(LOWER_IS_BETTER)
    assert higher_is_better_for("nsd@1.5mm") is True
    assert higher_is_better_for("hd95") is False
    assert default_worst_value("dsc") == 0.0 == default_worst_value("nsd@1mm")
    assert default_worst_value("hd95") is None


def test_labels_units_and_percent():
    assert metric_label("dsc") == "DSC (%)"
    assert metric_label("nsd@1mm") == "NSD@1mm (%)"
    assert metric_label("hd95") == "HD95 (mm)"
    assert metric_title("nsd@1.5mm") == "NSD @1.5mm"
    assert is_percent("nsd@2mm") and not is_percent("assd")
    assert NumberFormat("hd95", 2).unit == "mm" and NumberFormat("dsc", 1).unit == "%"


def test_edge_values_follow_the_design_table():
    assert metric_info("dsc").empty_value == 0.0
    assert metric_info("hd").empty_value == math.inf
    assert metric_info("volume_ref_ml").empty_value is None


def _scores(metric: str) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for model, shift in (("a", 0.0), ("b", 2.0)):
        for i in range(30):
            value = 5.0 + shift + rng.normal(0, 0.3)
            rows.append(("d", model, f"c{i}", "liver", metric, value, "ok"))
    return pd.DataFrame(
        rows, columns=["dataset", "model", "case_id", "structure", "metric", "value", "status"]
    )


def test_an_unknown_metric_is_refused_not_ranked_higher_is_better():
    with pytest.raises(UnknownMetricError, match=r"Unknown metric 'err_mm'.*register_metric"):
        analyze(_scores("err_mm"), metric="err_mm", n_bootstrap=100, n_permutations=100)


def test_a_registered_lower_is_better_metric_ranks_the_smaller_values_first():
    info = MetricInfo("err_mm2", "ERR", "Error (mm)", "mm", False, empty_value=math.inf)
    try:
        register_metric(info)
        result = analyze(_scores("err_mm2"), metric="err_mm2", n_bootstrap=100)
        liver = result.aggregates[result.aggregates["structure"] == "liver"].set_index("model")
        assert liver.loc["a", "rank"] == 1 and liver.loc["b", "rank"] == 2
        assert bool(liver.loc["a", "winner"]) and not bool(liver.loc["b", "winner"])
        with pytest.raises(InputError, match="registered already"):
            register_metric(MetricInfo("err_mm2", "E", "E", "mm", True))
        with pytest.raises(InputError, match="without '@'"):
            register_metric(MetricInfo("x@1", "X", "X", "", True))
    finally:
        METRICS.pop("err_mm2", None)


def test_bad_analysis_options_are_one_line_errors():
    with pytest.raises(InputError, match="Unknown ci 'wald'; choose one of percentile, bca"):
        analyze(_scores("dsc"), metric="dsc", ci_method="wald")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="bootstrap must be at least 100"):
        analyze(_scores("dsc"), metric="dsc", n_bootstrap=10)
