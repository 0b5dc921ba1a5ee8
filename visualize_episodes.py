"""Write the video and the joint plot of one recorded episode.

`episode_{i}_video.mp4`: all cameras side by side, 1 / DT fps, H.264 (plays in a browser).
`episode_{i}_qpos.png`: one subplot per joint, state and command overlaid.
Reads every layout formats/hdf5.py reads: the original, gzip/lzf-compressed images, and the JPEG
layout of act-plus-plus, and LeRobot datasets (episode i being LeRobot's episode_index i). Both
files are written atomically into the dataset folder.
"""
import argparse
import os

import numpy as np

from common.files import atomic_path
from constants import DT, JOINT_NAMES, get_task_config, sim_task_names
from formats.datasets import open_dataset

### Fixed settings
STATE_NAMES = JOINT_NAMES + ['gripper']  # per arm
VIDEO_CODEC = 'libx264'
VIDEO_PIXEL_FORMAT = 'yuv420p'  # what browsers decode
SUBPLOT_HEIGHT = 2  # inches per joint subplot


def save_videos(video, dt, video_path=None):
    """Write cameras side by side as H.264 mp4 at 1 / dt fps.

    video: {camera: (T, H, W, 3) uint8} or a list over time of {camera: (H, W, 3) uint8}.
    """
    import imageio.v2 as imageio
    if isinstance(video, list):
        cam_names = list(video[0].keys())
        frames = (np.concatenate([step[cam] for cam in cam_names], axis=1) for step in video)
    else:
        cam_names = list(video.keys())
        frames = (np.concatenate([video[cam][t] for cam in cam_names], axis=1)  # (H, W * cams, 3)
                  for t in range(len(video[cam_names[0]])))
    with atomic_path(video_path) as tmp, imageio.get_writer(tmp, fps=int(1 / dt), codec=VIDEO_CODEC,
                                                             macro_block_size=2, pixelformat=VIDEO_PIXEL_FORMAT) as writer:
        for frame in frames:
            writer.append_data(frame)
    print(f'Saved video to: {video_path}')


def joint_labels(num_dim):
    """Names of the state dimensions: '<joint>_left', ..., '<joint>_right' for two-arm states."""
    if num_dim == 2 * len(STATE_NAMES):
        return [f'{n}_left' for n in STATE_NAMES] + [f'{n}_right' for n in STATE_NAMES]
    return [f'dim {i}' for i in range(num_dim)]


def visualize_joints(qpos_list, command_list, plot_path=None, ylim=None, label_overwrite=None):
    """One subplot per dimension with the state and the command overlaid."""
    import matplotlib.pyplot as plt
    label1, label2 = label_overwrite or ('State', 'Command')
    qpos = np.array(qpos_list)  # (T, D)
    command = np.array(command_list)  # (T, D)
    num_dim = qpos.shape[1]
    fig, axs = plt.subplots(num_dim, 1, figsize=(num_dim, SUBPLOT_HEIGHT * num_dim), squeeze=False)
    for dim_idx, (ax, name) in enumerate(zip(axs[:, 0], joint_labels(num_dim))):
        ax.plot(qpos[:, dim_idx], label=label1)
        ax.plot(command[:, dim_idx], label=label2)
        ax.set_title(f'Joint {dim_idx}: {name}')
        if ylim:
            ax.set_ylim(ylim)
        ax.legend()
    fig.tight_layout()
    with atomic_path(plot_path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)
    print(f'Saved qpos plot to: {plot_path}')


def main(args):
    dataset_dir = args.get('dataset_dir') or get_task_config(args['task_name'])['dataset_dir']
    dataset_name = f"episode_{args['episode_idx']}"
    source = open_dataset(dataset_dir)
    episode = source.read_episode(args['episode_idx'])
    if episode.images:
        dt = 1 / source.fps if hasattr(source, 'fps') else DT  # LeRobot datasets name their rate
        save_videos(episode.images, dt, video_path=os.path.join(dataset_dir, dataset_name + '_video.mp4'))
    else:
        print(f'{dataset_name} has no camera images: no video written')
    visualize_joints(episode.qpos, episode.action, plot_path=os.path.join(dataset_dir, dataset_name + '_qpos.png'))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Write the video and joint plot of an episode.')
    parser.add_argument('--dataset_dir', action='store', type=str,
                        help="Dataset dir: episode_*.hdf5 files or a LeRobot dataset (default: --task_name's).")
    parser.add_argument('--task_name', help=f'task whose dataset folder to read: {sim_task_names()}, or a '
                        'real-robot task (real_robot/tasks.py)')
    parser.add_argument('--episode_idx', action='store', type=int, default=0, help='Episode index.')
    cli_args = vars(parser.parse_args())
    if not (cli_args['dataset_dir'] or cli_args['task_name']):
        parser.error('--dataset_dir or --task_name required')
    try:
        main(cli_args)
    except (OSError, KeyError, ValueError) as e:
        parser.error(str(e.args[0]) if e.args else str(e))
