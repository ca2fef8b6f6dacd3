"""Analysis options: every parameter that can change a published number, declared once.

Light on purpose (no SciPy): the command line builds its options from it at import.

:class:`AnalysisOptions` is what :func:`~assay.stats.analyze` validates its arguments with,
what a benchmark config's ``analysis:`` section is read into (:meth:`AnalysisOptions.
from_config`), what the command line's ``analyze``/``report`` options are built from
(:data:`OPTION_SPECS`: config key, default, choices, help), and what a results bundle records
(:meth:`AnalysisOptions.recorded`). A new option is one field here and one entry in
:data:`OPTION_SPECS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from assay.errors import InputError

#: Named missing-value policies (:func:`~assay.stats.apply_policy`).
POLICIES: tuple[str, ...] = ("worst", "exclude", "paper")

#: A grouping: a column name, ``"column:decades"``, ``"column:e0,e1,..."`` (bin edges), or a
#: mapping of group name → pandas query string over the metadata.
GroupSpec = str | Mapping[str, str]

#: Named winner rules: rule -> (aggregate ranked by, test, one-line description).
WINNER_RULES: dict[str, tuple[str, str, str]] = {
    "mean": (
        "mean",
        "paired sign-flip permutation test of the mean difference",
        "best mean, and every model not significantly worse by a one-sided paired sign-flip "
        "permutation test of the mean difference (Holm)",
    ),
    "median": (
        "median",
        "paired permutation test (swaps within cases) of the difference of medians",
        "best median, and every model not significantly worse by a one-sided paired "
        "permutation test of the difference of medians (Holm)",
    ),
    "touchstone": (
        "mean",
        "one-sided Wilcoxon signed-rank (scipy, zero_method wilcox)",
        "best mean, and every model not significantly worse by a one-sided Wilcoxon "
        "signed-rank test (Holm) — Touchstone's published rule; the rank test can crown a "
        "model whose mean is lower",
    ),
}

#: Default permutation budget of the permutation tests (exact below it).
N_PERMUTATIONS = 10_000


__all__ = [
    "N_PERMUTATIONS",
    "OPTION_SPECS",
    "POLICIES",
    "WINNER_RULES",
    "AnalysisOptions",
    "GroupSpec",
    "OptionSpec",
]


@dataclass(frozen=True)
class OptionSpec:
    """How one analysis option is written and checked outside Python.

    Attributes
    ----------
    field : the :class:`AnalysisOptions` field (and :func:`~assay.stats.analyze` argument).
    key : its name in a benchmark config and, with ``--``, on the command line.
    choices : the allowed values of a named option, else ``()``.
    minimum : the smallest allowed value of a number, else ``None``.
    help : one line for ``--help`` and the documentation.
    """

    field: str
    key: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    help: str = ""


OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("policy", "policy", POLICIES, help="Missing values: worst, exclude, paper."),
    OptionSpec("aggregation", "aggregation", ("default", "touchstone"),
               help="Average column convention: default, touchstone."),
    OptionSpec("n_bootstrap", "bootstrap", minimum=100, help="Bootstrap resamples."),
    OptionSpec("seed", "seed", help="Seed of every resampling."),
    OptionSpec("ci_method", "ci", ("percentile", "bca"), help="CI method: percentile, bca."),
    OptionSpec("alpha", "alpha", minimum=0.0, help="Significance level."),
    OptionSpec("winner_rule", "winner-rule", tuple(WINNER_RULES),
               help="Ranking + co-winner test: mean (sign-flip permutation test of the mean "
               "difference), median (permutation test of the median difference), touchstone "
               "(one-sided Wilcoxon, the paper's rule)."),
    OptionSpec("n_permutations", "permutations", minimum=100,
               help="Permutation budget of the mean/median tests (exact below)."),
    OptionSpec("min_group_size", "min-group-size", minimum=1, help="Smallest group analysed."),
    OptionSpec("correction", "correction", ("bonferroni", "fdr_bh"),
               help="Subgroup pairs: bonferroni, fdr_bh."),
    OptionSpec("subgroup_family", "subgroup-family", ("all", "model"),
               help="Subgroup tests corrected together: all (every model, grouping and "
               "structure of a dataset and metric) or model (within one model and grouping)."),
)  # fmt: skip

_SPEC = {s.field: s for s in OPTION_SPECS}


@dataclass(frozen=True)
class AnalysisOptions:
    """The analysis parameters of :func:`~assay.stats.analyze`, validated.

    ``worst_values`` maps a metric to the value a missing prediction (and ``+inf``) gets
    under the ``worst`` policy; ``groups`` maps a grouping name to its spec
    (:func:`~assay.stats.parse_group_spec`). Every other field is described in
    :data:`OPTION_SPECS`.

    Raises
    ------
    InputError
        A value outside its choices or below its minimum: one line naming the option as a
        user writes it (``--winner-rule``/``winner-rule``) and the allowed values.
    """

    policy: str = "worst"
    aggregation: str = "default"
    n_bootstrap: int = 2000
    seed: int = 0
    ci_method: str = "percentile"
    alpha: float = 0.05
    winner_rule: str = "mean"
    n_permutations: int = N_PERMUTATIONS
    min_group_size: int = 10
    correction: str = "bonferroni"
    subgroup_family: str = "all"
    worst_values: Mapping[str, float] | None = None
    groups: Mapping[str, GroupSpec] | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        for spec in OPTION_SPECS:
            value = getattr(self, spec.field)
            if spec.choices and value not in spec.choices:
                raise InputError(
                    f"Unknown {spec.key} {value!r}; choose one of {', '.join(spec.choices)}."
                )
            if spec.minimum is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(f"{spec.key} must be a number, got {value!r}.")
                if value < spec.minimum:
                    raise InputError(f"{spec.key} must be at least {spec.minimum:g}, got {value}.")
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be between 0 and 1, got {self.alpha}.")

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str) -> AnalysisOptions:
        """Options from a config mapping keyed as on the command line (``bootstrap``, ``ci``,
        ``winner_rule`` or ``winner-rule``, ...); keys that are not options are ignored here
        (the caller checks them). Errors name ``where``."""
        by_key = {s.key.replace("-", "_"): s.field for s in OPTION_SPECS}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            name = by_key.get(str(key).replace("-", "_"))
            if name is not None:
                kwargs[name] = value
            elif key in ("worst_values", "groups"):
                kwargs[str(key)] = value
        try:
            return cls(**kwargs)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def recorded(self) -> dict[str, Any]:
        """The options as plain values, as a results bundle and ``Analysis.params`` record
        them."""
        out = asdict(self)
        out["worst_values"] = dict(self.worst_values or {})
        out["groups"] = dict(self.groups or {})
        return out

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every field name (the keyword arguments of :func:`~assay.stats.analyze`)."""
        return tuple(f.name for f in fields(AnalysisOptions))

    @staticmethod
    def spec(name: str) -> OptionSpec:
        """The :class:`OptionSpec` of field ``name``."""
        return _SPEC[name]


# -- tumour detection (``assay analyze --task detection``, ``task: detection`` configs) --

#: How a (case, tumour type) without a usable prediction counts: ``worst`` (wrong at every
#: level: a positive missed with the lowest score, a control called positive with the
#: highest), ``empty`` (as an empty prediction, what the scorer stored) or ``exclude``.
DETECTION_POLICIES: tuple[str, ...] = ("worst", "empty", "exclude")
#: Intervals of the detection proportions (P-Sen, Spe, T-Sen).
PROPORTION_CIS: tuple[str, ...] = ("bootstrap", "wilson", "clopper_pearson")
