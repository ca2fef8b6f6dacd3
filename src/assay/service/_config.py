"""``challenge.yaml``: the organiser's description of a challenge (read by ``assay serve``).

Example::

    title: Synthetic abdomen challenge
    storage: challenge-data        # the upload quarantine (relative to this file)
    teams: [team-a, team-b]        # created when missing
    phases:
      - name: feedback
        reference_set: synth       # registered with `assay admin reference synth PATH`
        kind: open
        cases: first:40            # or a list of ids, or after:40 (the rest)
        quota: {submissions: 5, window_hours: 24}
      - name: final
        reference_set: synth
        kind: final
        cases: after:40

Reference folders never appear here: ``assay serve`` must not know where they are. The
scorer gets them on its own command line (``assay worker --reference synth=PATH``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError
from assay.service._phase import PhaseConfig, check_name, phase_from_mapping

_KEYS = ("title", "storage", "teams", "phases")


@dataclass(frozen=True)
class ChallengeConfig:
    """A parsed challenge file: title, storage folder, teams and raw phase mappings (their
    ``cases`` shorthands are resolved against the registered manifests by :func:`apply`)."""

    title: str
    storage: Path
    teams: tuple[str, ...] = ()
    phases: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def load_challenge(path: str | Path) -> ChallengeConfig:
    """Read and check ``challenge.yaml`` (one-line errors naming the file and key)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"Cannot read the challenge file {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path} is not valid YAML{at}: {problem}.") from None
    if not isinstance(raw, Mapping):
        raise InputError(f"{path} must be a mapping with keys {', '.join(_KEYS)}.")
    unknown = sorted(set(map(str, raw)) - set(_KEYS))
    if unknown:
        raise InputError(
            f"Unknown key(s) {', '.join(unknown)} in {path}; known: {', '.join(_KEYS)}."
        )
    teams = raw.get("teams") or []
    if not isinstance(teams, list):
        raise InputError(f"{path}: teams must be a list of names.")
    phases = raw.get("phases") or []
    if not isinstance(phases, list) or not all(isinstance(p, Mapping) for p in phases):
        raise InputError(f"{path}: phases must be a list of mappings.")
    names = [str(p.get("name")) for p in phases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            f"{path}: two phases are named {twice[0]!r}; give each phase its own name."
        )
    storage = Path(str(raw.get("storage", "challenge-data")))
    if not storage.is_absolute():
        storage = path.parent / storage
    return ChallengeConfig(
        title=str(raw.get("title", "assay challenge")),
        storage=storage,
        teams=tuple(check_name(str(t), "team name") for t in teams),
        phases=tuple(phases),
    )


def resolve_cases(spec: Any, manifest: Mapping[str, Any], where: str) -> list[str] | None:
    """A phase's ``cases``: None (all), a list, ``first:N`` or ``after:N`` of the sorted ids."""
    if spec is None or isinstance(spec, list):
        return spec
    ids = sorted(manifest["cases"])
    if isinstance(spec, str) and ":" in spec:
        how, _, n = spec.partition(":")
        if how in ("first", "after") and n.isdigit() and 0 < int(n) < len(ids):
            return ids[: int(n)] if how == "first" else ids[int(n) :]
    raise InputError(
        f"{where}: cases must be a list of ids, first:N or after:N with 0 < N < {len(ids)}; "
        f"got {spec!r}."
    )


def phase_configs(
    config: ChallengeConfig, manifests: Mapping[str, Mapping[str, Any]]
) -> list[PhaseConfig]:
    """The phases of ``config`` with their case lists resolved."""
    out = []
    for raw in config.phases:
        name = raw.get("name", "?")
        ref = raw.get("reference_set")
        if ref not in manifests:
            raise InputError(
                f"Phase {name!r} uses reference set {ref!r}, which is not registered; run "
                f"`assay admin reference {ref} PATH --db ...` where the reference files are."
            )
        cases = resolve_cases(raw.get("cases"), manifests[str(ref)], f"phase {name!r}")
        out.append(phase_from_mapping({**raw, "cases": cases}, f"phase {name!r}"))
    return out
