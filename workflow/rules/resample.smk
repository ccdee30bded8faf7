# Stage 6: the moving high-res image through the full transform into
# <output_dir>/aligned.ome.zarr (axes c, z, y, x: the registration channel, then
# `moving.channels`): the store is created once with every pyramid level empty, level 0 is
# filled by one job per batch of blocks, each level above by one job per batch of its
# blocks (reading the blocks of the level below), and one last job writes the metadata.


rule create_aligned_store:
    input:
        plan=result("plan", "images.json"),
    output:
        written_here("aligned", "store.json"),
    log:
        written_here("logs", "create_aligned_store.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        images=image_config(),
        inputs=INPUTS,
        store=written_here("aligned.ome.zarr"),
        blocksize=config["resample"]["blocksize"],
        output=config["output"],
        version=code_version("create_aligned_store"),
    script:
        "../scripts/create_aligned_store.py"


rule resample_block:
    input:
        store=written_here("aligned", "store.json"),
        transforms=final_transform_files(),
    output:
        written_here("aligned", "blocks", "{batch}.json"),
    log:
        written_here("logs", "resample_block", "{batch}.log"),
    benchmark:
        benchmark_path("resample_block")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=resample_mem_mb,
        runtime=resample_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        tiles=lambda wc: BATCHES["resample"][wc.batch],
        complete=written_here("aligned", "complete.json"),
        order=config["resample"]["order"],
        transform_step=config["resample"]["transform_step"],
        version=code_version("resample_block"),
    script:
        "../scripts/resample_block.py"


rule downsample_aligned:
    input:
        store=written_here("aligned", "store.json"),
        below=pyramid_inputs,
    output:
        written_here("aligned", "levels", "{level}", "{batch}.json"),
    log:
        written_here("logs", "downsample_aligned", "{level}", "{batch}.log"),
    benchmark:
        benchmark_path("downsample_aligned")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=pyramid_mem_mb,
        runtime=pyramid_runtime_min,
    params:
        tiles=lambda wc: BATCHES[pyramid_grid(int(wc.level))][wc.batch],
        complete=written_here("aligned", "complete.json"),
        version=code_version("downsample_aligned"),
    script:
        "../scripts/downsample_aligned.py"


rule finalize_aligned:
    input:
        store=written_here("aligned", "store.json"),
        records=pyramid_records(),
    output:
        written_here("aligned", "complete.json"),
    log:
        written_here("logs", "finalize_aligned.log"),
    benchmark:
        benchmark_path("finalize_aligned")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=finalize_runtime_min,
    params:
        images=image_config(),
        inputs=INPUTS,
        labels=[label for label, _ in CHANNELS],
        version=code_version("finalize_aligned"),
    script:
        "../scripts/finalize_aligned.py"
