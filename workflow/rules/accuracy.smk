# Accuracy against a known transform (with `ground_truth`): before registration and after
# each stage, the TRE on a grid of points and the NCC over the fixed low-res foreground.
# The NCC is summed in parts: the foreground level is found once, one job per batch of
# low-res blocks writes its partial sums for every stage, and `evaluate_accuracy` adds
# them up (with the TRE, which reads only its grid points).


rule accuracy_foreground_level:
    input:
        plan=result("plan", "images.json"),
    output:
        written_here("qc", "accuracy", "foreground_level.json"),
    log:
        written_here("logs", "accuracy_foreground_level.log"),
    benchmark:
        benchmark_path("accuracy_foreground_level")
    priority: 10
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=accuracy_level_mem_mb,
        runtime=accuracy_level_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        version=code_version("accuracy_foreground_level"),
    script:
        "../scripts/accuracy_foreground_level.py"


rule accuracy_ncc_block:
    input:
        level=written_here("qc", "accuracy", "foreground_level.json"),
        transforms=final_transform_files(),
    output:
        written_here("qc", "accuracy", "ncc", "{batch}.json"),
    log:
        written_here("logs", "accuracy_ncc_block", "{batch}.log"),
    benchmark:
        benchmark_path("accuracy_ncc_block")
    # as soon as the transform is there, beside the resample blocks, not after them
    priority: 10
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=accuracy_ncc_mem_mb,
        runtime=accuracy_ncc_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tiles=lambda wc: NCC_BATCHES[wc.batch],
        version=code_version("accuracy_ncc_block"),
    script:
        "../scripts/accuracy_ncc_block.py"


rule evaluate_accuracy:
    input:
        plan=result("plan", "images.json"),
        truth=config["ground_truth"] or [],
        transforms=final_transform_files(),
        level=written_here("qc", "accuracy", "foreground_level.json") if NCC_BATCHES else [],
        ncc=accuracy_ncc_records(),
    output:
        written_here("qc", "accuracy.json"),
    log:
        written_here("logs", "evaluate_accuracy.log"),
    benchmark:
        benchmark_path("evaluate_accuracy")
    priority: 10
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        config=plan_config(),
        blocks=sum(len(tiles) for tiles in NCC_BATCHES.values()),
        version=code_version("evaluate_accuracy"),
    script:
        "../scripts/evaluate_accuracy.py"
