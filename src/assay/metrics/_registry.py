"""The metric registry: every fact about a metric in one place (DESIGN.md §3, §4).

A score table names its metrics by key (``dsc``, ``hd95``, ``nsd@1.5mm``, ...). Everything
that depends on what a metric *is* — whether higher is better, its unit, whether it is shown
in percent, the worst value a missing prediction gets, its display names — is read from
here, so a new metric is one :class:`MetricInfo` and nothing else. A metric the registry does
not know is an error, never silently ranked higher-is-better.

Parametrised variants share their family's facts: ``nsd@1.5mm`` is an ``nsd``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from assay.errors import InputError

__all__ = [
    "METRICS",
    "MetricInfo",
    "UnknownMetricError",
    "is_registered",
    "iter_metrics",
    "metric_info",
    "metric_label",
    "metric_title",
    "register_metric",
]


class UnknownMetricError(InputError):
    """A metric key the registry does not know."""


@dataclass(frozen=True)
class MetricInfo:
    """What assay knows about one metric.

    Attributes
    ----------
    key : the name in score tables (``dsc``); variants are ``key@PARAM`` (``nsd@1.5mm``).
    label : short column label without unit (``DSC``).
    title : display name for headings and figure titles (``Dice (DSC)``).
    unit : unit of stored values (``""`` for fractions, ``"mm"``, ``"ml"``).
    higher_is_better : the direction used to rank, test and pick winners; ``None`` for a
        measurement that is not a score (volumes): it cannot be ranked.
    percent : values are fractions in [0, 1] shown ×100 with ``%``.
    worst : the built-in worst value a missing or failed prediction gets under the
        ``worst`` policy; ``None`` when it depends on the image (distances: the image
        diagonal or a configured cap) or there is none.
    empty_value : the raw value when exactly one of reference and prediction is empty
        (DESIGN §3 edge cases: 0 for overlaps, ``+inf`` for distances); ``None`` when the
        metric is computed even then (volumes). Both empty gives NaN for every score.
    task : the task the metric belongs to (``segmentation``, later ``detection``, ...).
    description : one line for documentation and ``--help``.
    """

    key: str
    label: str
    title: str
    unit: str
    higher_is_better: bool | None
    percent: bool = False
    worst: float | None = None
    empty_value: float | None = None
    task: str = "segmentation"
    description: str = ""

    @property
    def display_unit(self) -> str:
        """The unit values are shown in: ``%`` for percent metrics, else :attr:`unit`."""
        return "%" if self.percent else self.unit

    @property
    def column_label(self) -> str:
        """Column label with its unit, e.g. ``DSC (%)``, ``HD95 (mm)``."""
        unit = self.display_unit
        return f"{self.label} ({unit})" if unit else self.label

    @property
    def rankable(self) -> bool:
        """Whether models can be ranked by it (it has a direction)."""
        return self.higher_is_better is not None


_BUILTIN = (
    MetricInfo("dsc", "DSC", "Dice (DSC)", "", True, percent=True, worst=0.0, empty_value=0.0,
               description="Dice similarity coefficient 2|G∧P| / (|G| + |P|)"),
    MetricInfo("nsd", "NSD", "NSD", "", True, percent=True, worst=0.0, empty_value=0.0,
               description="normalised surface distance (surface Dice) at tolerance τ"),
    MetricInfo("hd", "HD", "Hausdorff distance (mm)", "mm", False, empty_value=math.inf,
               description="largest distance between the two surfaces"),
    MetricInfo("hd95", "HD95", "HD95 (mm)", "mm", False, empty_value=math.inf,
               description="95th-percentile Hausdorff distance"),
    MetricInfo("assd", "ASSD", "ASSD (mm)", "mm", False, empty_value=math.inf,
               description="average symmetric surface distance (pooled mean)"),
    MetricInfo("masd", "MASD", "MASD (mm)", "mm", False, empty_value=math.inf,
               description="mean of the two directed average surface distances"),
    MetricInfo("volume_ref_ml", "reference volume", "Reference volume (ml)", "ml", None,
               description="volume of the reference structure"),
    MetricInfo("volume_pred_ml", "predicted volume", "Predicted volume (ml)", "ml", None,
               description="volume of the predicted structure"),
    # -- lesion detection: per (case, tumour type), from assay.metrics.detect_lesions --
    MetricInfo("lesions_ref", "reference lesions", "Reference lesions", "", None,
               task="detection", description="connected components of the reference"),
    MetricInfo("lesions_pred", "predicted lesions", "Predicted lesions", "", None,
               task="detection", description="retained predicted components"),
    MetricInfo("lesion_tp", "TP lesions", "Detected reference lesions", "", None,
               task="detection", description="counted reference lesions found"),
    MetricInfo("lesion_fn", "FN lesions", "Missed reference lesions", "", None,
               task="detection", description="counted reference lesions missed"),
    MetricInfo("lesion_fp", "FP lesions", "False-positive lesions", "", None,
               task="detection", description="retained predictions matching no lesion"),
    MetricInfo("lesion_ignored", "ignored lesions", "Ignored predicted lesions", "", None,
               task="detection", description="predictions neither TP nor FP (protocol rule)"),
    MetricInfo("patient_call", "patient call", "Patient called positive", "", None,
               task="detection", description="1 when the retained volume reaches the call "
               "threshold"),
    MetricInfo("patient_score", "patient score", "Patient score", "", None, task="detection",
               description="maximum probability (or retained volume, flagged) for AUC"),
    MetricInfo("retained_volume_ml", "retained volume", "Retained predicted volume (ml)",
               "ml", None, task="detection",
               description="predicted volume after the protocol's filter"),
    MetricInfo("lesion_dice", "lesion-wise DSC", "Lesion-wise Dice (BraTS)", "", True,
               percent=True, worst=0.0, task="detection",
               description="mean Dice of counted reference lesions, each FP counting 0"),
    # -- lesion detection: per model and tumour type (assay.stats detection analysis) --
    MetricInfo("p_sen", "P-Sen", "Patient-wise sensitivity", "", True, percent=True,
               task="detection", description="positive patients called positive"),
    MetricInfo("t_sen", "T-Sen", "Tumour-wise sensitivity", "", True, percent=True,
               task="detection", description="reference tumours detected (micro average)"),
    MetricInfo("spe", "Spe", "Specificity", "", True, percent=True, task="detection",
               description="controls called negative"),
    MetricInfo("auc", "AUC", "Patient-level ROC AUC", "", True, percent=True,
               task="detection", description="area under the ROC curve of the patient score"),
    MetricInfo("precision", "precision", "Lesion precision", "", True, percent=True,
               task="detection", description="TP predictions / all counted predictions"),
    MetricInfo("f1", "F1", "Lesion F1", "", True, percent=True, task="detection",
               description="harmonic mean of lesion precision and T-Sen"),
    MetricInfo("fppi", "FP/patient", "False positives per patient", "", False,
               task="detection", description="false-positive lesions per patient"),
)  # fmt: skip

#: Every registered metric by key (built-in ones first, then :func:`register_metric`).
METRICS: dict[str, MetricInfo] = {m.key: m for m in _BUILTIN}


def register_metric(info: MetricInfo, *, replace: bool = False) -> MetricInfo:
    """Add ``info`` to :data:`METRICS` (``replace`` to redefine a key); return it.

    Raises
    ------
    InputError
        The key is empty, contains ``@`` (reserved for variants), or is registered already.
    """
    if not info.key or "@" in info.key:
        raise InputError(
            f"Metric key {info.key!r} must be non-empty and without '@' (which names a "
            "variant, e.g. nsd@1.5mm)."
        )
    if info.key in METRICS and not replace and METRICS[info.key] != info:
        raise InputError(
            f"Metric {info.key!r} is registered already; pass replace=True to redefine it."
        )
    METRICS[info.key] = info
    return info


def metric_info(metric: str) -> MetricInfo:
    """The facts of ``metric``: its own entry, or its family's for a variant ``key@PARAM``.

    Raises
    ------
    UnknownMetricError
        The metric (and its family) is not registered: the message lists the known ones.
    """
    family = metric.split("@", 1)[0]
    info = METRICS.get(metric) or METRICS.get(family)
    if info is None:
        known = ", ".join(METRICS)
        raise UnknownMetricError(
            f"Unknown metric {metric!r}: assay does not know its direction, unit or worst "
            f"value. Known metrics: {known} (and variants such as nsd@1.5mm); register a new "
            "one with assay.metrics.register_metric(MetricInfo(...))."
        )
    return info


def _variant(metric: str) -> str:
    """The ``@PARAM`` part of a variant key (``"@1.5mm"``), or ``""``."""
    return "@" + metric.split("@", 1)[1] if "@" in metric else ""


def metric_label(metric: str) -> str:
    """Column label of ``metric`` with its variant and unit: ``DSC (%)``, ``NSD@1mm (%)``,
    ``HD95 (mm)``."""
    info = metric_info(metric)
    unit = info.display_unit
    label = info.label + _variant(metric)
    return f"{label} ({unit})" if unit else label


def metric_title(metric: str) -> str:
    """Display name of ``metric`` with its variant: ``Dice (DSC)``, ``NSD @1mm``."""
    info = metric_info(metric)
    variant = _variant(metric)
    return f"{info.title} {variant}" if variant else info.title


def is_registered(metric: str) -> bool:
    """Whether :func:`metric_info` knows ``metric``."""
    return metric in METRICS or metric.split("@", 1)[0] in METRICS


def iter_metrics(task: str | None = None) -> Iterator[MetricInfo]:
    """Registered metrics, of one ``task`` if given."""
    return (m for m in METRICS.values() if task is None or m.task == task)
