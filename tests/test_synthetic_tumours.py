"""The synthetic tumour-detection benchmark of ``assay demo``: its tumours and model profiles.

Checked from the written NIfTI files with assay's own readers and detect_lesions (whose
correctness is tested against closed forms, panoptica and picai_eval in test_lesions.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.io import read_image
from assay.metrics import DETECTION_PROTOCOLS, detect_lesions
from assay.synthetic import DETECTION_MODELS, TUMOUR_TYPES, write_tumour_benchmark

ATLAS2 = DETECTION_PROTOCOLS["atlas2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return write_tumour_benchmark(tmp_path_factory.mktemp("tumours"), n_cases=18)


def masks(path, structure):
    image = read_image(path)
    return image.array == TUMOUR_TYPES[structure][0], image


def test_tumours_are_realistic_and_varied(bench):
    t = pd.read_csv(bench.tumours)
    assert (t["diameter_mm"] < 10).sum() >= 3  # several small tumours
    assert t.groupby("case_id").size().max() >= 2  # patients with more than one tumour
    assert t["structure"].nunique() == 3  # liver, pancreas and kidney
    patients = {p.name.removesuffix(".nii.gz") for p in bench.reference.glob("*.nii.gz")}
    assert len(patients) == 18 and len(patients - set(t["case_id"])) == 6  # controls


def test_model_profiles(bench):
    t = pd.read_csv(bench.tumours)
    found = {m: 0 for m in DETECTION_MODELS}
    small_found = {m: 0 for m in DETECTION_MODELS}
    fp_on_controls = {m: 0 for m in DETECTION_MODELS}
    pieces = {m: 0 for m in DETECTION_MODELS}
    n_ref = 0
    for ref_path in sorted(bench.reference.glob("*.nii.gz")):
        case = ref_path.name.removesuffix(".nii.gz")
        control = case not in set(t["case_id"])
        for structure in TUMOUR_TYPES:
            ref, image = masks(ref_path, structure)
            spacing = image.spacing_mm
            n_ref += detect_lesions(ref, ref, spacing, ATLAS2).n_reference
            for model, folder in bench.predictions.items():
                pred, _ = masks(folder / ref_path.name, structure)
                r = detect_lesions(pred, ref, spacing, ATLAS2)
                found[model] += r.tp
                small_found[model] += sum(
                    x.detected for x in r.reference if x.equivalent_diameter_mm < 9.0
                )
                pieces[model] += r.n_predicted
                if control:
                    fp_on_controls[model] += r.fp
    assert found["near_perfect"] == n_ref and fp_on_controls["near_perfect"] == 0
    assert small_found["finds_large"] == 0 and found["finds_large"] < n_ref
    assert fp_on_controls["sensitive_fp"] >= 6 and found["sensitive_fp"] == n_ref
    assert pieces["splits_lesions"] > pieces["near_perfect"]
    assert pieces["merges_neighbours"] < pieces["near_perfect"]
    assert found["probabilistic"] < n_ref  # unsure small tumours fall below p = 0.5


def test_probability_maps_are_probabilities(bench):
    folder = bench.probabilities["probabilistic"]
    maps = sorted(folder.glob("*/*.nii.gz"))
    assert len(maps) == 18 * 3
    values = np.concatenate([read_image(p).array.ravel()[::97] for p in maps[:9]])
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.5
