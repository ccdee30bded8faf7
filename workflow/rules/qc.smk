# The QC report: `snakemake --report <file>.html` (or .zip) after a run gathers these
# pictures and tables; workflow/report/ holds the captions. With rounds or a sweep, each
# set's items are filed under the set's name (subcategory).


rule qc_report:
    input:
        plan=result("plan", "images.json"),
        views=[complete for _, _, complete, _ in qc_view_files().values() if complete],
        global_report=result("global", "report.json"),
        local_report=result("local", "report.tsv") if config["local_affine"]["enabled"] else [],
        deform_report=result("deform", "report.tsv") if config["deform"]["enabled"] else [],
        field=result("transform", "field.json") if config["deform"]["enabled"] else [],
        inverse_field=result("transform", "inverse_field.json") if inverse_wanted(config) else [],
        accuracy=result("qc", "accuracy.json") if config.get("ground_truth") else [],
    output:
        overlays=[
            report(
                written_here("qc", name),
                caption="../report/overlay.rst",
                category="1. Overlays",
                subcategory=SET["name"],
                labels={"view": view},
            )
            for view, (name, _, _, _) in qc_view_files().items()
        ],
        checkerboard=report(
            written_here("qc", "checkerboard.png"),
            caption="../report/checkerboard.rst",
            category="2. Checkerboard",
            subcategory=SET["name"],
        ),
        tiles=(
            [
                report(
                    written_here("qc", "tiles.png"),
                    caption="../report/tiles.rst",
                    category="3. Tiles",
                    subcategory=SET["name"],
                )
            ]
            if qc_tiled()
            else []
        ),
        metrics=report(
            written_here("qc", "metrics.tsv"),
            caption="../report/metrics.rst",
            category="4. Metrics",
            subcategory=SET["name"],
        ),
        provenance=report(
            written_here("qc", "provenance.yaml"),
            caption="../report/provenance.rst",
            category="5. Provenance",
            subcategory=SET["name"],
        ),
    log:
        written_here("logs", "qc_report.log"),
    benchmark:
        benchmark_path("qc_report")
    conda:
        "../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=30,
    params:
        images=image_config(),
        inputs=INPUTS,
        stage_images={
            view: [path, channel]
            for view, (_, path, _, channel) in qc_view_files().items()
            if path
        },
        version=code_version("qc_report"),
    script:
        "../scripts/qc_report.py"


rule summarise_run:
    input:
        final_results(),
    output:
        written_here("summary.txt"),
    log:
        written_here("logs", "summarise_run.log"),
    localrule: True
    conda:
        "../envs/bigstream.yaml"
    params:
        tile_counts=tile_counts(),
    script:
        "../scripts/summarise_run.py"
