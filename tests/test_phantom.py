"""Synthetic pairs: the truth is right (checked by resampling, not by the generator's inverse),
the inverse is exact, rendering is deterministic and block-wise, the content is as documented."""

import dataclasses
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
    PhantomSpec,
    main,
    make_cells,
    make_pair,
    preset,
    write_pair,
)


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


@pytest.mark.parametrize("deform_um", [0.0, 2.5])
def test_moving_resampled_through_the_truth_reproduces_fixed(deform_um):
    spec = dataclasses.replace(PhantomSpec(), noise_sigma=0.0, deform_amplitude_um=deform_um)
    fixed, moving, truth = make_pair(spec)
    fixed, moving = da.compute(fixed, moving)
    coefficients = ndimage.spline_filter(moving.astype(float), order=3)
    args = (fixed, coefficients, spec.moving_shape, spec.spacing)
    r, max_error = _resampling_errors(*args, truth)
    dynamic_range = float(fixed.max()) - float(fixed.min())
    assert r > 0.9999
    assert max_error < 0.005 * dynamic_range

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


def test_memory_is_bounded_by_the_block_not_the_volume(tmp_path):
    spec = PhantomSpec(fixed_shape=(128, 256, 256), chunks=(32, 32, 32))
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
