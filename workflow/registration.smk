# One registration: the fixed image and one moving image, into output_dir. The entry
# Snakefile includes it, or, for rounds and sweeps, loads it once per set as a module.


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/masks.smk"
include: "rules/global_affine.smk"
include: "rules/local_affine.smk"
include: "rules/views.smk"
include: "rules/deform.smk"
include: "rules/resample.smk"
include: "rules/accuracy.smk"
include: "rules/points.smk"
include: "rules/qc.smk"


def all_targets():
    """The targets of the entry Snakefile's `all`: this registration's results."""
    return final_targets()


if not SET["name"]:

    onsuccess:
        print(run_summary(OUT, tile_counts()))
