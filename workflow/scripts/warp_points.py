"""Rule `warp_points`: a table of points carried into the other image's space."""

from bigstream_core.points import read_points, warp_points, write_points
from bigstream_workflow.logs import configure
from bigstream_workflow.transform_files import load_inverse, load_transform, stage_files

log = configure(snakemake)
files = stage_files(list(snakemake.input.transforms))
table = read_points(snakemake.input.table)
if snakemake.params.space == "fixed":
    point_map, description = load_transform(files)
else:
    point_map, description = load_inverse(files), "inverse of the full transform"
write_points(snakemake.output[0], warp_points(table, point_map))
log.info("%d points from %s space through %s", len(table), snakemake.params.space, description)
