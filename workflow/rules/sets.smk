# Rounds and sweeps: workflow/registration.smk once per set, as a module with the set's
# whole config (bigstream_workflow.sets); a stage several sets share runs once, in the first
# set's folder, and the others read it there. Ends with a summary table and plot.


include: "sets_common.smk"


for index, run_set in enumerate(SETS):
    set_module = f"set{index}_"

    module:
        name: set_module
        snakefile:
            "../registration.smk"
        config:
            run_set.config

    use rule * from set_module as set_module*


# each set's copy of a tile rule (set0_deform_block) joins the group of the rule it copies,
# so a cluster profile bundles the tiles of every set as it does those of a single run.
# Snakemake has no supported way to do this: it sets `Rule.group` and reads the profile's
# groups from `workflow.group_settings.overwrite_groups`, both internals, as is the lookup of
# each set's module by name (`globals()`, sets_common.smk). Checked on Snakemake 9.27.1, the
# release CI installs within pyproject's pin (>=9.19,<10); tests/test_sets.py and
# tests/test_deploy.py fail if a release changes them (a sweep's tiles no longer bundled).
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
        "../envs/bigstream.yaml"
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
        "../scripts/sets_summary.py"


onsuccess:
    print(f"bigstream-workflow: {len(SETS)} sets; summary: {SUMMARY}/summary.tsv")
