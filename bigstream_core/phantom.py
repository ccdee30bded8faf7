"""Synthetic fixed/moving volume pairs with a known transform, for tests and benchmarks.

Conventions (DESIGN.md): arrays are indexed z, y, x (C order); every coordinate, spacing,
displacement and matrix row is in µm, z y x; the physical position of voxel index ``i`` is
``i * spacing`` (origin 0, full resolution) in both images, which share the spacing.

The ground truth ``T`` maps a fixed-space point to a moving-space point,
``T(x) = A (x + d(x))`` with ``A`` a 4x4 affine and ``d`` a smooth displacement defined in fixed
space, so that ``aligned(x) = moving(T(x))`` reproduces ``fixed(x)``.

The fixed image is an analytic function ``F`` of the physical position: a soft "tissue" region
(a lumpy ellipsoid that leaves dark background around it), a smooth texture inside it, and
Gaussian "cells" ``b exp(-r^2 / (2 s^2))`` with ``s = radius / sqrt(3)`` (the LoG convention).
The moving image is ``F(T^-1(y))``, evaluated exactly at each moving voxel, with no
interpolation. Per-voxel Gaussian noise comes from a hash of (seed, image, voxel index), so a
voxel's value depends only on the spec, never on the block grid or the scheduler.

Both images are dask arrays rendered block by block: a block evaluates only the cells whose
footprint reaches it (found with a k-d tree), each inside its own bounding box, so memory per
task is bounded by the block size whatever the volume size.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize
from scipy.spatial import cKDTree

from bigstream_core.io import write_n5, write_ome_zarr

__all__ = [
    "CONVENTION",
    "Cells",
    "Deformation",
    "another_round",
    "GroundTruth",
    "PhantomSpec",
    "make_cells",
    "make_pair",
    "make_truth",
    "preset",
    "write_pair",
]

CONVENTION = "fixed->moving, um, zyx, T(x)=A(x+d(x))"
"""The transform convention, as written in ``truth.json``."""

INVERSE_TOLERANCE_UM = 1e-5
"""Guaranteed accuracy (µm) of `GroundTruth.inverse` (a bound, from the contraction rate)."""

CUTOFF_SIGMAS = 4.0
"""A cell's profile is zero beyond this many sigmas (it is shifted down to meet 0 continuously)."""

_CUTOFF_LEVEL = math.exp(-0.5 * CUTOFF_SIGMAS**2)
_TISSUE_ROUGHNESS = 0.08  # summed relative amplitude of the tissue boundary's lumps
_WAVES = 4  # plane waves in the texture and in the tissue boundary
_SIZES = {"S": 1, "2S": 2, "4S": 4, "8S": 8, "64S": 64, "512S": 512}  # times S's voxels
_STREAM = {"cells": 1, "texture": 2, "tissue": 3, "deformation": 4}  # independent rng streams
_IMAGE_KEY = {"fixed": 1, "moving": 2}  # noise streams of the two images

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Three broadcastable arrays of z, y, x positions (µm)."""


# --------------------------------------------------------------------------------------------
# The transform


def _affine_coords(matrix: np.ndarray, coords: Coords) -> Coords:
    """``matrix`` (4x4) applied to coordinate arrays, element by element (no BLAS)."""
    z, y, x = coords
    return tuple(
        matrix[i, 0] * z + matrix[i, 1] * y + matrix[i, 2] * x + matrix[i, 3] for i in range(3)
    )


def _as_coords(points: np.ndarray) -> Coords:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points of shape {points.shape}; expected (N, 3) µm z y x")
    return points[:, 0], points[:, 1], points[:, 2]


def _as_points(coords: Coords) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*coords), axis=-1)


@dataclass(frozen=True, eq=False)
class Deformation:
    """Smooth displacement ``d(x) = sum_k a_k sin(w_k . x + phi_k)`` in fixed space.

    Attributes:
        wavevectors: (K, 3) ``w_k``, rad/µm, z y x.
        phases: (K,) ``phi_k``, rad.
        amplitudes: (K, 3) ``a_k``, µm, z y x. K = 0 is no deformation.

    ``|d| <= max_norm`` and ``||grad d|| <= lipschitz`` everywhere (bounds, not estimates).
    """

    wavevectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    phases: np.ndarray = field(default_factory=lambda: np.zeros(0))
    amplitudes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def __post_init__(self):
        for name in ("wavevectors", "phases", "amplitudes"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float))
        k = len(self.phases)
        if self.wavevectors.shape != (k, 3) or self.amplitudes.shape != (k, 3):
            raise ValueError(
                f"deformation of {k} phases needs ({k}, 3) wavevectors and amplitudes, got "
                f"{self.wavevectors.shape} and {self.amplitudes.shape}"
            )

    @property
    def max_norm(self) -> float:
        """Upper bound of ``|d(x)|`` (µm)."""
        return float(np.linalg.norm(self.amplitudes, axis=1).sum())

    @property
    def lipschitz(self) -> float:
        """Upper bound of the spectral norm of the Jacobian of ``d`` (unitless)."""
        norms = np.linalg.norm(self.amplitudes, axis=1) * np.linalg.norm(self.wavevectors, axis=1)
        return float(norms.sum())

    def at(self, coords: Coords) -> Coords:
        """``d`` at coordinate arrays (µm, z y x), as three arrays of the broadcast shape."""
        shape = np.broadcast_shapes(*(np.shape(c) for c in coords))
        out = [np.zeros(shape) for _ in range(3)]
        for w, phi, a in zip(self.wavevectors, self.phases, self.amplitudes, strict=True):
            wave = np.sin(w[0] * coords[0] + w[1] * coords[1] + w[2] * coords[2] + phi)
            for i in range(3):
                out[i] += a[i] * wave
        return tuple(out)

    def solve(self, u: Coords, iterations: int) -> Coords:
        """The ``x`` with ``x + d(x) = u`` (µm, z y x): ``iterations`` steps of
        ``x <- u - d(x)``. The steps update the small displacement ``u - x`` in float32 around
        phases taken once at ``u`` in float64, so ``x`` keeps float64 accuracy (~1e-6 µm)."""
        if not iterations or not len(self.phases):
            return u
        shape = np.broadcast_shapes(*(np.shape(c) for c in u))
        at_u = [
            np.remainder(w[0] * u[0] + w[1] * u[1] + w[2] * u[2] + phi, 2 * np.pi).astype(
                np.float32
            )
            for w, phi in zip(self.wavevectors, self.phases, strict=True)
        ]
        waves = self.wavevectors.astype(np.float32)
        amplitudes = self.amplitudes.astype(np.float32)
        delta = [np.zeros(shape, dtype=np.float32) for _ in range(3)]
        for _ in range(iterations):
            update = [np.zeros(shape, dtype=np.float32) for _ in range(3)]
            for w, a, phase_u in zip(waves, amplitudes, at_u, strict=True):
                phase = phase_u - (w[0] * delta[0] + w[1] * delta[1] + w[2] * delta[2])
                np.sin(phase, out=phase)
                for i in range(3):
                    update[i] += a[i] * phase
            delta = update
        return tuple(ui - di for ui, di in zip(u, delta, strict=True))

    def to_dict(self) -> dict:
        return {
            "form": "d(x) = sum_k amplitudes[k] * sin(wavevectors[k] . x + phases[k])",
            "wavevectors_rad_per_um": self.wavevectors.tolist(),
            "phases_rad": self.phases.tolist(),
            "amplitudes_um": self.amplitudes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Deformation:
        return cls(
            wavevectors=np.reshape(data["wavevectors_rad_per_um"], (-1, 3)),
            phases=np.reshape(data["phases_rad"], (-1,)),
            amplitudes=np.reshape(data["amplitudes_um"], (-1, 3)),
        )


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The known transform ``T(x) = A (x + d(x))``, fixed space -> moving space, µm, z y x.

    Attributes:
        affine: 4x4 homogeneous ``A`` acting on (z, y, x, 1) in µm.
        deformation: ``d``, defined in fixed space (empty: none).
    """

    affine: np.ndarray
    deformation: Deformation = field(default_factory=Deformation)

    def __post_init__(self):
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.allclose(affine[3], [0, 0, 0, 1]):
            raise ValueError(f"affine must be 4x4 homogeneous, got {affine.tolist()}")
        if self.deformation.lipschitz >= 0.5:
            raise ValueError(
                f"deformation gradient bound {self.deformation.lipschitz:.3g} >= 0.5: T would "
                "not be safely invertible; lower the amplitude or raise the length scale"
            )
        object.__setattr__(self, "affine", affine)

    @property
    def inverse_iterations(self) -> int:
        """Fixed-point iterations that bring the inverse within `INVERSE_TOLERANCE_UM`."""
        bound, rate = self.deformation.max_norm, self.deformation.lipschitz
        if bound <= INVERSE_TOLERANCE_UM:
            return 0 if bound == 0 else 1
        if rate == 0:
            return 1
        return max(1, math.ceil(math.log(INVERSE_TOLERANCE_UM / bound) / math.log(rate)))

    def forward_coords(self, coords: Coords) -> Coords:
        """``T`` on coordinate arrays (µm, z y x)."""
        d = self.deformation.at(coords)
        return _affine_coords(self.affine, tuple(c + di for c, di in zip(coords, d, strict=True)))

    def inverse_coords(self, coords: Coords) -> Coords:
        """``T^-1`` on coordinate arrays: ``u = A^-1 y``, then ``x <- u - d(x)`` a fixed count
        of times (`inverse_iterations`: from the bounds, the same for every point)."""
        u = _affine_coords(np.linalg.inv(self.affine), coords)
        return self.deformation.solve(u, self.inverse_iterations)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) fixed-space points (µm, z y x) to moving space."""
        return _as_points(self.forward_coords(_as_coords(points)))

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) moving-space points (µm, z y x) to fixed space."""
        return _as_points(self.inverse_coords(_as_coords(points)))

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """``d`` at (N, 3) fixed-space points, (N, 3) µm z y x."""
        return _as_points(self.deformation.at(_as_coords(points)))

    def to_json(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write the transform (and optional extra ``metadata``) as JSON."""
        data = {
            "convention": CONVENTION,
            "affine": self.affine.tolist(),
            "deformation": self.deformation.to_dict(),
        }
        if metadata is not None:
            data["metadata"] = metadata
        Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> GroundTruth:
        """Read a file written by `to_json`; ValueError if its convention is not ours."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("convention") != CONVENTION:
            raise ValueError(
                f"{path}: convention {data.get('convention')!r}, expected {CONVENTION!r}"
            )
        return cls(np.array(data["affine"]), Deformation.from_dict(data["deformation"]))


# --------------------------------------------------------------------------------------------
# The specification


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that defines a phantom pair; the same spec always gives the same voxels.

    Geometry (z, y, x):
        fixed_shape: fixed image shape, voxels.
        moving_shape: moving image shape, voxels (a different extent from the fixed one).
        spacing: voxel spacing of both images, µm.
        tissue_extent: tissue ellipsoid diameters as fractions of the fixed box's extent (the
            boundary is lumpy by about ±8 %); outside it the image is dark background.
        tissue_edge_um: width of the tissue's soft edge, µm.

    Content:
        seed: everything random (cells, texture, tissue lumps, deformation, noise) derives from it.
        cell_density: cells per 1000 µm^3 of tissue.
        radius_range_vox: cell radii, voxels (log-uniform); within this range along every axis.
        brightness_range: cell peak intensity above the background, counts (uniform).
        background_level: intensity outside the tissue, counts.
        tissue_level: mean intensity of the tissue between cells, counts.
        texture_amplitude: peak amplitude of the tissue's smooth texture, counts.
        texture_scale_um: texture wavelengths lie in [1, 3] x this, µm.
        noise_sigma: per-voxel Gaussian noise, counts (independent in the two images).

    Another imaging round (the moving image only; the defaults leave it as the fixed one's):
        moving_gamma: the moving counts ``v`` become ``b (v / b)^gamma``, ``b`` the background
            level (before noise): contrast changed non-linearly.
        moving_illumination: relative gain change across the moving box: the gain runs
            linearly from ``1 - a`` at voxel (0, 0, 0) to ``1 + a`` at the far corner (the
            mean of the three relative voxel positions), as an uneven illumination does.
        moving_noise_sigma: the moving image's noise, counts (None: ``noise_sigma``).

    Transform (fixed -> moving, about the tissue centre, which lands at the moving box's
    centre plus `shift_um`):
        rotation_deg: rotations about the z, y and x axes, degrees (``R = Rz @ Ry @ Rx``).
        scale: scale factors along z, y, x (applied before the rotation).
        shift_um: translation, µm.
        deform_amplitude_um: bound on ``|d|``, µm (0: no deformation).
        deform_scale_um: length scale L of ``d``: wavelengths in [2 pi L, 4 pi L], and
            ``|grad d| <= deform_amplitude_um / L`` (must stay under 0.25).
        deform_modes: number of plane-wave modes in ``d``.

    Output:
        dtype: voxel type; integer types are rounded and clipped.
        chunks: dask block shape used for rendering, voxels (does not change any value).
    """

    fixed_shape: tuple[int, int, int] = (64, 128, 128)
    moving_shape: tuple[int, int, int] = (66, 138, 120)
    spacing: tuple[float, float, float] = (0.84, 0.92, 0.92)
    tissue_extent: tuple[float, float, float] = (0.8, 0.76, 0.76)
    tissue_edge_um: float = 3.0
    seed: int = 0
    cell_density: float = 0.5
    radius_range_vox: tuple[float, float] = (2.0, 10.0)
    brightness_range: tuple[float, float] = (600.0, 3000.0)
    background_level: float = 100.0
    tissue_level: float = 220.0
    texture_amplitude: float = 60.0
    texture_scale_um: float = 15.0
    noise_sigma: float = 10.0
    moving_gamma: float = 1.0
    moving_illumination: float = 0.0
    moving_noise_sigma: float | None = None
    rotation_deg: tuple[float, float, float] = (4.0, -3.0, 2.5)
    scale: tuple[float, float, float] = (1.03, 0.98, 1.02)
    shift_um: tuple[float, float, float] = (3.0, -5.0, 6.0)
    deform_amplitude_um: float = 0.0
    deform_scale_um: float = 20.0
    deform_modes: int = 4
    dtype: str = "uint16"
    chunks: tuple[int, int, int] = (64, 64, 64)

    def __post_init__(self):
        for name in ("fixed_shape", "moving_shape", "chunks"):
            value = getattr(self, name)
            if len(value) != 3 or min(value) < 1:
                raise ValueError(f"{name} {value!r}: expected 3 positive voxel counts (z y x)")
        low, high = self.radius_range_um
        if not 0 < low <= high:
            raise ValueError(
                f"radius_range_vox {self.radius_range_vox} is empty along some axis with spacing "
                f"{self.spacing}: need low * max(spacing) <= high * min(spacing)"
            )
        if self.moving_gamma <= 0 or not 0 <= self.moving_illumination < 1:
            raise ValueError(
                f"moving_gamma {self.moving_gamma} must be > 0 and moving_illumination "
                f"{self.moving_illumination} in [0, 1)"
            )
        if self.deform_amplitude_um < 0 or self.deform_amplitude_um > 0.25 * self.deform_scale_um:
            raise ValueError(
                f"deform_amplitude_um {self.deform_amplitude_um} must be in [0, 0.25 * "
                f"deform_scale_um = {0.25 * self.deform_scale_um}] (smooth, invertible field)"
            )

    @property
    def radius_range_um(self) -> tuple[float, float]:
        """Cell radii range, µm: the radii are within `radius_range_vox` along every axis."""
        low, high = self.radius_range_vox
        return low * max(self.spacing), high * min(self.spacing)


def preset(name: str) -> PhantomSpec:
    """A named spec.

    - ``"tiny"``: 24 x 40 x 40 fixed voxels, small dense cells; a unit test's second.
    - ``"small"``: 80 x 160 x 160, denser cells, for the demo and the workflow tests (a few
      hundred key points on the low-res level: enough for a reliable global affine).
    - ``"S"``: 150 x 250 x 450, the size of a typical low-res level.
    - ``"2S"``, ``"4S"``, ``"8S"``, ``"64S"``, ``"512S"``: that many times S's voxels, S
      scaled by the cube root along every axis (shift too; shapes rounded to even voxels):
      8S is 300 x 500 x 900, 135 M voxels (0.27 GB uint16, the size of the bigstream
      tutorial's high-res level), 64S 2.2 GB, 512S 17 GB per volume.
    """
    if name == "tiny":
        return PhantomSpec(
            fixed_shape=(24, 40, 40),
            moving_shape=(26, 44, 36),
            cell_density=4.0,
            radius_range_vox=(2.0, 3.0),
            rotation_deg=(3.0, -2.0, 1.5),
            scale=(1.02, 0.99, 1.01),
            shift_um=(1.0, -1.5, 2.0),
            deform_scale_um=10.0,
        )
    if name == "small":
        return PhantomSpec(
            fixed_shape=(80, 160, 160), moving_shape=(82, 172, 150), cell_density=1.0
        )
    if name in _SIZES:
        k = _SIZES[name] ** (1 / 3)

        def even(*edges):
            return tuple(2 * round(edge * k / 2) for edge in edges)

        return PhantomSpec(
            fixed_shape=even(150, 250, 450),
            moving_shape=even(156, 270, 424),
            shift_um=(8.0 * k, -15.0 * k, 20.0 * k),
        )
    raise ValueError(f"unknown preset {name!r}; expected one of tiny, small, {', '.join(_SIZES)}")


def another_round(spec: PhantomSpec) -> PhantomSpec:
    """``spec`` with the moving image as another imaging round shows it: gamma 0.8, a ±25 %
    illumination gradient across the moving box and 1.5x the noise."""
    return dataclasses.replace(
        spec, moving_gamma=0.8, moving_illumination=0.25, moving_noise_sigma=1.5 * spec.noise_sigma
    )


# --------------------------------------------------------------------------------------------
# The scene: random content derived from the spec


def _box_centre(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """Physical centre (µm) of a box of voxel centres at ``i * spacing``."""
    return (np.asarray(shape) - 1) / 2 * np.asarray(spacing)


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """``Rz @ Ry @ Rx`` acting on (z, y, x) vectors; angles about the z, y, x axes, degrees."""
    cz, cy, cx = np.cos(np.radians(angles_deg))
    sz, sy, sx = np.sin(np.radians(angles_deg))
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])  # turns y towards x
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])  # turns x towards z
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])  # turns z towards y
    return rz @ ry @ rx


def _random_waves(rng, count: int, wavelengths: tuple[float, float]) -> tuple:
    """Random plane waves: (count, 3) wavevectors (rad/unit, random directions), phases."""
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = rng.uniform(*wavelengths, size=count)
    return directions * (2 * np.pi / lengths)[:, None], rng.uniform(0, 2 * np.pi, size=count)


def _split_total(rng, total: float, count: int) -> np.ndarray:
    """``count`` random positive weights summing to ``total``."""
    weights = rng.uniform(0.5, 1.0, size=count)
    return total * weights / weights.sum()


def _sum_waves(coords: Coords, wavevectors, phases, amplitudes) -> np.ndarray:
    """``sum_k amplitudes[k] cos(wavevectors[k] . x + phases[k])`` at float32 coordinates."""
    total = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), dtype=np.float32)
    for w, phi, a in zip(wavevectors.astype(np.float32), phases, amplitudes, strict=True):
        phase = np.float32(phi) + w[0] * coords[0] + w[1] * coords[1]
        phase = phase + w[2] * coords[2]
        np.cos(phase, out=phase)
        phase *= np.float32(a)
        total += phase
    return total


def make_truth(spec: PhantomSpec) -> GroundTruth:
    """The spec's transform: scale, rotate and move the tissue centre to the moving box's centre
    plus `shift_um`; then the deformation (drawn from the seed) if `deform_amplitude_um` > 0."""
    linear = _rotation(spec.rotation_deg) @ np.diag(spec.scale)
    fixed_centre = _box_centre(spec.fixed_shape, spec.spacing)
    target = _box_centre(spec.moving_shape, spec.spacing) + np.asarray(spec.shift_um)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = target - linear @ fixed_centre
    if spec.deform_amplitude_um == 0:
        return GroundTruth(affine)
    rng = np.random.default_rng([spec.seed, _STREAM["deformation"]])
    length = spec.deform_scale_um
    wavevectors, phases = _random_waves(
        rng, spec.deform_modes, (2 * np.pi * length, 4 * np.pi * length)
    )
    directions = rng.normal(size=(spec.deform_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    amplitudes = (
        directions * _split_total(rng, spec.deform_amplitude_um, spec.deform_modes)[:, None]
    )
    return GroundTruth(affine, Deformation(wavevectors, phases, amplitudes))


@dataclass(frozen=True, eq=False)
class Cells:
    """The fixed image's cells: a profile ``brightness * exp(-r^2 / (2 (radius / sqrt 3)^2))``.

    Attributes:
        centres: (N, 3) µm, z y x, fixed space.
        radii: (N,) µm (the LoG radius; sigma = radius / sqrt(3)).
        brightness: (N,) peak above the background, counts.
    """

    centres: np.ndarray
    radii: np.ndarray
    brightness: np.ndarray


class _Tissue:
    """Soft lumpy ellipsoid: weight 1 inside, 0 outside, a tanh edge; plus a smooth texture."""

    def __init__(self, spec: PhantomSpec):
        self.centre = _box_centre(spec.fixed_shape, spec.spacing)
        extent = np.asarray(spec.fixed_shape) * np.asarray(spec.spacing)
        self.semi_axes = np.asarray(spec.tissue_extent) * extent / 2
        self.edge_scale = float(self.semi_axes.mean() / spec.tissue_edge_um)
        rng = np.random.default_rng([spec.seed, _STREAM["tissue"]])
        # lumps in coordinates where the ellipsoid is the unit sphere: a few per circumference
        wavevectors, phases = _random_waves(rng, _WAVES, (1.5, 3.0))
        self.lumps = (wavevectors, phases, _split_total(rng, _TISSUE_ROUGHNESS, _WAVES))
        rng = np.random.default_rng([spec.seed, _STREAM["texture"]])
        scale = spec.texture_scale_um
        wavevectors, phases = _random_waves(rng, _WAVES, (scale, 3 * scale))
        self.texture = (wavevectors, phases, _split_total(rng, spec.texture_amplitude, _WAVES))
        self.inside_level = spec.tissue_level - spec.background_level

    def weight(self, coords: Coords) -> np.ndarray:
        """Tissue weight in [0, 1] at fixed-space coordinates (µm), float32."""
        unit = tuple(
            (c.astype(np.float32, copy=False) - np.float32(o)) / np.float32(a)
            for c, o, a in zip(coords, self.centre, self.semi_axes, strict=True)
        )
        radius = unit[0] * unit[0] + unit[1] * unit[1]
        radius = radius + unit[2] * unit[2]
        np.sqrt(radius, out=radius)
        radius -= _sum_waves(unit, *self.lumps)
        radius -= np.float32(1)
        radius *= np.float32(self.edge_scale)
        np.tanh(radius, out=radius)
        return np.float32(0.5) - np.float32(0.5) * radius

    def intensity(self, coords: Coords) -> np.ndarray:
        """Intensity above the dark background (counts, float32) between the cells."""
        coords = tuple(c.astype(np.float32) for c in coords)
        level = _sum_waves(coords, *self.texture)
        level += np.float32(self.inside_level)
        level *= self.weight(coords)
        return level


def make_cells(spec: PhantomSpec) -> Cells:
    """The cells of the spec's fixed image: Poisson count, uniform positions kept inside the
    tissue (weight > 0.5), log-uniform radii in `radius_range_um`, uniform brightness."""
    rng = np.random.default_rng([spec.seed, _STREAM["cells"]])
    extent = (np.asarray(spec.fixed_shape) - 1) * np.asarray(spec.spacing)
    count = rng.poisson(spec.cell_density / 1000 * float(np.prod(extent)))
    centres = rng.uniform(0, extent, size=(count, 3))
    low, high = spec.radius_range_um
    radii = np.exp(rng.uniform(np.log(low), np.log(high), size=count))
    brightness = rng.uniform(*spec.brightness_range, size=count)
    inside = _Tissue(spec).weight(_as_coords(centres)) > 0.5
    return Cells(centres[inside], radii[inside], brightness[inside])


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _noise_key(seed: int, image: int) -> np.uint64:
    """A well-mixed 64-bit key per (seed, image)."""
    first = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    return _splitmix64(first + np.uint64(image))[0]


def _noise(shape: tuple[int, ...], region: list[tuple[int, int]], key: np.uint64) -> np.ndarray:
    """Standard normal noise (float32) of the voxels in ``region`` of an image of ``shape``,
    a function of (key, global voxel index) only: splitmix64 hash, then Box-Muller."""
    index = [np.arange(a, b, dtype=np.uint64) for a, b in region]
    bits = index[1][:, None] * np.uint64(shape[2]) + index[2]
    bits = index[0][:, None, None] * np.uint64(shape[1] * shape[2]) + bits
    bits ^= key
    bits += np.uint64(0x9E3779B97F4A7C15)  # splitmix64, in place
    scratch = bits >> np.uint64(30)
    bits ^= scratch
    bits *= np.uint64(0xBF58476D1CE4E5B9)
    np.right_shift(bits, np.uint64(27), out=scratch)
    bits ^= scratch
    bits *= np.uint64(0x94D049BB133111EB)
    np.right_shift(bits, np.uint64(31), out=scratch)
    bits ^= scratch
    # two 24-bit uniforms: u1 in (0, 1) from the top bits, the angle from the next ones
    radius = (bits >> np.uint64(40)).astype(np.float32)
    radius += np.float32(0.5)
    radius *= np.float32(2**-24)
    np.log(radius, out=radius)
    radius *= np.float32(-2)
    np.sqrt(radius, out=radius)
    np.right_shift(bits, np.uint64(16), out=scratch)
    scratch &= np.uint64(0xFFFFFF)
    angle = scratch.astype(np.float32)
    angle *= np.float32(2 * np.pi * 2**-24)
    np.cos(angle, out=angle)
    radius *= angle
    return radius


class _Scene:
    """Everything random in a pair (drawn once from the spec) and the block renderer."""

    def __init__(self, spec: PhantomSpec):
        self.spec = spec
        self.truth = make_truth(spec)
        self.tissue = _Tissue(spec)
        self.cells = make_cells(spec)
        self.cutoffs = CUTOFF_SIGMAS * self.cells.radii / math.sqrt(3)
        self.tree = cKDTree(self.cells.centres) if len(self.cells.radii) else None

    def _candidates(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Sorted indices of cells whose cutoff cube meets the fixed-space box [low, high]."""
        if self.tree is None:
            return np.zeros(0, dtype=int)
        centre, half = (low + high) / 2, (high - low) / 2
        reach = float(half.max() + self.cutoffs.max())
        near = np.asarray(self.tree.query_ball_point(centre, reach, p=np.inf), dtype=int)
        gap = np.abs(self.cells.centres[near] - centre) - half
        return np.sort(near[np.all(gap <= self.cutoffs[near, None], axis=1)])

    def _cell_boxes(self, cells: np.ndarray, moving: bool) -> tuple[np.ndarray, np.ndarray]:
        """Voxel index boxes [low, high) in the rendered image holding each cell's footprint."""
        reach = self.cutoffs[cells, None] + (self.truth.deformation.max_norm if moving else 0)
        corners = np.stack(
            np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], indexing="ij"), -1
        ).reshape(8, 3)
        points = self.cells.centres[cells, None, :] + corners[None] * reach[:, None]
        if moving:
            points = points @ self.truth.affine[:3, :3].T + self.truth.affine[:3, 3]
        spacing = np.asarray(self.spec.spacing)
        low = np.floor(points.min(axis=1) / spacing).astype(int) - 1
        high = np.ceil(points.max(axis=1) / spacing).astype(int) + 2
        return low, high

    def _another_round(self, values: np.ndarray, region, shape) -> np.ndarray:
        """The moving block's noiseless counts under the round's gamma and illumination."""
        spec = self.spec
        if spec.moving_gamma != 1:
            base = np.float32(spec.background_level)
            values = base * np.power(np.maximum(values, 0) / base, np.float32(spec.moving_gamma))
        if spec.moving_illumination:
            position = sum(
                np.arange(a, b, dtype=np.float32).reshape(
                    [-1 if k == axis else 1 for k in range(3)]
                )
                / max(n - 1, 1)
                for axis, ((a, b), n) in enumerate(zip(region, shape, strict=True))
            ) / np.float32(3)
            values = values * (1 + np.float32(spec.moving_illumination) * (2 * position - 1))
        return values.astype(np.float32, copy=False)

    def render(self, image: str, block_info=None) -> np.ndarray:
        """One block of ``image`` ("fixed" or "moving"), located by dask's ``block_info``."""
        spec = self.spec
        region = block_info[None]["array-location"]
        moving = image == "moving"
        axes = [np.arange(a, b) * s for (a, b), s in zip(region, spec.spacing, strict=True)]
        grid = (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])
        coords = self.truth.inverse_coords(grid) if moving else grid
        values = self.tissue.intensity(coords)
        values += np.float32(spec.background_level)
        low = np.array([np.min(c) for c in coords])
        high = np.array([np.max(c) for c in coords])
        cells = self._candidates(low, high)
        start = np.array([a for a, _ in region])
        boxes_low, boxes_high = self._cell_boxes(cells, moving)
        boxes_low = np.maximum(boxes_low - start, 0)
        boxes_high = np.minimum(boxes_high - start, values.shape)
        for j, lo, hi in zip(cells, boxes_low, boxes_high, strict=True):
            if np.any(hi <= lo):
                continue
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            r2 = None
            for axis, c in enumerate(coords):
                part = c[
                    tuple(s if n > 1 else slice(None) for s, n in zip(box, c.shape, strict=True))
                ]
                offset = (part - self.cells.centres[j, axis]).astype(np.float32)
                offset *= offset
                r2 = offset if r2 is None else r2 + offset
            r2 *= np.float32(-1.5 / self.cells.radii[j] ** 2)  # -r^2 / (2 sigma^2)
            np.exp(r2, out=r2)
            r2 -= np.float32(_CUTOFF_LEVEL)
            np.maximum(r2, np.float32(0), out=r2)
            r2 *= np.float32(self.cells.brightness[j] / (1 - _CUTOFF_LEVEL))
            values[box] += r2
        shape = spec.moving_shape if moving else spec.fixed_shape
        if moving:
            values = self._another_round(values, region, shape)
        sigma = spec.noise_sigma
        if moving and spec.moving_noise_sigma is not None:
            sigma = spec.moving_noise_sigma
        if sigma:
            key = _noise_key(spec.seed, _IMAGE_KEY[image])
            values += np.float32(sigma) * _noise(shape, region, key)
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        return values.astype(dtype)


# --------------------------------------------------------------------------------------------
# The public makers


def make_pair(spec: PhantomSpec) -> tuple[da.Array, da.Array, GroundTruth]:
    """Lazy fixed and moving images (z y x, ``spec.dtype``, blocks ``spec.chunks``) and the
    truth. Cells are drawn now; voxels are rendered block by block when computed."""
    scene = _Scene(spec)
    token = tokenize(spec)
    images = []
    for image, shape in (("fixed", spec.fixed_shape), ("moving", spec.moving_shape)):
        chunks = da.core.normalize_chunks(spec.chunks, shape)
        images.append(
            da.map_blocks(
                functools.partial(scene.render, image),
                chunks=chunks,
                dtype=spec.dtype,
                meta=np.empty((0, 0, 0), dtype=spec.dtype),
                name=f"phantom-{image}-{token}",
            )
        )
    return images[0], images[1], scene.truth


def write_pair(
    out_dir: str | os.PathLike, spec: PhantomSpec, ome_zarr: bool = True
) -> dict[str, str]:
    """Write a pair and its truth under ``out_dir``.

    Writes ``fixed.n5`` and ``moving.n5`` (datasets ``highres``, and ``lowres``: the 2x2x2 mean
    of highres, trimmed to even sizes, rounded to the dtype), ``fixed.ome.zarr`` and
    ``moving.ome.zarr`` (multiscale; skipped with ``ome_zarr=False``), ``truth.json``
    (`GroundTruth.to_json`, with the spec as metadata) and ``truth_affine.txt`` (the 4x4
    ``A``). Returns the paths written, by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving, truth = make_pair(spec)
    written = {}
    for image, data in (("fixed", fixed), ("moving", moving)):
        n5 = out / f"{image}.n5"
        high = write_n5(data, n5, "highres", spec.spacing, chunks=spec.chunks)
        mean = da.coarsen(
            np.mean, high.to_dask().astype(np.float64), {0: 2, 1: 2, 2: 2}, trim_excess=True
        )
        if np.issubdtype(high.dtype, np.integer):
            mean = da.round(mean)
        write_n5(mean.astype(high.dtype), n5, "lowres", spec.spacing, (2, 2, 2), spec.chunks)
        written[f"{image}_n5"] = str(n5)
        if ome_zarr:
            zarr_path = out / f"{image}.ome.zarr"
            write_ome_zarr(zarr_path, high.to_dask(), spec.spacing, chunks=spec.chunks, name=image)
            written[f"{image}_ome_zarr"] = str(zarr_path)
    written["truth_json"] = str(out / "truth.json")
    truth.to_json(written["truth_json"], metadata={"phantom_spec": dataclasses.asdict(spec)})
    written["truth_affine"] = str(out / "truth_affine.txt")
    np.savetxt(written["truth_affine"], truth.affine)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bigstream_core.phantom",
        description="Write a synthetic fixed/moving pair with its known transform.",
    )
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--preset", default="small", help="tiny, small, S, 2S, 4S, 8S, 64S or 512S")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deform-um", type=float, help="deformation amplitude bound, µm")
    parser.add_argument(
        "--another-round",
        action="store_true",
        help="give the moving image another round's intensities: gamma 0.8, a +-25 %% "
        "illumination gradient and 1.5x the noise",
    )
    args = parser.parse_args(argv)
    spec = dataclasses.replace(preset(args.preset), seed=args.seed)
    if args.deform_um is not None:
        spec = dataclasses.replace(spec, deform_amplitude_um=args.deform_um)
    if args.another_round:
        spec = another_round(spec)
    for name, path in write_pair(args.out_dir, spec).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
