"""Rule `collect_deform_report`: one table row per deform block (metric, iterations, time)."""

import json

import pandas as pd

from bigstream_core import atomic
from bigstream_workflow.logs import configure

log = configure(snakemake)
rows = []
for path in snakemake.params.reports:  # every block's report, in grid order
    with open(path, encoding="utf-8") as handle:
        row = json.load(handle)
    row["iterations"] = ",".join(str(count) for count in row["iterations"])
    row.pop("halo")
    rows.append(row)
report = pd.DataFrame(rows)
atomic.write_table(snakemake.output[0], report)
log.info("%d blocks:\n%s", len(report), report.to_string(index=False))
