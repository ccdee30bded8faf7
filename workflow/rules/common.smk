# Shared set-up: config checks, image metadata, tile grids, output paths.
import sys

# Jobs import bigstream_core from this checkout, whatever environment runs them.
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)

from snakemake.exceptions import WorkflowError

from bigstream_core.config import ConfigError, checked_config
from bigstream_core.plan import stage_grids
from bigstream_core.provenance import source_digest
from bigstream_core.summary import run_summary
from bigstream_core.tiling import TILE_ID_PATTERN

try:
    IMAGES = checked_config(config, os.path.join(workflow.basedir, "schemas", "config.schema.yaml"))
except ConfigError as error:
    raise WorkflowError(f"bigstream-workflow: {error}") from None

GRIDS = stage_grids(config, IMAGES)
OUT = config["output_dir"]
CODE_VERSION = source_digest()


wildcard_constraints:
    tile=TILE_ID_PATTERN,


def out(*parts):
    """Path of a result under output_dir."""
    return os.path.join(OUT, *parts)


def plan_config():
    """The part of the config the plan depends on."""
    keys = ("fixed", "moving", "global_affine", "local_affine", "deform", "resample")
    return {key: config[key] for key in keys}


def final_targets():
    """What `rule all` asks for: every stage that exists so far."""
    targets = [out("plan", "images.json")]
    if config.get("ground_truth"):
        targets.append(out("qc", "accuracy.json"))
    return targets
