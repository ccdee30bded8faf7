# Stage 2: one affine for the whole image, from key points on the low-res level.


rule detect_keypoints:
    input:
        plan=result("plan", "images.json"),
        mask=lambda wc: mask_files(wc.image),
    output:
        written_here("global", "keypoints", "{image}", "{tile}.parquet"),
    log:
        written_here("logs", "detect_keypoints", "{image}", "{tile}.log"),
    benchmark:
        benchmark_path("detect_keypoints")
    wildcard_constraints:
        image="fixed|moving",
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=keypoints_mem_mb,
        runtime=keypoints_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tile=lambda wc: TILES[f"keypoints_{wc.image}"][wc.tile],
        keypoints=config["global_affine"],
        version=code_version("detect_keypoints"),
    script:
        "../scripts/detect_keypoints.py"


rule match_keypoints:
    input:
        fixed=keypoint_tables("fixed"),
        moving=keypoint_tables("moving"),
    output:
        matches=written_here("global", "matches.parquet"),
        info=written_here("global", "matches.json"),
    log:
        written_here("logs", "match_keypoints.log"),
    benchmark:
        benchmark_path("match_keypoints")
    conda:
        "../envs/bigstream.yaml"
    threads: 2
    resources:
        mem_mb=match_mem_mb,
        runtime=30,
    params:
        images=image_config(),
        inputs=INPUTS,
        keypoints=config["global_affine"],
        seed=config["seed"],
        version=code_version("match_keypoints"),
    script:
        "../scripts/match_keypoints.py"


rule fit_global_affine:
    input:
        matches=result("global", "matches.parquet"),
        info=result("global", "matches.json"),
        fixed_benchmarks=keypoint_benchmarks("fixed"),
        moving_benchmarks=keypoint_benchmarks("moving"),
    output:
        affine=written_here("global", "ransac_affine.txt"),
        report=written_here("global", "ransac_report.json"),
    log:
        written_here("logs", "fit_global_affine.log"),
    benchmark:
        benchmark_path("fit_global_affine")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        keypoints=config["global_affine"],
        seed=config["seed"],
        version=code_version("fit_global_affine"),
    script:
        "../scripts/fit_global_affine.py"


rule refine_global_affine:
    input:
        affine=result("global", "ransac_affine.txt"),
        report=result("global", "ransac_report.json"),
        fixed_mask=mask_files("fixed"),
        moving_mask=mask_files("moving"),
    output:
        affine=written_here("global", "affine.txt"),
        affine_xyz=written_here("global", "affine_xyz.txt"),
        report=written_here("global", "report.json"),
    log:
        written_here("logs", "refine_global_affine.log"),
    benchmark:
        benchmark_path("refine_global_affine")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=refine_mem_mb,
        runtime=30,
    params:
        images=image_config(),
        inputs=INPUTS,
        refine=config["global_affine"]["refine"],
        seed=config["seed"],
        version=code_version("refine_global_affine"),
    script:
        "../scripts/refine_global_affine.py"
