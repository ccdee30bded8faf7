"""Rule `apply_global_affine`: the low-res moving image in the fixed grid under the global
affine."""

from bigstream_workflow.logs import configure
from bigstream_workflow.lowres_view import write_lowres_view

log = configure(snakemake)
write_lowres_view(snakemake.params.images, list(snakemake.input), snakemake.output[0],
                  snakemake.config, log, snakemake.threads)  # fmt: skip
