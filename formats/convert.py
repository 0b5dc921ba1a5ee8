"""Demonstrations from one dataset format to the other (convert_dataset.py): HDF5 episode files to a
new LeRobot v3.0 dataset, or a LeRobot dataset to episode files, each built beside its destination
and renamed when complete."""
import os

from tqdm import tqdm

from common.folders import FolderLock, drop_staging, make_staging, publish_staging
from constants import ALOHA_ROBOT_TYPE, ALOHA_STATE_DIM, CONTROL_HZ
from formats.datasets import open_dataset
from formats.hdf5 import episode_path, store_episode
from formats.lerobot import DEFAULT_TASK, LeRobotEpisodes
from formats.lerobot_writer import LeRobotWriter


def check_destination(dst):
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise ValueError(f'DST {dst} already exists; choose a new folder (nothing is overwritten)')


def to_lerobot(src, dst, fps=None, task=DEFAULT_TASK, robot_type=None, vcodec=None, num_episodes=None, names=None):
    """HDF5 episodes 0..N-1 of src -> a new LeRobot v3.0 dataset at dst; returns N. names: of the state
    and action values (default constants.joint_names)."""
    source = open_dataset(src)
    if isinstance(source, LeRobotEpisodes):
        raise ValueError(f'SRC {src} is a LeRobot dataset already; --to hdf5 converts it to episode files')
    count = source.num_episodes if num_episodes is None else num_episodes
    if count == 0:
        raise ValueError(f'SRC {src} holds no episode_0.hdf5 (episode files episode_0.hdf5, episode_1.hdf5, ...)')
    check_destination(dst)
    if robot_type is None and source.low_dim(0)[0].shape[1] == ALOHA_STATE_DIM:
        robot_type = ALOHA_ROBOT_TYPE
    if names is not None and len(names) != source.low_dim(0)[0].shape[1]:
        raise ValueError(f'SRC {src} has {source.low_dim(0)[0].shape[1]} state values, but the task names '
                         f'{len(names)} ({", ".join(names)}): give the task the episodes were recorded for')
    with LeRobotWriter(dst, fps=fps or CONTROL_HZ, task=task, robot_type=robot_type, vcodec=vcodec,
                       names=names) as writer:
        for index in tqdm(range(count), desc=f'{src} -> LeRobot ({writer.vcodec})', unit='episode'):
            writer.add(source.read_episode(index))
    return count


def to_hdf5(src, dst, num_episodes=None, compression=None):
    """A LeRobot dataset at src -> episode_{i}.hdf5 files in a new folder dst; returns the count."""
    source = open_dataset(src)
    if not isinstance(source, LeRobotEpisodes):
        raise ValueError(f'SRC {src} is not a LeRobot dataset (no meta/info.json)')
    count = source.num_episodes if num_episodes is None else num_episodes
    if not 0 < count <= source.num_episodes:
        raise ValueError(f'--num_episodes {count}: {src} holds {source.num_episodes} episodes')
    with FolderLock(dst):  # a second conversion to dst is refused while this one runs
        check_destination(dst)
        work = make_staging(dst.rstrip(os.sep) + '.partial', f'the episodes of {dst}')
        try:
            for index in tqdm(range(count), desc=f'{src} -> HDF5', unit='episode'):
                store_episode(episode_path(work, index), source.read_episode(index), compression)
            publish_staging(work, dst)  # dst is absent or empty, checked above
        except BaseException:
            drop_staging(work)
            raise
    return count
