"""Synthetic pairs: the truth is right (checked by resampling, not by the generator's inverse),
the inverse is exact, rendering is deterministic and block-wise, the content is as documented."""

import dataclasses
import json
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from bigstream_core.io import open_image
from bigstream_core.phantom import (
    CONVENTION,
    GroundTruth,
    Halves,
    PhantomSpec,
    another_round,
    dense,
    main,
    make_cells,
    make_fibres,
    make_pair,
    preset,
    write_pair,
)
from bigstream_core.resample import resample

REAL_PERCENTILES = {1: 216, 50: 279, 90: 449, 99: 890, 99.9: 1441}
"""Low-res percentiles (counts) of real light-sheet data, which `dense` imitates."""


def _voxel_points(shape, spacing):
    """Physical positions (µm, z y x) of every voxel of a grid, (N, 3)."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _resampling_errors(fixed, coefficients, moving_shape, spacing, transform):
    """aligned(x) = moving(transform(x)) by cubic interpolation, compared with the fixed image
    where transform(x) lies 2 voxels inside the moving box. Returns (Pearson r, max |error|)."""
    voxels = transform(_voxel_points(fixed.shape, spacing)) / np.asarray(spacing)
    inside = np.all((voxels >= 2) & (voxels <= np.asarray(moving_shape) - 3), axis=1)
    aligned = ndimage.map_coordinates(coefficients, voxels[inside].T, order=3, prefilter=False)
    reference = fixed.reshape(-1)[inside].astype(float)
    assert inside.mean() > 0.5
    return np.corrcoef(aligned, reference)[0, 1], np.abs(aligned - reference).max()


def _lowres(volume):
    """The 2x2x2 mean of a volume (z y x), trimmed to even sizes and rounded, as `write_pair`'s
    ``lowres`` dataset."""
    z, y, x = (n // 2 for n in volume.shape)
    trimmed = volume[: 2 * z, : 2 * y, : 2 * x].astype(float)
    return np.rint(trimmed.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5)))


# the dense look's rings and fibres are thinner than the sparse cells: cubic interpolation
# misses more of their peaks (2.8 % of the range measured)
@pytest.mark.parametrize(("look", "max_relative_error"), [(None, 0.005), (dense, 0.05)])
@pytest.mark.parametrize("deform_um", [0.0, 2.5])
def test_moving_resampled_through_the_truth_reproduces_fixed(deform_um, look, max_relative_error):
    spec = PhantomSpec() if look is None else look(PhantomSpec())
    spec = dataclasses.replace(spec, noise_sigma=0.0, deform_amplitude_um=deform_um)
    fixed, moving, truth = make_pair(spec)
    fixed, moving = da.compute(fixed, moving)
    coefficients = ndimage.spline_filter(moving.astype(float), order=3)
    args = (fixed, coefficients, spec.moving_shape, spec.spacing)
    r, max_error = _resampling_errors(*args, truth)
    dynamic_range = float(fixed.max()) - float(fixed.min())
    assert r > 0.9999
    assert max_error < max_relative_error * dynamic_range

    # negative control: the same check with the truth moved by 2 µm along x fails clearly
    shifted = np.eye(4)
    shifted[2, 3] = 2.0
    wrong = GroundTruth(shifted @ truth.affine, truth.deformation)
    r_wrong, max_wrong = _resampling_errors(*args, wrong)
    assert r_wrong < 0.99
    assert max_wrong > 0.2 * dynamic_range
    if deform_um:  # and so does ignoring the deformation
        r_rigid, _ = _resampling_errors(*args, GroundTruth(truth.affine))
        assert r_rigid < r - 0.005


@pytest.mark.parametrize(("amplitude", "scale"), [(2.5, 20.0), (5.0, 20.0)])
def test_inverse_is_exact_with_a_deformation(amplitude, scale):
    spec = dataclasses.replace(PhantomSpec(), deform_amplitude_um=amplitude, deform_scale_um=scale)
    truth = make_pair(spec)[2]
    assert 0.5 * amplitude < np.abs(truth.displacement(_voxel_points((8, 8, 8), (8, 15, 15)))).max()
    rng = np.random.default_rng(1)
    fixed_points = rng.uniform(-20, 140, size=(20000, 3))
    moving_points = truth(fixed_points)
    assert np.abs(truth.inverse(moving_points) - fixed_points).max() < 1e-3
    assert np.abs(truth(truth.inverse(fixed_points)) - fixed_points).max() < 1e-3
    linear = moving_points - truth.affine[:3, 3]
    undeformed = np.linalg.solve(truth.affine[:3, :3], linear.T).T
    assert np.allclose(undeformed - fixed_points, truth.displacement(fixed_points))


def test_two_halves_move_rigidly_apart_and_the_truth_says_so_exactly(tmp_path):
    shift = (0.0, 3.0, 2.0)
    spec = dataclasses.replace(PhantomSpec(), noise_sigma=0.0, split_shift_um=shift)
    fixed, moving, truth = make_pair(spec)
    centre_x = (spec.fixed_shape[2] - 1) / 2 * spec.spacing[2]
    far = np.array([[30.0, 60.0, centre_x - 40], [30.0, 60.0, centre_x + 40]])
    assert np.allclose(truth.displacement(far), [np.negative(shift) / 2, np.divide(shift, 2)])
    rng = np.random.default_rng(2)
    points = rng.uniform(-20, 140, size=(20000, 3))
    assert np.abs(truth.inverse(truth(points)) - points).max() < 1e-3
    truth.to_json(tmp_path / "truth.json")
    again = GroundTruth.from_json(tmp_path / "truth.json")
    assert np.array_equal(again(points), truth(points))
    fixed, moving = da.compute(fixed, moving)
    coefficients = ndimage.spline_filter(moving.astype(float), order=3)
    args = (fixed, coefficients, spec.moving_shape, spec.spacing)
    r, _ = _resampling_errors(*args, truth)
    r_affine, _ = _resampling_errors(*args, GroundTruth(truth.affine))  # the halves ignored
    assert r > 0.9999 and r_affine < r - 0.005, (r, r_affine)
    with pytest.raises(ValueError, match="split_width_um"):
        dataclasses.replace(spec, split_width_um=3.0)  # narrower than the 3.6 um shift
    with pytest.raises(ValueError, match="deform_amplitude_um 0"):
        dataclasses.replace(spec, deform_amplitude_um=1.0)
    main([str(tmp_path / "cli"), "--preset", "tiny", "--split-um", "0", "1", "0.5"])
    written = GroundTruth.from_json(tmp_path / "cli" / "truth.json").deformation
    assert isinstance(written, Halves) and list(written.shift_um) == [0.0, 1.0, 0.5]


def test_truth_json_round_trip(tmp_path):
    truth = make_pair(dataclasses.replace(preset("tiny"), deform_amplitude_um=1.0))[2]
    truth.to_json(tmp_path / "truth.json", metadata={"note": 1})
    again = GroundTruth.from_json(tmp_path / "truth.json")
    points = np.random.default_rng(0).uniform(0, 40, size=(100, 3))
    assert np.array_equal(again(points), truth(points))
    assert np.array_equal(again.inverse(points), truth.inverse(points))
    text = (tmp_path / "truth.json").read_text()
    (tmp_path / "other.json").write_text(text.replace(CONVENTION, "moving->fixed"))
    with pytest.raises(ValueError, match="convention"):
        GroundTruth.from_json(tmp_path / "other.json")


def test_rendering_is_deterministic_and_independent_of_blocks():
    spec = dataclasses.replace(preset("tiny"), deform_amplitude_um=1.5)
    fixed, moving, _ = make_pair(spec)
    first = [fixed.compute(), moving.compute()]
    again = [a.compute() for a in make_pair(spec)[:2]]
    with dask.config.set(scheduler="synchronous"):
        reblocked = [
            a.compute() for a in make_pair(dataclasses.replace(spec, chunks=(7, 16, 9)))[:2]
        ]
    for a, b, c in zip(first, again, reblocked, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(moving[5:17, 3:30, 20:].compute(), first[1][5:17, 3:30, 20:])
    other = [a.compute() for a in make_pair(dataclasses.replace(spec, seed=1))[:2]]
    assert all(np.mean(a != b) > 0.5 for a, b in zip(first, other, strict=True))
    # the two images' noise is independent
    quiet = [a.compute() for a in make_pair(dataclasses.replace(spec, noise_sigma=0.0))[:2]]
    noise = [a.astype(float) - q for a, q in zip(first, quiet, strict=True)]
    assert 8 < noise[0].std() < 12
    size = min(n.size for n in noise)
    assert abs(np.corrcoef(noise[0].ravel()[:size], noise[1].ravel()[:size])[0, 1]) < 0.05


def test_fixed_image_has_the_documented_content():
    spec = dataclasses.replace(PhantomSpec(), noise_sigma=0.0)
    fixed = make_pair(spec)[0].compute()
    assert fixed.dtype == np.uint16
    background = np.abs(fixed.astype(float) - spec.background_level) <= 2
    assert 0.2 < background.mean() < 0.8  # the tissue leaves real background around it
    assert fixed.max() > 2000
    cells = make_cells(spec)
    assert len(cells.radii) > 50
    radii_vox = cells.radii[:, None] / np.asarray(spec.spacing)
    assert radii_vox.min() >= 2 and radii_vox.max() <= 10
    assert radii_vox.max() > 6 and radii_vox.min() < 3

    # the image's blobs have the cells' sizes and brightness: isolated cells (few cells, so many
    # are) have the second moments and peak of exp(-r^2 / (2 sigma^2)) on the same voxels
    sparse = dataclasses.replace(preset("S"), noise_sigma=0.0, cell_density=0.05)
    with_cells = make_pair(sparse)[0]
    without = make_pair(dataclasses.replace(sparse, cell_density=0.0))[0]
    cells = make_cells(sparse)
    sigma = cells.radii / np.sqrt(3)
    gaps = np.abs(cells.centres[:, None] - cells.centres[None]).max(axis=2)
    far = gaps >= 2.5 * sigma[:, None] + 3.5 * sigma[None]
    np.fill_diagonal(far, True)
    spacing = np.asarray(sparse.spacing)
    checked = 0
    for j in np.flatnonzero(far.all(axis=1)):
        low = np.ceil((cells.centres[j] - 2.5 * sigma[j]) / spacing).astype(int)
        high = np.floor((cells.centres[j] + 2.5 * sigma[j]) / spacing).astype(int) + 1
        if np.any(low < 0) or np.any(high > sparse.fixed_shape):
            continue
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        blob = with_cells[box].compute().astype(float) - without[box].compute()
        axes = [np.arange(s.start, s.stop) * d for s, d in zip(box, spacing, strict=True)]
        grid = np.meshgrid(*axes, indexing="ij")
        offsets = [p - c for p, c in zip(grid, cells.centres[j], strict=True)]
        model = np.exp(-sum(o**2 for o in offsets) / (2 * sigma[j] ** 2))
        for o in offsets:
            moment = np.sqrt((blob * o**2).sum() / blob.sum())
            assert moment == pytest.approx(np.sqrt((model * o**2).sum() / model.sum()), rel=0.03)
        assert blob.max() == pytest.approx(cells.brightness[j] * model.max(), rel=0.03)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name", ["tiny", "small", "S", "2S"])
def test_presets_put_the_warped_tissue_inside_the_moving_box(name):
    spec = preset(name)
    assert spec.moving_shape != spec.fixed_shape
    truth = make_pair(spec)[2]
    cells = make_cells(spec)
    assert len(cells.radii) > 20
    moved = truth(cells.centres)
    extent = (np.asarray(spec.moving_shape) - 1) * np.asarray(spec.spacing)
    assert np.all((moved >= 0) & (moved <= extent), axis=1).mean() > 0.95


def test_preset_sizes():
    names = ["tiny", "small", "S", "2S", "4S", "8S", "64S"]
    voxels = {name: np.prod(preset(name).fixed_shape) for name in names}
    assert voxels["tiny"] < voxels["small"] < voxels["S"]
    for multiple in (2, 4, 8, 64):  # named by their voxels (edges rounded to even: ~1 % off)
        assert voxels[f"{multiple}S"] / voxels["S"] == pytest.approx(multiple, rel=0.02)
    assert preset("8S").fixed_shape == (300, 500, 900)
    assert voxels["64S"] * 2 > 2**30 and np.prod(preset("64S").moving_shape) * 2 > 2**30
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="deform_amplitude_um"):
        PhantomSpec(deform_amplitude_um=10.0, deform_scale_um=20.0)


@pytest.mark.parametrize("look", [None, dense])
def test_memory_is_bounded_by_the_block_not_the_volume(tmp_path, look):
    spec = PhantomSpec(fixed_shape=(128, 256, 256), chunks=(32, 32, 32))
    spec = spec if look is None else look(spec)
    fixed = make_pair(spec)[0]
    target = np.lib.format.open_memmap(
        tmp_path / "fixed.npy", mode="w+", dtype=fixed.dtype, shape=fixed.shape
    )
    tracemalloc.start()
    # one thread: how many blocks a thread pool keeps in flight depends on the machine's load
    da.store(fixed, target, lock=False, scheduler="synchronous")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    volume_bytes = fixed.size * 4  # the float32 volume a whole-volume renderer would hold
    assert peak < volume_bytes / 10, f"peak {peak / 2**20:.1f} MiB"
    block = np.s_[32:64, 64:96, 96:128]
    assert np.array_equal(target[block], fixed[block].compute())


def test_write_pair_and_cli(tmp_path, capsys):
    spec = preset("tiny")
    paths = write_pair(tmp_path / "pair", spec)
    fixed, moving, truth = make_pair(spec)
    for image, data in (("fixed", fixed), ("moving", moving)):
        high = open_image(paths[f"{image}_n5"], "highres")
        low = open_image(paths[f"{image}_n5"], "lowres")
        assert high.shape == data.shape and high.spacing == pytest.approx(spec.spacing)
        assert low.shape == tuple(n // 2 for n in data.shape)
        assert low.spacing == pytest.approx(2 * np.asarray(spec.spacing))
        values = data.compute()
        assert np.array_equal(high.read((slice(None),) * 3), values)
        expected = values.reshape(low.shape[0], 2, low.shape[1], 2, low.shape[2], 2).mean((1, 3, 5))
        assert np.abs(low.read((slice(None),) * 3) - expected).max() <= 0.5
        ome = open_image(paths[f"{image}_ome_zarr"])
        assert ome.shape == data.shape and ome.spacing == pytest.approx(spec.spacing)
    assert np.array_equal(np.loadtxt(paths["truth_affine"]), truth.affine)
    assert np.array_equal(GroundTruth.from_json(paths["truth_json"]).affine, truth.affine)

    main([str(tmp_path / "cli"), "--preset", "tiny", "--seed", "3", "--deform-um", "1"])
    printed = capsys.readouterr().out
    assert "truth_json" in printed and (tmp_path / "cli" / "moving.n5").is_dir()
    written = GroundTruth.from_json(tmp_path / "cli" / "truth.json")
    assert 0 < written.deformation.max_norm <= 1.0 + 1e-9


def test_existing_presets_are_unchanged():
    """The voxels of two tiny pairs, summarised before the dense options were added: the same
    sums up to rare ±1 roundings (float32 exp and cos may differ in the last bit between CPUs).
    The full arrays were byte-identical (sha256) on the machine that added them."""
    deformed = another_round(dataclasses.replace(preset("tiny"), deform_amplitude_um=1.0, seed=2))
    expected = {
        "tiny": [(7104979, 35520618), (7432340, 37217787)],
        "tiny, deformed, another round": [(6893321, 34457188), (6129729, 30688043)],
    }
    for (name, sums), spec in zip(expected.items(), [preset("tiny"), deformed], strict=True):
        for image, (total, weighted) in zip(make_pair(spec)[:2], sums, strict=True):
            voxels = image.compute().reshape(-1).astype(np.int64)
            weights = np.arange(voxels.size, dtype=np.int64) * 2654435761 % 11
            assert abs(int(voxels.sum()) - total) <= 1e-3 * voxels.size, name
            assert abs(int((voxels * weights).sum()) - weighted) <= 1e-2 * voxels.size, name


def test_dense_pair_fills_both_boxes_with_tissue():
    spec = dense(preset("small"))
    for image in make_pair(spec)[:2]:
        values = image.compute()
        assert np.percentile(values, 1) > 1.8 * spec.background_level  # no dark surround
        for axis in range(3):
            for end in (0, -1):  # every face cuts tissue and cells
                face = np.take(values, end, axis=axis)
                assert np.percentile(face, 1) > 180
                assert np.percentile(face, 99) > 2 * np.median(face)
    cells, fibres = make_cells(spec), make_fibres(spec)
    assert 0.4 < cells.rings.mean() < 0.6 and len(fibres.brightness) > 50
    extent = (np.asarray(spec.fixed_shape) - 1) * np.asarray(spec.spacing)
    outside = np.any((cells.centres < 0) | (cells.centres > extent), axis=1)
    assert 0.2 < outside.mean() < 0.9  # drawn beyond the box too, so that its faces cut them


def test_dense_rings_are_darker_at_the_centre_than_at_the_rim():
    spec = dense(preset("small"))
    cells_only = {"noise_sigma": 0.0, "texture_amplitude": 0.0, "stripe_amplitude": 0.0}
    spec = dataclasses.replace(spec, fibre_density=0.0, dtype="float32", **cells_only)
    fixed = make_pair(spec)[0].compute()
    cells = make_cells(spec)
    steps = np.array([sign * np.eye(3)[axis] for axis in range(3) for sign in (-1, 1)])
    rings, solid = [], []
    for centre, radius, brightness, ring in zip(
        cells.centres, cells.radii, cells.brightness, cells.rings, strict=True
    ):
        points = np.vstack([centre, centre + spec.ring_radius * radius * steps])
        index = np.rint(points / np.asarray(spec.spacing)).astype(int)
        if np.any(index < 0) or np.any(index >= spec.fixed_shape):
            continue
        values = fixed[tuple(index.T)]
        contrast = (values[1:].mean() - values[0]) / brightness  # rim minus centre
        (rings if ring else solid).append(contrast)
    assert len(rings) >= 10 and len(solid) >= 10
    # a ring: 0 at the centre, about its peak on the rim; a flat-topped cell: its peak at the
    # centre, half of it at the rim's radius (brighter neighbours overlap a few)
    assert np.median(rings) > 0.8 and np.mean(np.array(rings) > 0.5) > 0.8
    assert np.median(solid) < -0.3 and np.mean(np.array(solid) < 0) > 0.8


def test_dense_lowres_percentiles_and_cells_per_plane_are_those_of_real_data():
    spec = dense(preset("S"))
    lowres = _lowres(make_pair(spec)[0].compute())
    measured = np.percentile(lowres, list(REAL_PERCENTILES))
    assert measured == pytest.approx(list(REAL_PERCENTILES.values()), rel=0.15)
    # cells at least twice the tissue level cut by z planes, per 240 x 456 low-res voxels
    cells = make_cells(spec)
    spacing = np.asarray(spec.spacing)
    extent = (np.asarray(spec.fixed_shape) - 1) * spacing
    in_plane = np.all((cells.centres[:, 1:] >= 0) & (cells.centres[:, 1:] <= extent[1:]), axis=1)
    bright = in_plane & (cells.brightness >= spec.tissue_level)
    cut = [
        np.sum(bright & (np.abs(cells.centres[:, 0] - z) < cells.radii))
        for z in np.linspace(0.1, 0.9, 9) * extent[0]
    ]
    real_plane = 240 * 456 * np.prod(2 * spacing[1:])
    assert 100 < np.mean(cut) * real_plane / np.prod(extent[1:]) < 160


def test_dense_moving_is_the_fixed_scene_exactly():
    """With a whole-voxel translation for the truth, moving voxels are fixed voxels (no
    interpolation): cells, rings, fibres and stripes are evaluated at the same points."""
    spec = dense(PhantomSpec())
    shift_vox = np.array([2, -3, 4])
    spec = dataclasses.replace(
        spec,
        rotation_deg=(0.0, 0.0, 0.0),
        scale=(1.0, 1.0, 1.0),
        shift_um=tuple(shift_vox * np.asarray(spec.spacing)),
        noise_sigma=0.0,
        dtype="float32",
    )
    fixed, moving, truth = make_pair(spec)
    offset = (np.asarray(spec.moving_shape) - spec.fixed_shape) // 2 + shift_vox  # (3, 2, 0)
    assert np.allclose(truth.affine[:3, 3], offset * np.asarray(spec.spacing))
    moving_part = moving[3:, 2:130, :].compute()
    fixed_part = fixed[:63, :, :120].compute()
    np.testing.assert_allclose(moving_part, fixed_part, rtol=1e-4, atol=1e-3)


def test_dense_rendering_is_deterministic_and_independent_of_blocks():
    spec = dataclasses.replace(dense(preset("small")), deform_amplitude_um=2.0, seed=4)
    first = [a.compute() for a in make_pair(spec)[:2]]
    again = [a.compute() for a in make_pair(spec)[:2]]
    with dask.config.set(scheduler="synchronous"):
        reblocked = [
            a.compute() for a in make_pair(dataclasses.replace(spec, chunks=(17, 33, 29)))[:2]
        ]
    for a, b, c in zip(first, again, reblocked, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_dense_spec_and_cli(tmp_path):
    spec = dense(preset("S"))
    kept = ("fixed_shape", "moving_shape", "spacing", "seed", "rotation_deg", "shift_um")
    assert all(getattr(spec, name) == getattr(preset("S"), name) for name in kept)
    assert spec.radius_range_vox == (8.0, 20.0)
    smaller = dense(preset("S"), (4.0, 10.0))
    assert smaller.cell_density == pytest.approx(8 * spec.cell_density, rel=0.01)  # same share
    for wrong in ({"ring_fraction": 1.5}, {"fibre_width_um": 0.0}, {"stripe_axis": 3}):
        with pytest.raises(ValueError):
            dataclasses.replace(spec, **wrong)

    args = ["--preset", "tiny", "--dense", "--another-round", "--radius-vox", "3", "6"]
    main([str(tmp_path / "cli"), *args, "--seed", "2", "--deform-um", "1"])
    written = json.loads((tmp_path / "cli" / "truth.json").read_text())["metadata"]["phantom_spec"]
    expected = dense(another_round(preset("tiny")), (3.0, 6.0))
    expected = dataclasses.replace(expected, seed=2, deform_amplitude_um=1.0)
    assert written == json.loads(json.dumps(dataclasses.asdict(expected)))


def test_a_moving_round_at_its_own_spacing_and_dtype_shows_the_same_scene(tmp_path):
    """`moving_spacing`, `moving_dtype`, `moving_gain` and `lowres_factors`: the moving image is
    rendered on its own grid and type, and pulled back through the truth it is the fixed one
    (a sampling of the same scene, scaled by the gain)."""
    spec = dataclasses.replace(
        preset("tiny"), noise_sigma=0.0, moving_spacing=(0.7, 1.1, 0.95), moving_dtype="uint8",
        moving_gain=1 / 16, lowres_factors=(1, 2, 2),
    )  # fmt: skip
    paths = write_pair(tmp_path / "pair", spec, ome_zarr=False)
    fixed = open_image(paths["fixed_n5"], "highres")
    moving = open_image(paths["moving_n5"], "highres")
    assert moving.spacing == pytest.approx(spec.moving_spacing) and moving.dtype == np.uint8
    assert fixed.spacing == pytest.approx(spec.spacing) and fixed.dtype == np.uint16
    low = open_image(paths["moving_n5"], "lowres")
    assert low.spacing == pytest.approx(np.multiply(spec.moving_spacing, (1, 2, 2)))
    assert low.shape == (spec.moving_shape[0], spec.moving_shape[1] // 2, spec.moving_shape[2] // 2)
    truth = GroundTruth.from_json(paths["truth_json"])
    pulled = resample(moving, truth, fixed.shape, fixed.spacing, order=1).compute()
    values = fixed.read((slice(None),) * 3).astype(float) / 16
    inside = pulled > 0
    assert inside.mean() > 0.5
    assert np.corrcoef(pulled[inside], values[inside])[0, 1] > 0.9
    assert np.median(np.abs(pulled[inside] - values[inside])) < 2  # counts of the uint8 round
