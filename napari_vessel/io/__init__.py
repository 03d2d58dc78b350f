"""Files in and out: stacks with their voxel size (TIFF, OME-TIFF, Zarr, OME-Zarr), pyramids,
the :class:`~napari_vessel.io.volume.Volume`, and the atomic publication of a run's outputs.

- :mod:`.stacks`: ``load_volume``, ``save_volume``, ``describe_file`` (the one entry point);
- :mod:`.tiff`, :mod:`.zarr`: the two formats; :mod:`.common`: what they share (headers, checks,
  atomic writes, file stems);
- :mod:`.pyramid`: OME-Zarr resolution levels written chunk by chunk;
- :mod:`.volume`: one stack with its voxel size and origin;
- :mod:`.outputs`: where a segmentation run's files go and how they are published.
"""
