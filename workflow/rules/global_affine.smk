# Stage 2: one affine for the whole image, from key points on the low-res level.


rule detect_keypoints:
    input:
        plan=out("plan", "images.json"),
        mask=lambda wc: mask_files(wc.image),
    output:
        own("global", "keypoints", "{image}", "{tile}.parquet"),
    log:
        own("logs", "detect_keypoints", "{image}", "{tile}.log"),
    benchmark:
        own("benchmarks", "detect_keypoints", "{image}", "{tile}.tsv")
    wildcard_constraints:
        image="fixed|moving",
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=keypoints_mem_mb,
        runtime=keypoints_runtime_min,
    params:
        images=image_config(),
        tile=lambda wc: TILES[f"keypoints_{wc.image}"][wc.tile],
        keypoints=config["global_affine"],
        version=CODE_VERSION,
    script:
        "../../scripts/detect_keypoints.py"


rule match_keypoints:
    input:
        fixed=keypoint_tables("fixed"),
        moving=keypoint_tables("moving"),
    output:
        matches=own("global", "matches.parquet"),
        info=own("global", "matches.json"),
    log:
        own("logs", "match_keypoints.log"),
    benchmark:
        own("benchmarks", "match_keypoints.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 2
    resources:
        mem_mb=match_mem_mb,
        runtime=30,
    params:
        images=image_config(),
        keypoints=config["global_affine"],
        seed=config["seed"],
        version=CODE_VERSION,
    script:
        "../../scripts/match_keypoints.py"


rule fit_global_affine:
    input:
        matches=out("global", "matches.parquet"),
        info=out("global", "matches.json"),
        fixed_benchmarks=keypoint_benchmarks("fixed"),
        moving_benchmarks=keypoint_benchmarks("moving"),
    output:
        affine=own("global", "ransac_affine.txt"),
        report=own("global", "ransac_report.json"),
    log:
        own("logs", "fit_global_affine.log"),
    benchmark:
        own("benchmarks", "fit_global_affine.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        keypoints=config["global_affine"],
        seed=config["seed"],
        version=CODE_VERSION,
    script:
        "../../scripts/fit_global_affine.py"


rule refine_global_affine:
    input:
        affine=out("global", "ransac_affine.txt"),
        report=out("global", "ransac_report.json"),
        fixed_mask=mask_files("fixed"),
        moving_mask=mask_files("moving"),
    output:
        affine=own("global", "affine.txt"),
        affine_xyz=own("global", "affine_xyz.txt"),
        report=own("global", "report.json"),
    log:
        own("logs", "refine_global_affine.log"),
    benchmark:
        own("benchmarks", "refine_global_affine.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=refine_mem_mb,
        runtime=30,
    params:
        images=image_config(),
        refine=config["global_affine"]["refine"],
        seed=config["seed"],
        version=CODE_VERSION,
    script:
        "../../scripts/refine_global_affine.py"


rule apply_global_affine:
    input:
        affine=out("global", "affine.txt"),
    output:
        directory(own("global", "moving_lowres_aligned.ome.zarr")),
    log:
        own("logs", "apply_global_affine.log"),
    benchmark:
        own("benchmarks", "apply_global_affine.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        images=image_config(),
        version=CODE_VERSION,
    script:
        "../../scripts/apply_lowres.py"
