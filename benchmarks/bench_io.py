"""Time reading a CT-sized ``.nii.gz`` label map: stock gzip, ISA-L, SimpleITK and assay.

One 512 x 512 x 400 uint8 label map with a few organ blobs is written with nibabel to a
temporary directory, then read back (best of ``--repeats`` runs, after one warm-up read so the
file is in the page cache) by:

(a) ``np.asanyarray(nib.load(path).dataobj)`` — nibabel with Python's stock ``gzip``;
(b) the file's bytes, ``isal.igzip.decompress``, ``nibabel.Nifti1Image.from_bytes`` and
    ``np.asanyarray(img.dataobj)``;
(c) ``SimpleITK.ReadImage`` and ``SimpleITK.GetArrayViewFromImage`` (array in z, y, x order);
(d) ``assay.io.read_image`` — the bytes, ISA-L's ``isal_zlib`` stream decompression, the
    header parsed by nibabel and a zero-copy array view on the decompressed bytes.

Every path must return the array that was written. With ``--with-image`` the same is done for
the phantom's int16 CT image (noisy, so it compresses far less than a label map).

Usage::

    .venv/bin/python benchmarks/bench_io.py [--repeats N] [--quick] [--with-image]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import isal
import isal.igzip
import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813 (conventional alias)
from numpy.typing import NDArray
from scipy import ndimage


def phantom_volumes(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int
) -> tuple[NDArray[np.uint8], NDArray[np.int16], NDArray[np.float64], str]:
    """A uint8 label map with organ blobs, an int16 CT-like image, the affine, and a source."""
    try:
        from assay.synthetic import make_phantom
    except ImportError:
        pass
    else:
        ph = make_phantom(seed, shape=shape, spacing_mm=spacing)
        return ph.labels, ph.image, ph.affine, f"assay.synthetic.make_phantom(seed={seed})"
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    # (centre, semi-axes) in mm relative to the centre of the field of view
    blobs = [
        ((-50.0, 10.0, 20.0), (100.0, 75.0, 48.0)),  # liver
        ((90.0, -20.0, 40.0), (45.0, 30.0, 50.0)),  # spleen
        ((-70.0, -60.0, -30.0), (28.0, 30.0, 50.0)),  # right kidney
        ((70.0, -60.0, -20.0), (28.0, 30.0, 50.0)),  # left kidney
        ((-40.0, 70.0, -25.0), (20.0, 30.0, 16.0)),  # gallbladder
    ]
    for value, (centre, radii) in enumerate(blobs, start=1):
        axes = [
            ((np.arange(n) - (n - 1) / 2) * s - c) / r
            for n, s, c, r in zip(shape, spacing, centre, radii, strict=True)
        ]
        box = tuple(np.flatnonzero(np.abs(a) < 1.2) for a in axes)
        sl = tuple(slice(int(b[0]), int(b[-1]) + 1) for b in box)
        x, y, z = np.meshgrid(*(a[s] for a, s in zip(axes, sl, strict=True)), indexing="ij")
        noise = ndimage.gaussian_filter(rng.standard_normal(x.shape), sigma=8.0)
        inside = np.sqrt(x * x + y * y + z * z) < 1.0 + noise * (0.08 / noise.std())
        region = labels[sl]
        region[inside & (region == 0)] = value
    affine = np.diag([*spacing, 1.0])
    hu = np.array([-100, 60, 50, 150, 150, 10], dtype=np.float32)[labels]
    image = (hu + rng.normal(0.0, 12.0, shape).astype(np.float32)).astype(np.int16)
    return labels, image, affine, "deformed ellipsoids (built-in)"


Reader = Callable[[str], tuple[NDArray[Any], Any]]


def read_nibabel(path: str) -> tuple[NDArray[Any], Any]:
    return np.asanyarray(nib.load(path).dataobj), None


def read_isal(path: str) -> tuple[NDArray[Any], Any]:
    with open(path, "rb") as f:
        raw = isal.igzip.decompress(f.read())
    img = nib.Nifti1Image.from_bytes(raw)
    return np.asanyarray(img.dataobj), None


def read_sitk(path: str) -> tuple[NDArray[Any], Any]:
    img = sitk.ReadImage(path)
    # the view borrows the image's buffer: return the image too, to keep it alive;
    # (z, y, x) -> (x, y, z) by a free transpose
    return sitk.GetArrayViewFromImage(img).T, img


def read_assay(path: str) -> tuple[NDArray[Any], Any]:
    from assay.io import read_image

    return read_image(path).array, None


def best_time(read: Reader, path: str, repeats: int) -> tuple[float, NDArray[Any], Any]:
    """Best time of ``repeats`` reads after one warm-up read; the last array and its owner."""
    out = read(path)  # warm-up (page cache, lazy imports)
    best = float("inf")
    for _ in range(repeats):
        del out
        t0 = time.perf_counter()
        out = read(path)
        best = min(best, time.perf_counter() - t0)
    return best, out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed reads per method (5)")
    parser.add_argument("--quick", action="store_true", help="256x256x200 volume (smoke run)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (0)")
    parser.add_argument("--with-image", action="store_true", help="also the int16 CT image")
    args = parser.parse_args(argv)

    if args.quick:
        shape, spacing = (256, 256, 200), (1.6, 1.6, 3.0)
    else:
        shape, spacing = (512, 512, 400), (0.8, 0.8, 1.5)
    print(f"date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(
        f"machine: {platform.system()} {platform.release()}, {os.cpu_count()} logical CPUs, "
        f"Python {platform.python_version()}, nibabel {nib.__version__}, "
        f"isal {getattr(isal, '__version__', '?')}, SimpleITK {sitk.Version.VersionString()} "
        f"({sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads)"
    )
    labels, image, affine, source = phantom_volumes(shape, spacing, args.seed)
    volumes: dict[str, NDArray[Any]] = {"label map": labels}
    if args.with_image:
        volumes["CT image"] = image
    del image
    methods: dict[str, Reader] = {
        "(a) nibabel, stock gzip": read_nibabel,
        "(b) isal.igzip + Nifti1Image.from_bytes": read_isal,
        "(c) SimpleITK ReadImage + GetArrayView": read_sitk,
        "(d) assay.io.read_image": read_assay,
    }
    rows = []
    for kind, volume in volumes.items():
        times = {}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "volume.nii.gz")
            t0 = time.perf_counter()
            nib.save(nib.Nifti1Image(volume, affine), path)
            t_write = time.perf_counter() - t0
            size = os.path.getsize(path)
            print(
                f"{kind}: {shape[0]}x{shape[1]}x{shape[2]} {volume.dtype} from {source}, "
                f"{volume.nbytes / 2**20:.0f} MiB raw, {size / 2**20:.2f} MiB .nii.gz "
                f"(written by nibabel in {t_write:.2f} s)"
            )
            for name, fn in methods.items():
                seconds, array, owner = best_time(fn, path, args.repeats)
                same = array.shape == volume.shape and np.array_equal(array, volume)
                times[name] = seconds
                print(f"  {name:<42} {seconds:.3f} s   same array: {'yes' if same else 'NO'}")
                del array, owner
        base = times["(a) nibabel, stock gzip"]
        rows += [(kind, name, t, base / t) for name, t in times.items()]
    print()
    print(f"| volume | method | seconds (best of {args.repeats}) | speed-up vs (a) |")
    print("|---|---|---:|---:|")
    for kind, name, seconds, speedup in rows:
        print(f"| {kind} | {name} | {seconds:.3f} | {speedup:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
