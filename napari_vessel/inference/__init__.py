"""From a volume to probabilities and labels with any model of the zoo.

- :mod:`.run`: ``predict`` and ``segment`` (checks, input preparation, manifest);
- :mod:`.network`: the one road from a model name to a forward function (fast CPU runtime or
  PyTorch, loaded once per process);
- :mod:`.sliding_window`, :mod:`.block_window`: tiling and blending, in memory or block by block;
- :mod:`.out_of_core`: stacks larger than memory into OME-Zarr, published atomically;
- :mod:`.cluster`, :mod:`.block_tasks`, :mod:`.block_cluster`: one stack's blocks on dask workers;
- :mod:`.preview`: one slice, quickly, to choose a model and a threshold.
"""
