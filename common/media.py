"""What a person watches: H.264 videos written frame by frame, a live matplotlib view, and the
joint plot of an episode.

Evaluation writes its rollouts and shows the simulation through these, the sim recorder shows its
episodes through the same view, and the episode viewer (visualize_episodes.py) writes its video and
plot with save_videos and visualize_joints.
"""
import errno
import os
import shutil
import sys

import numpy as np

from common.files import atomic_path
from constants import CONTROL_HZ, JOINT_NAMES

NON_INTERACTIVE_BACKENDS = {'agg', 'pdf', 'ps', 'svg', 'pgf', 'cairo', 'template'}
STATE_NAMES = JOINT_NAMES + ['gripper']  # per arm, in the joint plot
SUBPLOT_HEIGHT = 2  # inches per joint subplot


class VideoWriter:
    """H.264 mp4 written frame by frame through common.files.atomic_path: in place once closed and
    complete, and no file at all when the rollout fails (abort) or ffmpeg could not write every
    frame (a full disk: ffmpeg exits without a word, so close() counts the frames written)."""

    def __init__(self, path, fps=CONTROL_HZ):
        import imageio
        self.path, self.frames = path, 0
        self.target = atomic_path(path)
        self.tmp = self.target.__enter__()
        self.writer = imageio.get_writer(self.tmp, format='FFMPEG', fps=fps, codec='libx264', macro_block_size=2,
                                         ffmpeg_log_level='error')

    def append(self, frame):
        self.writer.append_data(frame)
        self.frames += 1

    def close(self):
        self.writer.close()
        try:
            self._check_complete()
        except OSError as err:
            self.target.__exit__(type(err), err, err.__traceback__)
            raise
        self.target.__exit__(None, None, None)

    def _check_complete(self):
        import imageio_ffmpeg
        try:
            written = imageio_ffmpeg.count_frames_and_secs(self.tmp)[0]
        except (RuntimeError, OSError):
            written = 0
        if written != self.frames:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
            raise OSError(errno.EIO, f'{self.path} could not be written completely: ffmpeg wrote {written} of '
                                     f'{self.frames} frames ({free / 1e6:.0f} MB free on its device)')

    def abort(self, error):
        self.writer.close()
        self.target.__exit__(type(error), error, error.__traceback__)


class OnscreenView:
    """A matplotlib window showing frames as they come (--onscreen_render), `pause` seconds each."""

    def __init__(self, pause):
        import matplotlib.pyplot as plt
        self.plt, self.pause = plt, pause
        self.ax = plt.subplot()
        self.image = None
        plt.ion()

    def show(self, frame):
        if self.image is None:
            self.image = self.ax.imshow(frame)
        self.image.set_data(frame)
        self.plt.pause(self.pause)

    def close(self):
        self.plt.close()


def display_available():
    """Whether a window can be shown: a display, and an interactive matplotlib backend."""
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        return False
    import matplotlib.pyplot as plt
    return plt.get_backend().lower() not in NON_INTERACTIVE_BACKENDS


def save_videos(video, dt, video_path=None):
    """Write cameras side by side as H.264 mp4 at 1 / dt fps.

    video: {camera: (T, H, W, 3) uint8} or a list over time of {camera: (H, W, 3) uint8}.
    """
    if isinstance(video, list):
        cam_names = list(video[0].keys())
        frames = (np.concatenate([step[cam] for cam in cam_names], axis=1) for step in video)
    else:
        cam_names = list(video.keys())
        frames = (np.concatenate([video[cam][t] for cam in cam_names], axis=1)  # (H, W * cams, 3)
                  for t in range(len(video[cam_names[0]])))
    writer = VideoWriter(video_path, fps=int(1 / dt))
    try:
        for frame in frames:
            writer.append(frame)
    except BaseException as error:
        writer.abort(error)
        raise
    writer.close()
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
