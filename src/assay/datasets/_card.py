"""Dataset cards: what a test set is, where it lies, where it comes from, under which terms."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError

_TEXT_FIELDS = ("version", "description", "licence", "citation", "url")
_PATH_FIELDS = ("root", "labels", "schema", "metadata")
_FIELDS = ("name", *_TEXT_FIELDS, *_PATH_FIELDS, "layout", "id_column", "image", "provenance")

#: Where a case's input image lies, relative to ``root`` (AbdomenAtlas / TotalSegmentator).
DEFAULT_IMAGE = "{case}/ct.nii.gz"


@dataclass(frozen=True)
class DatasetCard:
    """What a benchmark states about one test set.

    Parameters
    ----------
    name, version, description, licence, citation, url : identity and terms (for reports).
    root : folder of the reference segmentations (``structures`` or ``labelmap`` layout).
    layout : ``structures`` / ``labelmap`` (None: detected).
    labels, schema : label-map spec and extra structure names (files), when needed.
    metadata : per-case metadata CSV; ``id_column`` names its case-id column (default first).
    image : template of a case's input image relative to ``root`` (``{case}`` = case id),
        for models that are run.
    provenance : ``{source dataset: [case ids]}`` the cases come from (contamination checks).

    Relative paths in a card file are relative to that file. Unknown fields are None, never
    guessed.
    """

    name: str
    version: str | None = None
    description: str | None = None
    licence: str | None = None
    citation: str | None = None
    url: str | None = None
    root: Path | None = None
    layout: str | None = None
    labels: Path | None = None
    schema: Path | None = None
    metadata: Path | None = None
    id_column: str | None = None
    image: str = DEFAULT_IMAGE
    provenance: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("name", *_TEXT_FIELDS)}
        for k in (*_PATH_FIELDS, "layout", "id_column"):
            value = getattr(self, k)
            out[k] = None if value is None else str(value)
        out["image"] = self.image
        out["provenance"] = {k: list(v) for k, v in self.provenance.items()}
        return out

    def image_path(self, case_id: str) -> Path:
        """The input image of ``case_id`` (``root / image`` with ``{case}`` filled in)."""
        if self.root is None:
            raise InputError(f"Dataset card {self.name!r} has no 'root' folder.")
        return self.root / self.image.format(case=case_id)


def load_dataset_card(path: str | Path) -> DatasetCard:
    """Read a YAML dataset card (``name`` required; see ``examples/``).

    Raises
    ------
    InputError
        Unreadable YAML, no ``name``, an unknown field (the message lists the known ones),
        or a ``root``/``metadata`` path that does not exist.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read dataset card {path}: {exc}. Check the file.") from exc
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise InputError(f"Dataset card {path} must be a YAML mapping with at least a 'name'.")
    return dataset_card_from_mapping(raw, where=str(path), base=path.parent)


def dataset_card_from_mapping(raw: Mapping[str, Any], *, where: str, base: Path) -> DatasetCard:
    """A :class:`DatasetCard` from a mapping (a card file or an inline config entry)."""
    unknown = sorted(set(map(str, raw)) - set(_FIELDS))
    if unknown:
        raise InputError(
            f"Unknown field(s) {', '.join(unknown)} in dataset card {where}; "
            f"known: {', '.join(_FIELDS)}."
        )
    if not raw.get("name"):
        raise InputError(f"Dataset card {where} needs a 'name'.")
    paths: dict[str, Any] = {}
    for key in _PATH_FIELDS:
        value = raw.get(key)
        paths[key] = None if value is None else (base / str(value)).resolve()
        if paths[key] is not None and not paths[key].exists():
            raise InputError(
                f"Dataset card {where}: {key} {paths[key]} does not exist; fix the path "
                "(relative paths are relative to the card file)."
            )
    provenance = raw.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        raise InputError(
            f"Dataset card {where}: 'provenance' must map source datasets to case-id lists."
        )
    image = str(raw.get("image") or DEFAULT_IMAGE)
    try:
        image.format(case="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"Dataset card {where}: image {image!r} is not a valid template ({exc!r}); use "
            "{case} for the case id, e.g. '{case}/ct.nii.gz'."
        ) from None
    if raw.get("layout") not in (None, "structures", "labelmap"):
        raise InputError(
            f"Dataset card {where}: layout {raw['layout']!r} is not 'structures' or 'labelmap'."
        )
    texts: dict[str, Any] = {
        k: (None if raw.get(k) is None else str(raw[k]).strip()) for k in _TEXT_FIELDS
    }
    return DatasetCard(
        name=str(raw["name"]),
        **texts,
        **paths,
        layout=raw.get("layout"),
        id_column=raw.get("id_column"),
        image=image,
        provenance={str(k): tuple(map(str, v or ())) for k, v in provenance.items()},
    )


def content_hash(
    card: DatasetCard, files: Iterable[Path] | None = None, *, cache: Path | None = None
) -> str:
    """SHA-256 over the test set's files: relative path, size and content digest of each.

    ``files`` are the reference masks and the label spec, schema and metadata files (what
    ``assay run`` discovered); by default every file under ``root`` plus ``metadata``. Files
    are visited in sorted order, so the hash identifies the content whatever the machine; a
    changed, added or removed file changes it. Input images are not hashed (scores do not
    depend on them). ``cache`` (a JSON file) keeps each file's SHA-256 keyed by its absolute
    path, size and modification time, so a re-run reads only files that changed.
    """
    if card.root is None:
        raise InputError(f"Dataset card {card.name!r} has no 'root' folder to hash.")
    if files is None:
        files = [p for p in card.root.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if card.metadata is not None:
            files.append(card.metadata)
    known: dict[str, str] = {}
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
    fresh: dict[str, str] = {}
    digest = hashlib.sha256()
    for file in sorted(set(files)):
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        file_digest = known.get(key) or file_sha256(file)
        fresh[key] = file_digest
        name = file.relative_to(card.root) if file.is_relative_to(card.root) else file.name
        digest.update(f"{name}\0{stat.st_size}\0{file_digest}\0".encode())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**known, **fresh}), encoding="utf-8")
    return digest.hexdigest()


def file_sha256(file: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
