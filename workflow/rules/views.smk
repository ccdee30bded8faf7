# The low-res inspection images ("views", bigstream_workflow.lowres_view): the moving
# image's low-res level in the fixed low-res grid under the global affine (view `global`)
# and under the local affines too (`local`), at <view>/moving_lowres_aligned.ome.zarr,
# complete once <view>/moving_lowres_aligned/complete.json is there. A level of more than
# one batch of blocks: the store is created once, one job per batch writes its blocks'
# levels 0 and 1, and finalize_lowres_view fills the coarser levels and writes the
# metadata; a level of one batch (the demo, every test pair): finalize_lowres_view alone.


rule create_lowres_view:
    input:
        plan=result("plan", "images.json"),
    output:
        view_record("{view}", "store.json"),
    log:
        written_here("logs", "create_lowres_view", "{view}.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        images=image_config(),
        inputs=INPUTS,
        store=lambda wc: view_store(wc.view),
        version=code_version("create_lowres_view"),
    script:
        "../scripts/create_lowres_view.py"


rule lowres_view_block:
    input:
        store=view_record("{view}", "store.json"),
        transforms=view_transform_files,
    output:
        view_record("{view}", "blocks", "{batch}.json"),
    log:
        written_here("logs", "lowres_view_block", "{view}", "{batch}.log"),
    benchmark:
        benchmark_path("lowres_view_block")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=view_mem_mb,
        runtime=view_block_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tiles=lambda wc: VIEW_BATCHES[wc.batch],
        complete=lambda wc: view_record(wc.view, "complete.json"),
        version=code_version("lowres_view_block"),
    script:
        "../scripts/lowres_view_block.py"


rule finalize_lowres_view:
    input:
        transforms=view_transform_files,
        blocks=view_block_records,
    output:
        view_record("{view}", "complete.json"),
    log:
        written_here("logs", "finalize_lowres_view", "{view}.log"),
    benchmark:
        benchmark_path("finalize_lowres_view")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=view_mem_mb,
        runtime=view_finalize_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        store=lambda wc: view_store(wc.view),
        tiles=[] if VIEW_BATCHES else [tile for tiles in VIEW_BLOCKS.values() for tile in tiles],
        version=code_version("finalize_lowres_view"),
    script:
        "../scripts/finalize_lowres_view.py"
