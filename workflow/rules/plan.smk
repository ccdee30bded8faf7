rule plan:
    output:
        images=out("plan", "images.json"),
        grids=[out("plan", f"grid_{name}.tsv") for name in GRIDS],
    log:
        out("logs", "plan.log"),
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        config=plan_config(),
        version=CODE_VERSION,
    script:
        "../../scripts/plan.py"
