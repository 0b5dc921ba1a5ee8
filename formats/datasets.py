"""Opening a dataset folder: the one place that decides which format a folder holds."""
from formats.hdf5 import HDF5Episodes
from formats.lerobot import LeRobotEpisodes, is_lerobot_dataset

DATASET_FORMATS = ('hdf5', 'lerobot')  # --format of the recorders: episode_{i}.hdf5 files, or a LeRobot dataset


def open_dataset(dataset_dir):
    """The episodes of dataset_dir: a LeRobot dataset (meta/info.json) or episode_{i}.hdf5 files."""
    if is_lerobot_dataset(dataset_dir):
        return LeRobotEpisodes(dataset_dir)
    return HDF5Episodes(dataset_dir)
