"""The tutorial: docs/tutorial.md is the rendering of docs/tutorial.py, and the script runs
end to end (the Python API step by step, then the workflow) with the accuracy it claims.

The accuracy bounds come from the ground truth and the voxel size, never from a past run:
the pair must need registering (several voxels off before), the global affine must come
close to the best affine of the known transform, and each later stage must shrink the error
to a smaller fraction of a high-res voxel.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bigstream_core import api
from bigstream_core.accuracy import evaluate, foreground_points, points_inside
from bigstream_core.deform import DeformParams
from bigstream_core.intensity_refine import RefineParams
from bigstream_workflow.config import load_yaml, merge_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCRIPT, PAGE = DOCS / "tutorial.py", DOCS / "tutorial.md"
STAGES = ["before", "global affine", "local affines", "deformable"]
# pytest-xdist: on the same worker as tests/test_workflow.py, which shares the tutorial's run
# (a session fixture, made once per worker)
pytestmark = pytest.mark.xdist_group("tutorial")


def renderer():
    spec = importlib.util.spec_from_file_location("render_tutorial", DOCS / "render_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figures_on_the_page() -> set[str]:
    return set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", PAGE.read_text(encoding="utf-8")))


def test_the_page_is_the_rendering_of_the_script():
    page = renderer().render(SCRIPT.read_text(encoding="utf-8"))
    assert page == PAGE.read_text(encoding="utf-8"), "run: python docs/render_tutorial.py"
    code = re.findall(r"```python\n(.*?)\n```", page, re.S)
    assert len(code) >= 10 and "ransac_affine(" in "".join(code)


def test_the_renderer_refuses_a_script_it_would_garble():
    with pytest.raises(ValueError, match="not a comment"):
        renderer().render("# %% [markdown]\n# text\ncode = 1\n")
    with pytest.raises(ValueError, match="before the first cell"):
        renderer().render("code = 1\n# %%\n")


def test_the_figures_on_the_page_are_checked_in():
    names = figures_on_the_page()
    assert len(names) >= 4, names
    for name in names:
        data = (DOCS / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name


def best_affine_tre(namespace) -> float:
    """Mean TRE (µm) of the least-squares affine fit of the known transform itself, over the
    points the tutorial measures on: what any affine can reach on this deformed pair."""
    truth, fixed, moving = namespace["truth"], namespace["fix_hr"], namespace["mov_hr"]
    points = foreground_points(fixed)
    points = points[points_inside(truth(points), moving)]
    solution, *_ = np.linalg.lstsq(np.c_[points, np.ones(len(points))], truth(points), rcond=None)
    return evaluate(lambda p: np.c_[p, np.ones(len(p))] @ solution, truth, fixed, moving)["mean_um"]


@pytest.mark.slow
def test_each_stage_brings_the_pair_closer_to_the_truth(tutorial):
    tre = tutorial["tre_um"]
    assert list(tre) == STAGES
    voxel = min(tutorial["fix_hr"].spacing)  # µm, high-res
    low_voxel = max(tutorial["fix"].spacing)  # µm, low-res
    print({stage: round(value, 3) for stage, value in tre.items()}, f"voxel {voxel} µm")
    assert tre["before"] > 2 * low_voxel  # the pair needs registering: the test can fail
    assert tre["global affine"] < best_affine_tre(tutorial) + 0.25 * voxel
    assert tre["local affines"] < min(0.5 * tre["global affine"], 0.5 * voxel)
    assert tre["deformable"] < min(0.5 * tre["local affines"], 0.2 * voxel)
    assert tutorial["modes_agree"] is True


@pytest.mark.slow
def test_the_workflow_run_gives_the_same_registration(tutorial):
    stages = tutorial["accuracy"]["stages"]
    voxel = min(tutorial["fix_hr"].spacing)
    assert len(stages) == len(STAGES)
    for row, stage in zip(stages, STAGES, strict=True):
        assert row["mean_um"] == pytest.approx(tutorial["tre_um"][stage], abs=0.05 * voxel), stage
    assert tutorial["accuracy"]["mean_um"] < 0.2 * voxel
    assert (Path(tutorial["config"]["output_dir"]) / "aligned.ome.zarr").is_dir()


def called_with(function, given: dict) -> dict:
    """The keyword values a call of ``function`` gets: ``given`` over the defaults."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **given}


def same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, list | tuple) else a == b


@pytest.mark.slow
def test_the_api_calls_use_the_parameters_of_the_config_the_workflow_runs(tutorial):
    defaults = load_yaml(ROOT / "config" / "config.yaml")
    config = merge_config(defaults, load_yaml(tutorial["config_file"]))
    local = {**tutorial["local_kwargs"], **tutorial["TILES"]}
    for function, given, block in [
        (api.ransac_affine, tutorial["global_kwargs"], "global_affine"),
        (api.tiled_ransac_affine, local, "local_affine"),
        (api.tiled_deformable_align, {"blocksize": tutorial["deform_blocksize"]}, "deform"),
    ]:
        values = called_with(function, given)
        shared = set(values) & set(config[block])
        assert "blocksize" in shared, block
        for key in shared:
            if values[key] is None and isinstance(config[block][key], dict):
                # a sub-block the API leaves at None: the run must use its defaults, which
                # are the refinement's own (the API's None)
                assert config[block][key] == defaults[block][key], (block, key)
                assert RefineParams.from_config(config[block][key]) == RefineParams()
                assert not config[block][key]["enabled"]
                continue
            assert same(values[key], config[block][key]), (block, key)
        if "seed" in values:
            assert values["seed"] == config["seed"], block
    assert DeformParams.from_config(tutorial["deform_kwargs"]) == DeformParams.from_config(
        config["deform"]
    )
    assert tutorial["ON_HIGHRES"]["local_level_factor"] == 2  # the low-res level is 2x coarser


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.mark.slow
def test_the_figures_are_written_and_show_each_improvement(tutorial):
    figures, shown = Path(tutorial["FIGURES"]), tutorial["shown"]
    assert set(shown) == figures_on_the_page()
    for name, planes in shown.items():
        image = imread(figures / name)
        assert image.shape[1] > image.shape[0] and np.ptp(image[..., :3]) > 0.5, name
        fixed, *moving = planes
        for before, after in zip(moving, moving[1:], strict=False):
            assert not np.array_equal(before, after), name
            assert correlation(fixed, after) > correlation(fixed, before), name
    # the workflow's aligned.ome.zarr looks like the API's: better than the affines alone
    fixed, affines_only, deformed = shown["3_deformable.png"]
    workflow = shown["4_workflow.png"][1]
    assert correlation(fixed, workflow) > correlation(fixed, affines_only)
    assert correlation(workflow, deformed) > 0.99
