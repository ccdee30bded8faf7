# The workflow's Python (bigstream_core, bigstream_workflow) comes from the installed
# `bigstream-workflow` package, in the environment that runs Snakemake and its jobs.
try:
    from bigstream_workflow.config import load_yaml, merge_config
    from bigstream_workflow.output_lock import locking_onstart
    from bigstream_workflow.retries import clearing_onstart
except ModuleNotFoundError as error:
    from snakemake.exceptions import WorkflowError

    raise WorkflowError(
        f"bigstream-workflow: the Python package is not installed ({error}). Install it in the "
        "environment that runs snakemake: `pip install -e <clone>` (or "
        "`pip install git+<repository>@<tag>` for a deployed workflow)."
    ) from None
