# Stage 6: the moving high-res image through the full transform, one job per block,
# into <output_dir>/aligned.ome.zarr (created once, filled block by block, finished once).


rule create_aligned_store:
    input:
        plan=out("plan", "images.json"),
    output:
        out("aligned", "store.json"),
    log:
        out("logs", "create_aligned_store.log"),
    localrule: True
    conda:
        "../../envs/bigstream.yaml"
    params:
        images=image_config(),
        store=out("aligned.ome.zarr"),
        blocksize=config["resample"]["blocksize"],
        version=CODE_VERSION,
    script:
        "../../scripts/create_aligned_store.py"


rule resample_block:
    input:
        store=out("aligned", "store.json"),
        transforms=final_transform_files(),
    output:
        out("aligned", "blocks", "{tile}.json"),
    log:
        out("logs", "resample_block", "{tile}.log"),
    benchmark:
        out("benchmarks", "resample_block", "{tile}.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=resample_mem_mb,
        runtime=resample_runtime_min,
    params:
        images=image_config(),
        tile=lambda wc: TILES["resample"][wc.tile],
        order=config["resample"]["order"],
        transform_step=config["resample"]["transform_step"],
        version=CODE_VERSION,
    script:
        "../../scripts/resample_block.py"


rule finalize_aligned:
    input:
        store=out("aligned", "store.json"),
        blocks=[out("aligned", "blocks", f"{tile}.json") for tile in TILES["resample"]],
    output:
        out("aligned", "complete.json"),
    log:
        out("logs", "finalize_aligned.log"),
    benchmark:
        out("benchmarks", "finalize_aligned.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        images=image_config(),
        store=out("aligned.ome.zarr"),
        blocksize=config["resample"]["blocksize"],
        version=CODE_VERSION,
    script:
        "../../scripts/finalize_aligned.py"
