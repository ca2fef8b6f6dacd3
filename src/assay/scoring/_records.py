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
class CaseRecord:
    """Everything stored for one case of a run (written atomically)."""

    case_id: str
    status: str
    seconds: float
    rows: tuple[ScoreRow, ...] = ()
    message: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)
