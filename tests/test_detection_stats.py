"""Detection statistics (assay.stats._detection) against closed forms and reference libraries.

Oracles: scikit-learn's ``roc_auc_score`` (AUC, within 1e-15), statsmodels' ``mcnemar``
(exact) and ``proportion_confint`` (Wilson, Clopper–Pearson ``beta``; within 1e-12), and an
independent O(m·n) DeLong written here from the paper's definitions (DeLong, DeLong &
Clarke-Pearson 1988, Biometrics 44:837), within 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from assay.errors import InputError
from assay.metrics import DETECTION_PROTOCOLS, detect_lesions
from assay.stats._detection import (
    _binomial_interval,
    analyze_detection,
    delong,
    mcnemar_one_sided,
    weighted_auc,
)


def test_weighted_auc_with_unit_weights_is_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        y = rng.random(n) < 0.4
        y[0], y[1] = True, False
        s = np.round(rng.random(n), 1)  # many ties
        ours = weighted_auc(s, y, ~y, np.ones((1, n)))[0]
        assert ours == pytest.approx(roc_auc_score(y, s), abs=1e-15)


def test_weighted_auc_with_counts_is_sklearn_on_the_repeated_cases():
    rng = np.random.default_rng(1)
    n = 30
    y = rng.random(n) < 0.5
    y[:2] = (True, False)
    s = np.round(rng.random(n), 2)
    counts = rng.integers(0, 4, size=(10, n)).astype(float)
    counts[:, :2] = 1.0
    ours = weighted_auc(s, y, ~y, counts)
    for b in range(10):
        rep = np.repeat(np.arange(n), counts[b].astype(int))
        assert ours[b] == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-14)


def test_auc_tie_example_from_the_research_note():
    # P13: scores positive 0.9, controls 0.9 and 0.1 -> AUC 0.75.
    s = np.array([0.9, 0.9, 0.1])
    y = np.array([True, False, False])
    assert weighted_auc(s, y, ~y, np.ones((1, 3)))[0] == 0.75


def brute_delong(a, b, y):
    """DeLong from the definitions: psi over all pairs, structural components, covariances."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)

    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    comps = []
    for s in (a, b):
        v10 = np.array([np.mean([psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.array([np.mean([psi(s[i], s[j]) for i in pos]) for j in neg])
        comps.append((v10, v01))
    m, n = len(pos), len(neg)
    (a10, a01), (b10, b01) = comps

    def cov(u, v):
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))

    var = (cov(a10, a10) + cov(b10, b10) - 2 * cov(a10, b10)) / m + (
        cov(a01, a01) + cov(b01, b01) - 2 * cov(a01, b01)
    ) / n
    diff = a10.mean() - b10.mean()
    z = diff / math.sqrt(var)
    return a10.mean(), b10.mean(), z, float(sps.norm.sf(z))


def test_delong_matches_the_definition_and_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(10):
        n = int(rng.integers(10, 50))
        y = rng.random(n) < 0.4
        y[:2] = (True, False)
        a = np.round(rng.random(n) + 0.5 * y, 1)
        b = np.round(rng.random(n) + 0.2 * y, 1)
        ours = delong(a, b, y)
        ref = brute_delong(a, b, y)
        assert ours == pytest.approx(ref, abs=1e-12)
        assert ours[0] == pytest.approx(roc_auc_score(y, a), abs=1e-15)


def test_mcnemar_one_sided_is_half_statsmodels_exact_two_sided():
    rng = np.random.default_rng(3)
    for _ in range(30):
        a = rng.random(40) < 0.8
        b = rng.random(40) < 0.6
        n01 = int((a & ~b).sum())
        n10 = int((~a & b).sum())
        table = [[int((a & b).sum()), n01], [n10, int((~a & ~b).sum())]]
        two = mcnemar(table, exact=True).pvalue
        ours = mcnemar_one_sided(a, b)
        if n01 > n10:
            assert min(1.0, 2 * ours) == pytest.approx(two, abs=1e-12)
        assert ours == pytest.approx(sps.binomtest(n01, n01 + n10, 0.5, "greater").pvalue)
    assert mcnemar_one_sided(np.ones(5, bool), np.ones(5, bool)) == 1.0


@pytest.mark.parametrize(("ours", "theirs"), [("wilson", "wilson"), ("clopper_pearson", "beta")])
def test_binomial_intervals_match_statsmodels(ours, theirs):
    for k, n in [(0, 10), (3, 10), (10, 10), (47, 80), (1, 1)]:
        lo, hi = _binomial_interval(k, n, 0.95, ours)
        ref = proportion_confint(k, n, alpha=0.05, method=theirs)
        assert (lo, hi) == pytest.approx(ref, abs=1e-12)


def frame(rows):
    cols = [
        "model",
        "case_id",
        "structure",
        "reference_positive",
        "patient_call",
        "patient_score",
        "tp",
        "fn",
        "fp",
        "n_predicted",
        "ignored",
        "dice",
        "predicted_volume_ml",
    ]
    return pd.DataFrame(rows, columns=cols)


def toy_cases():
    """Two models, 4 positive patients (one with 2 tumours) and 3 controls, pancreas only."""
    rows = []
    # case, positive, (call, score, tp, fn, fp, n_pred, dice, vol) per model
    a = {
        "p1": (True, (1, 0.9, 2, 0, 0, 2, 0.8, 2.0)),
        "p2": (True, (1, 0.8, 1, 0, 1, 2, 0.6, 1.0)),
        "p3": (True, (0, 0.3, 0, 1, 0, 0, 0.0, 0.0)),
        "p4": (True, (1, 0.7, 1, 0, 0, 1, 0.9, 0.5)),
        "c1": (False, (0, 0.2, 0, 0, 0, 0, float("nan"), 0.0)),
        "c2": (False, (1, 0.6, 0, 0, 1, 1, 0.0, 0.05)),
        "c3": (False, (0, 0.1, 0, 0, 0, 0, float("nan"), 0.0)),
    }
    for case, (pos, (call, score, tp, fn, fp, n_pred, dice, vol)) in a.items():
        tumours = 2 if case == "p1" else (1 if pos else 0)
        rows.append(
            ["A", case, "pancreas_tumor", pos, bool(call), score, tp, fn, fp, n_pred, 0, dice, vol]
        )
        # Model B: calls every patient positive with score 0.5, finds one tumour per positive.
        rows.append(
            [
                "B",
                case,
                "pancreas_tumor",
                pos,
                True,
                0.5,
                min(1, tumours),
                tumours - min(1, tumours),
                0 if pos else 1,
                1,
                0,
                0.5 if pos else 0.0,
                0.1,
            ]
        )
    return frame(rows)


def value(summary, model, metric):
    row = summary[(summary["model"] == model) & (summary["metric"] == metric)]
    return float(row["value"].iloc[0])


def test_closed_form_values_of_a_toy_benchmark():
    res = analyze_detection(toy_cases(), n_resamples=200, seed=1)
    s = res.summary
    assert value(s, "A", "p_sen") == 3 / 4
    assert value(s, "A", "spe") == 2 / 3
    assert value(s, "A", "t_sen") == 4 / 5  # micro: p1 contributes two tumours
    assert value(s, "A", "dsc") == pytest.approx((0.8 + 0.6 + 0.0 + 0.9) / 4, abs=1e-15)
    assert value(s, "A", "precision") == 4 / 6  # TP predictions 2+1+1, FP 1+1
    assert value(s, "A", "fppi") == 2 / 7
    p, r = 4 / 6, 4 / 5
    assert value(s, "A", "f1") == pytest.approx(2 * p * r / (p + r), abs=1e-15)
    y = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.6, 0.1])
    assert value(s, "A", "auc") == pytest.approx(roc_auc_score(y, scores), abs=1e-15)
    assert value(s, "B", "p_sen") == 1.0 and value(s, "B", "spe") == 0.0
    assert value(s, "B", "auc") == 0.5
    # The sweep: at 1000 mm³ model A calls p1 (2 ml) and p2 (1 ml) only.
    sw = res.sweep[(res.sweep["model"] == "A") & (res.sweep["threshold_mm3"] == 1000.0)]
    assert float(sw["p_sen"].iloc[0]) == 0.5 and float(sw["spe"].iloc[0]) == 1.0


def test_bootstrap_interval_is_the_percentile_of_paired_resamples():
    cases = toy_cases()
    res = analyze_detection(cases, n_resamples=300, seed=7)
    patients = sorted(cases["case_id"].unique())
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(patients), size=(300, len(patients)))
    a = cases[cases["model"] == "A"].set_index("case_id").loc[patients]
    pos = a["reference_positive"].to_numpy(bool)
    call = a["patient_call"].to_numpy(bool)
    boot = []
    for row in idx:
        p = pos[row]
        boot.append((p & call[row]).sum() / p.sum() if p.any() else np.nan)
    boot = np.asarray(boot, dtype=float)
    lo, hi = np.quantile(boot[~np.isnan(boot)], [0.025, 0.975])
    row = res.summary[(res.summary["model"] == "A") & (res.summary["metric"] == "p_sen")]
    assert (float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0])) == pytest.approx(
        (lo, hi), abs=1e-15
    )


def test_exact_binomial_option_and_comparisons():
    res = analyze_detection(toy_cases(), n_resamples=50, proportion_ci="clopper_pearson")
    row = res.summary[(res.summary["model"] == "A") & (res.summary["metric"] == "p_sen")]
    assert (float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0])) == pytest.approx(
        proportion_confint(3, 4, alpha=0.05, method="beta"), abs=1e-12
    )
    assert row["ci_method"].iloc[0] == "clopper-pearson"
    comp = res.comparisons
    spe = comp[comp["metric"] == "spe"].set_index("model")
    assert spe.loc["A", "winner"] and spe.loc["B", "best"] == "A"
    # B is wrong on both controls A gets right: exact one-sided p = 0.5**2.
    assert spe.loc["B", "p"] == 0.25
    auc = comp[comp["metric"] == "auc"].set_index("model")
    assert auc.loc["B", "test"] == "DeLong, one-sided"


def test_controls_by_scope_and_same_cases_check():
    cases = toy_cases()
    liver = cases.copy()
    liver["structure"] = "liver_tumor"
    liver["reference_positive"] = liver["case_id"] == "c1"  # c1 has a liver tumour
    both = pd.concat([cases, liver], ignore_index=True)
    any_type = analyze_detection(both, n_resamples=20).summary
    pancreas = any_type[(any_type["structure"] == "pancreas_tumor") & (any_type["metric"] == "spe")]
    assert set(pancreas["denominator"]) == {2.0}  # c1 is no longer a control
    per_type = analyze_detection(both, n_resamples=20, control_scope="type_negative").summary
    pancreas = per_type[(per_type["structure"] == "pancreas_tumor") & (per_type["metric"] == "spe")]
    assert set(pancreas["denominator"]) == {3.0}
    broken = cases[~((cases["model"] == "B") & (cases["case_id"] == "p1"))]
    with pytest.raises(InputError, match="different patients"):
        analyze_detection(broken, n_resamples=10)
    with pytest.raises(InputError, match="proportion_ci"):
        analyze_detection(cases, proportion_ci="wald")


def test_end_to_end_from_detect_lesions_with_sizes_and_froc():
    """Three patients scored by detect_lesions; T-Sen by size and FROC in closed form."""
    n = 48
    rng_cases = []
    lesion_rows = []
    pred_rows = []
    big = np.zeros((n, n, n), bool)
    big[5:20, 5:20, 5:20] = True  # 15 mm
    small = np.zeros((n, n, n), bool)
    small[30:33, 30:33, 30:33] = True  # 3 mm
    ref_p1 = big | small
    pred_p1 = big.copy()
    prob_p1 = np.where(pred_p1, 0.9, 0.0)
    fp = np.zeros((n, n, n), bool)
    fp[40:43, 5:8, 5:8] = True
    prob_c1 = np.where(fp, 0.6, 0.0)
    cases = {
        "p1": (pred_p1, ref_p1, prob_p1),
        "c1": (fp, np.zeros_like(fp), prob_c1),
        "c2": (np.zeros_like(fp), np.zeros_like(fp), np.zeros(fp.shape)),
    }
    protocol = DETECTION_PROTOCOLS["atlas2"]
    for case, (pred, ref, prob) in cases.items():
        r = detect_lesions(pred, ref, (1.0, 1.0, 1.0), protocol, probability=prob)
        rng_cases.append({"model": "M", "case_id": case, "structure": "liver_tumor", **r.summary()})
        for lesion in r.reference:
            lesion_rows.append(
                {"model": "M", "case_id": case, "structure": "liver_tumor", **vars(lesion)}
            )
        for p in r.predicted:
            pred_rows.append({"model": "M", "case_id": case, "structure": "liver_tumor", **vars(p)})
    res = analyze_detection(
        pd.DataFrame(rng_cases),
        pd.DataFrame(lesion_rows),
        predicted_lesions=pd.DataFrame(pred_rows),
        n_resamples=50,
    )
    s = res.summary
    assert value(s, "M", "t_sen") == 0.5 and value(s, "M", "p_sen") == 1.0
    assert value(s, "M", "spe") == 0.5 and value(s, "M", "fppi") == 1 / 3
    sizes = res.by_size.set_index("size_bin")
    assert sizes.loc["<5 mm", "value"] == 0.0 and sizes.loc["20-50 mm", "value"] == 1.0
    assert sizes.loc["<20 mm", "tumours"] == 1  # the 3-mm tumour (the big one is 21.2 mm)
    froc = res.froc.iloc[0]
    # Thresholds 0.9 (sens 1/2, FPPI 0) and 0.6 (sens 1/2, FPPI 1/3): sensitivity 0.5 at
    # every FPPI point.
    assert froc["froc_average"] == 0.5 and froc["sens@0.125"] == 0.5


def test_auroc_and_average_precision_match_picai_eval():
    """Random multi-lesion cases scored under the picai preset: the case-level AUROC and the
    lesion-level AP equal picai_eval's ``evaluate`` (AUROC to 1e-15; AP to 1e-12)."""
    import warnings

    import cc3d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from picai_eval import evaluate

    from assay.metrics import get_detection_protocol

    rng = np.random.default_rng(21)
    protocol = get_detection_protocol("picai")
    dets, trues, rows, refs, preds = [], [], [], [], []
    for k in range(24):
        ref = np.zeros((30, 30, 16), dtype=bool)
        if k % 3:
            for _ in range(int(rng.integers(1, 3))):
                c = rng.integers(4, [26, 26, 12])
                ref[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = True
        pred = np.roll(ref, int(rng.integers(-1, 2)), axis=0) & (rng.random(ref.shape) > 0.1)
        if rng.random() < 0.5:
            c = rng.integers(3, [27, 27, 13])
            pred[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = True
        labels, n = cc3d.connected_components(pred.astype(np.uint8), connectivity=26, return_N=True)
        conf = np.r_[0.0, rng.choice(np.arange(1, 64), size=n, replace=False) / 64.0]
        y_det = conf[labels]
        dets.append(y_det.astype(np.float32))
        trues.append(ref.astype(np.int32))
        r = detect_lesions(pred, ref, (1.0, 1.0, 1.0), protocol, probability=y_det)
        rows.append({"model": "m", "case_id": f"c{k:02d}", "structure": "t", **r.summary()})
        refs += [{"model": "m", "case_id": f"c{k:02d}", "structure": "t", **vars(x)}
                 for x in r.reference]  # fmt: skip
        preds += [{"model": "m", "case_id": f"c{k:02d}", "structure": "t", **vars(x)}
                  for x in r.predicted]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = evaluate(y_det=dets, y_true=trues, num_parallel_calls=1)
    res = analyze_detection(
        pd.DataFrame(rows), pd.DataFrame(refs), predicted_lesions=pd.DataFrame(preds),
        n_resamples=20,
    )  # fmt: skip
    assert value(res.summary, "m", "auc") == pytest.approx(theirs.auroc, abs=1e-15)
    assert float(res.froc["average_precision"].iloc[0]) == pytest.approx(theirs.AP, abs=1e-12)
