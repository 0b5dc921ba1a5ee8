"""visualize_episodes.py: the video and joint plot of an episode, in every layout
formats/ reads."""
import os
import subprocess
import sys

import numpy as np

import visualize_episodes
from formats.datasets import open_dataset
from formats.hdf5 import write_episode
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, write_tiny_episode


def _check_viewer_outputs(dataset_dir, idx, num_frames, width):
    import imageio.v2 as imageio
    video = os.path.join(dataset_dir, f'episode_{idx}_video.mp4')
    plot = os.path.join(dataset_dir, f'episode_{idx}_qpos.png')
    assert os.path.getsize(plot) > 0
    with imageio.get_reader(video) as reader:
        assert reader.count_frames() == num_frames
        assert reader.get_meta_data()['fps'] == 50 and reader.get_meta_data()['codec'] == 'h264'
        assert reader.get_data(0).shape[1] == width
    assert not [name for name in os.listdir(dataset_dir) if '.tmp' in name]  # written atomically


def test_viewer_writes_video_and_plot(tmp_path, capsys):
    write_tiny_episode(str(tmp_path / 'episode_1.hdf5'), episode_len=10, camera_names=('top', 'angle'),
                       compression='gzip')
    visualize_episodes.main({'dataset_dir': str(tmp_path), 'episode_idx': 1})
    assert 'Saved video to' in capsys.readouterr().out
    _check_viewer_outputs(tmp_path, 1, 10, 32 * 2)
    write_tiny_episode(str(tmp_path / 'episode_7.hdf5'), episode_len=10, camera_names=('cam_high', 'cam_low'),
                       sim=False)
    visualize_episodes.main({'dataset_dir': str(tmp_path), 'episode_idx': 7})
    _check_viewer_outputs(tmp_path, 7, 10, 64)


def test_viewer_reads_the_jpeg_layout(tmp_path):
    ramp = np.linspace(0, 255, 32)[None, :, None] * np.ones((24, 1, 3))  # smooth, JPEG-friendly
    frames = np.stack([np.roll(ramp, 4 * t, axis=1) for t in range(6)]).astype(np.uint8)  # (6, 24, 32, 3)
    write_episode(str(tmp_path / 'episode_0.hdf5'), np.zeros((6, 14)), np.zeros((6, 14)), {'cam_high': frames},
                  qvel=np.zeros((6, 14)), sim=False, compression='jpeg')
    images = open_dataset(str(tmp_path)).read_episode(0).images
    assert images['cam_high'].shape == (6, 24, 32, 3)
    assert np.abs(images['cam_high'].astype(int) - frames).mean() < 8  # lossy, but the same pictures
    visualize_episodes.main({'dataset_dir': str(tmp_path), 'episode_idx': 0})
    _check_viewer_outputs(tmp_path, 0, 6, 32)


def test_viewer_missing_episode_exits_non_zero(tmp_path):
    done = subprocess.run([sys.executable, 'visualize_episodes.py', '--dataset_dir', str(tmp_path), '--episode_idx', '3'],
                          cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode != 0 and 'episode_3.hdf5' in done.stderr
