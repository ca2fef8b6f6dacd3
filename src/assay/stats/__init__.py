"""Statistics on per-case scores (DESIGN.md §4): tidy DataFrames in, tidy DataFrames out.

* :func:`apply_policy` — the missing-value policy (``worst``, ``exclude``, ``paper``), with
  the count of values it changed per model;
* :func:`aggregate` — n, mean, SD, median, quartiles, and the ``average`` structure under a
  named convention (``default`` or ``touchstone``);
* :func:`bootstrap_ci` — paired case bootstrap CIs (percentile or BCa), seeded;
* :func:`pairwise_tests` and :func:`winners` — one-sided paired tests for every ordered
  pair under a named winner rule (``mean``: sign-flip permutation test of the mean
  difference; ``median``; ``touchstone``: Wilcoxon signed-rank), Holm-adjusted per (dataset,
  structure, metric); co-winners; :func:`inversions` — significant pairs that contradict the
  ranking;
* :func:`rankings`, :func:`consensus_ranking`, :func:`rank_stability` — ranking schemes and
  their bootstrap stability (P(rank 1), rank intervals, Kendall's τ);
* :class:`AnalysisOptions` — every analysis parameter, declared and checked once;
* :func:`subgroup_analysis` — groups from metadata, Kruskal–Wallis and pairwise Mann–Whitney U;
* :func:`analyze_detection` (with :func:`cases_from_scores`) — tumour detection: P-Sen,
  T-Sen, Spe, AUC, DSC, precision, F1, FPPI with paired bootstrap CIs, sizes, FROC, McNemar
  and DeLong co-winners.
"""

import importlib
from typing import TYPE_CHECKING, Any

# The options (no SciPy) load at once: the command line reads them at import. Everything
# else loads on first use, so `assay --help` does not pay for SciPy's statistics.
from assay.stats._options import (
    DETECTION_POLICIES,
    OPTION_SPECS,
    POLICIES,
    PROPORTION_CIS,
    WINNER_RULES,
    AnalysisOptions,
    OptionSpec,
)

if TYPE_CHECKING:
    from assay.stats._aggregate import AVERAGE, aggregate, case_averages
    from assay.stats._analysis import Analysis, analyze
    from assay.stats._bootstrap import bootstrap_ci, paired_bootstrap_means
    from assay.stats._detection import (
        DetectionAnalysis,
        analyze_detection,
        cases_from_scores,
    )
    from assay.stats._paired import (
        LOWER_IS_BETTER,
        higher_is_better_for,
        inversions,
        pairwise_tests,
        pairwise_wilcoxon,
        rule_description,
        winners,
    )
    from assay.stats._policy import apply_policy, default_worst_value
    from assay.stats._ranking import consensus_ranking, rankings
    from assay.stats._stability import rank_stability
    from assay.stats._subgroups import parse_group_spec, subgroup_analysis

_LAZY = {
    "AVERAGE": "assay.stats._aggregate",
    "aggregate": "assay.stats._aggregate",
    "case_averages": "assay.stats._aggregate",
    "Analysis": "assay.stats._analysis",
    "analyze": "assay.stats._analysis",
    "bootstrap_ci": "assay.stats._bootstrap",
    "paired_bootstrap_means": "assay.stats._bootstrap",
    "DetectionAnalysis": "assay.stats._detection",
    "analyze_detection": "assay.stats._detection",
    "cases_from_scores": "assay.stats._detection",
    "LOWER_IS_BETTER": "assay.stats._paired",
    "higher_is_better_for": "assay.stats._paired",
    "inversions": "assay.stats._paired",
    "pairwise_tests": "assay.stats._paired",
    "pairwise_wilcoxon": "assay.stats._paired",
    "rule_description": "assay.stats._paired",
    "winners": "assay.stats._paired",
    "apply_policy": "assay.stats._policy",
    "default_worst_value": "assay.stats._policy",
    "consensus_ranking": "assay.stats._ranking",
    "rankings": "assay.stats._ranking",
    "rank_stability": "assay.stats._stability",
    "parse_group_spec": "assay.stats._subgroups",
    "subgroup_analysis": "assay.stats._subgroups",
}


def __getattr__(name: str) -> Any:
    """Import a public name of the package from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'assay.stats' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AVERAGE",
    "DETECTION_POLICIES",
    "LOWER_IS_BETTER",
    "OPTION_SPECS",
    "POLICIES",
    "PROPORTION_CIS",
    "WINNER_RULES",
    "Analysis",
    "AnalysisOptions",
    "DetectionAnalysis",
    "OptionSpec",
    "aggregate",
    "analyze",
    "analyze_detection",
    "apply_policy",
    "bootstrap_ci",
    "case_averages",
    "cases_from_scores",
    "consensus_ranking",
    "default_worst_value",
    "higher_is_better_for",
    "inversions",
    "paired_bootstrap_means",
    "pairwise_tests",
    "pairwise_wilcoxon",
    "parse_group_spec",
    "rank_stability",
    "rankings",
    "rule_description",
    "subgroup_analysis",
    "winners",
]
