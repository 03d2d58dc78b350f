"""From probabilities to vessel labels: the one road (:mod:`.labels`) and the same answer block
by block for stacks larger than memory (:mod:`.blocks`)."""
