"""Open, read and write 3D volumes stored as N5, Zarr (v2 / v3) or OME-Zarr.

Every array this module hands out is indexed z, y, x (C order, slowest axis first), and every
geometric value is in micrometres (µm) in that same z, y, x order: the physical position of voxel
index ``i`` is ``origin + i * spacing``.

N5 stores its metadata (``dimensions``, ``blockSize``, ``pixelResolution``,
``downsamplingFactors``) in x, y, z order, and tensorstore's ``n5`` driver presents the array in
x, y, z order too; this module reverses both here, at the I/O boundary, and nowhere else.

- N5 is read and written through tensorstore's ``n5`` driver.
- Zarr v2 / v3 and OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3) go through zarr-python 3.

`open_image` reads metadata only (no voxel data), so it is cheap enough to call while a
Snakefile is parsed. Voxels are read on demand with `Image.read` or lazily with `Image.to_dask`.
The writers work block by block: memory stays bounded by a few storage chunks.
"""

from bigstream_core.io.base import CHUNK_CONCURRENCY, DEFAULT_CHUNKS, ImageError
from bigstream_core.io.image import ArrayImage, Image, array_image, open_image
from bigstream_core.io.pyramid import NGFF_ZARR_FORMAT, OME_COMPRESSOR, pyramid_shapes
from bigstream_core.io.write import (
    create_ome_zarr,
    downsample_level,
    finish_ome_zarr,
    withdraw_ome_metadata,
    write_n5,
    write_ome_zarr,
    write_zarr,
)

__all__ = [
    "CHUNK_CONCURRENCY",
    "DEFAULT_CHUNKS",
    "NGFF_ZARR_FORMAT",
    "OME_COMPRESSOR",
    "ArrayImage",
    "Image",
    "ImageError",
    "array_image",
    "create_ome_zarr",
    "downsample_level",
    "finish_ome_zarr",
    "open_image",
    "pyramid_shapes",
    "write_n5",
    "write_ome_zarr",
    "withdraw_ome_metadata",
    "write_zarr",
]
