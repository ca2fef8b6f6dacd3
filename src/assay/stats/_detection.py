"""Tumour-detection statistics: P-Sen, T-Sen, Spe, AUC, DSC and friends, with CIs and tests.

Input is one row per (model, case, tumour type) as :func:`assay.metrics.detect_lesions`
summarises it, and optionally one row per reference lesion. Per model and tumour type:

* **P-Sen** = #(positive patients called positive) / #positive patients;
* **Spe** = #(controls called negative) / #controls; controls are patients with no tumour of
  any type (``control_scope="any_type"``, default) or of this type (``"type_negative"``);
* **T-Sen** = Σ detected tumours / Σ tumours over positive patients (micro average: a
  patient with several tumours weighs several times), also by longest-axial-diameter stratum;
* **AUC** of the patient score, positives against controls, ties counted ½ (Mann–Whitney,
  as ``sklearn.metrics.roc_auc_score``);
* **DSC** = mean Dice over positive patients; **precision** = Σ TP predictions / Σ (TP + FP
  predictions); **F1** = harmonic mean of precision and T-Sen; **FPPI** = Σ false-positive
  predictions / #patients (positives and controls).

Intervals: the paired patient bootstrap (the same resampled patients for every model and
tumour type; percentile, seeded), or for the proportions P-Sen, Spe and T-Sen optionally
Wilson or Clopper–Pearson (exact binomial) intervals — T-Sen's binomial interval treats
tumours as independent, which they are not within a patient: the bootstrap is the default.
Paired comparisons against the best model of each (tumour type, metric): exact one-sided
McNemar (binomial on the discordant patients) for P-Sen and Spe, one-sided DeLong for AUC,
Holm within each family; co-winners = the best and every model not significantly worse.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from assay.errors import InputError
from assay.metrics import SIZE_BIN_EDGES_MM, SIZE_BIN_LABELS, SMALL_TUMOUR_MM
from assay.metrics._detection_protocol import CONTROL_SCOPES
from assay.stats._options import DETECTION_POLICIES, PROPORTION_CIS
from assay.stats._paired import holm

ProportionCI = Literal["bootstrap", "wilson", "clopper_pearson"]

#: Detection metrics in leaderboard order (AbdomenAtlas 2.0 columns first).
DETECTION_METRICS: tuple[str, ...] = (
    "p_sen",
    "t_sen",
    "spe",
    "auc",
    "dsc",
    "precision",
    "f1",
    "fppi",
)
#: FP-per-patient points of the FROC average (LUNA16 / nnDetection).
FROC_FPPI: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

_CASE_COLUMNS = (
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
)


@dataclass(frozen=True)
class DetectionAnalysis:
    """Results of :func:`analyze_detection` (tidy frames).

    Attributes
    ----------
    summary
        One row per (structure, model, metric): value, ci_low, ci_high, numerator,
        denominator, n_patients, ci_method.
    by_size
        T-Sen per (structure, model, size bin): value, CI, detected, tumours.
    comparisons
        One row per (structure, metric, model) against the best: test, p, p_holm,
        significant, winner.
    sweep
        P-Sen and Spe per patient-call volume threshold (mm³).
    froc
        Sensitivity at each FPPI point and the FROC average, when lesion confidences exist.
    """

    summary: pd.DataFrame
    by_size: pd.DataFrame
    comparisons: pd.DataFrame
    sweep: pd.DataFrame
    froc: pd.DataFrame


def analyze_detection(
    cases: pd.DataFrame,
    lesions: pd.DataFrame | None = None,
    *,
    control_scope: str = "any_type",
    n_resamples: int = 2000,
    seed: int = 0,
    ci_level: float = 0.95,
    proportion_ci: str = "bootstrap",
    alpha: float = 0.05,
    volume_sweep_mm3: Sequence[float] = (0.0, 10.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0),
    predicted_lesions: pd.DataFrame | None = None,
) -> DetectionAnalysis:
    """Detection statistics of every model and tumour type.

    Parameters
    ----------
    cases
        One row per (model, case_id, structure) with the columns of
        :meth:`assay.metrics.DetectionResult.summary` (``reference_positive``,
        ``patient_call``, ``patient_score``, ``tp``, ``fn``, ``fp``, ``n_predicted``,
        ``ignored``, ``dice``; ``predicted_volume_ml`` for the sweep).
    lesions
        Optional reference-lesion rows (model, case_id, structure, diameter_mm, detected,
        counted, and ``confidence`` for FROC); strata come from ``diameter_mm``.
    control_scope
        ``any_type`` or ``type_negative`` (see the module docstring).
    n_resamples, seed, ci_level
        Paired patient bootstrap.
    proportion_ci
        ``bootstrap`` (default), ``wilson`` or ``clopper_pearson`` for P-Sen, Spe, T-Sen.
    alpha
        Level of the one-sided tests (Holm within each family).
    predicted_lesions
        Optional predicted-lesion rows (model, case_id, structure, status, confidence) for
        FROC.

    Raises
    ------
    InputError
        Missing columns, models scored on different cases, or a bad option.
    """
    missing = [c for c in _CASE_COLUMNS if c not in cases.columns]
    if missing:
        raise InputError(f"Detection cases lack column(s) {', '.join(missing)}.")
    if control_scope not in CONTROL_SCOPES:
        raise InputError(
            f"control_scope={control_scope!r} is invalid: choose any_type or type_negative."
        )
    if proportion_ci not in PROPORTION_CIS:
        raise InputError(
            f"proportion_ci={proportion_ci!r} is invalid: choose one of "
            f"{', '.join(PROPORTION_CIS)}."
        )
    if n_resamples < 1 or not 0 < ci_level < 1:
        raise InputError("n_resamples must be >= 1 and ci_level in (0, 1).")
    cases = with_controls(cases, control_scope)
    patients = sorted(cases["case_id"].unique())
    index = {c: k for k, c in enumerate(patients)}
    weights = _resample_counts(len(patients), n_resamples, seed)
    rows: list[dict[str, object]] = []
    size_rows: list[dict[str, object]] = []
    comparison_rows: list[dict[str, object]] = []
    sweep_rows: list[dict[str, object]] = []
    froc_rows: list[dict[str, object]] = []
    q = ((1 - ci_level) / 2, 1 - (1 - ci_level) / 2)
    for structure, frame in cases.groupby("structure", sort=True):
        models = sorted(frame["model"].unique())
        per_model: dict[str, dict[str, np.ndarray]] = {}
        for model in models:
            m = frame[frame["model"] == model]
            if m["case_id"].duplicated().any():
                raise InputError(
                    f"Model {model!r} has more than one row for a case of {structure!r}."
                )
            per_model[model] = _case_vectors(m, index, len(patients))
        _check_same_cases(per_model, str(structure))
        boots = _bootstrap_all(per_model, models, weights)
        for model in models:
            v = per_model[model]
            point = {k: float(a[0]) for k, a in _weighted(v, np.ones((1, len(patients)))).items()}
            boot = boots[model]
            for metric in DETECTION_METRICS:
                num, den = _num_den(metric, v)
                value = point[metric]
                lo, hi = _interval(boot[metric], q)
                method = "bootstrap percentile"
                if proportion_ci != "bootstrap" and metric in ("p_sen", "spe", "t_sen"):
                    lo, hi = _binomial_interval(num, den, ci_level, proportion_ci)
                    method = proportion_ci.replace("_", "-")
                rows.append(
                    {
                        "structure": structure,
                        "model": model,
                        "metric": metric,
                        "value": value,
                        "ci_low": lo,
                        "ci_high": hi,
                        "numerator": num,
                        "denominator": den,
                        "n_patients": int(v["evaluated"].sum()),
                        "ci_method": method,
                    }
                )
            sweep_rows += _sweep(structure, model, m_frame(frame, model), volume_sweep_mm3)
        comparison_rows += _compare(structure, models, per_model, boots, alpha)
        if lesions is not None and len(lesions):
            size_rows += _by_size(
                structure, models, lesions[lesions["structure"] == structure], index, weights, q
            )
        if predicted_lesions is not None and lesions is not None and len(predicted_lesions):
            froc_rows += _froc(
                structure,
                models,
                lesions[lesions["structure"] == structure],
                predicted_lesions[predicted_lesions["structure"] == structure],
                {m: int(per_model[m]["evaluated"].sum()) for m in models},
            )
    return DetectionAnalysis(
        summary=pd.DataFrame(rows),
        by_size=pd.DataFrame(size_rows),
        comparisons=pd.DataFrame(comparison_rows),
        sweep=pd.DataFrame(sweep_rows),
        froc=pd.DataFrame(froc_rows),
    )


_NOT_SCORED = ("missing_prediction", "failed")


def cases_from_scores(
    scores: pd.DataFrame, *, policy: str = "worst"
) -> tuple[pd.DataFrame, list[str]]:
    """Per-(model, case, structure) detection rows from a detection run's long score rows.

    Returns the frame :func:`analyze_detection` takes and notes saying what the policy did
    (with counts). Cases whose reference failed (no values) are always left out, and said so.

    Raises
    ------
    InputError
        For an unknown policy or score rows of no detection run.
    """
    if policy not in DETECTION_POLICIES:
        raise InputError(
            f"Detection policy {policy!r} is invalid: choose one of "
            f"{', '.join(DETECTION_POLICIES)}."
        )
    keys = ["model", "case_id", "structure"]
    wide = scores.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    needed = {"lesions_ref", "lesion_tp", "lesion_fn", "lesion_fp", "patient_call"}
    if not needed <= set(wide.columns):
        raise InputError(
            "These scores hold no detection values (lesions_ref, lesion_tp, ...): score the "
            "predictions with `assay score --task detection` first."
        )
    status = scores.groupby(keys)["status"].first()
    wide = wide.join(status).reset_index()
    notes: list[str] = []
    no_reference = wide["lesions_ref"].isna()
    if no_reference.any():
        notes.append(
            f"{int(no_reference.sum())} (case, tumour type) rows have no reference values "
            "(the reference failed to load) and are left out."
        )
        wide = wide[~no_reference]
    unscored = wide["status"].isin(_NOT_SCORED)
    positive = wide["lesions_ref"] > 0
    out = pd.DataFrame(
        {
            "model": wide["model"],
            "case_id": wide["case_id"],
            "structure": wide["structure"],
            "status": wide["status"],
            "reference_positive": positive,
            "patient_call": wide["patient_call"] > 0,
            "patient_score": wide["patient_score"],
            "tp": wide["lesion_tp"],
            "fn": wide["lesion_fn"],
            "fp": wide["lesion_fp"],
            "n_predicted": wide["lesions_pred"],
            "ignored": wide["lesion_ignored"],
            "dice": wide["dsc"],
            "predicted_volume_ml": wide["retained_volume_ml"],
        }
    )
    n = int(unscored.sum())
    if n and policy == "exclude":
        out = out[~unscored.to_numpy()]
        notes.append(f"{n} (case, tumour type) rows without a usable prediction are left out.")
    elif n and policy == "worst":
        u = unscored.to_numpy()
        pos = positive.to_numpy()
        out.loc[u, "patient_call"] = ~pos[u]
        out.loc[u & pos, "patient_score"] = -math.inf
        out.loc[u & ~pos, "patient_score"] = math.inf
        out.loc[u, "tp"] = 0.0
        out.loc[u, "fn"] = wide.loc[unscored, "lesions_ref"].to_numpy()
        out.loc[u & pos, "dice"] = 0.0
        notes.append(
            f"{n} (case, tumour type) rows without a usable prediction count as wrong "
            "(policy worst): positives missed, controls called positive."
        )
    elif n:
        notes.append(
            f"{n} (case, tumour type) rows without a usable prediction count as empty "
            "predictions (policy empty)."
        )
    return out.reset_index(drop=True), notes


def with_controls(cases: pd.DataFrame, control_scope: str = "any_type") -> pd.DataFrame:
    """A copy of ``cases`` with a boolean ``control`` column: no tumour of any type in the
    patient (``any_type``) or none of the row's type (``type_negative``)."""
    out = cases.copy()
    positive_any = out.groupby("case_id")["reference_positive"].any()
    out["control"] = (
        ~out["case_id"].map(positive_any).astype(bool)
        if control_scope == "any_type"
        else ~out["reference_positive"].astype(bool)
    )
    return out


def m_frame(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """Rows of one model."""
    return frame[frame["model"] == model]


def _case_vectors(m: pd.DataFrame, index: dict[str, int], n: int) -> dict[str, np.ndarray]:
    """Per-patient vectors over all patients (zeros where the patient is not evaluated)."""
    pos_idx = np.array([index[c] for c in m["case_id"]], dtype=np.int64)
    out: dict[str, np.ndarray] = {}

    def put(name: str, values: np.ndarray, fill: float = 0.0) -> None:
        full = np.full(n, fill, dtype=np.float64)
        full[pos_idx] = values
        out[name] = full

    positive = m["reference_positive"].to_numpy(dtype=bool)
    control = m["control"].to_numpy(dtype=bool)
    call = m["patient_call"].to_numpy(dtype=bool)
    evaluated = positive | control
    put("positive", positive)
    put("control", control & ~positive)
    put("evaluated", evaluated)
    put("call", call)
    put("score", m["patient_score"].to_numpy(dtype=np.float64))
    put("tp", np.where(positive, m["tp"].to_numpy(dtype=np.float64), 0.0))
    put("tumours", np.where(positive, (m["tp"] + m["fn"]).to_numpy(dtype=np.float64), 0.0))
    pred_tp = (m["n_predicted"] - m["fp"] - m["ignored"]).to_numpy(dtype=np.float64)
    put("pred_tp", np.where(evaluated, pred_tp, 0.0))
    put("fp", np.where(evaluated, m["fp"].to_numpy(dtype=np.float64), 0.0))
    dice = m["dice"].to_numpy(dtype=np.float64)
    put("dice", np.where(positive, np.nan_to_num(dice, nan=0.0), 0.0))
    return out


def _check_same_cases(per_model: dict[str, dict[str, np.ndarray]], structure: str) -> None:
    first = None
    for model, v in per_model.items():
        key = (v["positive"] > 0, v["control"] > 0)
        if first is None:
            first = (model, key)
        elif not (np.array_equal(first[1][0], key[0]) and np.array_equal(first[1][1], key[1])):
            raise InputError(
                f"Models {first[0]!r} and {model!r} were scored on different patients for "
                f"{structure!r}; paired statistics need every model on the same cases "
                "(score the missing cases, or analyse the common ones)."
            )


def _num_den(metric: str, v: dict[str, np.ndarray]) -> tuple[float, float]:
    pos, ctrl = v["positive"], v["control"]
    if metric == "p_sen":
        return float((pos * v["call"]).sum()), float(pos.sum())
    if metric == "spe":
        return float((ctrl * (1 - v["call"])).sum()), float(ctrl.sum())
    if metric == "t_sen":
        return float(v["tp"].sum()), float(v["tumours"].sum())
    if metric == "dsc":
        return float(v["dice"].sum()), float(pos.sum())
    if metric == "precision":
        return float(v["pred_tp"].sum()), float((v["pred_tp"] + v["fp"]).sum())
    if metric == "fppi":
        return float(v["fp"].sum()), float(v["evaluated"].sum())
    return math.nan, math.nan


#: Per-patient vectors whose weighted sums make every ratio metric.
_SUM_KEYS = (
    "positive",
    "control",
    "pos_call",
    "ctrl_negative",
    "tp",
    "tumours",
    "dice",
    "pred_tp",
    "pred_counted",
    "fp",
    "evaluated",
)


def _sum_vectors(v: dict[str, np.ndarray]) -> list[np.ndarray]:
    pos, ctrl = v["positive"], v["control"]
    derived = {
        "pos_call": pos * v["call"],
        "ctrl_negative": ctrl * (1 - v["call"]),
        "pred_counted": v["pred_tp"] + v["fp"],
    }
    return [derived[k] if k in derived else v[k] for k in _SUM_KEYS]


def _bootstrap_all(
    per_model: dict[str, dict[str, np.ndarray]], models: list[str], weights: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """Bootstrap values of every metric of every model: one matrix product for all the
    weighted sums (the weights are read once), AUC by the compiled kernel."""
    columns = np.column_stack([x for m in models for x in _sum_vectors(per_model[m])])
    sums = weights @ columns  # resamples × (models · keys)
    out = {}
    k = len(_SUM_KEYS)
    for i, model in enumerate(models):
        block = {key: sums[:, i * k + j] for j, key in enumerate(_SUM_KEYS)}
        out[model] = _metrics_from_sums(block, per_model[model], weights)
    return out


def _weighted(v: dict[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric under case weights ``w`` (resamples × patients)."""
    vectors = _sum_vectors(v)
    sums = {key: w @ x for key, x in zip(_SUM_KEYS, vectors, strict=True)}
    return _metrics_from_sums(sums, v, w)


def _metrics_from_sums(
    sums: dict[str, np.ndarray], v: dict[str, np.ndarray], w: np.ndarray
) -> dict[str, np.ndarray]:
    """Ratio metrics from weighted sums (NaN where a denominator is 0), F1 and AUC."""

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    out = {
        "p_sen": ratio(sums["pos_call"], sums["positive"]),
        "spe": ratio(sums["ctrl_negative"], sums["control"]),
        "t_sen": ratio(sums["tp"], sums["tumours"]),
        "dsc": ratio(sums["dice"], sums["positive"]),
        "precision": ratio(sums["pred_tp"], sums["pred_counted"]),
        "fppi": ratio(sums["fp"], sums["evaluated"]),
    }
    pos, ctrl = v["positive"], v["control"]
    p, r = out["precision"], out["t_sen"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["f1"] = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), np.nan)
    out["f1"] = np.where(np.isnan(p) | np.isnan(r), np.nan, out["f1"])
    out["auc"] = weighted_auc(v["score"], pos > 0, ctrl > 0, w)
    return out


def weighted_auc(
    score: np.ndarray, positive: np.ndarray, control: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """AUC of ``score`` (positives vs controls, ties ½) under each row of case weights.

    With weights w, AUC = Σ_{i pos, j ctrl} w_i w_j ([s_i > s_j] + ½[s_i = s_j]) /
    (Σ_pos w · Σ_ctrl w); unit weights give ``sklearn.metrics.roc_auc_score``. NaN where a
    resample has no positive or no control.
    """
    keep = np.flatnonzero(positive | control)
    levels, level = np.unique(score[keep], return_inverse=True)
    w = np.asarray(weights, dtype=np.float64)
    kernel = _auc_kernel()
    return np.asarray(
        kernel(w, keep.astype(np.int64), level.astype(np.int64), positive[keep], len(levels))
    )


@functools.cache
def _auc_kernel() -> Callable[..., np.ndarray]:
    from numba import njit

    @njit(cache=True, nogil=True)
    def auc(
        w: np.ndarray, cols: np.ndarray, level: np.ndarray, is_pos: np.ndarray, n_levels: int
    ) -> np.ndarray:
        n_rows = w.shape[0]
        n = cols.shape[0]
        out = np.empty(n_rows)
        pos_w = np.empty(n_levels)
        neg_w = np.empty(n_levels)
        for b in range(n_rows):
            pos_w[:] = 0.0
            neg_w[:] = 0.0
            for k in range(n):
                if is_pos[k]:
                    pos_w[level[k]] += w[b, cols[k]]
                else:
                    neg_w[level[k]] += w[b, cols[k]]
            below = 0.0
            total = 0.0
            tp = 0.0
            tn = 0.0
            for g in range(n_levels):
                total += pos_w[g] * (below + 0.5 * neg_w[g])
                below += neg_w[g]
                tp += pos_w[g]
            tn = below
            out[b] = total / (tp * tn) if tp > 0 and tn > 0 else np.nan
        return out

    return auc


def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each patient is drawn in each resample (resamples × patients), drawing case
    indices as ``scipy.stats.bootstrap`` does (``rng.integers(0, n, (B, n))``)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, n), dtype=np.float64)
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        flat = (idx + n * np.arange(rows)[:, None]).ravel()
        out[start : start + rows] = np.bincount(flat, minlength=rows * n).reshape(rows, n)
    return out


def _interval(values: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(ok, q)
    return float(lo), float(hi)


def _binomial_interval(k: float, n: float, level: float, method: str) -> tuple[float, float]:
    """Wilson or Clopper–Pearson interval of k successes in n trials (NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    a = 1 - level
    if method == "clopper_pearson":
        lo = 0.0 if k == 0 else float(sps.beta.ppf(a / 2, k, n - k + 1))
        hi = 1.0 if k == n else float(sps.beta.ppf(1 - a / 2, k + 1, n - k))
        return lo, hi
    z = float(sps.norm.ppf(1 - a / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_one_sided(best_correct: np.ndarray, other_correct: np.ndarray) -> float:
    """Exact one-sided McNemar p that the other model is worse than the best.

    Among discordant patients, b = best right / other wrong, c = best wrong / other right;
    p = P(X ≥ b), X ~ Binomial(b + c, ½). 1 when there is no discordant patient.
    """
    b = int((best_correct & ~other_correct).sum())
    c = int((~best_correct & other_correct).sum())
    if b + c == 0:
        return 1.0
    return float(sps.binom.sf(b - 1, b + c, 0.5))


def delong(
    score_a: np.ndarray, score_b: np.ndarray, positive: np.ndarray
) -> tuple[float, float, float, float]:
    """Paired DeLong test of two AUCs on the same patients (DeLong et al. 1988).

    Structural components V10 (per positive) and V01 (per control) from placement values
    ψ(x, y) = [x > y] + ½[x = y]; Var(AUC_a − AUC_b) = (S10_aa + S10_bb − 2 S10_ab)/m +
    (S01_aa + S01_bb − 2 S01_ab)/n with S the sample covariances.

    Returns
    -------
    auc_a, auc_b, z, one-sided p that AUC_a > AUC_b (1 - Φ(z); p = 1 when the variance is 0
    and the AUCs are equal, 0 when it is 0 and AUC_a > AUC_b).
    """
    pos = positive.astype(bool)
    comps = [_placements(s[pos], s[~pos]) for s in (score_a, score_b)]
    (v10a, v01a), (v10b, v01b) = comps
    auc_a, auc_b = float(v10a.mean()), float(v10b.mean())
    m, n = len(v10a), len(v01a)
    if m < 2 or n < 2:
        return auc_a, auc_b, math.nan, math.nan
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    diff = auc_a - auc_b
    if var <= 0:
        return auc_a, auc_b, math.nan, (0.0 if diff > 0 else 1.0)
    z = diff / math.sqrt(var)
    return auc_a, auc_b, z, float(sps.norm.sf(z))


def _placements(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10_i = mean_j ψ(x_i, y_j) and V01_j = mean_i ψ(x_i, y_j), by sorting (O(n log n))."""
    ys = np.sort(y)
    xs = np.sort(x)
    v10 = (np.searchsorted(ys, x, "left") + np.searchsorted(ys, x, "right")) / (2.0 * len(y))
    v01 = 1.0 - (np.searchsorted(xs, y, "left") + np.searchsorted(xs, y, "right")) / (2.0 * len(x))
    return v10, v01


#: Metrics whose co-winners are tested, and how (the leaderboard's columns).
TESTED_METRICS: tuple[str, ...] = ("p_sen", "t_sen", "spe", "auc", "dsc")


def _compare(
    structure: object,
    models: list[str],
    per_model: dict[str, dict[str, np.ndarray]],
    boots: dict[str, dict[str, np.ndarray]],
    alpha: float,
) -> list[dict[str, object]]:
    """Every model against the best of (structure, metric), one-sided, Holm per family.

    P-Sen and Spe: exact McNemar on the positives / controls; AUC: DeLong; T-Sen and DSC
    (no paired closed form for a micro average over clustered tumours): the paired
    bootstrap, p = (#{resamples with best − other ≤ 0} + 1) / (B + 1).
    """
    rows: list[dict[str, object]] = []
    for metric in TESTED_METRICS:
        values = {}
        for model in models:
            v = per_model[model]
            if metric == "auc":
                values[model] = float(
                    weighted_auc(
                        v["score"],
                        v["positive"] > 0,
                        v["control"] > 0,
                        np.ones((1, len(v["score"]))),
                    )[0]
                )
            else:
                num, den = _num_den(metric, v)
                values[model] = num / den if den > 0 else math.nan
        ranked = [m for m in models if not math.isnan(values[m])]
        if not ranked:
            continue
        best = max(ranked, key=lambda m: (values[m], -models.index(m)))
        others = [m for m in ranked if m != best]
        p = []
        test = ""
        for model in others:
            a, b = per_model[best], per_model[model]
            if metric == "auc":
                keep = (a["positive"] + a["control"]) > 0
                _, _, _, pv = delong(a["score"][keep], b["score"][keep], a["positive"][keep] > 0)
                test = "DeLong, one-sided"
            elif metric in ("t_sen", "dsc"):
                diff = boots[best][metric] - boots[model][metric]
                diff = diff[~np.isnan(diff)]
                pv = float((np.count_nonzero(diff <= 0) + 1) / (diff.size + 1))
                test = "paired bootstrap, one-sided"
            else:
                group = a["positive"] > 0 if metric == "p_sen" else a["control"] > 0
                want = metric == "p_sen"
                pv = mcnemar_one_sided(
                    (a["call"][group] > 0) == want, (b["call"][group] > 0) == want
                )
                test = "McNemar exact, one-sided"
            p.append(1.0 if math.isnan(pv) else pv)
        adjusted = holm(np.asarray(p)) if p else np.asarray([])
        rows.append(
            {
                "structure": structure,
                "metric": metric,
                "model": best,
                "best": best,
                "value": values[best],
                "test": test or "—",
                "p": math.nan,
                "p_holm": math.nan,
                "significant": False,
                "winner": True,
            }
        )
        for model, pv, adj in zip(others, p, adjusted, strict=True):
            rows.append(
                {
                    "structure": structure,
                    "metric": metric,
                    "model": model,
                    "best": best,
                    "value": values[model],
                    "test": test,
                    "p": pv,
                    "p_holm": float(adj),
                    "significant": bool(adj < alpha),
                    "winner": bool(adj >= alpha),
                }
            )
    return rows


def _sweep(
    structure: object, model: str, m: pd.DataFrame, thresholds: Sequence[float]
) -> list[dict[str, object]]:
    if "predicted_volume_ml" not in m.columns:
        return []
    vol = m["predicted_volume_ml"].to_numpy(dtype=np.float64) * 1000.0
    pos = m["reference_positive"].to_numpy(dtype=bool)
    ctrl = m["control"].to_numpy(dtype=bool) & ~pos
    rows = []
    for t in thresholds:
        call = (vol > 0) & (vol >= t)
        rows.append(
            {
                "structure": structure,
                "model": model,
                "threshold_mm3": float(t),
                "p_sen": float(call[pos].mean()) if pos.any() else math.nan,
                "spe": float((~call[ctrl]).mean()) if ctrl.any() else math.nan,
            }
        )
    return rows


def _by_size(
    structure: object,
    models: list[str],
    lesions: pd.DataFrame,
    index: dict[str, int],
    weights: np.ndarray,
    q: tuple[float, float],
) -> list[dict[str, object]]:
    """T-Sen per diameter stratum and the < 20 mm row, with paired bootstrap CIs (all
    strata of all models from one matrix product)."""
    counted = lesions[lesions["counted"].astype(bool)]
    n = weights.shape[1]
    strata = [*SIZE_BIN_LABELS, f"<{SMALL_TUMOUR_MM:g} mm"]
    edges = np.asarray(SIZE_BIN_EDGES_MM)
    keys: list[tuple[str, str]] = []
    columns: list[np.ndarray] = []
    for model in models:
        m = counted[counted["model"] == model]
        diameter = m["diameter_mm"].to_numpy(dtype=np.float64)
        bins = np.searchsorted(edges, diameter, side="right")  # == size_bin's rule
        idx = np.array([index[c] for c in m["case_id"]], dtype=np.int64)
        detected = m["detected"].to_numpy(dtype=np.float64)
        for k, stratum in enumerate(strata):
            sel = diameter < SMALL_TUMOUR_MM if k == len(SIZE_BIN_LABELS) else bins == k
            columns.append(np.bincount(idx[sel], weights=detected[sel], minlength=n))
            columns.append(np.bincount(idx[sel], minlength=n).astype(np.float64))
            keys.append((model, stratum))
    if not columns:
        return []
    matrix = np.column_stack(columns)
    sums = weights @ matrix
    totals = matrix.sum(axis=0)
    rows: list[dict[str, object]] = []
    for i, (model, stratum) in enumerate(keys):
        found, den = float(totals[2 * i]), float(totals[2 * i + 1])
        wf, wt = sums[:, 2 * i], sums[:, 2 * i + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.where(wt > 0, wf / np.where(wt > 0, wt, 1.0), np.nan)
        lo, hi = _interval(boot, q) if den else (math.nan, math.nan)
        rows.append(
            {
                "structure": structure,
                "model": model,
                "size_bin": stratum,
                "value": found / den if den else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "detected": int(found),
                "tumours": int(den),
            }
        )
    return rows


def _froc(
    structure: object,
    models: list[str],
    lesions: pd.DataFrame,
    predicted: pd.DataFrame,
    n_patients: dict[str, int],
) -> list[dict[str, object]]:
    """Sensitivity at FPPI 1/8 … 8 and their mean, over confidence thresholds.

    At threshold t a tumour is found when a matched prediction has confidence ≥ t, and the
    false positives are the FP predictions with confidence ≥ t; the sensitivity at FPPI f is
    the largest sensitivity of a threshold with FPPI ≤ f (0 when none).
    """
    rows: list[dict[str, object]] = []
    for model in models:
        ref = lesions[(lesions["model"] == model) & lesions["counted"].astype(bool)]
        pred = predicted[predicted["model"] == model]
        conf_ref = ref["confidence"].to_numpy(dtype=np.float64)
        if ref.empty or (np.isnan(conf_ref).all() and not ref["detected"].any()):
            continue
        conf_fp = pred.loc[pred["status"] == "fp", "confidence"].to_numpy(dtype=np.float64)
        if np.isnan(conf_fp).any() or np.isnan(conf_ref[ref["detected"].to_numpy(bool)]).any():
            continue  # masks without probabilities: no FROC
        thresholds = np.unique(np.concatenate([conf_ref[~np.isnan(conf_ref)], conf_fp]))[::-1]
        n_t = len(ref)
        patients = max(n_patients[model], 1)
        sens = np.array([(conf_ref >= t).sum() / n_t for t in thresholds])
        fppi = np.array([(conf_fp >= t).sum() / patients for t in thresholds])
        points = []
        for f in FROC_FPPI:
            ok = fppi <= f
            points.append(float(sens[ok].max()) if ok.any() else 0.0)
        row: dict[str, object] = {"structure": structure, "model": model}
        row.update({f"sens@{f:g}": s for f, s in zip(FROC_FPPI, points, strict=True)})
        row["froc_average"] = float(np.mean(points))
        found = np.where(ref["detected"].to_numpy(bool), conf_ref, 0.0)
        row["average_precision"] = lesion_average_precision(found, conf_fp)
        rows.append(row)
    return rows


def lesion_average_precision(tumour_scores: np.ndarray, fp_scores: np.ndarray) -> float:
    """Lesion-level average precision, as PI-CAI computes it.

    ``tumour_scores``: per reference tumour, the confidence of the prediction matched to it
    (0 when missed); ``fp_scores``: the confidences of the false positives. With P(t) and
    R(t) the precision and recall of the predictions with confidence ≥ t, AP = Σ_t (R(t) −
    R(t⁺)) · P(t) over the distinct confidences t > 0 in descending order (a step integral;
    missed tumours only count in the recall's denominator). NaN without tumours.
    """
    n = len(tumour_scores)
    if n == 0:
        return math.nan
    scores = np.concatenate([tumour_scores, fp_scores])
    is_tumour = np.r_[np.ones(n, dtype=bool), np.zeros(len(fp_scores), dtype=bool)]
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], is_tumour[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    keep = s[last] > 0
    precision = tp[keep] / (tp[keep] + fp[keep])
    recall = tp[keep] / n
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
