"""Finding the cases of a test set or a prediction folder on disk.

Two layouts are understood:

``structures`` (A)
    ``ROOT/<case_id>/segmentations/<structure>.<ext>`` (AbdomenAtlas, TotalSegmentator) or
    ``ROOT/<case_id>/<structure>.<ext>``; either form per case (both are read when both hold
    structure files; an empty ``segmentations/`` folder is not a reason to ignore the files
    next to it).
``labelmap`` (B)
    ``ROOT/<case_id>.<ext>``: one multi-label map per case (nnU-Net), with a label
    specification (``--labels FILE`` or a ``dataset.json`` in ROOT or its parent).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from assay.datasets._schema import DEFAULT_SCHEMA, LabelSchema, normalise_name, read_label_map_spec
from assay.errors import AssayError, InputError, LayoutError, SchemaError
from assay.io import IMAGE_SUFFIXES, image_suffix

__all__ = [
    "LAYOUTS",
    "CaseSource",
    "LabelMapFile",
    "StructureFiles",
    "detect_layout",
    "discover_cases",
]

#: Layout names accepted by :func:`discover_cases` (``--layout``).
LAYOUTS = ("structures", "labelmap")
SEGMENTATIONS_DIR = "segmentations"
LABEL_SPEC_FILE = "dataset.json"
# Image volumes stored next to masks in a case folder (ct.nii.gz in AbdomenAtlas and
# TotalSegmentator, imaging.nii.gz in KiTS); they are never structures.
_VOLUME_STEMS = frozenset({"ct", "mr", "mri", "pet", "image", "imaging", "img"})
_EXPECTED = (
    "expected case folders (ROOT/<case_id>/segmentations/<structure>.nii.gz or "
    "ROOT/<case_id>/<structure>.nii.gz) or label maps (ROOT/<case_id>.nii.gz); "
    f"image suffixes: {', '.join(IMAGE_SUFFIXES)}"
)


@dataclass(frozen=True)
class StructureFiles:
    """One case stored as one binary mask file per structure (layout ``structures``).

    Attributes
    ----------
    case_id : str
        Case folder name.
    files : mapping of str to pathlib.Path
        Canonical structure name -> mask file, sorted by structure. May be empty when the case
        folder holds no masks (e.g. a model that predicted nothing).
    problems : mapping of str to str
        Canonical structure name -> why it cannot be used (several files for it, e.g.
        ``ivc.nii.gz`` and ``postcava.nii.gz``): scoring fails that structure with the message.
        Only filled when discovery was given ``problems`` (otherwise it raises).
    folder : pathlib.Path or None
        The case folder (what a resumed run fingerprints).
    unrecognised : tuple of pathlib.Path
        Image files whose names are no known structure (recorded as a case problem when
        discovery was given ``problems``), so a structure without a file can say which files
        may have been meant for it.
    """

    case_id: str
    files: Mapping[str, Path]
    problems: Mapping[str, str] = field(default_factory=dict)
    folder: Path | None = None
    unrecognised: tuple[Path, ...] = ()


@dataclass(frozen=True)
class LabelMapFile:
    """One case stored as a multi-label map (layout ``labelmap``).

    Attributes
    ----------
    case_id : str
        File name without its image suffix.
    path : pathlib.Path
        The label map.
    labels : mapping of int to str
        Label value -> canonical structure name (background excluded).
    problem : str
        Why the case cannot be used (several label maps for it, e.g. ``s1.nii`` and
        ``s1.nii.gz``; ``path`` is the first): scoring fails the whole case with the message.
        Only set when discovery was given ``problems`` (otherwise it raises).
    """

    case_id: str
    path: Path
    labels: Mapping[int, str]
    problem: str = ""


CaseSource = StructureFiles | LabelMapFile


def _check_root(root: str | Path, role: str) -> Path:
    path = Path(root)
    if not path.exists():
        raise LayoutError(f"The {role} folder {path} does not exist; check the path.")
    if not path.is_dir():
        raise LayoutError(
            f"The {role} path {path} is a file, not a folder; pass the folder that holds the cases."
        )
    return path


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` whose names do not start with '.', sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(visible sub-folders, visible image files) of ``folder``; other files are ignored.

    A broken link with an image suffix counts as an image file, so that reading it fails
    with a message instead of the file silently not being there.
    """
    entries = _visible(folder)
    dirs = [p for p in entries if p.is_dir()]
    images = [
        p for p in entries if (p.is_file() or _broken_link(p)) and image_suffix(p) is not None
    ]
    return dirs, images


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def detect_layout(root: str | Path, *, role: str = "reference") -> str:
    """Return ``"structures"`` or ``"labelmap"`` from what ``root`` holds.

    Only (non-hidden) sub-folders -> ``"structures"``; only image files -> ``"labelmap"``.
    Non-image files (``dataset.json``, CSV, ...) and hidden entries are ignored.

    Raises
    ------
    LayoutError
        If ``root`` is missing, holds neither, or holds both (the message shows one of each
        and asks for ``--layout``).
    """
    root = _check_root(root, role)
    dirs, images = _scan(root)
    if dirs and images:
        raise LayoutError(
            f"Cannot tell the layout of {root} ({role}): it holds both case folders "
            f"(e.g. {dirs[0].name}/) and image files (e.g. {images[0].name}). Pass "
            f"{_option(role)} structures or {_option(role)} labelmap, or move the stray files out."
        )
    if dirs:
        return "structures"
    if images:
        return "labelmap"
    raise LayoutError(f"No cases found in {root} ({role}): {_EXPECTED}.")


def discover_cases(
    root: str | Path,
    *,
    layout: str | None = None,
    schema: LabelSchema = DEFAULT_SCHEMA,
    labels: Mapping[int, str] | None = None,
    role: str = "reference",
    problems: dict[str, str] | None = None,
) -> dict[str, CaseSource]:
    """Find every case under ``root``.

    Parameters
    ----------
    root : str or pathlib.Path
        Folder of a test set's references or of a model's predictions.
    layout : {None, "structures", "labelmap"}
        None detects it with :func:`detect_layout`.
    schema : LabelSchema
        Structure file names and label names are canonicalised through it.
    labels : mapping of int to str, optional
        Label value -> structure name for the ``labelmap`` layout. If None, a ``dataset.json``
        in ``root`` or its parent is read with :func:`read_label_map_spec`.
    role : str
        ``"reference"`` or ``"prediction"``; used in error messages.
    problems : dict, optional
        When given, problems confined to one case do not raise, so a run can record them and
        go on: an unknown structure file name or images in a nested folder put a one-line
        message in ``problems[case_id]`` (the case keeps its good files); several files for
        one structure go to :attr:`StructureFiles.problems` (that structure fails), several
        label maps for one case to :attr:`LabelMapFile.problem` (the case fails). Problems
        with the folder itself still raise.

    Returns
    -------
    dict of str to CaseSource
        Case id -> :class:`StructureFiles` or :class:`LabelMapFile`, sorted by case id.

    Raises
    ------
    LayoutError
        Missing or empty root, ambiguous layout, image files in unexpected places, or a label
        map folder without a label specification.
    SchemaError
        A structure file or label name the schema does not know (the message names the file).
    InputError
        Several files for the same canonical structure in a case, several label maps with the
        same case id (without ``problems``), an invalid ``labels`` mapping, or an unknown
        ``layout``.

    Notes
    -----
    In the ``structures`` layout masks are read from a case's ``segmentations/`` folder and
    from the case folder itself, where image volumes named ``ct``, ``mr``, ``mri``, ``pet``,
    ``image``, ``imaging`` or ``img`` are skipped. Next to a ``segmentations/`` folder that
    holds masks, case-folder files not named after a structure (``combined_labels.nii.gz``)
    are ignored; next to an empty one, the case-folder files are the masks.
    """
    root = _check_root(root, role)
    if layout is None:
        layout = detect_layout(root, role=role)
    if layout == "structures":
        cases: dict[str, CaseSource] = dict(_discover_structures(root, schema, role, problems))
    elif layout == "labelmap":
        spec = _resolve_labels(root, labels, schema, role)
        cases = dict(_discover_label_maps(root, spec, role, problems))
    else:
        raise InputError(
            f"Unknown layout {layout!r} for {root} ({role}); expected one of "
            f"{', '.join(LAYOUTS)} (or none to detect it)."
        )
    return dict(sorted(cases.items()))


def _option(role: str) -> str:
    """The command-line option that sets the layout of ``role``'s folder."""
    return "--layout" if role == "reference" else "--prediction-layout"


def _reject_nested_images(folder: Path, context: str, *, skip: Path | None = None) -> None:
    """Raise if a visible sub-folder of ``folder`` (other than ``skip``) directly holds image
    files."""
    for sub in (p for p in _visible(folder) if p.is_dir() and p != skip):
        _, images = _scan(sub)
        if images:
            raise LayoutError(
                f"Unexpected image file {images[0]} in {context}: {_EXPECTED}. Move or remove "
                "the folder."
            )


def _discover_structures(
    root: Path, schema: LabelSchema, role: str, problems: dict[str, str] | None = None
) -> dict[str, StructureFiles]:
    dirs, images = _scan(root)
    for image in images:
        exc = LayoutError(
            f"Unexpected image file {image} in {root} ({role}) with layout 'structures': "
            "expected only case folders ROOT/<case_id>/. Move it into its case folder, or use "
            f"{_option(role)} labelmap if the files are label maps."
        )
        if problems is None:
            raise exc
        problems[_stem(image)] = str(exc)
    links = [p for p in _visible(root) if _broken_link(p) and image_suffix(p) is None]
    for link in links:  # a case folder that is a dangling link: say so, never drop it
        exc = LayoutError(
            f"The case folder {link} ({role}) is a broken link (to {os.readlink(link)}); "
            "fix or remove the link."
        )
        if problems is None:
            raise exc
        problems[link.name] = str(exc)
    if not dirs and not ((images or links) and problems is not None):
        raise LayoutError(f"No cases found in {root} ({role}): {_EXPECTED}.")
    return {d.name: _case_structures(d, schema, role, problems) for d in dirs}


def _case_structures(
    case_dir: Path, schema: LabelSchema, role: str, problems: dict[str, str] | None = None
) -> StructureFiles:
    """The structure files of one case; see ``discover_cases`` for ``problems``.

    Masks are read from ``segmentations/`` and from the case folder itself. Next to a
    ``segmentations/`` folder that holds masks, only files named after a structure are read
    from the case folder (an image volume or a combined label map such as
    ``combined_labels.nii.gz`` is not a structure); otherwise every image file there is a
    structure file, except image volumes (``ct``, ``mr``, ...). Several files for one
    structure (synonyms, ``.nii`` and ``.nii.gz``, a file in both folders) fail that
    structure, naming every file.
    """
    seg_dir = case_dir / SEGMENTATIONS_DIR
    seg_images = _scan(seg_dir)[1] if seg_dir.is_dir() else []
    found: list[str] = []
    where = f"case {case_dir.name!r} ({role})"

    def problem(exc: AssayError) -> None:
        if problems is None:
            raise exc
        found.append(" ".join(str(exc).split()))

    try:
        if seg_dir.is_dir():
            _reject_nested_images(seg_dir, where)
        if not seg_images:
            _reject_nested_images(case_dir, where, skip=seg_dir)
    except LayoutError as exc:
        problem(exc)
    candidates = [
        path
        for path in _scan(case_dir)[1]
        if normalise_name(_stem(path)) not in _VOLUME_STEMS
        # beside a segmentations/ folder with masks, only structure-named files are masks
        and not (seg_images and _stem(path) not in schema)
    ]
    groups: dict[str, list[Path]] = {}
    unrecognised: list[Path] = []
    for path in (*candidates, *seg_images):
        try:
            structure = schema.canonical(_stem(path), where=f"file {path} ({role})")
        except SchemaError as exc:
            problem(exc)
            unrecognised.append(path)
            continue
        groups.setdefault(structure, []).append(path)
    files: dict[str, Path] = {}
    duplicates: dict[str, str] = {}
    for structure, paths in groups.items():
        if len(paths) == 1:
            files[structure] = paths[0]
            continue
        names = ", ".join(str(p.relative_to(case_dir)) for p in sorted(paths))
        message = (
            f"{_count_word(len(paths))} files for structure {structure!r} in {where}: {names}; "
            "keep one."
        )
        if problems is None:
            raise InputError(message)
        duplicates[structure] = message
    if found and problems is not None:
        problems[case_dir.name] = " | ".join(found)
    return StructureFiles(
        case_id=case_dir.name,
        files=dict(sorted(files.items())),
        problems=dict(sorted(duplicates.items())),
        folder=case_dir,
        unrecognised=tuple(unrecognised),
    )


def _count_word(n: int) -> str:
    return {2: "Two", 3: "Three", 4: "Four"}.get(n, str(n))


def _resolve_labels(
    root: Path, labels: Mapping[int, str] | None, schema: LabelSchema, role: str
) -> Mapping[int, str]:
    if labels is None:
        for candidate in (root / LABEL_SPEC_FILE, root.parent / LABEL_SPEC_FILE):
            if candidate.is_file():
                return read_label_map_spec(candidate, schema)
        raise LayoutError(
            f"Label maps in {root} ({role}) have no label specification: no {LABEL_SPEC_FILE} "
            f"in {root} or {root.parent}. Pass --labels FILE (YAML/JSON such as "
            "{1: liver, 2: spleen}, or an nnU-Net dataset.json)."
        )
    result: dict[int, str] = {}
    for value, name in sorted(labels.items()):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(
                f"Invalid label value {value!r} for {name!r} in labels for {root} ({role}); "
                "expected a non-negative integer."
            )
        if value == 0 or normalise_name(name) == "background":
            continue
        structure = schema.canonical(name, where=f"labels for {root} ({role})")
        if structure in result.values():
            raise InputError(
                f"Two label values mean structure {structure!r} in labels for {root} ({role}); "
                "give each structure one value."
            )
        result[value] = structure
    return result


def _discover_label_maps(
    root: Path, labels: Mapping[int, str], role: str, problems: dict[str, str] | None = None
) -> dict[str, LabelMapFile]:
    dirs, images = _scan(root)
    if problems is None:
        _reject_nested_images(root, f"{root} ({role}) with layout 'labelmap'")
    else:  # a case folder where a label map belongs: that case's problem, not the run's
        for folder in dirs:
            inner = _scan(folder)[1]
            if inner:
                problems[folder.name] = (
                    f"Unexpected image file {inner[0]} in {root} ({role}) with layout "
                    f"'labelmap': expected label maps ROOT/<case_id>.nii.gz, found a folder "
                    f"{folder.name}/. Use {_option(role)} structures if the cases are folders "
                    "of per-structure masks, or move the folder out."
                )
    if not images and not (problems is not None and dirs and problems):
        raise LayoutError(f"No cases found in {root} ({role}): {_EXPECTED}.")
    groups: dict[str, list[Path]] = {}
    for path in images:
        groups.setdefault(_stem(path), []).append(path)
    cases: dict[str, LabelMapFile] = {}
    for case_id, paths in groups.items():
        message = ""
        if len(paths) > 1:
            message = (
                f"{_count_word(len(paths))} label maps for case {case_id!r} in {root} ({role}): "
                f"{', '.join(p.name for p in paths)}; keep one."
            )
            if problems is None:
                raise InputError(message)
        cases[case_id] = LabelMapFile(case_id=case_id, path=paths[0], labels=labels,
                                      problem=message)  # fmt: skip
    return cases
