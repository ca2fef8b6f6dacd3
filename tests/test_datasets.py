"""Tests for assay.datasets: label schema, label specifications, layout discovery.

Folder trees are built in tmp_path with real (tiny) NIfTI/MHA files; expected values are the
names and paths the test itself wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from assay.datasets import (
    DEFAULT_SCHEMA,
    LabelMapFile,
    LabelSchema,
    StructureFiles,
    detect_layout,
    discover_cases,
    read_label_map_spec,
)
from assay.errors import InputError, LayoutError, SchemaError
from assay.io import write_image

REQUIRED = [
    *("aorta", "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon"),
    *("duodenum", "esophagus", "femur_left", "femur_right", "gallbladder", "hepatic_vessel"),
    *("intestine", "kidney_left", "kidney_right", "liver", "lung_left", "lung_right"),
    *("pancreas", "portal_vein_and_splenic_vein", "postcava", "prostate", "rectum"),
    *("small_bowel", "spleen", "stomach", "heart", "brain"),
    *("liver_tumor", "kidney_tumor", "pancreas_tumor", "colon_tumor", "esophagus_tumor"),
    *("uterus_tumor", "lung_tumor", "kidney_cyst"),
]


def _mask(path: Path) -> Path:
    return write_image(path, np.zeros((2, 2, 2), dtype=np.uint8), np.eye(4))


# --- LabelSchema -------------------------------------------------------------------------


def test_default_schema_covers_required_structures() -> None:
    assert set(REQUIRED) <= set(DEFAULT_SCHEMA.structures)
    for name in REQUIRED:
        assert DEFAULT_SCHEMA.canonical(name) == name


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("gall_bladder", "gallbladder"),
        ("pancreatic_lesion", "pancreas_tumor"),  # AbdomenAtlas 3.0 / PanTS (issue 11)
        ("PDAC", "pancreas_tumor"),
        ("liver_lesion", "liver_tumor"),
        ("uterine_tumor", "uterus_tumor"),
        ("inferior_vena_cava", "postcava"),
        ("IVC", "postcava"),
        ("Inferior Vena-Cava", "postcava"),
        ("urinary_bladder", "bladder"),
        ("left_kidney", "kidney_left"),
        ("right kidney", "kidney_right"),
        ("kidney_l", "kidney_left"),
        ("Spleen", "spleen"),
        ("celiac_truck", "celiac_trunk"),
    ],
)
def test_synonyms_and_normalisation(alias: str, canonical: str) -> None:
    assert DEFAULT_SCHEMA.canonical(alias) == canonical
    assert alias in DEFAULT_SCHEMA


@pytest.mark.parametrize("name", ["foo", "live", "liver2", "kidney", "left kidney tumour"])
def test_unknown_name_lists_known_structures(name: str) -> None:
    with pytest.raises(SchemaError) as info:
        DEFAULT_SCHEMA.canonical(name, where="file /x/foo.nii.gz")
    message = str(info.value)
    assert f"Unknown structure {name!r} in file /x/foo.nii.gz" in message
    assert "aorta, " in message and "stomach" in message
    assert "--schema FILE" in message
    assert isinstance(info.value, KeyError)


def test_schema_validation_errors() -> None:
    with pytest.raises(InputError, match="snake_case"):
        LabelSchema(structures=("9lives",))
    with pytest.raises(InputError, match="Duplicate"):
        LabelSchema(structures=("liver", "Liver"))
    with pytest.raises(InputError, match="unknown structure"):
        LabelSchema(structures=("liver",), synonyms={"hepar": "hepar_x"})
    with pytest.raises(InputError, match="itself a canonical"):
        LabelSchema(structures=("liver", "spleen"), synonyms={"spleen": "liver"})


def test_with_structures_returns_extended_copy() -> None:
    extended = DEFAULT_SCHEMA.with_structures(["Thyroid", "liver"], {"thyroid_gland": "thyroid"})
    assert extended.canonical("thyroid_gland") == "thyroid"
    assert extended.structures.count("liver") == 1
    assert "thyroid" not in DEFAULT_SCHEMA
    assert extended.canonical("ivc") == "postcava"


def test_schema_from_yaml_extends_default(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("structures: [thyroid]\nsynonyms: {thyroid_gland: thyroid}\n")
    schema = LabelSchema.from_file(path)
    assert schema.canonical("Thyroid-Gland") == "thyroid"
    assert schema.canonical("gall_bladder") == "gallbladder"


def test_schema_from_json_standalone(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"structures": ["lesion"], "extends_default": False}))
    schema = LabelSchema.from_file(path)
    assert schema.structures == ("lesion",)
    with pytest.raises(SchemaError, match="known structures: lesion"):
        schema.canonical("liver")


def test_schema_file_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("structures: [x]\nsynonym: {}\n")
    with pytest.raises(InputError, match="Unknown keys"):
        LabelSchema.from_file(bad_key)
    bad_yaml = tmp_path / "b.yaml"
    bad_yaml.write_text("structures: [x\n")
    with pytest.raises(InputError, match=r"Cannot parse label schema .*b\.yaml"):
        LabelSchema.from_file(bad_yaml)
    with pytest.raises(InputError, match="no such file"):
        LabelSchema.from_file(tmp_path / "missing.yaml")


# --- read_label_map_spec -----------------------------------------------------------------


def test_dataset_json_v2(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    labels = {"background": 0, "liver": 1, "Gall Bladder": 2, "inferior_vena_cava": 3}
    path.write_text(json.dumps({"name": "x", "labels": labels}))
    assert read_label_map_spec(path, DEFAULT_SCHEMA) == {
        1: "liver",
        2: "gallbladder",
        3: "postcava",
    }


def test_dataset_json_v1(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "spleen", "2": "ivc"}}))
    assert read_label_map_spec(path, DEFAULT_SCHEMA) == {1: "spleen", 2: "postcava"}


@pytest.mark.parametrize(
    "text", ["1: liver\n2: spleen\n", "liver: 1\nspleen: 2\n", "labels:\n  1: liver\n  2: spleen\n"]
)
def test_plain_yaml_either_direction(tmp_path: Path, text: str) -> None:
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    assert read_label_map_spec(path, DEFAULT_SCHEMA) == {1: "liver", 2: "spleen"}


def test_region_based_labels_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "liver": [1, 2], "liver_tumor": 2}}))
    with pytest.raises(InputError, match="Region-based"):
        read_label_map_spec(path, DEFAULT_SCHEMA)


def test_duplicate_canonical_names_rejected(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"1": "gallbladder", "2": "gall_bladder"}))
    with pytest.raises(InputError, match="both mean structure 'gallbladder'"):
        read_label_map_spec(path, DEFAULT_SCHEMA)


def test_unknown_label_name_is_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.yaml"
    path.write_text("1: cancer\n")
    with pytest.raises(SchemaError, match=r"'cancer' in label specification .*labels\.yaml"):
        read_label_map_spec(path, DEFAULT_SCHEMA)


# --- layout: structures ------------------------------------------------------------------


def test_structures_layout_with_segmentations_folder_ignores_ct(tmp_path: Path) -> None:
    root = tmp_path / "refs"
    for case in ("s0002", "s0001"):
        _mask(root / case / "ct.nii.gz")
        _mask(root / case / "segmentations" / "liver.nii.gz")
        _mask(root / case / "segmentations" / "gall_bladder.nii.gz")
    (root / "s0001" / "notes.txt").write_text("x")
    assert detect_layout(root) == "structures"
    cases = discover_cases(root)
    assert list(cases) == ["s0001", "s0002"]
    case = cases["s0001"]
    assert isinstance(case, StructureFiles)
    assert dict(case.files) == {
        "gallbladder": root / "s0001" / "segmentations" / "gall_bladder.nii.gz",
        "liver": root / "s0001" / "segmentations" / "liver.nii.gz",
    }


def test_structures_layout_flat_and_mixed_forms(tmp_path: Path) -> None:
    root = tmp_path / "preds"
    _mask(root / "a" / "Liver.nii.gz")
    _mask(root / "a" / "ct.nii.gz")  # image volume, not a structure
    (root / "a" / ".liver.nii.gz").write_bytes(b"hidden")
    _mask(root / "b" / "segmentations" / "spleen.nii")
    cases = discover_cases(root, role="prediction")
    a, b = cases["a"], cases["b"]
    assert isinstance(a, StructureFiles) and isinstance(b, StructureFiles)
    assert dict(a.files) == {"liver": root / "a" / "Liver.nii.gz"}
    assert dict(b.files) == {"spleen": root / "b" / "segmentations" / "spleen.nii"}


def test_unknown_structure_file_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "refs"
    path = _mask(root / "a" / "segmentations" / "livr.nii.gz")
    with pytest.raises(SchemaError, match=re.escape(f"'livr' in file {path}")):
        discover_cases(root)


def test_two_files_for_one_structure_rejected(tmp_path: Path) -> None:
    root = tmp_path / "refs"
    _mask(root / "a" / "gallbladder.nii.gz")
    _mask(root / "a" / "gall_bladder.nii.gz")
    with pytest.raises(InputError, match="Two files for structure 'gallbladder' in case 'a'"):
        discover_cases(root)


def test_stray_image_in_structures_layout_rejected(tmp_path: Path) -> None:
    root = tmp_path / "refs"
    _mask(root / "a" / "liver.nii.gz")
    _mask(root / "stray.nii.gz")
    with pytest.raises(LayoutError, match=r"stray\.nii\.gz"):
        discover_cases(root, layout="structures")
    nested = tmp_path / "nested"
    _mask(nested / "a" / "segmentations" / "extra" / "liver.nii.gz")
    with pytest.raises(LayoutError, match="case 'a'"):
        discover_cases(nested)


# --- layout: labelmap --------------------------------------------------------------------


def test_labelmap_layout_with_explicit_labels(tmp_path: Path) -> None:
    root = tmp_path / "preds"
    _mask(root / "case_2.nii.gz")
    write_image(root / "case_1.nii", np.zeros((2, 2, 2), np.uint8), np.eye(4))
    (root / "plans.json").write_text("{}")
    assert detect_layout(root) == "labelmap"
    cases = discover_cases(root, labels={0: "background", 1: "Liver", 2: "IVC"})
    assert list(cases) == ["case_1", "case_2"]
    case = cases["case_2"]
    assert isinstance(case, LabelMapFile)
    assert case.path == root / "case_2.nii.gz"
    assert dict(case.labels) == {1: "liver", 2: "postcava"}


def test_labelmap_reads_dataset_json_from_parent(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "spleen": 1}}))
    root = tmp_path / "labelsTs"
    _mask(root / "c.nii.gz")
    case = discover_cases(root)["c"]
    assert isinstance(case, LabelMapFile)
    assert dict(case.labels) == {1: "spleen"}


def test_labelmap_without_labels_asks_for_labels(tmp_path: Path) -> None:
    root = tmp_path / "preds"
    _mask(root / "c.nii.gz")
    with pytest.raises(LayoutError, match="--labels FILE"):
        discover_cases(root, layout="labelmap")


def test_labelmap_duplicate_case_ids_rejected(tmp_path: Path) -> None:
    root = tmp_path / "preds"
    _mask(root / "c.nii.gz")
    _mask(root / "c.nii")
    with pytest.raises(InputError, match="Two label maps for case 'c'"):
        discover_cases(root, labels={1: "liver"})


# --- detection and empty / missing roots -------------------------------------------------


def test_mixed_root_is_ambiguous(tmp_path: Path) -> None:
    _mask(tmp_path / "case_a" / "liver.nii.gz")
    _mask(tmp_path / "case_b.nii.gz")
    with pytest.raises(LayoutError, match="--layout") as info:
        detect_layout(tmp_path)
    assert "case_a/" in str(info.value) and "case_b.nii.gz" in str(info.value)


def test_empty_root_raises(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(LayoutError, match=re.escape(f"No cases found in {tmp_path} (prediction)")):
        discover_cases(tmp_path, role="prediction")


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        discover_cases(tmp_path / "nope")


def test_unknown_layout_rejected(tmp_path: Path) -> None:
    _mask(tmp_path / "a" / "liver.nii.gz")
    with pytest.raises(InputError, match="Unknown layout 'flat'"):
        discover_cases(tmp_path, layout="flat")
