rule evaluate_accuracy:
    input:
        plan=result("plan", "images.json"),
        truth=config["ground_truth"] or [],
        transforms=final_transform_files(),
    output:
        written_here("qc", "accuracy.json"),
    log:
        written_here("logs", "evaluate_accuracy.log"),
    benchmark:
        benchmark_path("evaluate_accuracy")
    # as soon as the transform is there, beside the resample blocks, not after them
    priority: 10
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        config=plan_config(),
        version=code_version("evaluate_accuracy"),
    script:
        "../scripts/evaluate_accuracy.py"
