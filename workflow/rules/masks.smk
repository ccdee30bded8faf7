# Foreground masks of the low-res levels, from a mask file or made from the image.


rule foreground_mask:
    output:
        own("masks", "{image}.npy"),
    log:
        own("logs", "foreground_mask", "{image}.log"),
    benchmark:
        own("benchmarks", "foreground_mask", "{image}.tsv")
    wildcard_constraints:
        image="fixed|moving",
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=mask_mem_mb,
        runtime=30,
    params:
        images=image_config(),
        foreground=config["foreground"],
        version=CODE_VERSION,
    script:
        "../../scripts/foreground_mask.py"
