rule plan:
    output:
        images=own("plan", "images.json"),
        grids=[own("plan", f"grid_{name}.tsv") for name in GRIDS],
    log:
        own("logs", "plan.log"),
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        config=plan_config(),
        version=CODE_VERSION,
    script:
        "../../scripts/plan.py"
