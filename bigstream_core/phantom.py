"""Synthetic fixed/moving volume pairs with a known transform, for tests and benchmarks.

Conventions (docs/design.md): arrays are indexed z, y, x (C order); every coordinate, spacing,
displacement and matrix row is in µm, z y x; the physical position of voxel index ``i`` is
``i * spacing`` (origin 0, full resolution) in each image (`PhantomSpec.spacing`, and
`PhantomSpec.moving_spacing` where the moving image has its own).

The ground truth ``T`` maps a fixed-space point to a moving-space point,
``T(x) = A (x + d(x))`` with ``A`` a 4x4 affine and ``d`` a smooth displacement defined in fixed
space, so that ``aligned(x) = moving(T(x))`` reproduces ``fixed(x)``.

The fixed image is an analytic function ``F`` of the physical position: a soft "tissue" region
(a lumpy ellipsoid that leaves dark background around it), a smooth texture inside it, and
Gaussian "cells" ``b exp(-r^2 / (2 s^2))`` with ``s = radius / sqrt(3)`` (the LoG convention).
Optionally (`dense` turns a preset into the look of real light-sheet data): the tissue fills
the whole box and beyond, some cells are rings (a bright rim around a darker centre), thin
fibres (Gaussian tubes along gently bent paths) run between them, and the whole scene is
multiplied by stripes constant along one axis (light-sheet shadows). The moving image is
``F(T^-1(y))``, evaluated exactly at each moving voxel, with no interpolation. Per-voxel
Gaussian noise comes from a hash of (seed, image, voxel index), so a voxel's value depends only
on the spec, never on the block grid or the scheduler.

Both images are dask arrays rendered block by block: a block evaluates only the cells and fibre
segments whose footprint reaches it (found with k-d trees), each inside its own bounding box, so
memory per task is bounded by the block size whatever the volume size.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
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
    "DENSE_RADIUS_VOX",
    "Cells",
    "Deformation",
    "Fibres",
    "another_round",
    "dense",
    "GroundTruth",
    "Halves",
    "PhantomSpec",
    "make_cells",
    "make_fibres",
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
_STREAM = {"cells": 1, "texture": 2, "tissue": 3, "deformation": 4, "stripes": 5, "fibres": 6}
_STRIPE_WAVES = 4  # plane waves in the stripes
_FIBRE_SEGMENTS = 8  # straight segments per fibre
_FIBRE_BEND = 0.3  # a fibre's direction changes by about this many radians per segment
_IMAGE_KEY = {"fixed": 1, "moving": 2}  # noise streams of the two images
_CORNERS = np.array(list(itertools.product((-1.0, 1.0), repeat=3)))  # (8, 3): [-1, 1]^3's

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
class Halves:
    """Two rigid halves slid against each other: ``d(x) = s(x) t``, where
    ``s(x) = tanh(((x - p) . n) / w) / 2`` runs from -1/2 to +1/2 across the plane through
    ``p`` normal to ``n``, so one half moves by ``-t/2`` and the other by ``+t/2`` (a
    piecewise-rigid truth that no single affine fits), joined over a few ``w``.

    Attributes:
        normal: (3,) unit ``n``, z y x.
        point: (3,) ``p`` on the plane, µm, z y x.
        width_um: ``w``, µm (the halves meet over about ``4 w``).
        shift_um: (3,) ``t``, the halves' relative shift, µm, z y x.

    ``|d| <= |t| / 2`` and ``||grad d|| <= |t| / (2 w)`` everywhere (exact bounds).
    """

    normal: np.ndarray
    point: np.ndarray
    width_um: float
    shift_um: np.ndarray

    def __post_init__(self):
        for name in ("normal", "point", "shift_um"):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (3,):
                raise ValueError(f"halves' {name} {value.tolist()}: expected 3 values (z y x)")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "normal", self.normal / np.linalg.norm(self.normal))
        if not self.width_um > 0:
            raise ValueError(f"halves' width_um {self.width_um}: expected > 0")

    @property
    def max_norm(self) -> float:
        """Upper bound of ``|d(x)|`` (µm)."""
        return float(np.linalg.norm(self.shift_um)) / 2

    @property
    def lipschitz(self) -> float:
        """Upper bound of the spectral norm of the Jacobian of ``d`` (unitless)."""
        return self.max_norm / self.width_um

    def _side(self, coords: Coords) -> np.ndarray:
        """``(x - p) . n`` (µm) at coordinate arrays."""
        n, p = self.normal, self.point
        return n[0] * (coords[0] - p[0]) + n[1] * (coords[1] - p[1]) + n[2] * (coords[2] - p[2])

    def at(self, coords: Coords) -> Coords:
        """``d`` at coordinate arrays (µm, z y x), as three arrays of the broadcast shape."""
        weight = np.tanh(self._side(coords) / self.width_um) / 2
        return tuple(weight * t for t in self.shift_um)

    def solve(self, u: Coords, iterations: int) -> Coords:
        """The ``x`` with ``x + d(x) = u`` (µm, z y x). Along ``n`` this is the scalar
        equation ``a + (t . n) s(a) = (u - p) . n`` for ``a = (x - p) . n``: ``iterations``
        steps of ``a <- (u - p) . n - (t . n) s(a)``; then ``x = u - s(a) t``."""
        if not iterations:
            return u
        target, along = self._side(u), float(self.shift_um @ self.normal)
        side = target
        for _ in range(iterations):
            side = target - along * np.tanh(side / self.width_um) / 2
        weight = np.tanh(side / self.width_um) / 2
        return tuple(ui - weight * t for ui, t in zip(u, self.shift_um, strict=True))

    def to_dict(self) -> dict:
        return {
            "form": "d(x) = tanh(((x - point) . normal) / width_um) / 2 * shift_um",
            "normal": self.normal.tolist(),
            "point_um": self.point.tolist(),
            "width_um": self.width_um,
            "shift_um": self.shift_um.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Halves:
        return cls(data["normal"], data["point_um"], data["width_um"], data["shift_um"])


def _deformation_from_dict(data: dict) -> Deformation | Halves:
    """The deformation written by ``to_dict`` of either kind (told apart by its fields)."""
    return Halves.from_dict(data) if "normal" in data else Deformation.from_dict(data)


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The known transform ``T(x) = A (x + d(x))``, fixed space -> moving space, µm, z y x.

    Attributes:
        affine: 4x4 homogeneous ``A`` acting on (z, y, x, 1) in µm.
        deformation: ``d``, defined in fixed space (empty: none): smooth waves
            (`Deformation`) or two rigid halves (`Halves`).
    """

    affine: np.ndarray
    deformation: Deformation | Halves = field(default_factory=Deformation)

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
        return cls(np.array(data["affine"]), _deformation_from_dict(data["deformation"]))


# --------------------------------------------------------------------------------------------
# The specification


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that defines a phantom pair; the same spec always gives the same voxels.

    Geometry (z, y, x):
        fixed_shape: fixed image shape, voxels.
        moving_shape: moving image shape, voxels (a different extent from the fixed one).
        spacing: voxel spacing of the fixed image (and of the moving one, unless
            `moving_spacing` is given), µm.
        moving_spacing: the moving image's own voxel spacing, µm (None: `spacing`), as when
            the rounds were imaged with different objectives or z steps.
        tissue_extent: tissue ellipsoid diameters as fractions of the fixed box's extent (the
            boundary is lumpy by about ±8 %); outside it the image is dark background.
        tissue_edge_um: width of the tissue's soft edge, µm.
        tissue_fills_box: True: tissue everywhere (no ellipsoid, no background; the two fields
            above are unused), with cells and fibres drawn over the fixed box and everything the
            moving box sees, grown by a cell's or a fibre's reach, so that the boxes' faces cut
            them like any other plane.

    Content:
        seed: everything random (cells, texture, tissue lumps, deformation, noise) derives from it.
        cell_density: cells per 1000 µm^3 of tissue.
        radius_range_vox: cell radii, voxels (log-uniform); within this range along every axis.
        brightness_range: cell peak intensity above the background, counts (uniform).
        cell_profile_power: ``p`` of a (non-ring) cell's profile ``b exp(-(r^2 / (2 s^2))^p)``
            (1: Gaussian; above 1: a flatter top and a sharper edge at about the same radius).
        brightness_log_uniform: True: cell peaks log-uniform in `brightness_range` instead (many
            dim cells, few bright ones).
        ring_fraction: share of the cells that are rings (drawn per cell): the profile
            ``b exp(-(r - r0)^2 / (2 w^2))`` of a bright rim around a darker centre.
        ring_radius: the rim's radius ``r0`` as a fraction of the cell's radius.
        ring_width: the rim's Gaussian sigma ``w`` as a fraction of the cell's radius.
        fibre_density: fibres per 1000 µm^3 (0: none). A fibre is a tube of Gaussian cross-section
            along a gently bent path of 8 straight segments; where fibres cross, the brighter
            one shows (the fibres' maximum is added to the scene).
        fibre_width_um: sigma of a fibre's Gaussian cross-section, µm.
        fibre_length_um: length of a fibre's path, µm.
        fibre_brightness_range: a fibre's peak intensity above the background, counts (uniform).
        fibre_z_weight: weight of z in the fibres' random directions and bends (1: isotropic;
            below 1 the fibres lie closer to y-x planes, where z planes show them as lines).
        background_level: intensity outside the tissue, counts.
        tissue_level: mean intensity of the tissue between cells, counts.
        texture_amplitude: peak amplitude of the tissue's smooth texture, counts.
        texture_scale_um: texture wavelengths lie in [1, 3] x this, µm.
        noise_sigma: per-voxel Gaussian noise, counts (independent in the two images).
        stripe_amplitude: bound on the relative gain change of the stripes (0: none): the scene
            (tissue, cells, fibres) is multiplied by ``1 + s(x)``, ``|s| <= stripe_amplitude``,
            ``s`` a sum of plane waves constant along `stripe_axis`, as light-sheet shadows are.
            The stripes belong to the scene: the moving image shows them through ``T``.
        stripe_period_um: the stripes' wavelengths lie in [0.5, 1.5] x this, µm.
        stripe_axis: the axis along which the stripes are constant (0 z, 1 y, 2 x).

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
        split_shift_um: instead of the waves (not both): the tissue's two halves on either
            side of the plane through its centre normal to `split_axis` slide against each
            other by this much, µm, z y x (`Halves`; (0, 0, 0): no split). The truth is then
            piecewise rigid on top of the affine.
        split_axis: the axis normal to the split plane (0 z, 1 y, 2 x).
        split_width_um: the halves meet over about 4x this, µm; must exceed ``|shift|`` (so
            that the gradient bound ``|shift| / (2 w)`` stays under 0.5).

    Output:
        dtype: voxel type; integer types are rounded and clipped.
        moving_dtype: the moving image's voxel type (None: `dtype`).
        moving_gain: the moving image's counts (noise included) are multiplied by this before
            the cast, as another camera or bit depth records them (e.g. 1/16 for uint8).
        chunks: dask block shape used for rendering, voxels (does not change any value).
        lowres_factors: the low-res level's downsampling factors (z, y, x) in `write_pair`, as
            a pyramid of anisotropic data makes its levels closer to isotropic (e.g. (1, 8, 8)
            for 4 x 0.5 x 0.5 µm voxels).
    """

    fixed_shape: tuple[int, int, int] = (64, 128, 128)
    moving_shape: tuple[int, int, int] = (66, 138, 120)
    spacing: tuple[float, float, float] = (0.84, 0.92, 0.92)
    moving_spacing: tuple[float, float, float] | None = None
    tissue_extent: tuple[float, float, float] = (0.8, 0.76, 0.76)
    tissue_edge_um: float = 3.0
    tissue_fills_box: bool = False
    seed: int = 0
    cell_density: float = 0.5
    radius_range_vox: tuple[float, float] = (2.0, 10.0)
    brightness_range: tuple[float, float] = (600.0, 3000.0)
    cell_profile_power: float = 1.0
    brightness_log_uniform: bool = False
    ring_fraction: float = 0.0
    ring_radius: float = 0.7
    ring_width: float = 0.2
    fibre_density: float = 0.0
    fibre_width_um: float = 1.0
    fibre_length_um: float = 100.0
    fibre_brightness_range: tuple[float, float] = (100.0, 300.0)
    fibre_z_weight: float = 1.0
    background_level: float = 100.0
    tissue_level: float = 220.0
    texture_amplitude: float = 60.0
    texture_scale_um: float = 15.0
    noise_sigma: float = 10.0
    stripe_amplitude: float = 0.0
    stripe_period_um: float = 25.0
    stripe_axis: int = 2
    moving_gamma: float = 1.0
    moving_illumination: float = 0.0
    moving_noise_sigma: float | None = None
    rotation_deg: tuple[float, float, float] = (4.0, -3.0, 2.5)
    scale: tuple[float, float, float] = (1.03, 0.98, 1.02)
    shift_um: tuple[float, float, float] = (3.0, -5.0, 6.0)
    deform_amplitude_um: float = 0.0
    deform_scale_um: float = 20.0
    deform_modes: int = 4
    split_shift_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    split_axis: int = 2
    split_width_um: float = 5.0
    dtype: str = "uint16"
    moving_dtype: str | None = None
    moving_gain: float = 1.0
    chunks: tuple[int, int, int] = (64, 64, 64)
    lowres_factors: tuple[int, int, int] = (2, 2, 2)

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
        cell_shape = (self.ring_radius, self.ring_width, self.cell_profile_power)
        if not 0 <= self.ring_fraction <= 1 or min(cell_shape) <= 0:
            raise ValueError(
                f"ring_fraction {self.ring_fraction} must be in [0, 1], ring_radius, ring_width "
                f"and cell_profile_power {cell_shape} > 0"
            )
        fibre_sizes = (self.fibre_width_um, self.fibre_length_um, self.fibre_z_weight)
        if self.fibre_density < 0 or min(fibre_sizes) <= 0:
            raise ValueError(
                f"fibre_density {self.fibre_density} must be >= 0, fibre_width_um, "
                f"fibre_length_um and fibre_z_weight {fibre_sizes} > 0"
            )
        if not 0 <= self.stripe_amplitude < 1 or self.stripe_axis not in (0, 1, 2):
            raise ValueError(
                f"stripe_amplitude {self.stripe_amplitude} must be in [0, 1) and stripe_axis "
                f"{self.stripe_axis} one of 0, 1, 2 (z, y, x)"
            )
        if self.moving_gamma <= 0 or not 0 <= self.moving_illumination < 1:
            raise ValueError(
                f"moving_gamma {self.moving_gamma} must be > 0 and moving_illumination "
                f"{self.moving_illumination} in [0, 1)"
            )
        split = float(np.linalg.norm(self.split_shift_um))
        if split and (self.deform_amplitude_um or self.split_axis not in (0, 1, 2)):
            raise ValueError(
                f"split_shift_um {self.split_shift_um} needs deform_amplitude_um 0 (got "
                f"{self.deform_amplitude_um}) and split_axis one of 0, 1, 2 (got {self.split_axis})"
            )
        if split and not split < self.split_width_um:
            raise ValueError(
                f"split_width_um {self.split_width_um} must exceed |split_shift_um| = {split:.3g}"
                " (smooth, invertible join)"
            )
        if self.deform_amplitude_um < 0 or self.deform_amplitude_um > 0.25 * self.deform_scale_um:
            raise ValueError(
                f"deform_amplitude_um {self.deform_amplitude_um} must be in [0, 0.25 * "
                f"deform_scale_um = {0.25 * self.deform_scale_um}] (smooth, invertible field)"
            )

    def image_spacing(self, image: str) -> tuple[float, float, float]:
        """The voxel spacing (µm, z y x) of ``image`` ("fixed" or "moving")."""
        if image == "moving" and self.moving_spacing is not None:
            return tuple(self.moving_spacing)
        return tuple(self.spacing)

    def image_dtype(self, image: str) -> np.dtype:
        """The voxel type of ``image`` ("fixed" or "moving")."""
        own = self.moving_dtype if image == "moving" else None
        return np.dtype(own or self.dtype)

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


DENSE_RADIUS_VOX = (8.0, 20.0)
"""`dense`'s default cell radii, voxels: 4-10 low-res voxels, as in real light-sheet data."""

_DENSE_CELL_FRACTION = 0.26  # share of the volume within a cell's radius, in `dense`


def _mean_cell_volume(radius_range_um: tuple[float, float]) -> float:
    """Mean volume (µm^3) of a ball of log-uniform radius in ``radius_range_um``."""
    low, high = radius_range_um
    cube = low**3 if high == low else (high**3 - low**3) / (3 * math.log(high / low))
    return 4 / 3 * math.pi * cube


def dense(
    spec: PhantomSpec, radius_range_vox: tuple[float, float] = DENSE_RADIUS_VOX
) -> PhantomSpec:
    """``spec`` (same shapes, spacing, transform, seed, noise and moving round) with the look of
    real light-sheet data, calibrated on its low-res level (the 2x2x2 mean).

    The tissue fills the whole box. Cells of radii ``radius_range_vox`` (voxels) fill 26 % of
    the volume (within their radii), half of them rings (rim at 0.75 radius, 0.1 radius wide),
    the others flat-topped (profile power 2); their peaks are log-uniform in 40-1200 counts
    above a 265-count tissue, so that with radii 8-20 about 125 cells at least twice the tissue
    level (and as many dimmer ones) cut a 240 x 456 low-res plane. Fibres: 0.03 per 1000 µm^3,
    100 µm long, 1.2 µm sigma, 150-600 counts, lying mostly along y-x planes (z weight 0.3).
    The tissue's texture is ±45 counts over 40-120 µm; stripes along x of ±15 % with periods
    of 10-30 µm. The low-res 1st / 50th / 90th / 99th / 99.9th percentiles come near 216 / 279
    / 449 / 890 / 1441 counts, those of real data (S, seeds 0-3: within 12 %; the 90th runs
    5-8 % low, the 99th 4-12 % high).
    """
    spec = dataclasses.replace(spec, radius_range_vox=tuple(radius_range_vox))
    return dataclasses.replace(
        spec,
        tissue_fills_box=True,
        cell_density=1000 * _DENSE_CELL_FRACTION / _mean_cell_volume(spec.radius_range_um),
        cell_profile_power=2.0,
        brightness_range=(40.0, 1200.0),
        brightness_log_uniform=True,
        ring_fraction=0.5,
        ring_radius=0.75,
        ring_width=0.1,
        fibre_density=0.03,
        fibre_width_um=1.2,
        fibre_length_um=100.0,
        fibre_brightness_range=(150.0, 600.0),
        fibre_z_weight=0.3,
        tissue_level=265.0,
        texture_amplitude=45.0,
        texture_scale_um=40.0,
        stripe_amplitude=0.15,
        stripe_period_um=20.0,
        stripe_axis=2,
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


def _random_waves(
    rng, count: int, wavelengths: tuple[float, float], flat_axis: int | None = None
) -> tuple:
    """Random plane waves: (count, 3) wavevectors (rad/unit, random directions; normal to axis
    ``flat_axis`` when given, so the waves are constant along it), phases (rad)."""
    directions = rng.normal(size=(count, 3))
    if flat_axis is not None:
        directions[:, flat_axis] = 0
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = rng.uniform(*wavelengths, size=count)
    return directions * (2 * np.pi / lengths)[:, None], rng.uniform(0, 2 * np.pi, size=count)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """(N, 3) vectors scaled to unit length."""
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


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
    plus `shift_um`; then the deformation (drawn from the seed) if `deform_amplitude_um` > 0,
    or the halves' slide if `split_shift_um` is set."""
    linear = _rotation(spec.rotation_deg) @ np.diag(spec.scale)
    fixed_centre = _box_centre(spec.fixed_shape, spec.spacing)
    target = _box_centre(spec.moving_shape, spec.image_spacing("moving")) + np.asarray(
        spec.shift_um
    )
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = target - linear @ fixed_centre
    if any(spec.split_shift_um):
        normal = np.eye(3)[spec.split_axis]
        return GroundTruth(
            affine, Halves(normal, fixed_centre, spec.split_width_um, spec.split_shift_um)
        )
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
    """The fixed image's cells: a profile ``brightness * exp(-(r^2 / (2 s^2))^p)``, ``s =
    radius / sqrt(3)``, ``p`` = `PhantomSpec.cell_profile_power` (1: Gaussian), or for a ring
    ``brightness * exp(-(r - r0)^2 / (2 w^2))`` (`PhantomSpec.ring_radius` and `ring_width` give
    ``r0`` and ``w`` as fractions of the radius). Each profile is shifted down to meet 0
    continuously where its exponent reaches a Gaussian's at `CUTOFF_SIGMAS` sigmas.

    Attributes:
        centres: (N, 3) µm, z y x, fixed space.
        radii: (N,) µm (the LoG radius; sigma = radius / sqrt(3)).
        brightness: (N,) peak above the background, counts.
        rings: (N,) bool, True for a ring.
    """

    centres: np.ndarray
    radii: np.ndarray
    brightness: np.ndarray
    rings: np.ndarray


@dataclass(frozen=True, eq=False)
class Fibres:
    """The fixed image's fibres: tubes of profile ``brightness * exp(-d^2 / (2 w^2))``, ``d``
    the distance to the path, ``w`` = `PhantomSpec.fibre_width_um`.

    Attributes:
        paths: (N, K + 1, 3) vertices of each fibre's path of K straight segments, µm, z y x,
            fixed space.
        brightness: (N,) peak above the background, counts.
    """

    paths: np.ndarray
    brightness: np.ndarray


class _Tissue:
    """Soft lumpy ellipsoid: weight 1 inside, 0 outside, a tanh edge (or weight 1 everywhere
    when the tissue fills the box); plus a smooth texture."""

    def __init__(self, spec: PhantomSpec):
        self.fills_box = spec.tissue_fills_box
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
        if self.fills_box:
            return np.ones(np.broadcast_shapes(*(np.shape(c) for c in coords)), dtype=np.float32)
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


def _cell_cutoffs(spec: PhantomSpec, radii: np.ndarray, rings: np.ndarray) -> np.ndarray:
    """Distances (µm) beyond which cells of ``radii`` (µm) are zero: where a Gaussian's
    exponent reaches that of `CUTOFF_SIGMAS` sigmas; for a ring, that many sigmas from its rim."""
    ring = (spec.ring_radius + CUTOFF_SIGMAS * spec.ring_width) * radii
    power = (CUTOFF_SIGMAS**2 / 2) ** ((1 / spec.cell_profile_power - 1) / 2)  # 1 for p = 1
    return np.where(rings, ring, CUTOFF_SIGMAS * radii / math.sqrt(3) * power)


def _fibre_cutoff(spec: PhantomSpec) -> float:
    """Distance (µm) from a fibre's path beyond which the fibre is zero."""
    return CUTOFF_SIGMAS * spec.fibre_width_um


def _content_box(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-space box [low, high] (µm, z y x) where cell centres and fibre midpoints are drawn:
    the fixed box of voxel centres; when the tissue fills the box, also everything the moving
    box sees (``T^-1`` of it), grown by the reach of the largest cell and of a fibre."""
    extent = (np.asarray(spec.fixed_shape) - 1) * np.asarray(spec.spacing)
    if not spec.tissue_fills_box:
        return np.zeros(3), extent
    truth = make_truth(spec)
    corners = (
        (_CORNERS + 1) / 2 * (np.asarray(spec.moving_shape) - 1) * spec.image_spacing("moving")
    )
    seen = _as_points(_affine_coords(np.linalg.inv(truth.affine), _as_coords(corners)))
    largest = np.full(2, spec.radius_range_um[1])  # solid and ring
    margin = max(
        float(_cell_cutoffs(spec, largest, np.array([False, True])).max()),
        spec.fibre_length_um / 2 + _fibre_cutoff(spec),
    )
    margin += truth.deformation.max_norm
    return np.minimum(seen.min(axis=0), 0) - margin, np.maximum(seen.max(axis=0), extent) + margin


def make_cells(spec: PhantomSpec) -> Cells:
    """The cells of the spec's fixed image: Poisson count, uniform positions in the content box
    (`PhantomSpec.tissue_fills_box`) kept inside the tissue (weight > 0.5), log-uniform radii
    in `radius_range_um`, uniform (or log-uniform) brightness, rings drawn with `ring_fraction`."""
    rng = np.random.default_rng([spec.seed, _STREAM["cells"]])
    low, high = _content_box(spec)
    count = rng.poisson(spec.cell_density / 1000 * float(np.prod(high - low)))
    centres = rng.uniform(low, high, size=(count, 3))
    smallest, largest = spec.radius_range_um
    radii = np.exp(rng.uniform(np.log(smallest), np.log(largest), size=count))
    if spec.brightness_log_uniform:
        brightness = np.exp(rng.uniform(*np.log(spec.brightness_range), size=count))
    else:
        brightness = rng.uniform(*spec.brightness_range, size=count)
    rings = rng.uniform(size=count) < spec.ring_fraction
    inside = _Tissue(spec).weight(_as_coords(centres)) > 0.5
    return Cells(centres[inside], radii[inside], brightness[inside], rings[inside])


def make_fibres(spec: PhantomSpec) -> Fibres:
    """The fibres of the spec's fixed image: Poisson count (`fibre_density`), midpoints uniform
    in the content box, each a path of `_FIBRE_SEGMENTS` equal segments whose direction starts
    random and turns by about `_FIBRE_BEND` rad per segment (z weighted by `fibre_z_weight`),
    uniform brightness."""
    rng = np.random.default_rng([spec.seed, _STREAM["fibres"]])
    low, high = _content_box(spec)
    count = rng.poisson(spec.fibre_density / 1000 * float(np.prod(high - low)))
    middles = rng.uniform(low, high, size=(count, 3))
    weights = np.array([spec.fibre_z_weight, 1.0, 1.0])
    direction = _unit(rng.normal(size=(count, 3)) * weights)
    steps = np.zeros((count, _FIBRE_SEGMENTS + 1, 3))
    for k in range(1, _FIBRE_SEGMENTS + 1):
        direction = _unit(direction + _FIBRE_BEND * rng.normal(size=(count, 3)) * weights)
        steps[:, k] = direction * (spec.fibre_length_um / _FIBRE_SEGMENTS)
    paths = np.cumsum(steps, axis=1)
    paths += (middles - paths[:, _FIBRE_SEGMENTS // 2])[:, None]
    return Fibres(paths, rng.uniform(*spec.fibre_brightness_range, size=count))


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


class _Stripes:
    """Light-sheet shadows: the gain ``1 + s(x)``, ``s`` a sum of plane waves whose wavevectors
    are normal to `PhantomSpec.stripe_axis` (constant along it), ``|s| <= stripe_amplitude``."""

    def __init__(self, spec: PhantomSpec):
        rng = np.random.default_rng([spec.seed, _STREAM["stripes"]])
        period = spec.stripe_period_um
        wavevectors, phases = _random_waves(
            rng, _STRIPE_WAVES, (0.5 * period, 1.5 * period), spec.stripe_axis
        )
        amplitudes = _split_total(rng, spec.stripe_amplitude, _STRIPE_WAVES)
        self.waves = (wavevectors, phases, amplitudes)

    def gain(self, coords: Coords) -> np.ndarray:
        """The gain at fixed-space coordinates (µm, z y x), float32."""
        gain = _sum_waves(tuple(c.astype(np.float32) for c in coords), *self.waves)
        gain += np.float32(1)
        return gain


class _Footprints:
    """Fixed-space boxes around items' non-zero footprints (cells, fibre segments), found per
    block with a k-d tree on the boxes' centres."""

    def __init__(self, centres: np.ndarray, half: np.ndarray):
        """``centres`` and ``half`` (half-edges): (N, 3) µm, z y x."""
        self.centres = centres
        self.half = half
        self.tree = cKDTree(centres) if len(centres) else None

    def meeting(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Sorted indices of the items whose box meets the fixed-space box [low, high] (µm)."""
        if self.tree is None:
            return np.zeros(0, dtype=int)
        centre, half = (low + high) / 2, (high - low) / 2
        reach = float(half.max() + self.half.max())
        near = np.asarray(self.tree.query_ball_point(centre, reach, p=np.inf), dtype=int)
        gap = np.abs(self.centres[near] - centre) - half
        return np.sort(near[np.all(gap <= self.half[near], axis=1)])

    def voxel_boxes(
        self, items: np.ndarray, truth: GroundTruth, spacing: tuple, moving: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Voxel index boxes [low, high) (N, 3) in the rendered image (fixed, or moving through
        ``truth``) holding each item's footprint; ``spacing`` in µm."""
        reach = self.half[items] + (truth.deformation.max_norm if moving else 0)
        points = self.centres[items, None, :] + _CORNERS[None] * reach[:, None, :]
        if moving:
            points = points @ truth.affine[:3, :3].T + truth.affine[:3, 3]
        spacing = np.asarray(spacing)
        low = np.floor(points.min(axis=1) / spacing).astype(int) - 1
        high = np.ceil(points.max(axis=1) / spacing).astype(int) + 2
        return low, high


def _offsets(coords: Coords, box: tuple[slice, ...], point: np.ndarray) -> list[np.ndarray]:
    """``coords - point`` (µm, float32) on the voxels of ``box``, one array per axis (z y x),
    each of its broadcastable shape."""
    offsets = []
    for axis, c in enumerate(coords):
        part = c[tuple(s if n > 1 else slice(None) for s, n in zip(box, c.shape, strict=True))]
        offsets.append((part - point[axis]).astype(np.float32))
    return offsets


def _profile(exponent: np.ndarray, peak: float) -> np.ndarray:
    """``peak (exp(exponent) - c) / (1 - c)`` floored at 0, in place (float32, counts): ``c``
    is a Gaussian's value at `CUTOFF_SIGMAS` sigmas, so the profile meets 0 continuously where
    the exponent reaches ``-CUTOFF_SIGMAS^2 / 2``."""
    np.exp(exponent, out=exponent)
    exponent -= np.float32(_CUTOFF_LEVEL)
    np.maximum(exponent, np.float32(0), out=exponent)
    exponent *= np.float32(peak / (1 - _CUTOFF_LEVEL))
    return exponent


class _Scene:
    """Everything random in a pair (drawn once from the spec) and the block renderer."""

    def __init__(self, spec: PhantomSpec):
        self.spec = spec
        self.truth = make_truth(spec)
        self.tissue = _Tissue(spec)
        self.cells = make_cells(spec)
        cutoffs = _cell_cutoffs(spec, self.cells.radii, self.cells.rings)
        self.cell_boxes = _Footprints(self.cells.centres, np.repeat(cutoffs[:, None], 3, axis=1))
        fibres = make_fibres(spec)
        self.starts = fibres.paths[:, :-1].reshape(-1, 3)
        self.ends = fibres.paths[:, 1:].reshape(-1, 3)
        self.fibre_brightness = np.repeat(fibres.brightness, _FIBRE_SEGMENTS)
        self.segment_boxes = _Footprints(
            (self.starts + self.ends) / 2,
            np.abs(self.ends - self.starts) / 2 + _fibre_cutoff(spec),
        )
        self.stripes = _Stripes(spec) if spec.stripe_amplitude else None

    def _boxes(self, footprints: _Footprints, bounds: tuple, region, moving: bool):
        """``(item, box)`` for each item whose footprint meets the block of ``region`` (voxels)
        whose fixed-space positions lie in ``bounds`` (low, high; µm); ``box``: slices of the
        block holding the item's footprint."""
        items = footprints.meeting(*bounds)
        start = np.array([a for a, _ in region])
        shape = [b - a for a, b in region]
        spacing = self.spec.image_spacing("moving" if moving else "fixed")
        boxes_low, boxes_high = footprints.voxel_boxes(items, self.truth, spacing, moving)
        boxes_low = np.maximum(boxes_low - start, 0)
        boxes_high = np.minimum(boxes_high - start, shape)
        for j, lo, hi in zip(items, boxes_low, boxes_high, strict=True):
            if np.all(hi > lo):
                yield j, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))

    def _cell(self, j: int, offsets: list[np.ndarray]) -> np.ndarray:
        """Cell ``j``'s intensity (counts, float32) at ``offsets`` (µm) from its centre."""
        r2 = None
        for offset in offsets:
            offset *= offset
            r2 = offset if r2 is None else r2 + offset
        radius = self.cells.radii[j]
        if self.cells.rings[j]:
            np.sqrt(r2, out=r2)
            r2 -= np.float32(self.spec.ring_radius * radius)
            r2 *= r2
            r2 *= np.float32(-0.5 / (self.spec.ring_width * radius) ** 2)
        else:
            r2 *= np.float32(-1.5 / radius**2)  # -r^2 / (2 sigma^2)
            if self.spec.cell_profile_power != 1:
                np.negative(r2, out=r2)
                np.power(r2, np.float32(self.spec.cell_profile_power), out=r2)
                np.negative(r2, out=r2)
        return _profile(r2, self.cells.brightness[j])

    def _segment(self, j: int, offsets: list[np.ndarray]) -> np.ndarray:
        """Fibre segment ``j``'s intensity (counts, float32) at ``offsets`` (µm) from its start:
        the fibre's profile at the distance to the segment."""
        direction = (self.ends[j] - self.starts[j]).astype(np.float32)
        along = offsets[0] * direction[0] + offsets[1] * direction[1]
        along = along + offsets[2] * direction[2]
        along *= np.float32(1 / np.dot(direction, direction))
        np.clip(along, np.float32(0), np.float32(1), out=along)
        d2 = None
        for offset, step in zip(offsets, direction, strict=True):
            across = offset - along * step
            across *= across
            d2 = across if d2 is None else d2 + across
        d2 *= np.float32(-0.5 / self.spec.fibre_width_um**2)
        return _profile(d2, self.fibre_brightness[j])

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
        spacing = spec.image_spacing(image)
        axes = [np.arange(a, b) * s for (a, b), s in zip(region, spacing, strict=True)]
        grid = (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])
        coords = self.truth.inverse_coords(grid) if moving else grid
        values = self.tissue.intensity(coords)
        values += np.float32(spec.background_level)
        bounds = (np.array([np.min(c) for c in coords]), np.array([np.max(c) for c in coords]))
        for j, box in self._boxes(self.cell_boxes, bounds, region, moving):
            values[box] += self._cell(j, _offsets(coords, box, self.cells.centres[j]))
        if len(self.fibre_brightness):
            fibres = np.zeros_like(values)
            for j, box in self._boxes(self.segment_boxes, bounds, region, moving):
                segment = self._segment(j, _offsets(coords, box, self.starts[j]))
                np.maximum(fibres[box], segment, out=fibres[box])
            values += fibres
        if self.stripes is not None:
            values *= self.stripes.gain(coords)
        shape = spec.moving_shape if moving else spec.fixed_shape
        if moving:
            values = self._another_round(values, region, shape)
        sigma = spec.noise_sigma
        if moving and spec.moving_noise_sigma is not None:
            sigma = spec.moving_noise_sigma
        if sigma:
            key = _noise_key(spec.seed, _IMAGE_KEY[image])
            values += np.float32(sigma) * _noise(shape, region, key)
        if moving and spec.moving_gain != 1:
            values *= np.float32(spec.moving_gain)
        dtype = spec.image_dtype(image)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        return values.astype(dtype)


# --------------------------------------------------------------------------------------------
# The public makers


def make_pair(spec: PhantomSpec) -> tuple[da.Array, da.Array, GroundTruth]:
    """Lazy fixed and moving images (z y x, their dtypes, blocks ``spec.chunks``) and the
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
                dtype=spec.image_dtype(image),
                meta=np.empty((0, 0, 0), dtype=spec.image_dtype(image)),
                name=f"phantom-{image}-{token}",
            )
        )
    return images[0], images[1], scene.truth


def write_pair(
    out_dir: str | os.PathLike, spec: PhantomSpec, ome_zarr: bool = True
) -> dict[str, str]:
    """Write a pair and its truth under ``out_dir``.

    Writes ``fixed.n5`` and ``moving.n5`` (datasets ``highres``, and ``lowres``: the mean over
    `PhantomSpec.lowres_factors` voxels of highres, trimmed to whole multiples, rounded to the
    dtype), ``fixed.ome.zarr`` and ``moving.ome.zarr`` (multiscale; skipped with
    ``ome_zarr=False``), ``truth.json`` (`GroundTruth.to_json`, with the spec as metadata) and
    ``truth_affine.txt`` (the 4x4 ``A``). Returns the paths written, by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving, truth = make_pair(spec)
    written = {}
    factors = tuple(spec.lowres_factors)
    for image, data in (("fixed", fixed), ("moving", moving)):
        n5 = out / f"{image}.n5"
        spacing = spec.image_spacing(image)
        high = write_n5(data, n5, "highres", spacing, chunks=spec.chunks)
        mean = da.coarsen(
            np.mean, high.to_dask().astype(np.float64), dict(enumerate(factors)), trim_excess=True
        )
        if np.issubdtype(high.dtype, np.integer):
            mean = da.round(mean)
        write_n5(mean.astype(high.dtype), n5, "lowres", spacing, factors, spec.chunks)
        written[f"{image}_n5"] = str(n5)
        if ome_zarr:
            zarr_path = out / f"{image}.ome.zarr"
            write_ome_zarr(zarr_path, high.to_dask(), spacing, chunks=spec.chunks, name=image)
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
        "--split-um",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="a piecewise-rigid truth: the halves either side of the x = centre plane slide "
        "against each other by this much, µm",
    )
    parser.add_argument(
        "--another-round",
        action="store_true",
        help="give the moving image another round's intensities: gamma 0.8, a +-25 %% "
        "illumination gradient and 1.5x the noise",
    )
    parser.add_argument(
        "--dense",
        action="store_true",
        help="the look of real light-sheet data: tissue filling the box, cells edge to edge "
        "(half of them rings), fibres, stripes",
    )
    parser.add_argument(
        "--radius-vox",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help=f"cell radii range, voxels (with --dense: default {DENSE_RADIUS_VOX}, the cell "
        "density following to keep the same share of the volume)",
    )
    args = parser.parse_args(argv)
    spec = dataclasses.replace(preset(args.preset), seed=args.seed)
    if args.deform_um is not None:
        spec = dataclasses.replace(spec, deform_amplitude_um=args.deform_um)
    if args.split_um:
        spec = dataclasses.replace(spec, split_shift_um=tuple(args.split_um))
    if args.another_round:
        spec = another_round(spec)
    if args.dense:
        spec = dense(spec, tuple(args.radius_vox or DENSE_RADIUS_VOX))
    elif args.radius_vox:
        spec = dataclasses.replace(spec, radius_range_vox=tuple(args.radius_vox))
    for name, path in write_pair(args.out_dir, spec).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
