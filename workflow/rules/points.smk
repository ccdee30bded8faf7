# Tables of points (`points` in the config) carried into the other image's space.


rule warp_points:
    input:
        table=lambda wc: POINTS[wc.table]["path"],
        transforms=point_transform_files,
    output:
        written_here("points", "{table}"),
    log:
        written_here("logs", "warp_points", "{table}.log"),
    wildcard_constraints:
        table="|".join(re.escape(name) for name in POINTS) or "no-points",
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        space=lambda wc: POINTS[wc.table]["space"],
        version=code_version("warp_points"),
    script:
        "../scripts/warp_points.py"
