# Stage 4: deformable registration per overlapping high-res block, stitched into
# <output_dir>/transform/field.zarr, and, when asked for or needed, its inverse transform/inverse_field.zarr.


rule deform_block:
    input:
        transforms=affine_transform_files(),
    output:
        field=own("deform", "blocks", "{tile}.npy"),
        report=own("deform", "blocks", "{tile}.json"),
    log:
        own("logs", "deform_block", "{tile}.log"),
    benchmark:
        own("benchmarks", "deform_block", "{tile}.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=deform_mem_mb,
        runtime=deform_runtime_min,
    params:
        images=image_config(),
        tile=lambda wc: TILES["deform"][wc.tile],
        deform=config["deform"],
        version=CODE_VERSION,
    script:
        "../../scripts/deform_block.py"


rule collect_deform_report:
    input:
        [out("deform", "blocks", f"{tile}.json") for tile in TILES.get("deform", {})],
    output:
        own("deform", "report.tsv"),
    log:
        own("logs", "collect_deform_report.log"),
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        version=CODE_VERSION,
    script:
        "../../scripts/collect_deform_report.py"


rule create_field_store:
    input:
        plan=out("plan", "images.json"),
    output:
        own("transform", "{name}_store.json"),
    log:
        own("logs", "create_{name}_store.log"),
    wildcard_constraints:
        name="field|inverse_field",
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        images=image_config(),
        store=lambda wc: out("transform", f"{wc.name}.zarr"),
        blocksize=config["deform"]["blocksize"],
        version=CODE_VERSION,
    script:
        "../../scripts/create_field_store.py"


rule stitch_field:
    input:
        store=out("transform", "field_store.json"),
        blocks=lambda wc: [
            out("deform", "blocks", f"{tile.id}.npy")
            for tile in neighbours(TILES["deform"][wc.tile], TILES["deform"])
        ],
    output:
        own("transform", "field_regions", "{tile}.json"),
    log:
        own("logs", "stitch_field", "{tile}.log"),
    benchmark:
        own("benchmarks", "stitch_field", "{tile}.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=field_region_mem_mb,
        runtime=field_region_runtime_min,
    params:
        tile=lambda wc: TILES["deform"][wc.tile],
        neighbours=lambda wc: neighbours(TILES["deform"][wc.tile], TILES["deform"]),
        images=image_config(),
        deform=config["deform"],
        version=CODE_VERSION,
    script:
        "../../scripts/stitch_field.py"


rule invert_field:
    input:
        store=out("transform", "inverse_field_store.json"),
        field=out("transform", "field.json"),
    output:
        own("transform", "inverse_field_regions", "{tile}.json"),
    log:
        own("logs", "invert_field", "{tile}.log"),
    benchmark:
        own("benchmarks", "invert_field", "{tile}.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=field_region_mem_mb,
        runtime=field_region_runtime_min,
    params:
        tile=lambda wc: TILES["deform"][wc.tile],
        version=CODE_VERSION,
    script:
        "../../scripts/invert_field.py"


rule finish_field:
    input:
        store=out("transform", "{name}_store.json"),
        regions=lambda wc: [
            out("transform", f"{wc.name}_regions", f"{tile}.json") for tile in TILES["deform"]
        ],
    output:
        own("transform", "{name}.json"),
    log:
        own("logs", "finish_{name}.log"),
    wildcard_constraints:
        name="field|inverse_field",
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        images=image_config(),
        version=CODE_VERSION,
    script:
        "../../scripts/finish_field.py"
