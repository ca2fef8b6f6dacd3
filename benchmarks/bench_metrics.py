"""Speed and agreement of assay's metric engine against DeepMind, MONAI and MedPy.

A CT-sized case (512 x 512 x 400 voxels, spacing 0.8 x 0.8 x 1.5 mm) holds two reference
structures, liver-sized (about 1.5 l) and gallbladder-sized (about 40 ml). Each prediction has
realistic errors: the boundary is moved by a smooth displacement field of ±1-2 voxels, and a
small false-positive blob is added 4 cm away from the structure, which gives Dice ≈ 0.9-0.97.

For each structure the script times (``time.perf_counter``; best of ``--repeats`` runs for
anything that takes under 5 s, a single run otherwise):

* assay, every metric of one structure in one call: Dice, surfel NSD at 1 and 2 mm, HD, HD95,
  ASSD and MASD (``Profile("bench", tolerance_mm=2.0, extra_tolerances_mm=(1.0,))``), and
  separately the ``touchstone`` profile (voxel NSD);
* DeepMind ``surface_distance``: ``compute_surface_distances``, ``compute_surface_dice_at_
  tolerance`` at 1 and 2 mm, ``compute_robust_hausdorff`` at 95 and 100,
  ``compute_average_surface_distance`` and ``compute_dice_coefficient``;
* MONAI on CPU (bool tensors of shape [1, 1, X, Y, Z]): ``compute_dice``,
  ``compute_surface_dice`` at 1 and 2 mm, ``compute_hausdorff_distance`` (100th and 95th
  percentile) and ``compute_average_surface_distance(symmetric=True)``;
* MedPy: ``dc``, ``hd``, ``hd95`` and ``assd``, each called as users call it (each recomputes
  its own distance transforms). MedPy 0.5's ``assd`` is the mean of the pooled distances of
  both directions (assay's ``assd``); MedPy 0.4 and older averaged the two directed means
  (assay's ``masd``); the check follows the installed version.

The values each library shares with assay are checked against assay's (the variant that
library uses: surfel NSD and area-weighted HD95 for DeepMind, voxel NSD, max-of-directions
HD95 and pooled ASSD for MONAI, pooled HD95 for MedPy). The speed
goals (≥ 5x DeepMind, ≥ 15x MONAI, ≥ 50x MedPy, with identical numbers) are checked against
the time of the full ``bench`` profile. Finally the peak RSS of an assay-only run on the liver
case is measured in a fresh subprocess that loads the two masks from ``.npy`` files.

**Error profiles** (issue 10 §1). The cases above move boundaries by ±2 voxels, where almost
every surface point has a near neighbour on the other surface. Out-of-distribution predictions
have large errors, so the liver reference is also scored (assay ``bench`` profile vs DeepMind,
values required identical to within 1e-12, the time ratio printed per profile) against:

* ``boundary ±2``: the smooth ±2-voxel boundary field alone;
* ``noise + blob 14 cm``: that field plus a false-positive ball (r = 8 mm) 14 cm beyond the
  structure's bounding box;
* ``shift 12``: the whole structure shifted by 12 voxels along axis 0;
* ``half missed``: the half of the structure beyond the middle of axis 0 removed;
* ``shift k``, k = 2, 4, 8, 16 (misregistration sweep; with ``shift 12`` above).

Usage::

    .venv/bin/python benchmarks/bench_metrics.py [--quick] [--skip-medpy] [--repeats N]
        [--profiles-only]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from assay.metrics import (
    PROFILES,
    Profile,
    bounding_box,
    hausdorff,
    hausdorff_percentile,
    nearest_distances,
    nsd,
    structure_metrics,
    surface_distances,
)

BoolArray = NDArray[np.bool_]
Spacing = tuple[float, float, float]

BENCH = Profile("bench", tolerance_mm=2.0, extra_tolerances_mm=(1.0,))
TOUCHSTONE = PROFILES["touchstone"]
TOLERANCES_MM = (1.0, 2.0)
GOALS = {"DeepMind": 5.0, "MONAI": 15.0, "MedPy": 50.0}
CHEAP_S = 5.0  # runs shorter than this are repeated, the best time is kept
FP_GAP_MM = 40.0  # distance between a structure's bounding box and its false-positive blob
FP_RADIUS_MM = {"liver": 8.0, "gallbladder": 4.0}
FAR_GAP_MM = 140.0  # the far false positive of the error profiles
SWEEP_VOXELS = (2, 4, 8, 12, 16)
PROFILE_GOAL = 10.0  # DeepMind time / assay time on every error profile

# Largest |assay - library| accepted as "the same number", per library.
TOLERANCE = {"DeepMind": 1e-12, "MONAI": 1e-6, "MedPy": 1e-9}


# ---------------------------------------------------------------------------------------------
# Synthetic case
# ---------------------------------------------------------------------------------------------


def reference_masks(
    shape: tuple[int, int, int], spacing: Spacing, seed: int
) -> tuple[dict[str, BoolArray], str]:
    """Liver- and gallbladder-sized reference masks, and where they come from."""
    try:
        from assay.synthetic import make_phantom
    except ImportError:
        return _ellipsoid_masks(shape, spacing, seed), "deformed ellipsoids (built-in)"
    phantom = make_phantom(seed, shape=shape, spacing_mm=spacing)
    masks = {name: phantom.mask(name) for name in ("liver", "gallbladder")}
    return masks, f"assay.synthetic.make_phantom(seed={seed})"


def _ellipsoid_masks(
    shape: tuple[int, int, int], spacing: Spacing, seed: int
) -> dict[str, BoolArray]:
    """Smoothly deformed ellipsoids of about 1.5 l and 40 ml, centred in the field of view."""
    rng = np.random.default_rng(seed)
    # centre (mm, relative to the centre of the field of view) and semi-axes (mm)
    organs = {
        "liver": ((-50.0, 10.0, 20.0), (100.0, 75.0, 48.0)),
        "gallbladder": ((-40.0, 70.0, -25.0), (20.0, 30.0, 16.0)),
    }
    masks = {}
    for name, (centre, radii) in organs.items():
        mask = np.zeros(shape, dtype=bool)
        lo = [
            max(0, int((n - 1) / 2 + (c - 1.2 * r) / s))
            for n, c, r, s in zip(shape, centre, radii, spacing, strict=True)
        ]
        hi = [
            min(n, int((n - 1) / 2 + (c + 1.2 * r) / s) + 2)
            for n, c, r, s in zip(shape, centre, radii, spacing, strict=True)
        ]
        axes = [
            ((np.arange(a, b) - (n - 1) / 2) * s - c) / r
            for a, b, n, s, c, r in zip(lo, hi, shape, spacing, centre, radii, strict=True)
        ]
        x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
        rho = np.sqrt(x * x + y * y + z * z)
        noise = ndimage.gaussian_filter(rng.standard_normal(rho.shape), sigma=8.0)
        noise *= 0.08 / noise.std()
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = rho < 1.0 + noise
        masks[name] = mask
    return masks


def simulate_prediction(
    ref: BoolArray,
    spacing: Spacing,
    rng: np.random.Generator,
    fp_radius_mm: float,
    gap_mm: float = FP_GAP_MM,
) -> BoolArray:
    """Reference with its boundary moved by a smooth ±2-voxel field, plus a false positive
    ball ``gap_mm`` beyond the bounding box along axis 0 (none when ``fp_radius_mm`` is 0)."""
    box = bounding_box(ref)
    assert box is not None
    margin = 6
    grown = tuple(
        slice(max(0, b.start - margin), min(n, b.stop + margin))
        for b, n in zip(box, ref.shape, strict=True)
    )
    r = ref[grown]
    # signed distance in voxels, boundary at 0, positive inside
    sdf = np.where(
        r, ndimage.distance_transform_edt(r) - 0.5, 0.5 - ndimage.distance_transform_edt(~r)
    )
    field = ndimage.gaussian_filter(rng.standard_normal(r.shape).astype(np.float32), sigma=6.0)
    field = np.clip(field * (1.3 / field.std()), -2.0, 2.0)
    pred = ref.copy()
    pred[grown] = sdf + field > 0
    if fp_radius_mm <= 0:
        return pred
    # false-positive ball, gap_mm beyond the bounding box along axis 0
    centre = [
        box[0].stop - 1 + (gap_mm + fp_radius_mm) / spacing[0],
        (box[1].start + box[1].stop - 1) / 2,
        (box[2].start + box[2].stop - 1) / 2,
    ]
    half = [math.ceil(fp_radius_mm / s) + 1 for s in spacing]
    sl = tuple(
        slice(max(0, int(c) - h), min(n, int(c) + h + 1))
        for c, h, n in zip(centre, half, ref.shape, strict=True)
    )
    axes = (
        (np.arange(s.start, s.stop) - c) * d for s, c, d in zip(sl, centre, spacing, strict=True)
    )
    grid = np.meshgrid(
        *axes,
        indexing="ij",
        sparse=True,
    )
    pred[sl] |= sum(g * g for g in grid) <= fp_radius_mm**2
    return pred


def shifted(ref: BoolArray, voxels: int, axis: int = 0) -> BoolArray:
    """``ref`` translated by ``voxels`` along ``axis`` (what leaves the grid is lost)."""
    out = np.zeros_like(ref)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis] = slice(0, ref.shape[axis] - voxels)
    dst[axis] = slice(voxels, None)
    out[tuple(dst)] = ref[tuple(src)]
    return out


def half_missed(ref: BoolArray) -> BoolArray:
    """``ref`` without the part beyond the middle of its bounding box along axis 0."""
    box = bounding_box(ref)
    assert box is not None
    out = ref.copy()
    out[(box[0].start + box[0].stop) // 2 :] = False
    return out


def error_profiles(
    ref: BoolArray, spacing: Spacing, seed: int, fp_radius_mm: float
) -> dict[str, BoolArray]:
    """Predictions of ``ref`` with small and large errors (module docstring)."""
    preds = {
        "boundary ±2": simulate_prediction(ref, spacing, np.random.default_rng(seed + 2), 0.0),
        "noise + blob 14 cm": simulate_prediction(
            ref, spacing, np.random.default_rng(seed + 3), fp_radius_mm, FAR_GAP_MM
        ),
        "half missed": half_missed(ref),
    }
    for k in SWEEP_VOXELS:
        preds[f"shift {k}"] = shifted(ref, k)
    return preds


# ---------------------------------------------------------------------------------------------
# Timed runs
# ---------------------------------------------------------------------------------------------


def timed(fn: Callable[[], dict[str, float]], repeats: int) -> tuple[float, dict[str, float]]:
    """Best wall time of ``fn`` (one run only when it takes over CHEAP_S) and its values."""
    t0 = time.perf_counter()
    values = fn()
    best = time.perf_counter() - t0
    if best < CHEAP_S:
        for _ in range(repeats - 1):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return best, values


def run_assay(pred: BoolArray, ref: BoolArray, spacing: Spacing, profile: Profile) -> dict:
    return dict(structure_metrics(pred, ref, spacing, profile).values)


def run_deepmind(pred: BoolArray, ref: BoolArray, spacing: Spacing) -> dict[str, float]:
    import surface_distance as sdm

    dists = sdm.compute_surface_distances(ref, pred, spacing)
    values = {"dsc": float(sdm.compute_dice_coefficient(ref, pred))}
    for t in TOLERANCES_MM:
        values[f"nsd@{t:g}mm"] = float(sdm.compute_surface_dice_at_tolerance(dists, t))
    values["hd95"] = float(sdm.compute_robust_hausdorff(dists, 95))
    values["hd"] = float(sdm.compute_robust_hausdorff(dists, 100))
    asd_ref_to_pred, asd_pred_to_ref = sdm.compute_average_surface_distance(dists)
    values["asd_gt_to_pred"] = float(asd_ref_to_pred)
    values["asd_pred_to_gt"] = float(asd_pred_to_ref)
    return values


def run_monai(pred_t: Any, ref_t: Any, spacing: Spacing) -> dict[str, float]:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    kw: dict[str, Any] = {"include_background": True, "spacing": spacing}
    values = {"dsc": float(compute_dice(pred_t, ref_t, include_background=True))}
    for t in TOLERANCES_MM:
        values[f"nsd@{t:g}mm"] = float(compute_surface_dice(pred_t, ref_t, [t], **kw))
    values["hd"] = float(compute_hausdorff_distance(pred_t, ref_t, **kw))
    values["hd95"] = float(compute_hausdorff_distance(pred_t, ref_t, percentile=95, **kw))
    values["assd"] = float(compute_average_surface_distance(pred_t, ref_t, symmetric=True, **kw))
    return values


def run_medpy(pred: BoolArray, ref: BoolArray, spacing: Spacing) -> dict[str, float]:
    from medpy.metric.binary import assd, dc, hd, hd95

    return {
        "dsc": float(dc(pred, ref)),
        "hd": float(hd(pred, ref, spacing)),
        "hd95": float(hd95(pred, ref, spacing)),
        "assd": float(assd(pred, ref, spacing)),
    }


def assay_expected(
    pred: BoolArray, ref: BoolArray, spacing: Spacing, bench: dict[str, float]
) -> dict[str, dict[str, float]]:
    """assay's value of every quantity a library reports, in that library's variant."""
    box = bounding_box(pred | ref)
    assert box is not None
    sd = surface_distances(pred, ref, spacing, box=box, surfels=True)
    deepmind = {"dsc": bench["dsc"], "nsd@1mm": bench["nsd@1mm"], "nsd@2mm": bench["nsd"]}
    deepmind["hd95"] = hausdorff_percentile(sd, 95.0, "surfel")
    deepmind["hd"] = hausdorff_percentile(sd, 100.0, "surfel")
    monai = {"dsc": bench["dsc"], "hd": hausdorff(sd), "assd": bench["assd"]}
    monai.update({f"nsd@{t:g}mm": nsd(sd, t, "voxel") for t in TOLERANCES_MM})
    monai["hd95"] = hausdorff_percentile(sd, 95.0, "max")
    medpy = {
        "dsc": bench["dsc"],
        "hd": bench["hd"],
        "hd95": hausdorff_percentile(sd, 95.0, "pooled"),
        # MedPy >= 0.5 averages the pooled distances of both directions (assay's assd);
        # MedPy <= 0.4 averaged the two directed means (assay's masd).
        "assd": bench["assd"] if _medpy_assd_is_pooled() else bench["masd"],
    }
    return {"DeepMind": deepmind, "MONAI": monai, "MedPy": medpy}


def _medpy_assd_is_pooled() -> bool:
    import inspect

    from medpy.metric import binary

    return "concatenate" in inspect.getsource(binary.assd)


def compare(expected: dict[str, float], got: dict[str, float], tol: float) -> tuple[bool, float]:
    """Whether every shared value agrees within ``tol``, and the largest |difference|."""
    worst = 0.0
    for key, want in expected.items():
        diff = abs(got[key] - want)
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
    return worst <= tol, worst


# ---------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------

_RSS_CHILD = """
import json, resource, sys
import numpy as np
from assay.metrics import Profile, structure_metrics

def peak_kib():
    # VmHWM: peak RSS of this process image. ru_maxrss is not used on Linux because execve
    # carries the forking parent's RSS over into it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

pred, ref = np.load(sys.argv[1]), np.load(sys.argv[2])
spacing = tuple(json.loads(sys.argv[3]))
before = peak_kib()
structure_metrics(pred, ref, spacing, Profile("bench", tolerance_mm=2.0,
                  extra_tolerances_mm=(1.0,)))
after = peak_kib()
print(json.dumps({"before_kib": before, "peak_kib": after, "mask_bytes": pred.nbytes,
                  "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss(pred: BoolArray, ref: BoolArray, spacing: Spacing) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh interpreter computing all metrics of one structure."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{n}.npy") for n in ("pred", "ref")]
        np.save(paths[0], pred)
        np.save(paths[1], ref)
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, *paths, json.dumps(list(spacing))],
            check=True,
            capture_output=True,
            text=True,
        )
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "inputs_mib": 2 * rec["mask_bytes"] / 2**20,
        "before_mib": rec["before_kib"] / 1024,
        "peak_mib": rec["peak_kib"] / 1024,
        "ru_maxrss_mib": rec["ru_maxrss_kib"] / 1024,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} logical CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256x200 volume (smoke run)")
    parser.add_argument("--skip-medpy", action="store_true", help="leave MedPy out (slow)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of cheap runs (3)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and prediction seed (0)")
    parser.add_argument(
        "--profiles-only", action="store_true", help="only the error profiles vs DeepMind"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # MONAI/torch import-time deprecation noise

    import torch

    if args.quick:
        shape, spacing = (256, 256, 200), (1.6, 1.6, 3.0)
    else:
        shape, spacing = (512, 512, 400), (0.8, 0.8, 1.5)
    print(f"date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"volume: {shape[0]}x{shape[1]}x{shape[2]} voxels, spacing {spacing} mm")

    t0 = time.perf_counter()
    refs, source = reference_masks(shape, spacing, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    cases = {
        name: (simulate_prediction(ref, spacing, rng, FP_RADIUS_MM[name]), ref)
        for name, ref in refs.items()
    }
    print(f"structures: {source}; case built in {time.perf_counter() - t0:.1f} s")
    voxel_ml = math.prod(spacing) / 1000
    for name, (pred, ref) in cases.items():
        print(
            f"  {name:<12} ref {np.count_nonzero(ref) * voxel_ml:7.1f} ml, "
            f"pred {np.count_nonzero(pred) * voxel_ml:7.1f} ml"
        )
    print()

    import numba

    from assay.metrics._edt import warm_up

    t_warm = time.perf_counter()
    warm_up()
    one = np.zeros((4, 4, 4), dtype=bool)
    one[0, 0, 0] = True
    nearest_distances(one, one[::-1].copy(), spacing)  # the shell kernels
    print(f"numba kernels compiled or loaded from cache in {time.perf_counter() - t_warm:.1f} s")
    layer = numba.threading_layer()  # type: ignore[attr-defined]
    print(f"numba: {numba.get_num_threads()} threads, threading layer {layer}")
    ok_profiles = run_error_profiles(refs["liver"], spacing, args.seed, args.repeats)
    if args.profiles_only:
        return 0 if ok_profiles else 1

    rows: list[tuple[str, str, float, float, str]] = []
    goal_lines: list[str] = []
    mismatches: list[str] = []
    for name, (pred, ref) in cases.items():
        t_bench, bench = timed(lambda p=pred, r=ref: run_assay(p, r, spacing, BENCH), args.repeats)
        t_touch, touch = timed(
            lambda p=pred, r=ref: run_assay(p, r, spacing, TOUCHSTONE), args.repeats
        )
        expected = assay_expected(pred, ref, spacing, bench)
        print(f"[{name}] assay bench:      " + _fmt(bench))
        print(f"[{name}] assay touchstone: " + _fmt(touch))
        rows.append(("assay (all metrics)", name, t_bench, 1.0, "-"))
        rows.append(("assay touchstone", name, t_touch, t_touch / t_bench, "-"))

        pred_t = torch.from_numpy(pred)[None, None]
        ref_t = torch.from_numpy(ref)[None, None]
        runs: dict[str, Callable[[], dict[str, float]]] = {
            "DeepMind": lambda p=pred, r=ref: run_deepmind(p, r, spacing),
            "MONAI": lambda p=pred_t, r=ref_t: run_monai(p, r, spacing),
        }
        if not args.skip_medpy:
            runs["MedPy"] = lambda p=pred, r=ref: run_medpy(p, r, spacing)
        for lib, fn in runs.items():
            seconds, values = timed(fn, args.repeats)
            ok, worst = compare(expected[lib], values, TOLERANCE[lib])
            ratio = seconds / t_bench
            print(f"[{name}] {lib + ':':<17} " + _fmt(values))
            print(f"[{name}] {'assay as ' + lib + ':':<17} " + _fmt(expected[lib]))
            rows.append((lib, name, seconds, ratio, f"{'yes' if ok else 'NO'} ({worst:.1e})"))
            if not ok:
                bad = [
                    f"{k}: assay {v!r} vs {values[k]!r}"
                    for k, v in expected[lib].items()
                    if not abs(values[k] - v) <= TOLERANCE[lib]
                ]
                mismatches.append(f"{lib} / {name}: " + "; ".join(bad))
            met = ok and ratio >= GOALS[lib]
            goal_lines.append(
                f"  {lib:<8} {name:<12} goal >= {GOALS[lib]:g}x: measured {ratio:.1f}x, "
                f"values {'identical' if ok else 'DIFFER'} -> {'MET' if met else 'NOT MET'}"
            )
        del pred_t, ref_t
        print()

    print("| library | structure | seconds | ratio (lib / assay) | values match (max abs diff) |")
    print("|---|---|---:|---:|---|")
    for lib, name, seconds, ratio, match in rows:
        print(f"| {lib} | {name} | {seconds:.3f} | {ratio:.1f} | {match} |")
    print()
    print("Goals (library time / assay all-metrics time, identical numbers):")
    print("\n".join(goal_lines))
    if mismatches:
        print("\nMismatches:")
        print("\n".join(f"  {m}" for m in mismatches))

    pred, ref = cases["liver"]
    rss = peak_rss(pred, ref, spacing)
    print(
        f"\nPeak RSS, assay only, liver, fresh subprocess: {rss['peak_mib']:.0f} MiB "
        f"(before the call: {rss['before_mib']:.0f} MiB, of which the two bool masks are "
        f"{rss['inputs_mib']:.0f} MiB; increase during the call: "
        f"{rss['peak_mib'] - rss['before_mib']:.0f} MiB)"
    )
    print(
        f"  (VmHWM of the child; its ru_maxrss reads {rss['ru_maxrss_mib']:.0f} MiB because on "
        "Linux execve carries over the RSS of the forking benchmark process)"
    )
    return 0


def run_error_profiles(ref: BoolArray, spacing: Spacing, seed: int, repeats: int) -> bool:
    """Time assay vs DeepMind on every error profile; True when all values are identical."""
    t0 = time.perf_counter()
    preds = error_profiles(ref, spacing, seed, FP_RADIUS_MM["liver"])
    print(f"error profiles of the liver built in {time.perf_counter() - t0:.1f} s")
    rows = []
    all_ok = True
    for name, pred in preds.items():
        t_assay, bench = timed(lambda p=pred: run_assay(p, ref, spacing, BENCH), repeats)
        t_dm, values = timed(lambda p=pred: run_deepmind(p, ref, spacing), repeats)
        expected = assay_expected(pred, ref, spacing, bench)["DeepMind"]
        ok, worst = compare(expected, values, TOLERANCE["DeepMind"])
        all_ok &= ok
        dsc, hd = bench["dsc"], bench["hd"]
        rows.append((name, dsc, hd, t_assay, t_dm, t_dm / t_assay, ok, worst))
        print(
            f"  {name:<20} dsc={dsc:.4f} hd={hd:7.2f} mm  assay {t_assay:.3f} s  DeepMind "
            f"{t_dm:.3f} s  ratio {t_dm / t_assay:5.1f}x  identical: {ok} ({worst:.1e})"
        )
    print()
    print("| prediction | Dice | HD (mm) | assay s | DeepMind s | DeepMind / assay | identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, dsc, hd, ta, td, ratio, ok, worst in rows:
        same = f"{'yes' if ok else 'NO'} ({worst:.1e})"
        print(f"| {name} | {dsc:.3f} | {hd:.1f} | {ta:.3f} | {td:.3f} | {ratio:.1f}x | {same} |")
    worst_ratio = min(r[5] for r in rows)
    met = all_ok and worst_ratio >= PROFILE_GOAL
    print(
        f"\nError profiles: goal >= {PROFILE_GOAL:g}x DeepMind on every profile: worst "
        f"{worst_ratio:.1f}x, values {'identical' if all_ok else 'DIFFER'} -> "
        f"{'MET' if met else 'NOT MET'}\n"
    )
    assert all_ok, "assay and DeepMind values differ on an error profile"
    return all_ok


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in values.items() if not k.startswith("volume"))


if __name__ == "__main__":
    raise SystemExit(main())
