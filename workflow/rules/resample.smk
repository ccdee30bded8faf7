# Stage 6: the moving high-res image through the full transform, one job per batch of blocks,
# into <output_dir>/aligned.ome.zarr (created once, filled block by block, finished once);
# each other channel of the moving round (`moving.channels`) likewise into
# <output_dir>/aligned_<channel>.ome.zarr. The wildcard {aligned} is "aligned" or
# "aligned_<channel>": the product's store is {aligned}.ome.zarr, its records {aligned}/.


rule create_aligned_store:
    input:
        plan=result("plan", "images.json"),
    output:
        written_here("{aligned}", "store.json"),
    log:
        written_here("logs", "create_aligned_store", "{aligned}.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        images=lambda wc: product_images(wc.aligned),
        store=lambda wc: written_here(f"{wc.aligned}.ome.zarr"),
        blocksize=config["resample"]["blocksize"],
        version=CODE_VERSION,
    script:
        "../scripts/create_aligned_store.py"


rule resample_block:
    input:
        store=written_here("{aligned}", "store.json"),
        transforms=final_transform_files(),
    output:
        written_here("{aligned}", "blocks", "{batch}.json"),
    log:
        written_here("logs", "resample_block", "{aligned}", "{batch}.log"),
    benchmark:
        benchmark_path("resample_block")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=resample_mem_mb,
        runtime=resample_runtime_min,
    params:
        images=lambda wc: product_images(wc.aligned),
        tiles=lambda wc: BATCHES["resample"][wc.batch],
        order=config["resample"]["order"],
        transform_step=config["resample"]["transform_step"],
        version=CODE_VERSION,
    script:
        "../scripts/resample_block.py"


rule finalize_aligned:
    input:
        store=written_here("{aligned}", "store.json"),
        blocks=lambda wc: [
            written_here(wc.aligned, "blocks", f"{b}.json") for b in BATCHES["resample"]
        ],
    output:
        written_here("{aligned}", "complete.json"),
    log:
        written_here("logs", "finalize_aligned", "{aligned}.log"),
    benchmark:
        benchmark_path("finalize_aligned")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        images=lambda wc: product_images(wc.aligned),
        store=lambda wc: written_here(f"{wc.aligned}.ome.zarr"),
        name=lambda wc: wc.aligned,
        blocksize=config["resample"]["blocksize"],
        version=CODE_VERSION,
    script:
        "../scripts/finalize_aligned.py"
