# Stage 4: deformable registration per overlapping high-res block, stitched into
# <output_dir>/transform/field.zarr, and, when asked for or needed, its inverse transform/inverse_field.zarr.


rule deform_block:
    input:
        transforms=affine_transform_files(),
    output:
        directory(written_here("deform", "blocks", "{batch}")),
    log:
        written_here("logs", "deform_block", "{batch}.log"),
    benchmark:
        benchmark_path("deform_block")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=deform_mem_mb,
        runtime=deform_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tiles=lambda wc: BATCHES["deform"][wc.batch],
        deform=deform_block_config(),
        version=code_version("deform_block"),
    script:
        "../scripts/deform_block.py"


rule collect_deform_report:
    input:
        [result("deform", "blocks", batch) for batch in BATCHES.get("deform", {})],
    output:
        written_here("deform", "report.tsv"),
    log:
        written_here("logs", "collect_deform_report.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        reports=[deform_block_file(tile, ".json") for tile in TILES.get("deform", {})],
        version=code_version("collect_deform_report"),
    script:
        "../scripts/collect_deform_report.py"


rule create_field_store:
    input:
        plan=result("plan", "images.json"),
    output:
        written_here("transform", "{name}_store.json"),
    log:
        written_here("logs", "create_{name}_store.log"),
    wildcard_constraints:
        name="field|inverse_field",
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        images=image_config(),
        inputs=INPUTS,
        store=lambda wc: result("transform", f"{wc.name}.zarr"),
        blocksize=config["deform"]["blocksize"],
        shrink=FIELD_SHRINK,
        version=code_version("create_field_store"),
    script:
        "../scripts/create_field_store.py"


rule stitch_field:
    input:
        store=result("transform", "field_store.json"),
        blocks=stitch_inputs,
    output:
        written_here("transform", "field_regions", "{batch}.json"),
    log:
        written_here("logs", "stitch_field", "{batch}.log"),
    benchmark:
        benchmark_path("stitch_field")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=field_region_mem_mb,
        runtime=field_region_runtime_min,
    params:
        tiles=lambda wc: BATCHES["deform"][wc.batch],
        blocks=lambda wc: {
            block.id: (block, deform_block_file(block.id, ".npy")) for block in stitch_blocks(wc)
        },
        images=image_config(),
        inputs=INPUTS,
        deform=config["deform"],
        complete=written_here("transform", "field.json"),
        version=code_version("stitch_field"),
    script:
        "../scripts/stitch_field.py"


rule invert_field:
    input:
        store=result("transform", "inverse_field_store.json"),
        field=result("transform", "field.json"),
    output:
        written_here("transform", "inverse_field_regions", "{batch}.json"),
    log:
        written_here("logs", "invert_field", "{batch}.log"),
    benchmark:
        benchmark_path("invert_field")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=field_region_mem_mb,
        runtime=field_region_runtime_min,
    params:
        tiles=lambda wc: BATCHES["deform"][wc.batch],
        complete=written_here("transform", "inverse_field.json"),
        version=code_version("invert_field"),
    script:
        "../scripts/invert_field.py"


rule finish_field:
    input:
        store=result("transform", "{name}_store.json"),
        regions=lambda wc: [
            result("transform", f"{wc.name}_regions", f"{batch}.json")
            for batch in BATCHES["deform"]
        ],
    output:
        written_here("transform", "{name}.json"),
    log:
        written_here("logs", "finish_{name}.log"),
    wildcard_constraints:
        name="field|inverse_field",
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        images=image_config(),
        inputs=INPUTS,
        version=code_version("finish_field"),
    script:
        "../scripts/finish_field.py"
