"""bigstream_core: the math and I/O of bigstream-workflow.

Importable on its own (no Snakemake import). Conventions used throughout:
axis order z, y, x (C order); physical units µm; every transform maps a point
of the fixed image to the moving image (``aligned(x) = moving(T(x))``).
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("bigstream-workflow")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
