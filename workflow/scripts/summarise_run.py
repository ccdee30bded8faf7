"""Rule `summarise_run`: the run's summary (where the results are, the field's health, the
accuracy and the NCC after each stage) as a file, the text a run prints when it ends; a
deployment (the workflow as a module) does not print it, so it is here."""

from pathlib import Path

from bigstream_core import atomic
from bigstream_workflow.logs import configure
from bigstream_workflow.summary import run_summary

log = configure(snakemake)
output = Path(snakemake.output[0])
text = run_summary(str(output.parent), snakemake.params.tile_counts)
atomic.write_text(output, text.lstrip("\n") + "\n")
log.info("wrote %s", output)
