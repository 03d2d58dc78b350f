"""Training, calibration and fine-tuning of the networks (torch is imported by the submodules)."""

#: The unsupervised adaptation methods of fine-tuning, the default first
#: (:mod:`napari_vessel.training.adapt`); here so that the command line needs no torch to list them.
METHODS = ("adabn", "synthetic", "selftrain", "tent", "umis")
