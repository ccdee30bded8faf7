rule evaluate_accuracy:
    input:
        plan=out("plan", "images.json"),
        truth=config["ground_truth"] or [],
        transforms=final_transform_files(),
    output:
        own("qc", "accuracy.json"),
    log:
        own("logs", "evaluate_accuracy.log"),
    benchmark:
        own("benchmarks", "evaluate_accuracy.tsv")
    # as soon as the transform is there, beside the resample blocks, not after them
    priority: 10
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        config=plan_config(),
        version=CODE_VERSION,
    script:
        "../../scripts/evaluate_accuracy.py"
