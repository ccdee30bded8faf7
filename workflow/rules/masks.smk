# Foreground masks of the low-res levels, from a mask file or made from the image.


rule foreground_mask:
    output:
        written_here("masks", "{image}.npy"),
    log:
        written_here("logs", "foreground_mask", "{image}.log"),
    benchmark:
        benchmark_path("foreground_mask")
    wildcard_constraints:
        image="fixed|moving",
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=mask_mem_mb,
        runtime=mask_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        foreground=config["foreground"],
        version=code_version("foreground_mask"),
    script:
        "../scripts/foreground_mask.py"
