"""bigstream_workflow: what the Snakemake workflow needs beside the math.

The config's checks and defaults, the plan of tile grids, the stage layout (which rules
make which outputs and benchmark files, and what a set may reuse), job resources, rounds
and sweeps, the QC report's assembly, provenance and the run's summary. It may know rule
names and output paths; ``bigstream_core`` (the math and the I/O) does not.
"""
