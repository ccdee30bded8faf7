# Rounds and sweeps: workflow/registration.smk once per set, as a module with the set's
# whole config (bigstream_core.sets); a stage several sets share runs once, in the first
# set's folder, and the others read it there. Ends with a summary table and plot.


include: "repository.smk"


from snakemake.exceptions import WorkflowError

from bigstream_core.config import ConfigError, load_yaml
from bigstream_core.sets import expand_sets

try:
    SETS = expand_sets(config, load_yaml(os.path.join(REPO, "config", "config.yaml")))
except ConfigError as error:
    raise WorkflowError(f"bigstream-workflow: {error}") from None
SUMMARY = os.path.join(config["output_dir"], "sweep" if config.get("sweep") else "rounds")

for index, run_set in enumerate(SETS):
    set_module = f"set{index}_"

    module:
        name: set_module
        snakefile:
            os.path.join(workflow.basedir, "registration.smk")
        config:
            run_set.config

    use rule * from set_module as set_module*


def profile_group(copy, name):
    """The group the profile's `groups` give rule `name` (deform_block=deform_blocks), asked
    when jobs are made: Snakemake sets the profile's groups only after parsing."""

    def lookup(wildcards):
        groups = workflow.group_settings.overwrite_groups
        return groups.get(copy, groups.get(name))

    return lookup


# each set's copy of a tile rule (set0_deform_block) joins the group of the rule it copies,
# so a cluster profile bundles the tiles of every set as it does those of a single run
for index in range(len(SETS)):
    for copied in workflow.rules:
        if copied.name.startswith(f"set{index}_"):
            copied.group = profile_group(copied.name, copied.name.removeprefix(f"set{index}_"))


rule sets_summary:
    input:
        [os.path.join(run_set.folder, "qc", "metrics.tsv") for run_set in SETS],
    output:
        table=report(
            os.path.join(SUMMARY, "summary.tsv"),
            caption="../report/summary.rst",
            category="0. Summary",
        ),
        plot=report(
            os.path.join(SUMMARY, "summary.png"),
            caption="../report/summary.rst",
            category="0. Summary",
        ),
    log:
        os.path.join(SUMMARY, "summary.log"),
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        sets=[
            {
                "name": s.name,
                "round": s.round,
                "params": s.params,
                "folder": s.folder,
                "reuse": s.config["set"]["reuse"],
            }
            for s in SETS
        ],
    script:
        "../../scripts/sets_summary.py"


def all_targets():
    """What the entry Snakefile's `rule all` asks for: every set's results and the summary."""
    targets = [globals()[f"set{index}_"].final_targets() for index in range(len(SETS))]
    return [*targets, rules.sets_summary.output]


onsuccess:
    print(f"bigstream-workflow: {len(SETS)} sets; summary: {SUMMARY}/summary.tsv")
