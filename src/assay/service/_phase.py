"""A challenge phase's configuration: its cases, metrics, quota and privacy policy.

Everything that changes what a participant may learn is a field here, recorded in every
release (:meth:`PhaseConfig.as_dict`). Defaults follow ``../shared/research``'s policy §9:
hidden per-case data, mean/median/CI only, rounding at release, the Ladder in open phases,
subgroups of at least 20 cases, comparisons among final submissions only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from assay.errors import InputError
from assay.metrics import metric_info

#: Phase kinds: ``open`` (feedback on a subset, Ladder) and ``final`` (scored once, approved).
PHASE_KINDS = ("open", "final")
#: What a team submits: a zip of predictions, or a zip of a model the scorer runs.
SUBMISSION_KINDS = ("predictions", "model")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe identifier (letters, digits, ``_.-``, at most 64), else an
    :class:`InputError` naming ``what``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InputError(
            f"Invalid {what} {value!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit."
        )
    return value


@dataclass(frozen=True)
class Quota:
    """Submission limits of a team in a phase.

    ``submissions`` charged submissions per rolling ``window_hours``; ``attempts`` uploads
    rejected at validation per window (free, but limited); ``max_active`` submissions being
    validated, queued or scored at once; ``max_upload_mb`` the streamed size cap.
    """

    submissions: int = 5
    window_hours: float = 24.0
    attempts: int = 15
    max_active: int = 1
    max_upload_mb: float = 512.0

    @property
    def window_s(self) -> float:
        """The rolling window in seconds."""
        return self.window_hours * 3600.0

    @property
    def max_upload_bytes(self) -> int:
        """The upload size cap in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class ModelLimits:
    """How a model submission is run (per case): wall time, memory, processes, archive size.

    The model runs in :class:`~assay.models.Sandbox`: no network, an unprivileged user,
    these limits; its stdout, stderr and per-case failures are never shown to the team.
    """

    timeout_s: float = 600.0
    memory_mb: int = 8192
    max_processes: int = 64
    max_model_mb: float = 4096.0


@dataclass(frozen=True)
class PrivacyPolicy:
    """What a release may contain (see the module docstring).

    ``mode`` ``"policy"`` applies every rule; ``"raw"`` releases unrounded means with no
    Ladder, as the platforms that leak do (for demonstrations and tests only: it is
    recorded in every release it made).
    """

    mode: str = "policy"
    ladder: bool = True
    auto_release: bool = True
    median_min_n: int = 50
    min_subgroup: int = 20
    n_bootstrap: int = 2000
    seed: int = 0
    alpha: float = 0.05
    mm_range: float = 100.0
    max_decimals: int = 4

    def describe(self) -> str:
        """The policy in plain words, as published with every release."""
        if self.mode == "raw":
            return (
                "RAW: unrounded means, no Ladder. This phase does not protect its reference "
                "set; use it for demonstrations only."
            )
        parts = [
            "No per-case scores, statuses or logs are released; only the mean, the median "
            f"(when at least {self.median_min_n} cases are evaluable) and a paired bootstrap "
            f"95% CI ({self.n_bootstrap} resamples, seed {self.seed}) per structure, never "
            "the minimum or maximum.",
            "Values are rounded when released to a resolution of 10^ceil(log10(2R/n)) for a "
            f"metric of range R (1 for fractions, {self.mm_range:g} mm for distances) over n "
            "cases; CI bounds are rounded outward.",
        ]
        if self.ladder:
            parts.append(
                "Ladder (Blum & Hardt 2015): a new score is released only if it beats the "
                "team's best released score by more than the standard error of the paired "
                "per-case differences; otherwise the best is repeated."
            )
        parts.append(
            f"Subgroup results only for groups of at least {self.min_subgroup} cases, with "
            "complementary cells suppressed; significance and co-winners only among "
            "submissions selected as final."
        )
        if not self.auto_release:
            parts.append("Results are released after the organiser approves them.")
        return " ".join(parts)


@dataclass(frozen=True)
class PhaseConfig:
    """One phase of a challenge.

    Attributes
    ----------
    name : the phase id in URLs.
    reference_set : name of a registered reference set.
    kind : ``open`` or ``final``.
    cases : the reference cases scored in this phase (None: all of them).
    metrics : metric keys computed and released; the first is the primary (Ladder, rank).
    profile : the metric profile (``default``, ``touchstone``, ...).
    allow_missing : accept submissions that lack some cases (scored as missing).
    closed : no new submissions.
    submission_kind : ``predictions`` (a zip of label maps or masks) or ``model`` (a zip of a
        model with ``assay-model.yaml`` naming its command, run by the scorer per case).
    quota, policy, model : see :class:`Quota`, :class:`PrivacyPolicy`, :class:`ModelLimits`.
    """

    name: str
    reference_set: str
    kind: str = "open"
    cases: tuple[str, ...] | None = None
    metrics: tuple[str, ...] = ("dsc", "nsd")
    profile: str = "default"
    allow_missing: bool = False
    closed: bool = False
    submission_kind: str = "predictions"
    quota: Quota = field(default_factory=Quota)
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    model: ModelLimits = field(default_factory=ModelLimits)

    @property
    def primary(self) -> str:
        """The primary metric: the Ladder's score and the leaderboard's rank."""
        return self.metrics[0]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able copy (what the database and every release record)."""
        out = asdict(self)
        out["cases"] = list(self.cases) if self.cases is not None else None
        out["metrics"] = list(self.metrics)
        return out


def _sub(cls: type[Any], raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping, got {type(raw).__name__}.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise InputError(
            f"Unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(known)}."
        )
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"{where}.{key} must be true or false, got {value!r}.")
        elif isinstance(default, int | float) and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InputError(f"{where}.{key} must be a number, got {value!r}.")
        elif isinstance(default, int) and not isinstance(value, int):
            raise InputError(f"{where}.{key} must be a whole number, got {value!r}.")
        kwargs[key] = value
    return cls(**kwargs)


def phase_from_mapping(raw: Mapping[str, Any], where: str = "phase") -> PhaseConfig:
    """Parse and check a phase (from challenge YAML, the admin API or the database).

    Kind-dependent defaults: a ``final`` phase has a quota of 1 submission, no Ladder and
    results released after approval, unless the mapping says otherwise.

    Raises
    ------
    InputError
        An unknown key, a bad value or name, an unknown metric: one line naming it.
    """
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping, got {type(raw).__name__}.")
    known = {f.name for f in fields(PhaseConfig)}
    unknown = sorted(set(map(str, raw)) - known)
    if unknown:
        raise InputError(
            f"Unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(known))}."
        )
    for key in ("name", "reference_set"):
        if key not in raw:
            raise InputError(f"{where} needs '{key}'.")
    name = check_name(raw["name"], "phase name")
    where = f"phase {name!r}"
    kind = raw.get("kind", "open")
    if kind not in PHASE_KINDS:
        raise InputError(f"{where}: kind must be one of {', '.join(PHASE_KINDS)}, got {kind!r}.")
    quota_raw = dict(raw.get("quota") or {})
    policy_raw = dict(raw.get("policy") or {})
    if kind == "final":
        quota_raw.setdefault("submissions", 1)
        quota_raw.setdefault("attempts", 5)
        quota_raw.setdefault("window_hours", 24.0 * 365)
        policy_raw.setdefault("ladder", False)
        policy_raw.setdefault("auto_release", False)
    quota = _sub(Quota, quota_raw, f"{where}.quota")
    model = _sub(ModelLimits, raw.get("model"), f"{where}.model")
    submission_kind = raw.get("submission_kind", "predictions")
    if submission_kind not in SUBMISSION_KINDS:
        raise InputError(
            f"{where}: submission_kind must be one of {', '.join(SUBMISSION_KINDS)}, got "
            f"{submission_kind!r}."
        )
    if model.timeout_s <= 0 or model.memory_mb < 64 or model.max_processes < 1:
        raise InputError(f"{where}.model: timeout_s > 0, memory_mb >= 64, max_processes >= 1.")
    policy = _sub(PrivacyPolicy, policy_raw, f"{where}.policy")
    if policy.mode not in ("policy", "raw"):
        raise InputError(f"{where}.policy.mode must be 'policy' or 'raw', got {policy.mode!r}.")
    for key in ("submissions", "attempts", "max_active"):
        if getattr(quota, key) < 1:
            raise InputError(f"{where}.quota.{key} must be at least 1.")
    if not 0 < quota.window_hours <= 24 * 366 * 10:
        raise InputError(f"{where}.quota.window_hours must be in (0, 87840] (ten years).")
    if quota.max_upload_mb < 0.01:
        raise InputError(f"{where}.quota.max_upload_mb must be at least 0.01.")
    for key in ("min_subgroup", "median_min_n"):
        if getattr(policy, key) < 1:
            raise InputError(f"{where}.policy.{key} must be at least 1.")
    if not 0 <= policy.max_decimals <= 8 or policy.mm_range <= 0:
        raise InputError(f"{where}.policy: max_decimals in 0-8 and mm_range > 0.")
    if policy.n_bootstrap < 100 or not 0 < policy.alpha < 1:
        raise InputError(f"{where}.policy: n_bootstrap must be >= 100 and alpha in (0, 1).")
    metrics = raw.get("metrics", ["dsc", "nsd"])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise InputError(f"{where}.metrics must be a list of metric names, e.g. [dsc, nsd].")
    if len(set(metrics)) != len(metrics):
        raise InputError(f"{where}.metrics lists a metric twice: {metrics}.")
    for metric in metrics:
        try:
            info = metric_info(metric)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if info.higher_is_better is None:
            raise InputError(f"{where}: metric {metric!r} is a measurement, not a score.")
    cases = raw.get("cases")
    if cases is not None:
        if isinstance(cases, str) or not all(isinstance(c, str) for c in cases):
            raise InputError(f"{where}.cases must be a list of case ids.")
        if len(set(cases)) != len(cases):
            raise InputError(f"{where}.cases lists a case twice.")
        if not cases:
            raise InputError(
                f"{where}.cases is empty; list the phase's cases or leave it out (all)."
            )
        cases = tuple(cases)
    for key in ("allow_missing", "closed"):
        if not isinstance(raw.get(key, False), bool):
            raise InputError(f"{where}.{key} must be true or false.")
    profile = raw.get("profile", "default")
    from assay.metrics import get_profile

    try:
        get_profile(profile)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return PhaseConfig(
        name=name,
        reference_set=check_name(raw["reference_set"], "reference set name"),
        kind=kind,
        cases=cases,
        metrics=tuple(metrics),
        profile=profile,
        allow_missing=bool(raw.get("allow_missing", False)),
        closed=bool(raw.get("closed", False)),
        submission_kind=submission_kind,
        quota=quota,
        policy=policy,
        model=model,
    )


def phase_from_dict(stored: Mapping[str, Any]) -> PhaseConfig:
    """A phase from its stored :meth:`PhaseConfig.as_dict` form."""
    return phase_from_mapping(stored, "stored phase")


def with_changes(phase: PhaseConfig, **changes: Any) -> PhaseConfig:
    """``phase`` with some fields replaced (re-checked)."""
    return phase_from_dict(replace(phase, **changes).as_dict())
