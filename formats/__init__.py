"""Dataset formats: the neutral episode (episode.py) and opening a folder (datasets.py), the original's
HDF5 files (hdf5.py), LeRobot datasets (lerobot.py reads, lerobot_writer.py writes, with lerobot_video.py
and lerobot_stats.py), the conversions between them (convert.py), the statistics (stats.py) and the one
normaliser (normalize.py), and frames resized for a policy (images.py)."""
