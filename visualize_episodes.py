"""Write the video and the joint plot of one recorded episode.

`episode_{i}_video.mp4`: all cameras side by side, H.264 (plays in a browser), at a LeRobot dataset's
rate, or for HDF5 episodes at --task_name's (SO tasks 30 Hz), else 1 / DT.
`episode_{i}_qpos.png`: one subplot per joint, state and command overlaid.
Reads every layout formats/hdf5.py reads: the original, gzip/lzf-compressed images, and the JPEG
layout of act-plus-plus, and LeRobot datasets (episode i being LeRobot's episode_index i). Both
files are written atomically into the dataset folder; the writing is common/media.py.
"""
import argparse
import os

from cli.errors import run_command
from common.media import save_videos, visualize_joints
from constants import DT
from formats.datasets import open_dataset
from tasks import control_hz, get_task_config, sim_task_names

__all__ = ['main', 'save_videos', 'visualize_joints']  # the original's names

def main(args):
    dataset_dir = args.get('dataset_dir') or get_task_config(args['task_name'])['dataset_dir']
    dataset_name = f"episode_{args['episode_idx']}"
    source = open_dataset(dataset_dir)
    episode = source.read_episode(args['episode_idx'])
    if episode.images:
        if hasattr(source, 'fps'):  # LeRobot datasets name their rate
            dt = 1 / source.fps
        else:  # HDF5 episodes do not: the task's (SO tasks 30 Hz), else the original's
            dt = 1 / control_hz(get_task_config(args['task_name'])) if args.get('task_name') else DT
        save_videos(episode.images, dt, video_path=os.path.join(dataset_dir, dataset_name + '_video.mp4'))
    else:
        print(f'{dataset_name} has no camera images: no video written')
    visualize_joints(episode.qpos, episode.action, plot_path=os.path.join(dataset_dir, dataset_name + '_qpos.png'))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Write the video and joint plot of an episode.')
    parser.add_argument('--dataset_dir', action='store', type=str,
                        help="Dataset dir: episode_*.hdf5 files or a LeRobot dataset (default: --task_name's).")
    parser.add_argument('--task_name', help=f'task whose dataset folder to read: {sim_task_names()}, or a '
                        'real-robot task (REAL_TASK_CONFIGS in constants.py)')
    parser.add_argument('--episode_idx', action='store', type=int, default=0, help='Episode index.')
    cli_args = vars(parser.parse_args())
    if not (cli_args['dataset_dir'] or cli_args['task_name']):
        parser.error('--dataset_dir or --task_name required')
    run_command(parser, main, cli_args, usage=(OSError, KeyError, ValueError))
