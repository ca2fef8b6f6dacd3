"""What scoring produces for one case: its score rows and its case-level record."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreRow:
    """One stored value: a metric of one structure of one case."""

    structure: str
    metric: str
    value: float
    status: str
    message: str = ""


@dataclass(frozen=True)
class LesionRow:
    """One lesion of a detection run: a reference lesion or a retained predicted lesion.

    ``status`` is ``detected``, ``missed`` or ``uncounted`` (left out of TP/FN by the
    protocol) for a reference lesion, ``tp``, ``fp`` or ``ignored`` for a predicted one.
    ``matched`` lists the indices of the lesions of the other kind it is matched to.
    ``diameter_mm`` (longest axial) and ``dice`` are NaN for predicted lesions;
    ``confidence`` is NaN without a probability map.
    """

    structure: str
    kind: str
    index: int
    voxels: int
    volume_ml: float
    diameter_mm: float
    equivalent_diameter_mm: float
    status: str
    dice: float
    confidence: float
    matched: str = ""


@dataclass(frozen=True)
class CaseRecord:
    """Everything stored for one case of a run (written atomically)."""

    case_id: str
    status: str
    seconds: float
    rows: tuple[ScoreRow, ...] = ()
    message: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)
    lesions: tuple[LesionRow, ...] = ()
