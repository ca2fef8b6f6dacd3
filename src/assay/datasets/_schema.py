"""Label schema: canonical structure names, their synonyms, and label-value specifications."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from assay.errors import InputError, SchemaError

__all__ = ["DEFAULT_SCHEMA", "LabelSchema", "normalise_name", "read_label_map_spec"]

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_SCHEMA_KEYS = frozenset({"structures", "synonyms", "extends_default"})


def normalise_name(name: str) -> str:
    """Lower-case ``name``, strip it, and turn ``'-'`` and ``' '`` into ``'_'``.

    This is the only transformation applied before an exact lookup: ``"Gall-Bladder"`` becomes
    ``"gall_bladder"``; no substring or fuzzy matching is ever done.
    """
    return name.strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class LabelSchema:
    """Canonical structure names and the synonyms that map onto them.

    Parameters
    ----------
    structures : iterable of str
        Canonical names, snake_case (normalised with :func:`normalise_name`). Order is kept.
    synonyms : mapping of str to str
        ``alias -> canonical``; aliases are normalised, targets must be in ``structures``.

    Raises
    ------
    InputError
        On a name that is not snake_case after normalisation, a duplicate structure, a synonym
        whose target is unknown, or an alias that is itself a different canonical structure.

    Examples
    --------
    >>> DEFAULT_SCHEMA.canonical("Inferior Vena Cava")
    'postcava'
    """

    structures: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    _lookup: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        structures = tuple(normalise_name(s) for s in self.structures)
        bad = [s for s in structures if not _SNAKE.match(s)]
        if bad:
            raise InputError(
                f"Invalid structure names in label schema: {', '.join(map(repr, bad))}; "
                "expected snake_case (letters, digits, '_', starting with a letter). Rename them."
            )
        duplicates = sorted({s for s in structures if structures.count(s) > 1})
        if duplicates:
            raise InputError(
                f"Duplicate structures in label schema: {', '.join(duplicates)}; "
                "list each canonical name once."
            )
        known = set(structures)
        lookup = {s: s for s in structures}
        synonyms: dict[str, str] = {}
        for alias, target in self.synonyms.items():
            key, canon = normalise_name(str(alias)), normalise_name(str(target))
            if canon not in known:
                raise InputError(
                    f"Synonym {alias!r} -> {target!r} in label schema points to an unknown "
                    "structure; add the target to 'structures' or fix the synonym."
                )
            if key in known and key != canon:
                raise InputError(
                    f"Synonym {alias!r} -> {target!r} in label schema is itself a canonical "
                    "structure; remove the synonym or the structure."
                )
            synonyms[key] = canon
            lookup[key] = canon
        object.__setattr__(self, "structures", structures)
        object.__setattr__(self, "synonyms", MappingProxyType(synonyms))
        object.__setattr__(self, "_lookup", MappingProxyType(lookup))

    def __hash__(self) -> int:
        return hash((self.structures, tuple(sorted(self.synonyms.items()))))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalise_name(name) in self._lookup

    def canonical(self, name: str, *, where: str = "") -> str:
        """Return the canonical name for ``name`` (a canonical name or a synonym).

        Parameters
        ----------
        name : str
            Name to look up; normalised with :func:`normalise_name` first.
        where : str
            Location for the error message, e.g. ``"file /data/s0001/liverr.nii.gz"``.

        Raises
        ------
        SchemaError
            If the normalised name is neither a structure nor a synonym. The message lists
            every known structure.
        """
        key = normalise_name(name)
        try:
            return self._lookup[key]
        except KeyError:
            location = f" in {where}" if where else ""
            raise SchemaError(
                f"Unknown structure {name!r}{location}; known structures: "
                f"{', '.join(sorted(self.structures))}. Add it with --schema FILE "
                "(structures: [...], synonyms: {...})."
            ) from None

    def with_structures(
        self, names: Iterable[str], synonyms: Mapping[str, str] | None = None
    ) -> LabelSchema:
        """Return a new schema with ``names`` (and ``synonyms``) added; ``self`` is unchanged.

        Names already present are kept once; a later synonym for the same alias replaces the
        earlier one.
        """
        added = [n for n in (normalise_name(n) for n in names) if n not in self.structures]
        merged = dict(self.synonyms)
        merged.update(synonyms or {})
        return LabelSchema(structures=(*self.structures, *dict.fromkeys(added)), synonyms=merged)

    @classmethod
    def from_file(cls, path: str | Path) -> LabelSchema:
        """Read a schema from YAML or JSON.

        The file holds ``structures: [..]``, optionally ``synonyms: {alias: canonical}`` and
        ``extends_default: true|false`` (default true: merge into :data:`DEFAULT_SCHEMA`).

        Raises
        ------
        InputError
            If the file is missing, unparsable, or has unknown keys or wrong types.
        """
        path = Path(path)
        data = _load_mapping(path, what="label schema")
        unknown = sorted(set(map(str, data)) - _SCHEMA_KEYS)
        if unknown:
            raise InputError(
                f"Unknown keys {unknown} in label schema {path}; expected "
                f"{', '.join(sorted(_SCHEMA_KEYS))}."
            )
        structures = data.get("structures", [])
        synonyms = data.get("synonyms", {}) or {}
        extends = data.get("extends_default", True)
        if not isinstance(structures, list) or not all(isinstance(s, str) for s in structures):
            raise InputError(
                f"'structures' in label schema {path} must be a list of names, got {structures!r}."
            )
        if not isinstance(synonyms, dict):
            raise InputError(
                f"'synonyms' in label schema {path} must be a mapping alias: canonical, "
                f"got {synonyms!r}."
            )
        if not isinstance(extends, bool):
            raise InputError(
                f"'extends_default' in label schema {path} must be true or false, got {extends!r}."
            )
        if extends:
            return DEFAULT_SCHEMA.with_structures(structures, synonyms)
        return cls(structures=tuple(structures), synonyms=synonyms)


def _load_mapping(path: Path, *, what: str) -> dict[Any, Any]:
    """Parse a YAML or JSON file (JSON by ``.json`` suffix) that must hold a mapping."""
    if not path.is_file():
        raise InputError(f"Cannot read {what} {path}: no such file. Check the path.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"Cannot parse {what} {path} ({type(exc).__name__}: {detail}); expected YAML or JSON."
        ) from exc
    if not isinstance(data, dict):
        raise InputError(
            f"{what.capitalize()} {path} holds a {type(data).__name__}; expected a mapping."
        )
    return data


def _as_label_value(value: Any, path: Path) -> int | None:
    """An int label value from an int or a digit string; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, list | tuple):
        raise InputError(
            f"Region-based label {value!r} in {path} is not supported; assay expects one "
            "integer value per structure. Export per-region labels instead."
        )
    return None


def read_label_map_spec(path: str | Path, schema: LabelSchema) -> dict[int, str]:
    """Read ``label value -> canonical structure`` from a label specification file.

    Accepts an nnU-Net ``dataset.json`` (``labels`` in v2 form ``{"background": 0, "liver": 1}``
    or v1 form ``{"0": "background", "1": "liver"}``), or a YAML/JSON mapping in either
    direction (``{1: liver}`` or ``{liver: 1}``), optionally under a ``labels:`` key.

    Parameters
    ----------
    path : str or pathlib.Path
        Specification file.
    schema : LabelSchema
        Names are canonicalised through it.

    Returns
    -------
    dict of int to str
        Sorted by value. Background (value 0 or the name ``background``) is dropped.

    Raises
    ------
    InputError
        On an unreadable file, region-based labels (lists of values), mixed directions,
        negative or duplicate values, or two labels with the same canonical name.
    SchemaError
        On a name the schema does not know.
    """
    path = Path(path)
    data = _load_mapping(path, what="label specification")
    if "labels" in data:
        data = data["labels"]
        if not isinstance(data, dict):
            raise InputError(
                f"'labels' in {path} holds a {type(data).__name__}; expected a mapping of "
                "names to values or values to names."
            )
    pairs: list[tuple[int, str]] = []
    for key, value in data.items():
        key_value, value_value = _as_label_value(key, path), _as_label_value(value, path)
        if key_value is not None and isinstance(value, str):
            pairs.append((key_value, value))  # {1: liver} / v1 {"1": "liver"}
        elif value_value is not None and isinstance(key, str):
            pairs.append((value_value, key))  # {liver: 1} / v2 {"liver": 1}
        else:
            raise InputError(
                f"Cannot interpret label entry {key!r}: {value!r} in {path}; expected "
                "value: name (e.g. 1: liver) or name: value (e.g. liver: 1)."
            )
    result: dict[int, str] = {}
    seen: dict[str, int] = {}
    where = f"label specification {path}"
    for value, name in sorted(pairs, key=lambda p: p[0]):
        if value == 0 or normalise_name(name) == "background":
            continue
        if value < 0:
            raise InputError(f"Negative label value {value} for {name!r} in {path}; use >= 1.")
        if value in result:
            raise InputError(
                f"Label value {value} is assigned twice in {path} "
                f"({result[value]!r} and {name!r}); give each structure its own value."
            )
        canon = schema.canonical(name, where=where)
        if canon in seen:
            raise InputError(
                f"Labels {seen[canon]} and {value} in {path} both mean structure {canon!r}; "
                "merge them or remove one."
            )
        seen[canon] = value
        result[value] = canon
    return result


_DEFAULT_STRUCTURES = (
    "adrenal_gland_left",
    "adrenal_gland_right",
    "aorta",
    "bladder",
    "brain",
    "celiac_trunk",
    "colon",
    "duodenum",
    "esophagus",
    "femur_left",
    "femur_right",
    "gallbladder",
    "heart",
    "hepatic_vessel",
    "intestine",
    "kidney_left",
    "kidney_right",
    "liver",
    "lung_left",
    "lung_right",
    "pancreas",
    "portal_vein_and_splenic_vein",
    "postcava",
    "prostate",
    "rectum",
    "small_bowel",
    "spleen",
    "stomach",
    # tumours and lesions
    "colon_tumor",
    "esophagus_tumor",
    "kidney_cyst",
    "kidney_tumor",
    "liver_tumor",
    "lung_tumor",
    "pancreas_tumor",
    "uterus",
    "uterus_tumor",
)

#: The tumour types of AbdomenAtlas 2.0 / PanTS detection benchmarks and the organ of each.
TUMOUR_ORGANS: dict[str, str] = {
    "pancreas_tumor": "pancreas",
    "liver_tumor": "liver",
    "kidney_tumor": "kidney",
    "colon_tumor": "colon",
    "esophagus_tumor": "esophagus",
    "uterus_tumor": "uterus",
}

# Only unambiguous aliases: each names exactly one structure in the dataset that uses it.
_DEFAULT_SYNONYMS = {
    # AbdomenAtlas / BTCV / AMOS / TotalSegmentator spellings
    "gall_bladder": "gallbladder",
    "inferior_vena_cava": "postcava",
    "ivc": "postcava",
    "vena_cava_inferior": "postcava",
    "urinary_bladder": "bladder",
    "celiac_truck": "celiac_trunk",  # AbdomenAtlas 1.1 file name (sic)
    "arota": "aorta",  # AMOS dataset.json (sic)
    "left_kidney": "kidney_left",
    "right_kidney": "kidney_right",
    "kidney_l": "kidney_left",
    "kidney_r": "kidney_right",
    "left_adrenal_gland": "adrenal_gland_left",
    "right_adrenal_gland": "adrenal_gland_right",
    "adrenal_gland_l": "adrenal_gland_left",
    "adrenal_gland_r": "adrenal_gland_right",
    "left_lung": "lung_left",
    "right_lung": "lung_right",
    "left_femur": "femur_left",
    "right_femur": "femur_right",
    "oesophagus": "esophagus",
    "small_intestine": "small_bowel",
    "hepatic_vessels": "hepatic_vessel",
    # British spellings of the tumour classes
    "liver_tumour": "liver_tumor",
    "kidney_tumour": "kidney_tumor",
    "pancreas_tumour": "pancreas_tumor",
    "pancreatic_tumor": "pancreas_tumor",
    "pancreatic_tumour": "pancreas_tumor",
    "colon_tumour": "colon_tumor",
    "lung_tumour": "lung_tumor",
    # lesion and tumour names of AbdomenAtlas 2.0 / 3.0, PanTS and the MSD tasks
    "pancreatic_lesion": "pancreas_tumor",
    "pancreas_lesion": "pancreas_tumor",
    "pdac": "pancreas_tumor",
    "liver_lesion": "liver_tumor",
    "hepatic_tumor": "liver_tumor",
    "kidney_lesion": "kidney_tumor",
    "renal_tumor": "kidney_tumor",
    "colon_lesion": "colon_tumor",
    "colon_cancer": "colon_tumor",
    "esophagus_lesion": "esophagus_tumor",
    "esophageal_tumor": "esophagus_tumor",
    "esophageal_lesion": "esophagus_tumor",
    "oesophagus_tumour": "esophagus_tumor",
    "uterus_lesion": "uterus_tumor",
    "uterine_tumor": "uterus_tumor",
    "uterine_lesion": "uterus_tumor",
}

#: The built-in schema: abdominal CT structures of AbdomenAtlas, TotalSegmentator, BTCV and
#: AMOS, plus tumour classes, with unambiguous synonyms.
DEFAULT_SCHEMA = LabelSchema(structures=_DEFAULT_STRUCTURES, synonyms=_DEFAULT_SYNONYMS)
