"""Scores and comparisons: the papers' metrics as NumPy functions (:mod:`.metrics`) and model
comparisons on annotated folders (:mod:`.comparison`)."""
