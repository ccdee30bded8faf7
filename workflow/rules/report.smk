# The QC report: `snakemake --report <file>.html` (or .zip) after a run gathers these
# pictures and tables; workflow/report/ holds the captions. With rounds or a sweep, each
# set's items are filed under the set's name (subcategory).


rule qc_report:
    input:
        plan=out("plan", "images.json"),
        views=[complete for _, _, complete in qc_views().values() if complete],
        global_report=out("global", "report.json"),
        local_report=out("local", "report.tsv") if config["local_affine"]["enabled"] else [],
        deform_report=out("deform", "report.tsv") if config["deform"]["enabled"] else [],
        field=out("transform", "field.json") if config["deform"]["enabled"] else [],
        inverse_field=out("transform", "inverse_field.json") if inverse_wanted() else [],
        accuracy=out("qc", "accuracy.json") if config.get("ground_truth") else [],
    output:
        overlays=[
            report(
                own("qc", name),
                caption="../report/overlay.rst",
                category="1. Overlays",
                subcategory=SET["name"],
                labels={"view": view},
            )
            for view, (name, _, _) in qc_views().items()
        ],
        checkerboard=report(
            own("qc", "checkerboard.png"),
            caption="../report/checkerboard.rst",
            category="2. Checkerboard",
            subcategory=SET["name"],
        ),
        tiles=(
            [
                report(
                    own("qc", "tiles.png"),
                    caption="../report/tiles.rst",
                    category="3. Tiles",
                    subcategory=SET["name"],
                )
            ]
            if qc_tiled()
            else []
        ),
        metrics=report(
            own("qc", "metrics.tsv"),
            caption="../report/metrics.rst",
            category="4. Metrics",
            subcategory=SET["name"],
        ),
        provenance=report(
            own("qc", "provenance.yaml"),
            caption="../report/provenance.rst",
            category="5. Provenance",
            subcategory=SET["name"],
        ),
    log:
        own("logs", "qc_report.log"),
    benchmark:
        own("benchmarks", "qc_report.tsv")
    conda:
        "../../envs/bigstream.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=30,
    params:
        images=image_config(),
        stage_images={view: path for view, (_, path, _) in qc_views().items() if path},
        version=CODE_VERSION,
    script:
        "../../scripts/qc_report.py"
