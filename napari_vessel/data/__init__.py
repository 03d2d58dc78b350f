"""Data the project makes or fetches: phantoms with exact labels, the domain-randomised synthetic
volumes of the pretraining, their tube geometry, and the public annotated datasets.

- :mod:`.phantom`: two-photon and confocal phantoms and the shifted "other microscope" stacks;
- :mod:`.synthetic`: the pretraining generator (validated parameters);
- :mod:`.tubes`: vessel trees of straight tube segments, rasterised with centrelines;
- :mod:`.datasets`: download with hash checks, iterate image/label pairs.
"""
