# Stage 3: one affine per overlapping low-res tile, blended into one smooth field.


rule fit_local_affine:
    input:
        affine=result("global", "affine.txt"),
        # written once every key-point table of both images is (the tables it reads)
        keypoints=result("global", "matches.json"),
        fixed_mask=mask_files("fixed"),
        moving_mask=mask_files("moving"),
    output:
        written_here("local", "tiles", "{tile}.json"),
    log:
        written_here("logs", "fit_local_affine", "{tile}.log"),
    benchmark:
        benchmark_path("fit_local_affine")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=local_tile_mem_mb,
        runtime=local_tile_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tile=lambda wc: TILES["local_affine"][wc.tile],
        local=config["local_affine"],
        keypoints=keypoint_grid_config(),
        keypoint_tables={role: result("global", "keypoints", role) for role in ("fixed", "moving")},
        min_foreground=config["foreground"]["min_tile_fraction"],
        seed=config["seed"],
        version=code_version("fit_local_affine"),
    script:
        "../scripts/fit_local_affine.py"


rule settle_local_affines:
    input:
        tiles=[result("local", "tiles", f"{tile}.json") for tile in TILES.get("local_affine", {})],
        affine=result("global", "affine.txt"),
        fixed_mask=mask_files("fixed"),
        moving_mask=mask_files("moving"),
    output:
        affines=written_here("local", "affines.npy"),
        report=written_here("local", "report.tsv"),
        field=written_here("local", "field.json"),
    log:
        written_here("logs", "settle_local_affines.log"),
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=settle_mem_mb,
        runtime=settle_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        local=config["local_affine"],
        seed=config["seed"],
        version=code_version("settle_local_affines"),
    script:
        "../scripts/settle_local_affines.py"
