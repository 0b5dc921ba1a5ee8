"""What a person watches: H.264 videos written frame by frame, and a live matplotlib view.

Evaluation writes its rollouts and shows the simulation through these; the sim recorder shows
its episodes through the same view.
"""
import errno
import os
import shutil
import sys

from common.files import atomic_path
from constants import CONTROL_HZ

NON_INTERACTIVE_BACKENDS = {'agg', 'pdf', 'ps', 'svg', 'pgf', 'cairo', 'template'}


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
