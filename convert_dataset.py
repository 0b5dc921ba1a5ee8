"""Convert demonstrations between the ALOHA HDF5 episodes and a LeRobot dataset.

    python convert_dataset.py --to lerobot data/sim_transfer_cube_scripted data/transfer_cube_lerobot
    python convert_dataset.py --to hdf5 data/transfer_cube_lerobot data/transfer_cube_hdf5

--to lerobot writes a LeRobot v3.0 dataset (formats/lerobot_writer.py) from episode_{i}.hdf5 files: every
array kept (qpos -> observation.state, action, qvel -> observation.velocity, effort ->
observation.effort), each camera as a video (LeRobot's AV1 settings, H.264 where the AV1 encoder is
missing, or --vcodec), per-episode and dataset statistics, info, tasks and episode metadata.
--to hdf5 writes episode_{i}.hdf5 files in the original layout from a LeRobot v3.0 or v2.1
dataset, episode i being LeRobot's episode_index i: arrays unchanged to the bit, frames as PyAV
decodes them. Either way the destination is built beside it (<DST>.partial) and renamed when
complete, so an interrupted conversion leaves no dataset that looks valid; an existing destination
is refused.
"""
import argparse
import os
import shutil
import sys

from tqdm import tqdm

from common.files import DiskFull
from constants import ALOHA_STATE_DIM, CONTROL_HZ
from formats.hdf5 import COMPRESSIONS, HDF5Episodes, episode_path, store_episode
from formats.lerobot import DEFAULT_TASK, LeRobotEpisodes, LeRobotFormatError, is_lerobot_dataset
from formats.lerobot_writer import LeRobotWriter

ALOHA_ROBOT_TYPE = 'aloha'  # --robot_type of two-arm ALOHA episodes (ALOHA_STATE_DIM) when none is given


def check_destination(dst):
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise ValueError(f'DST {dst} already exists; choose a new folder (nothing is overwritten)')


def to_lerobot(src, dst, fps=None, task=DEFAULT_TASK, robot_type=None, vcodec=None, num_episodes=None):
    """HDF5 episodes 0..N-1 of src -> a new LeRobot v3.0 dataset at dst; returns N."""
    if is_lerobot_dataset(src):
        raise ValueError(f'SRC {src} is a LeRobot dataset already; --to hdf5 converts it to episode files')
    source = HDF5Episodes(src)
    count = source.num_episodes if num_episodes is None else num_episodes
    if count == 0:
        raise ValueError(f'SRC {src} holds no episode_0.hdf5 (episode files episode_0.hdf5, episode_1.hdf5, ...)')
    check_destination(dst)
    if robot_type is None and source.low_dim(0)[0].shape[1] == ALOHA_STATE_DIM:
        robot_type = ALOHA_ROBOT_TYPE
    with LeRobotWriter(dst, fps=fps or CONTROL_HZ, task=task, robot_type=robot_type, vcodec=vcodec) as writer:
        for index in tqdm(range(count), desc=f'{src} -> LeRobot ({writer.vcodec})', unit='episode'):
            writer.add(source.read_episode(index))
    return count


def to_hdf5(src, dst, num_episodes=None, compression=None):
    """A LeRobot dataset at src -> episode_{i}.hdf5 files in a new folder dst; returns the count."""
    if not is_lerobot_dataset(src):
        raise ValueError(f'SRC {src} is not a LeRobot dataset (no meta/info.json)')
    source = LeRobotEpisodes(src)
    count = source.num_episodes if num_episodes is None else num_episodes
    if not 0 < count <= source.num_episodes:
        raise ValueError(f'--num_episodes {count}: {src} holds {source.num_episodes} episodes')
    check_destination(dst)
    work = dst.rstrip(os.sep) + '.partial'
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        for index in tqdm(range(count), desc=f'{src} -> HDF5', unit='episode'):
            store_episode(episode_path(work, index), source.read_episode(index), compression)
        if os.path.isdir(dst):
            os.rmdir(dst)  # empty, checked above
        os.replace(work, dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return count


def main(args):
    if args['to'] == 'lerobot':
        count = to_lerobot(args['src'], args['dst'], args['fps'], args['task'], args['robot_type'], args['vcodec'],
                           args['num_episodes'])
    else:
        count = to_hdf5(args['src'], args['dst'], args['num_episodes'], args['compress'])
    print(f"Wrote {count} episodes to {args['dst']}")


def build_parser():
    parser = argparse.ArgumentParser(description='Convert ALOHA HDF5 episodes to a LeRobot dataset (v3.0) or a '
                                     'LeRobot dataset (v3.0, v2.1) to HDF5 episodes.')
    parser.add_argument('--to', choices=('lerobot', 'hdf5'), required=True, help='the layout to write')
    parser.add_argument('src', help='episode_*.hdf5 folder (--to lerobot) or LeRobot dataset root (--to hdf5)')
    parser.add_argument('dst', help='new folder to write (refused if it exists and is not empty)')
    parser.add_argument('--num_episodes', type=int, default=None, help='convert episodes 0..N-1 (default: all)')
    parser.add_argument('--fps', type=int, default=None, help=f'--to lerobot: frame rate (default: {CONTROL_HZ})')
    parser.add_argument('--task', default=DEFAULT_TASK, help='--to lerobot: the task description of every episode')
    parser.add_argument('--robot_type', default=None,
                        help=f"--to lerobot: info.json robot_type (default: {ALOHA_ROBOT_TYPE} for states of "
                             f"ALOHA's {ALOHA_STATE_DIM} joints)")
    parser.add_argument('--vcodec', default=None,
                        help="--to lerobot: PyAV video encoder (default: LeRobot's libsvtav1, else h264)")
    parser.add_argument('--compress', choices=COMPRESSIONS, default=None,
                        help='--to hdf5: image compression (default: none, as the original)')
    return parser


if __name__ == '__main__':
    parser = build_parser()
    cli_args = vars(parser.parse_args())
    if cli_args['num_episodes'] is not None and cli_args['num_episodes'] < 1:
        parser.error(f"--num_episodes must be 1 or more, got {cli_args['num_episodes']}")
    if cli_args['fps'] is not None and cli_args['fps'] < 1:
        parser.error(f"--fps must be 1 or more, got {cli_args['fps']}")
    try:
        main(cli_args)
    except (ValueError, KeyError, FileNotFoundError, LeRobotFormatError) as err:
        sys.exit(f'{parser.prog}: error: {err}')
    except DiskFull as err:
        sys.exit(f'{parser.prog}: error: {err.strerror}')
