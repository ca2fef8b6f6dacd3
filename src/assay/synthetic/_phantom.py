"""Deterministic abdomen-like CT phantoms with reference label maps.

The phantom is built in physical millimetres, so organ volumes do not depend on the voxel grid:
a body of elliptical cross-section (subcutaneous fat, muscle wall, a textured abdominal cavity),
a spine with intervertebral discs, paraspinal and psoas muscles, and nine organs painted as
smooth randomly deformed ellipsoids (tubes for the two large vessels). Each organ is computed
only inside its own bounding box and the CT image is assembled slab by slab, which keeps a
CT-sized phantom (512 x 512 x 400 voxels) within a few seconds and well under 1 GB.

Coordinates follow nibabel's RAS+ convention: array axis 0 runs towards the patient's left,
axis 1 towards anterior, axis 2 towards superior, and the affine is ``diag(spacing_mm)`` with
the origin chosen so that the centre of the field of view is at (0, 0, 0) mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from assay.errors import InputError, SchemaError

__all__ = ["LABELS", "PAINT_ORDER", "STRUCTURES", "Phantom", "make_phantom"]

STRUCTURES: Final[tuple[str, ...]] = (
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "gallbladder",
    "pancreas",
    "stomach",
    "aorta",
    "postcava",
)
"""Canonical names of the structures in a phantom, in label order (label 1 is ``liver``)."""

LABELS: Final[dict[int, str]] = {index + 1: name for index, name in enumerate(STRUCTURES)}
"""Label value -> structure name of a phantom's label map (0 is background)."""

PAINT_ORDER: Final[tuple[str, ...]] = (
    "aorta",
    "postcava",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "pancreas",
    "spleen",
    "stomach",
    "liver",
)
"""Priority of structures where their shapes overlap, highest first: a voxel claimed by an
earlier structure is never given to a later one (the gallbladder wins over the liver, ...)."""

_LABEL_OF: Final[dict[str, int]] = {name: value for value, name in LABELS.items()}

# Tissue codes of the background (non-organ) anatomy, drawn in the (x, y) plane.
_AIR, _FAT, _MUSCLE, _CAVITY, _CORTICAL, _CANCELLOUS, _CSF, _POSTERIOR_BONE = range(8)
_TISSUE_HU: Final = np.array([-1000.0, -100.0, 40.0, 0.0, 700.0, 400.0, 15.0, 600.0], np.float32)
_DISC_HU: Final = 90.0
_STOMACH_AIR_HU: Final = -850.0
_NOISE_SD_HU: Final = 12.0
_HU_RANGE: Final = (-1024.0, 3071.0)
_SLAB_VOXELS: Final = 4_000_000

# Organ HU (contrast-enhanced, portal-venous-like), jittered by a few HU per seed.
_ORGAN_HU: Final[dict[str, float]] = {
    "liver": 60.0,
    "spleen": 50.0,
    "kidney_left": 150.0,
    "kidney_right": 150.0,
    "gallbladder": 10.0,
    "pancreas": 45.0,
    "stomach": 20.0,
    "aorta": 200.0,
    "postcava": 150.0,
}


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT volume with its reference label map and geometry.

    Parameters
    ----------
    image : numpy.ndarray
        CT intensities in Hounsfield units, int16, shape (x, y, z).
    labels : numpy.ndarray
        Reference label map, uint8, same shape; values index :data:`LABELS` (0 = background),
        so structures are disjoint by construction.
    spacing_mm : tuple of float
        Voxel size along the three array axes, in mm.
    affine : numpy.ndarray
        4 x 4 voxel-to-world (RAS+, mm) matrix, as nibabel uses it.
    """

    image: NDArray[np.int16]
    labels: NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    affine: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the voxel grid."""
        x, y, z = self.labels.shape
        return (x, y, z)

    def mask(self, structure: str) -> NDArray[np.bool_]:
        """Boolean reference mask of one structure.

        Parameters
        ----------
        structure : str
            Canonical structure name, one of :data:`STRUCTURES`.

        Returns
        -------
        numpy.ndarray
            New boolean array with the phantom's shape.

        Raises
        ------
        assay.errors.SchemaError
            If `structure` is not a phantom structure.
        """
        mask: NDArray[np.bool_] = self.labels == _label_of(structure)
        return mask

    def volume_ml(self, structure: str) -> float:
        """Reference volume of one structure in millilitres (voxel count x voxel volume)."""
        count = int(np.count_nonzero(self.labels == _label_of(structure)))
        return count * math.prod(self.spacing_mm) / 1000.0


def _label_of(structure: str) -> int:
    try:
        return _LABEL_OF[structure]
    except KeyError:
        raise SchemaError(
            f"Unknown structure {structure!r} in a synthetic phantom. "
            f"Known structures: {', '.join(STRUCTURES)}."
        ) from None


@dataclass(frozen=True)
class _Ellipsoid:
    """A deformed ellipsoid: ``rho(q) <= 1 + sum_k amp_k sin(omega_k . q/|q| + phase_k)``."""

    center: NDArray[np.float64]  # mm
    semi: NDArray[np.float64]  # mm, local axes
    rotation: NDArray[np.float64]  # local -> world
    omega: NDArray[np.float64]  # (K, 3)
    phase: NDArray[np.float64]  # (K,)
    amp: NDArray[np.float64]  # (K,), sum <= 0.15


@dataclass(frozen=True)
class _Tube:
    """A vessel along axis 2 with a gently curved centre line and a slight taper."""

    x0: float
    y0: float
    z_top: float
    length: float
    radius_top: float
    radius_bottom: float
    wiggle: NDArray[np.float64]  # (4,) amplitudes (x, y) and phases (x, y)


@dataclass(frozen=True)
class _Anatomy:
    body_semi: tuple[float, float]
    fat_mm: float
    wall_mm: float
    vertebra_y: float
    disc_period: float
    disc_phase: float
    organs: dict[str, _Ellipsoid | _Tube]
    hu: dict[str, float]
    stomach_air_y: float


def _rotation(angles_deg: NDArray[np.float64]) -> NDArray[np.float64]:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rotation: NDArray[np.float64] = rz @ ry @ rx
    return rotation


# name: (centre mm, semi-axes shape mm, nominal volume ml, base angles deg). Nominal volumes are
# calibrated so that the median painted volume (after cropping to the abdominal cavity and
# losing overlaps to higher-priority organs) is the adult mean: liver 1500, spleen 200,
# kidneys 150, gallbladder 40, pancreas 80, stomach 300 ml.
_ELLIPSOIDS: Final = {
    "liver": ((-52.0, 4.0, 42.0), (78.0, 88.0, 66.0), 1720.0, (0.0, 0.0, 12.0)),
    "spleen": ((92.0, -38.0, 48.0), (28.0, 45.0, 55.0), 215.0, (0.0, 12.0, -30.0)),
    "kidney_left": ((72.0, -48.0, -12.0), (26.0, 30.0, 55.0), 165.0, (-10.0, -12.0, 20.0)),
    "kidney_right": ((-72.0, -48.0, -28.0), (26.0, 30.0, 55.0), 152.0, (-10.0, 12.0, -20.0)),
    "gallbladder": ((-38.0, 46.0, -8.0), (17.0, 20.0, 34.0), 40.0, (25.0, 0.0, 15.0)),
    "pancreas": ((12.0, -6.0, 12.0), (72.0, 14.0, 16.0), 92.0, (0.0, -14.0, 10.0)),
    "stomach": ((58.0, 34.0, 52.0), (42.0, 38.0, 55.0), 300.0, (0.0, 15.0, 20.0)),
}


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw every anatomical parameter; the number of draws never depends on the grid."""
    body_semi = (float(rng.uniform(160.0, 172.0)), float(rng.uniform(112.0, 124.0)))
    fat_mm = float(rng.uniform(12.0, 24.0))
    wall_mm = float(rng.uniform(8.0, 12.0))
    vertebra_y = float(rng.uniform(-66.0, -60.0))
    disc_period = float(rng.uniform(32.0, 38.0))
    disc_phase = float(rng.uniform(0.0, disc_period))

    ellipsoids: dict[str, _Ellipsoid] = {}
    for name, (center, shape, target_ml, angles) in _ELLIPSOIDS.items():
        c = np.asarray(center) + rng.uniform(-6.0, 6.0, 3)
        volume_ml = target_ml * rng.uniform(0.8, 1.2)
        aspect = np.asarray(shape) * rng.uniform(0.92, 1.08, 3)
        scale = (volume_ml * 1000.0 / (4.0 / 3.0 * math.pi * math.prod(aspect))) ** (1.0 / 3.0)
        rotation = _rotation(np.asarray(angles) + rng.uniform(-8.0, 8.0, 3))
        n_waves = 3
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        omega = directions * rng.uniform(1.0, 3.0, (n_waves, 1))
        phase = rng.uniform(0.0, 2.0 * math.pi, n_waves)
        amp = rng.uniform(0.03, 0.05, n_waves)
        ellipsoids[name] = _Ellipsoid(c, aspect * scale, rotation, omega, phase, amp)
    organs: dict[str, _Ellipsoid | _Tube] = dict(ellipsoids)

    vertebra_front = vertebra_y + 17.0
    radius_aorta = float(rng.uniform(11.0, 13.0))
    radius_cava = float(rng.uniform(10.0, 12.0))
    organs["aorta"] = _Tube(
        x0=float(rng.uniform(14.0, 20.0)),
        y0=vertebra_front + radius_aorta + float(rng.uniform(2.0, 5.0)),
        z_top=float(rng.uniform(108.0, 120.0)),
        length=float(rng.uniform(190.0, 210.0)),
        radius_top=radius_aorta,
        radius_bottom=radius_aorta * 0.9,
        wiggle=np.concatenate([rng.uniform(2.0, 5.0, 2), rng.uniform(0.0, 2.0 * math.pi, 2)]),
    )
    organs["postcava"] = _Tube(
        x0=float(rng.uniform(-26.0, -20.0)),
        y0=vertebra_front + radius_cava + float(rng.uniform(5.0, 9.0)),
        z_top=float(rng.uniform(102.0, 112.0)),
        length=float(rng.uniform(190.0, 210.0)),
        radius_top=radius_cava,
        radius_bottom=radius_cava,
        wiggle=np.concatenate([rng.uniform(2.0, 5.0, 2), rng.uniform(0.0, 2.0 * math.pi, 2)]),
    )
    hu = {name: base + float(rng.uniform(-5.0, 5.0)) for name, base in _ORGAN_HU.items()}
    stomach = ellipsoids["stomach"]
    stomach_y_extent = float(np.sqrt(((stomach.rotation * stomach.semi) ** 2).sum(axis=1))[1])
    stomach_air_y = float(stomach.center[1] + rng.uniform(0.45, 0.6) * stomach_y_extent)
    return _Anatomy(
        body_semi=body_semi,
        fat_mm=fat_mm,
        wall_mm=wall_mm,
        vertebra_y=vertebra_y,
        disc_period=disc_period,
        disc_phase=disc_phase,
        organs=organs,
        hu=hu,
        stomach_air_y=stomach_air_y,
    )


def _validate_grid(
    shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise InputError(
            f"Invalid phantom shape {shape!r}: expected three positive integers, e.g. (96, 96, 64)."
        )
    if len(spacing_mm) != 3 or any(not (math.isfinite(s) and s > 0) for s in spacing_mm):
        raise InputError(
            f"Invalid phantom spacing {spacing_mm!r} mm: expected three positive finite numbers, "
            "e.g. (4.0, 4.0, 5.0)."
        )
    nx, ny, nz = (int(n) for n in shape)
    sx, sy, sz = (float(s) for s in spacing_mm)
    return (nx, ny, nz), (sx, sy, sz)


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (96, 96, 64),
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0),
) -> Phantom:
    """Generate a deterministic abdomen-like CT phantom with its reference label map.

    Anatomy (organ positions, sizes, shapes, intensities) depends on `seed` only, not on the
    grid, so the same seed gives the same patient at any resolution. Organ volumes vary by
    about ±25 % between seeds around adult means (liver ≈ 1500 ml, spleen ≈ 200 ml, kidneys
    ≈ 150 ml each, gallbladder ≈ 40 ml, pancreas ≈ 80 ml, stomach ≈ 300 ml, aorta and
    postcava tubes ≈ 200 mm long).

    Parameters
    ----------
    seed : int
        Non-negative seed of ``numpy.random.Generator(PCG64(seed))``.
    shape : tuple of int, default (96, 96, 64)
        Voxel grid (x, y, z). The field of view ``shape * spacing_mm`` should be at least about
        350 x 300 x 300 mm; with a smaller one organs are cut at its border.
    spacing_mm : tuple of float, default (4.0, 4.0, 5.0)
        Voxel size in mm. A CT-like grid is ``shape=(512, 512, 400)``,
        ``spacing_mm=(0.8, 0.8, 1.5)``.

    Returns
    -------
    Phantom
        int16 image in HU (Gaussian noise σ = 12 HU), uint8 label map with values
        :data:`LABELS`, spacing and RAS+ affine.

    Raises
    ------
    assay.errors.InputError
        If the seed, shape or spacing is invalid.

    Examples
    --------
    >>> phantom = make_phantom(0)
    >>> phantom.labels.shape
    (96, 96, 64)
    >>> 1000 < phantom.volume_ml("liver") < 2200
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"Invalid phantom seed {seed!r}: expected a non-negative integer.")
    grid, spacing = _validate_grid(shape, spacing_mm)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    anatomy = _draw_anatomy(rng)

    origin = np.array([-(n - 1) / 2.0 * s for n, s in zip(grid, spacing, strict=True)])
    coords = [
        (origin[axis] + np.arange(grid[axis]) * spacing[axis]).astype(np.float32)
        for axis in range(3)
    ]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin

    tissue = _tissue_map(anatomy, coords[0], coords[1])
    allowed = np.isin(tissue, (_CAVITY,))
    labels = np.zeros(grid, dtype=np.uint8)
    for name in PAINT_ORDER:
        organ = anatomy.organs[name]
        if isinstance(organ, _Tube):
            _paint_tube(labels, allowed, organ, _LABEL_OF[name], coords)
        else:
            _paint_ellipsoid(labels, allowed, organ, _LABEL_OF[name], coords, origin, spacing)

    image = _render_image(anatomy, tissue, labels, coords, spacing, rng)
    return Phantom(image=image, labels=labels, spacing_mm=spacing, affine=affine)


def _ellipse(
    x: NDArray[np.float32], y: NDArray[np.float32], cx: float, cy: float, ax: float, ay: float
) -> NDArray[np.bool_]:
    return ((x[:, None] - cx) / ax) ** 2 + ((y[None, :] - cy) / ay) ** 2 <= 1.0


def _tissue_map(
    anatomy: _Anatomy, x: NDArray[np.float32], y: NDArray[np.float32]
) -> NDArray[np.uint8]:
    """Background anatomy in the axial plane (constant along z), as tissue codes."""
    ax, ay = anatomy.body_semi
    tissue = np.full((x.size, y.size), _AIR, dtype=np.uint8)
    tissue[_ellipse(x, y, 0.0, 0.0, ax, ay)] = _FAT
    fat = anatomy.fat_mm
    tissue[_ellipse(x, y, 0.0, 0.0, ax - fat, ay - fat)] = _MUSCLE
    inner = fat + anatomy.wall_mm
    tissue[_ellipse(x, y, 0.0, 0.0, ax - inner, ay - inner)] = _CAVITY
    vy = anatomy.vertebra_y
    for side in (-1.0, 1.0):
        tissue[_ellipse(x, y, side * 32.0, vy - 40.0, 24.0, 20.0)] = _MUSCLE  # erector spinae
        tissue[_ellipse(x, y, side * 34.0, vy + 2.0, 12.0, 14.0)] = _MUSCLE  # psoas
    tissue[_ellipse(x, y, 0.0, vy - 28.0, 16.0, 14.0)] = _POSTERIOR_BONE  # arch
    tissue[_ellipse(x, y, 0.0, vy - 48.0, 5.0, 14.0)] = _POSTERIOR_BONE  # spinous process
    tissue[_ellipse(x, y, 0.0, vy - 27.0, 8.0, 7.0)] = _CSF  # spinal canal
    tissue[_ellipse(x, y, 0.0, vy, 21.0, 17.0)] = _CORTICAL  # vertebral body
    tissue[_ellipse(x, y, 0.0, vy, 18.0, 14.0)] = _CANCELLOUS
    return tissue


def _index_range(lo_mm: float, hi_mm: float, origin: float, spacing: float, n: int) -> slice:
    lo = max(0, math.floor((lo_mm - origin) / spacing))
    hi = min(n, math.ceil((hi_mm - origin) / spacing) + 1)
    return slice(lo, max(lo, hi))


def _paint_ellipsoid(
    labels: NDArray[np.uint8],
    allowed: NDArray[np.bool_],
    organ: _Ellipsoid,
    value: int,
    coords: list[NDArray[np.float32]],
    origin: NDArray[np.float64],
    spacing: tuple[float, float, float],
) -> None:
    """Paint a deformed ellipsoid into unclaimed allowed voxels of its bounding box."""
    rot, semi = organ.rotation, organ.semi
    half = (1.0 + organ.amp.sum()) * np.sqrt(((rot * semi) ** 2).sum(axis=1)) + 1e-3
    box = tuple(
        _index_range(
            organ.center[a] - half[a],
            organ.center[a] + half[a],
            origin[a],
            spacing[a],
            labels.shape[a],
        )
        for a in range(3)
    )
    if any(s.start >= s.stop for s in box):
        return
    dx = (coords[0][box[0]] - np.float32(organ.center[0]))[:, None, None]
    dy = (coords[1][box[1]] - np.float32(organ.center[1]))[None, :, None]
    dz = (coords[2][box[2]] - np.float32(organ.center[2]))[None, None, :]
    # local coordinates p = R^T (x - c), normalised by the semi-axes
    rt = (rot / semi[None, :]).astype(np.float32)  # column j scaled by 1/semi_j
    q = [rt[0, j] * dx + rt[1, j] * dy + rt[2, j] * dz for j in range(3)]
    rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    inv = 1.0 / np.maximum(rho, np.float32(1e-6))
    radius = np.ones_like(rho)
    for k in range(organ.amp.size):
        w = organ.omega[k].astype(np.float32)
        arg = (w[0] * q[0] + w[1] * q[1] + w[2] * q[2]) * inv + np.float32(organ.phase[k])
        radius += np.float32(organ.amp[k]) * np.sin(arg)
    inside = rho <= radius
    inside &= allowed[box[0], box[1]][:, :, None]
    sub = labels[box]
    sub[inside & (sub == 0)] = value


def _paint_tube(
    labels: NDArray[np.uint8],
    allowed: NDArray[np.bool_],
    tube: _Tube,
    value: int,
    coords: list[NDArray[np.float32]],
) -> None:
    """Paint a curved, slightly tapered vessel along axis 2 into unclaimed allowed voxels."""
    z = coords[2].astype(np.float64)
    z_bottom = tube.z_top - tube.length
    zk = np.flatnonzero((z >= z_bottom) & (z <= tube.z_top))
    if zk.size == 0:
        return
    t = (tube.z_top - z[zk]) / tube.length  # 0 at the top, 1 at the bottom
    ampx, ampy, phx, phy = tube.wiggle
    cx = tube.x0 + ampx * np.sin(math.pi * t + phx)
    cy = tube.y0 + ampy * np.sin(math.pi * t + phy)
    r = tube.radius_top + (tube.radius_bottom - tube.radius_top) * t
    x, y = coords[0].astype(np.float64), coords[1].astype(np.float64)
    xs = np.flatnonzero((x >= cx.min() - r.max() - 1) & (x <= cx.max() + r.max() + 1))
    ys = np.flatnonzero((y >= cy.min() - r.max() - 1) & (y <= cy.max() + r.max() + 1))
    if xs.size == 0 or ys.size == 0:
        return
    box = (slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(zk[0], zk[-1] + 1))
    d2 = (x[box[0], None, None] - cx[None, None, :]) ** 2 + (
        y[None, box[1], None] - cy[None, None, :]
    ) ** 2
    inside = d2 <= (r**2)[None, None, :]
    inside &= allowed[box[0], box[1]][:, :, None]
    sub = labels[box]
    sub[inside & (sub == 0)] = value


def _lerp_axis(a: NDArray[np.float32], axis: int, n_out: int) -> NDArray[np.float32]:
    """Linearly resample `a` along `axis` to `n_out` samples, ends aligned."""
    n_in = a.shape[axis]
    if n_in == 1:
        return np.repeat(a, n_out, axis=axis)
    t = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(t).astype(np.intp), n_in - 2)
    w = (t - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = w.reshape(shape)
    lo: NDArray[np.float32] = np.take(a, i0, axis=axis)
    hi: NDArray[np.float32] = np.take(a, i0 + 1, axis=axis)
    out: NDArray[np.float32] = lo + (hi - lo) * w
    return out


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...]
) -> NDArray[np.float32]:
    """Smooth, unit-variance random field: Gaussian-filtered coarse noise, linearly upsampled.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Output shape.
    cells : tuple of int
        Coarse-grid size along each axis (at least 2).

    Returns
    -------
    numpy.ndarray
        float32 array of `shape`, about zero mean and unit standard deviation at grid nodes.
    """
    coarse = rng.standard_normal(cells)
    coarse = ndimage.gaussian_filter(coarse, 1.0, mode="reflect")
    coarse = (coarse - coarse.mean()) / max(float(coarse.std()), 1e-12)
    field: NDArray[np.float32] = coarse.astype(np.float32)
    for axis, n in enumerate(shape):
        field = _lerp_axis(field, axis, n)
    return field


def _render_image(
    anatomy: _Anatomy,
    tissue: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    coords: list[NDArray[np.float32]],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
) -> NDArray[np.int16]:
    """Assemble the CT image slab by slab along axis 0 (bounded memory)."""
    nx, ny, nz = labels.shape
    fov = [n * s for n, s in zip(labels.shape, spacing, strict=True)]
    cells = tuple(max(2, math.ceil(f / 25.0) + 1) for f in fov)
    # cavity texture (visceral fat / bowel mix): coarse field upsampled along y and z now,
    # along x per slab
    texture_yz = smooth_noise(rng, (cells[0], ny, nz), cells)
    t = np.linspace(0.0, cells[0] - 1.0, nx)
    tx0 = np.minimum(np.floor(t).astype(np.intp), max(cells[0] - 2, 0))
    twx = (t - tx0).astype(np.float32)

    z = coords[2].astype(np.float64)
    disc = np.mod(z - anatomy.disc_phase, anatomy.disc_period) < 8.0
    vertebral_body = np.isin(tissue, (_CORTICAL, _CANCELLOUS))
    organ_hu = np.zeros(len(LABELS) + 1, dtype=np.float32)
    for value, name in LABELS.items():
        organ_hu[value] = anatomy.hu[name]
    stomach = _LABEL_OF["stomach"]
    above_air = coords[1][None, :, None] > np.float32(anatomy.stomach_air_y)

    image = np.empty(labels.shape, dtype=np.int16)
    step = max(1, _SLAB_VOXELS // max(1, ny * nz))
    for x0 in range(0, nx, step):
        x1 = min(nx, x0 + step)
        sl = slice(x0, x1)
        hu = np.repeat(_TISSUE_HU[tissue[sl]][:, :, None], nz, axis=2)
        lo, hi = texture_yz[tx0[sl]], texture_yz[np.minimum(tx0[sl] + 1, cells[0] - 1)]
        tex = lo + (hi - lo) * twx[sl, None, None]
        cavity = (tissue[sl] == _CAVITY)[:, :, None]
        np.copyto(hu, -45.0 + 45.0 * np.tanh(tex), where=cavity)
        hu[vertebral_body[sl][:, :, None] & disc[None, None, :]] = _DISC_HU
        lab = labels[sl]
        organ = lab > 0
        hu[organ] = organ_hu[lab[organ]]
        hu[(lab == stomach) & above_air] = _STOMACH_AIR_HU
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(_NOISE_SD_HU)
        np.rint(hu, out=hu)
        np.clip(hu, *_HU_RANGE, out=hu)
        image[sl] = hu.astype(np.int16)
    return image
