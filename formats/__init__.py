"""Dataset formats: the neutral episode, the original's HDF5 files, LeRobot datasets, and the
normalisation statistics over them."""
