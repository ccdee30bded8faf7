"""Rule `sets_summary`: the table and plot comparing the sets of a rounds/sweep run."""

from bigstream_core import atomic
from bigstream_workflow.logs import configure
from bigstream_workflow.sets_summary import plot_summary, summary_table

log = configure(snakemake)
sets = snakemake.params.sets
table = summary_table(sets)
with atomic.atomic_path(snakemake.output.plot) as part:
    plot_summary(table, list(sets[0]["params"]), part)
atomic.write_table(snakemake.output.table, table)
log.info("%d sets, best first:\n%s", len(table), table.to_string(index=False))
