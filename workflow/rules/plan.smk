rule plan:
    output:
        images=written_here("plan", "images.json"),
        grids=[written_here("plan", f"grid_{name}.tsv") for name in GRIDS],
    log:
        written_here("logs", "plan.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        config=plan_config(),
        inputs=INPUTS,
        version=code_version("plan"),
    script:
        "../scripts/plan.py"
