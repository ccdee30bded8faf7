"""Rule `match_keypoints`: correspondences between the fixed and moving key points."""

import pandas as pd

from bigstream_core import atomic
from bigstream_core.global_affine import MATCH_COLUMNS, GlobalAffineError, match_images, strongest
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
ga = snakemake.params.keypoints
images = open_config_images(snakemake.params.images)
points = {
    role: strongest((pd.read_parquet(path) for path in snakemake.input[role]), ga["nspots"])
    for role in ("fixed", "moving")
}
try:
    matches, info = match_images(
        images["fixed"]["lowres"], points["fixed"], images["moving"]["lowres"], points["moving"],
        ga["cc_radius"], ga["match_threshold"], ga["align_threshold"], snakemake.params.seed,
    )  # fmt: skip
except GlobalAffineError as error:
    if ga["on_failure"] != "identity":
        raise
    log.warning("%s; global_affine.on_failure = identity, going on without it", error)
    matches, info = pd.DataFrame(columns=MATCH_COLUMNS), {"error": str(error)}
info.update({f"{role}_points": len(points[role]) for role in points})
atomic.write_table(snakemake.output.matches, matches)
atomic.write_json(snakemake.output.info, info)
log.info("matches: %s", info)
