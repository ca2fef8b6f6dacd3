"""Importing Touchstone-layout results and case metadata.

Round trip: assay's own Touchstone export imported back gives the same values and statuses
(not-applicable cells and missing rows kept with their status). The real published files
in ../shared/data are used when present (skipped with the reason otherwise).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from assay.errors import InputError
from assay.models import load_model_cards
from assay.scoring import score
from assay.store import ResultStore, export_scores, import_touchstone, read_metadata
from assay.synthetic import write_benchmark

REPO = Path(__file__).resolve().parents[1]
TOUCHSTONE = REPO.parent / "shared" / "data" / "touchstone_totalsegmentator"
EXAMPLE_CARDS = REPO / "examples" / "touchstone_models.yaml"
SMALL = {"shape": (48, 48, 32), "spacing_mm": (8.0, 8.0, 10.0)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Touchstone layout written by assay: two models, one with a missing case."""
    root = tmp_path_factory.mktemp("ts")
    paths = write_benchmark(root / "bench", n_cases=3, models=("dilated", "boundary_noise"),
                            **SMALL)  # fmt: skip
    store = ResultStore(root / "scored.db")
    for name, folder in paths.predictions.items():
        score(paths.reference, folder, model=name, dataset="d", profile="touchstone", store=store)
    export_scores(store, "touchstone", root / "results")
    return root / "results"


def _cards(tmp_path: Path, mapping: dict[str, dict]) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": mapping}))
    return path


def test_round_trip_of_our_own_export(tmp_path, exported):
    cards = load_model_cards(_cards(tmp_path, {"dilated": {"name": "Dilated"},
                                               "boundary_noise": {"name": "Noisy"}}))  # fmt: skip
    store = ResultStore(tmp_path / "db.sqlite")
    report = import_touchstone(store, exported, dataset="d", cards=cards)
    assert {m.name: m.n_missing for m in report.models} == {"Dilated": 0, "Noisy": 1}
    df = store.scores(dataset="d").set_index(["model", "case_id", "structure", "metric"])
    published = pd.read_csv(exported / "boundary_noise" / "dsc.csv", dtype={"name": str})
    for row in published.itertuples(index=False):
        for structure in published.columns[1:]:
            got = df.loc[("Noisy", row.name, structure, "dsc"), "value"]
            assert got == getattr(row, structure)  # exact: CSV round trip of float64
    missing = df.xs(("Noisy", "case_0003"), level=("model", "case_id"))
    assert (missing["status"] == "missing_prediction").all() and missing["value"].isna().all()
    assert set(df["status"]) <= {"ok", "missing_prediction", "empty_reference"}
    runs = store.runs()
    assert set(runs["profile"]) == {"touchstone"}
    assert runs["manifest"].iloc[0]["source"]["format"] == "touchstone"


def test_unmapped_folder_is_an_error_naming_it(tmp_path, exported):
    cards = load_model_cards(_cards(tmp_path, {"dilated": {"name": "Dilated"}}))
    with pytest.raises(InputError, match="boundary_noise"):
        import_touchstone(ResultStore(tmp_path / "db.sqlite"), exported, dataset="d", cards=cards)


def test_values_outside_zero_one_are_rejected(tmp_path, exported):
    results = Path(shutil.copytree(exported, tmp_path / "results"))
    dsc = results / "dilated" / "dsc.csv"
    table = pd.read_csv(dsc, dtype={"name": str})
    table.loc[0, "liver"] = 97.3  # a percentage, not a fraction
    table.to_csv(dsc, index=False)
    cards = load_model_cards(_cards(tmp_path, {"dilated": {"name": "A"},
                                               "boundary_noise": {"name": "B"}}))  # fmt: skip
    with pytest.raises(InputError, match=r"liver.*97\.3.*\[0, 1\]"):
        import_touchstone(ResultStore(tmp_path / "db.sqlite"), results, dataset="d", cards=cards)


def test_metadata_with_bom_and_semicolons(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_bytes("\ufeffimage_id;age;gender\ns0001;50.00;f\ns0002;;m\n".encode())
    table, column = read_metadata(path)
    assert column == "image_id"
    assert table["image_id"].tolist() == ["s0001", "s0002"]
    assert table["age"].iloc[0] == 50.0 and np.isnan(table["age"].iloc[1])
    path.write_text("id,age\na,1\na,2\n")
    with pytest.raises(InputError, match="repeats case ids"):
        read_metadata(path)


def test_model_cards_validation(tmp_path):
    with pytest.raises(InputError, match="name"):
        load_model_cards(_cards(tmp_path, {"x": {"framework": "nnU-Net"}}))
    with pytest.raises(InputError, match="Unknown field"):
        load_model_cards(_cards(tmp_path, {"x": {"name": "X", "colour": "red"}}))
    with pytest.raises(InputError, match="same name"):
        load_model_cards(_cards(tmp_path, {"x": {"name": "X"}, "y": {"name": "X"}}))


def test_example_cards_name_the_nineteen_touchstone_models():
    cards = load_model_cards(EXAMPLE_CARDS)
    names = {c.name for c in cards.values()}
    assert len(cards) == 19
    assert {"UniSeg", "MedNeXt", "NexToU", "STU-Net-B", "STU-Net-L", "STU-Net-H", "U-Net",
            "ResEncL", "U-Net & CLIP", "Swin UNETR & CLIP", "LHU-Net", "UCTransNet",
            "Swin UNETR", "UNesT", "UNETR", "SegVol", "SAM-Adapter", "MedFormer",
            "Diff-UNet"} == names  # fmt: skip


@pytest.mark.realdata
def test_real_touchstone_data(tmp_path):
    """All 19 published models: STU-Net-H and -L have 656 of 743 rows (README of the data);
    stored values equal the published cells exactly; metadata (BOM, ';') loads."""
    store = ResultStore(tmp_path / "db.sqlite")
    report = import_touchstone(store, TOUCHSTONE / "results", dataset="totalseg",
                               cards=load_model_cards(EXAMPLE_CARDS),
                               metadata=TOUCHSTONE / "metaTotalSeg.csv")  # fmt: skip
    by_name = {m.name: m for m in report.models}
    assert len(by_name) == 19 and {m.n_cases for m in report.models} == {743}
    assert by_name["STU-Net-H"].n_missing == 743 - 656
    assert by_name["U-Net"].n_missing == 0
    assert report.n_metadata == 1228
    published = pd.read_csv(TOUCHSTONE / "results" / "nnU-Net_U-Net" / "nsd.csv",
                            dtype={"name": str}).set_index("name")  # fmt: skip
    df = store.scores(dataset="totalseg", model="U-Net")
    nsd = df[df["metric"] == "nsd"].pivot(index="case_id", columns="structure", values="value")
    expected = published.rename(columns={"gall_bladder": "gallbladder"})
    pd.testing.assert_frame_equal(
        nsd.sort_index().sort_index(axis=1), expected.sort_index().sort_index(axis=1),
        check_names=False,
    )  # fmt: skip
    meta = store.metadata("totalseg").set_index("case_id")
    assert meta.loc["s0245", "gender"] == "m" and meta.loc["s0245", "age"] == 77.0
