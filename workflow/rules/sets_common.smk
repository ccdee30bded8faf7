# Rounds and sweeps: the sets, and the helpers sets.smk uses (kept apart from its rules).
import os

from snakemake.exceptions import WorkflowError

from bigstream_workflow.config import ConfigError, load_yaml
from bigstream_workflow.sets import expand_sets

try:
    SETS = expand_sets(config, load_yaml(DEFAULTS))
except ConfigError as error:
    raise WorkflowError(f"bigstream-workflow: {error}") from None
SUMMARY = os.path.join(config["output_dir"], "sweep" if config.get("sweep") else "rounds")


def profile_group(copy, name):
    """The group the profile's `groups` give rule `name` (deform_block=deform_blocks), asked
    when jobs are made: Snakemake sets the profile's groups only after parsing."""

    def lookup(wildcards):
        groups = workflow.group_settings.overwrite_groups
        return groups.get(copy, groups.get(name))

    return lookup


def all_targets():
    """The targets of the entry Snakefile's `all`: every set's results and the summary."""
    targets = [globals()[f"set{index}_"].final_targets() for index in range(len(SETS))]
    return [*targets, rules.sets_summary.output]
