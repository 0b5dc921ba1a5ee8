"""LeRobot datasets (formats/lerobot*.py): v3.0 written and read back frame-exactly, v2.1 read, the
statistics, training on both, the conversions both ways, appending, and each kind of bad input."""
import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import convert_dataset
import imitate_episodes
import visualize_episodes
from common.folders import FolderBusy
from evaluation.rollout import eval_bc, load_stats
from formats.datasets import open_dataset
from formats.episode import Episode
from formats.hdf5 import episode_path, read_episode, store_episode
from formats.lerobot import INFO_PATH, QUANTILES, LeRobotEpisodes, LeRobotFormatError
from formats.lerobot_stats import quantile_key
from formats.lerobot_video import encode_video
from formats.lerobot_writer import LeRobotWriter
from formats.normalize import STATS_KEYS
from formats.stats import get_norm_stats
from tests.helpers import (ROOT, TINY_ACT_CONFIG, eval_config, lock_held_elsewhere, start_pose_stats, train_args,
                           write_tiny_checkpoint)
from training.data import EpisodicDataset

LENGTHS = (9, 5, 12)  # episodes of different lengths
HW = (32, 48)
CAMERAS = ('top', 'wrist')
MAX_MEAN_ERROR = 6.0  # mean absolute error (0..255) AV1 at crf 30 leaves on these smooth frames
MIN_PSNR = 25.0  # dB; AV1 at crf 30 gives these 32x48 frames 27.7 to 33.5


def frames(length, seed):
    """(T, H, W, 3) uint8 smooth pictures, each step's far from its neighbours' (a brightness level
    per step and a ramp moving with it) so a neighbouring frame can never pass for the right one."""
    y, x = np.mgrid[0:HW[0], 0:HW[1]]
    steps = np.arange(length)[:, None, None]
    out = np.stack([(x * 4 + steps * 13 + seed) % 256, np.broadcast_to(y * 6, (length, *HW)),
                    np.broadcast_to((steps * 47 + seed) % 200 + 20, (length, *HW))], axis=-1)
    return out.astype(np.uint8)


def make_episode(index, length, sim=True):
    rng = np.random.default_rng(index)
    arrays = {key: rng.normal(size=(length, 14)).astype(np.float32) for key in ('qpos', 'action', 'qvel', 'effort')}
    return Episode(images={cam: frames(length, 31 * index + 7 * c) for c, cam in enumerate(CAMERAS)}, sim=sim, **arrays)


@pytest.fixture(scope='module')
def v3(tmp_path_factory):
    """A v3.0 dataset of LENGTHS episodes whose tables and videos span several files, and the episodes."""
    root = str(tmp_path_factory.mktemp('v3') / 'dataset')
    episodes = [make_episode(i, n, sim=i != 1) for i, n in enumerate(LENGTHS)]
    # every table in its own file; episodes 0 and 1 (under 1000 bytes of video after the first) share a video file
    with LeRobotWriter(root, task='pick the cube', data_file_mb=1e-6, video_file_mb=1000 / 2 ** 20) as writer:
        for episode in episodes:
            writer.add(episode)
    return root, episodes


def write_v21(root, episodes, fps=50, video_fps=None, video_trim=0):
    """A v2.1 dataset: one table and one video per camera per episode, JSON-lines metadata; the
    videos at video_fps (default fps) and without their last video_trim frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    info = {'codebase_version': 'v2.1', 'fps': fps, 'total_episodes': len(episodes), 'chunks_size': 1000,
            'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
            'video_path': 'videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4',
            'features': {'observation.state': {'dtype': 'float32', 'shape': [14]},
                         'action': {'dtype': 'float32', 'shape': [14]},
                         **{f'observation.images.{cam}': {'dtype': 'video', 'shape': [*HW, 3],
                                                          'names': ['height', 'width', 'channel']} for cam in CAMERAS}}}
    os.makedirs(os.path.join(root, 'meta'))
    start = 0
    for index, episode in enumerate(episodes):
        length = len(episode.action)
        table = pa.table({'observation.state': [list(map(float, row)) for row in episode.qpos],  # variable lists
                          'action': pa.FixedSizeListArray.from_arrays(pa.array(episode.action.ravel()), 14),
                          'timestamp': pa.array((np.arange(length) / fps).astype(np.float32)),
                          'frame_index': np.arange(length), 'episode_index': np.full(length, index),
                          'index': np.arange(start, start + length), 'task_index': np.zeros(length, np.int64)})
        path = os.path.join(root, info['data_path'].format(episode_chunk=0, episode_index=index))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table, path)
        for cam in CAMERAS:
            path = os.path.join(root, info['video_path'].format(episode_chunk=0, video_key=f'observation.images.{cam}',
                                                                episode_index=index))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            encode_video(path, episode.images[cam][:length - video_trim], video_fps or fps, 'libsvtav1')
        start += length
    with open(os.path.join(root, 'meta', 'episodes.jsonl'), 'w') as f:
        f.writelines(json.dumps({'episode_index': i, 'tasks': ['t'], 'length': len(e.action)}) + '\n'
                     for i, e in enumerate(episodes))
    with open(os.path.join(root, INFO_PATH), 'w') as f:
        json.dump(info, f)
    return root


def psnr(a, b):
    return 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


############################ Reading what was written ############################

def test_v3_layout_spans_files_and_keeps_arrays_to_the_bit(v3):
    root, episodes = v3
    data = LeRobotEpisodes(root)
    assert data.num_episodes == len(LENGTHS) and data.camera_names == list(CAMERAS)
    assert len({e.data_file for e in data.entries}) >= 2
    for cam in CAMERAS:
        files = [e.videos[f'observation.images.{cam}'] for e in data.entries]
        assert len({path for path, _ in files}) >= 2 and any(start > 0 for _, start in files)  # concatenated too
    info = json.load(open(os.path.join(root, INFO_PATH)))
    assert info['total_episodes'] == 3 and info['total_frames'] == sum(LENGTHS) and info['codebase_version'] == 'v3.0'
    video = info['features']['observation.images.top']['info']
    assert video['video.codec'] == 'av1'
    # the keys and order LeRobot writes: the stream's, the encoder's settings, then is_depth_map
    assert list(video) == ['video.height', 'video.width', 'video.codec', 'video.pix_fmt', 'video.fps',
                           'video.channels', 'has_audio', 'video.g', 'video.crf', 'video.preset',
                           'video.fast_decode', 'video.video_backend', 'video.extra_options', 'is_depth_map']
    assert (video['video.preset'], video['video.video_backend'], video['is_depth_map']) == (12, 'pyav', False)
    for i, episode in enumerate(episodes):
        read = data.read_episode(i)
        for key in ('qpos', 'action', 'qvel', 'effort'):
            assert np.array_equal(getattr(read, key), getattr(episode, key)), key
        assert read.sim == episode.sim


@pytest.mark.parametrize('layout', ['v3.0', 'v2.1'])
def test_frames_are_the_ones_at_each_timestamp(v3, tmp_path, layout):
    root, episodes = v3
    if layout == 'v2.1':
        root = write_v21(str(tmp_path / 'v21'), episodes)
    data = LeRobotEpisodes(root)
    for i, episode in enumerate(episodes):
        for cam in CAMERAS:
            source = episode.images[cam].astype(np.float64)
            decoded = data.episode_frames(i, cam)
            assert decoded.shape == source.shape
            errors = np.abs(decoded[:, None] - source[None]).mean(axis=(2, 3, 4))  # (decoded, source)
            assert np.array_equal(errors.argmin(axis=1), np.arange(len(source)))  # never a neighbour
            assert errors.diagonal().max() < MAX_MEAN_ERROR
            last = len(source) - 1  # the episode boundaries, read alone by seeking
            assert np.array_equal(data.frames(i, cam, [last, 0, last]), decoded[[last, 0, last]])


def test_statistics_match_numpy(v3):
    root, episodes = v3
    stats = json.load(open(os.path.join(root, 'meta', 'stats.json')))
    state = np.concatenate([e.qpos for e in episodes]).astype(np.float64)
    # float32 per-episode means, as LeRobot computes them from the stored values
    np.testing.assert_allclose(stats['observation.state']['mean'], state.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats['observation.state']['std'], state.std(0), rtol=1e-6)  # population std
    np.testing.assert_allclose(stats['observation.state']['min'], state.min(0))
    assert stats['observation.state']['count'] == [sum(LENGTHS)]
    top = np.concatenate([e.images['top'] for e in episodes]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.ravel(stats['observation.images.top']['mean']), top.mean(0), rtol=1e-6)
    assert np.shape(stats['observation.images.top']['q99']) == (3, 1, 1)
    import pyarrow.parquet as pq
    rows = [row for path in LeRobotWriter(root)._episode_files() for row in pq.read_table(path).to_pylist()]
    assert len(rows) == len(episodes)  # per-episode stats columns
    counts = np.array([row['stats/observation.state/count'][0] for row in rows])
    for q in QUANTILES:  # LeRobot 0.6.1: the episodes' quantiles weighted by their counts
        per_episode = np.array([row[f'stats/observation.state/{quantile_key(q)}'] for row in rows])
        expected = (per_episode * counts[:, None]).sum(0) / counts.sum()
        np.testing.assert_allclose(stats['observation.state'][quantile_key(q)], expected, rtol=1e-6)
    for row, episode in zip(rows, episodes):  # each episode's quantile within a histogram bin of its value
        values = np.sort(episode.action.astype(np.float32), axis=0)
        width = (values[-1] - values[0]) / 5000
        rank = int(np.ceil(0.1 * len(values))) - 1  # the value at which a tenth of the counts is reached
        assert np.all(np.abs(np.array(row['stats/action/q10']) - values[rank]) <= width * 1.01 + 1e-6)


def test_per_episode_quantiles_are_read_off_lerobots_histogram():
    from formats.lerobot_stats import feature_stats
    stats = feature_stats(np.arange(10, dtype=np.float32).reshape(-1, 1))
    width = 9 / 5000  # 5,000 bins between the least and the greatest value
    assert stats['q01'][0] == pytest.approx(0, abs=1e-9)  # a tenth of a count: the first edge
    assert 4 < stats['q50'][0] <= 4 + width  # five counts: the top of the bin holding 4 (numpy's median: 4.5)
    assert 9 - width < stats['q99'][0] < 9  # 9.9 counts: nine tenths into the bin holding 9
    assert stats['std'].dtype == np.float32 and stats['std'][0] == pytest.approx(np.std(np.arange(10)), rel=1e-6)


############################ Training ############################

def test_training_samples_equal_those_of_the_hdf5_episodes(v3, tmp_path):
    root, episodes = v3
    for i, episode in enumerate(episodes):
        store_episode(episode_path(str(tmp_path), i), episode)
    stats = get_norm_stats(root, 3)
    assert all(np.array_equal(stats[k], v) for k, v in get_norm_stats(str(tmp_path), 3).items())
    for policy_class, obs_horizon in (('ACT', 1), ('Diffusion', 2)):  # Diffusion: steps t-1 and t, min-max actions
        datasets = [EpisodicDataset([0, 1, 2], folder, list(CAMERAS), stats, policy_class, obs_horizon, preload=preload)
                    for folder, preload in ((str(tmp_path), False), (root, False), (root, True))]
        for key in ((0, 11), (1, 5), (2, 99)):
            hdf5, *lerobot = (d[key] for d in datasets)
            for sample in lerobot:
                assert all(np.array_equal(a, b) for a, b in zip(hdf5[1:], sample[1:]))  # qpos, action, is_pad
                assert np.abs(sample[0].astype(int) - hdf5[0]).mean() < MAX_MEAN_ERROR


@pytest.mark.parametrize('layout', ['v3.0', 'v2.1'])
def test_training_two_epochs(v3, tmp_path, capsys, layout):
    root, episodes = v3
    if layout == 'v2.1':
        root = write_v21(str(tmp_path / 'v21'), episodes)
    args = train_args(root, tmp_path / 'ckpt', num_episodes=None, camera_names=None)
    imitate_episodes.main(args)
    out = capsys.readouterr().out
    assert f'LeRobot dataset {root} ({layout}, 50 fps): 3 of 3 episodes' in out
    assert "observation.images.wrist -> camera 'wrist'" in out
    config = json.load(open(tmp_path / 'ckpt' / 'config.json'))
    assert config['camera_names'] == list(CAMERAS) and config['training']['num_episodes'] == 3
    assert os.path.isfile(tmp_path / 'ckpt' / 'policy_best.ckpt')


############################ Converting, appending, viewing ############################

def test_round_trip_hdf5_lerobot_hdf5(v3, tmp_path, capsys):
    _, episodes = v3
    src, mid, back = (str(tmp_path / name) for name in ('hdf5', 'lerobot', 'back'))
    os.makedirs(src)
    for i, episode in enumerate(episodes):
        store_episode(episode_path(src, i), episode)
    convert_dataset.main({'to': 'lerobot', 'src': src, 'dst': mid, 'fps': None, 'task': 'cube', 'robot_type': None,
                          'vcodec': None, 'num_episodes': None})
    assert json.load(open(os.path.join(mid, INFO_PATH)))['robot_type'] == 'aloha'
    convert_dataset.main({'to': 'hdf5', 'src': mid, 'dst': back, 'num_episodes': None, 'compress': None})
    assert sorted(os.listdir(back)) == [f'episode_{i}.hdf5' for i in range(3)]
    assert not os.path.exists(mid + '.partial') and not os.path.exists(back + '.partial')
    for i, episode in enumerate(episodes):
        again = read_episode(episode_path(back, i))
        for key in ('qpos', 'action', 'qvel', 'effort'):
            assert np.array_equal(getattr(again, key), getattr(episode, key)), key
        assert again.sim == episode.sim
        assert all(psnr(again.images[c], episode.images[c]) > MIN_PSNR for c in CAMERAS)
    with pytest.raises(ValueError, match='already exists'):
        convert_dataset.main({'to': 'hdf5', 'src': mid, 'dst': back, 'num_episodes': None, 'compress': None})


def test_appending_updates_the_metadata_and_a_failed_append_changes_nothing(v3, tmp_path):
    root = str(tmp_path / 'dataset')
    shutil.copytree(v3[0], root)
    with LeRobotWriter(root) as writer:
        writer.add(make_episode(3, 4))
    data = LeRobotEpisodes(root)
    assert data.num_episodes == 4 and data.info['total_frames'] == sum(LENGTHS) + 4
    assert json.load(open(os.path.join(root, 'meta', 'stats.json')))['action']['count'] == [sum(LENGTHS) + 4]
    assert np.array_equal(data.low_dim(3)[0], make_episode(3, 4).qpos)
    before = {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}
    wrong = make_episode(4, 4)
    wrong.images['top'] = wrong.images['top'][:, :8]
    with pytest.raises(LeRobotFormatError, match="camera 'top' needs 4 uint8 frames"):
        with LeRobotWriter(root) as writer:
            writer.add(make_episode(4, 4))
            writer.add(wrong)
    assert {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs} == before
    assert LeRobotEpisodes(root).num_episodes == 4


def test_viewer_shows_a_lerobot_episode(v3, tmp_path):
    root = str(tmp_path / 'dataset')
    shutil.copytree(v3[0], root)
    visualize_episodes.main({'dataset_dir': root, 'episode_idx': 2})
    assert all(os.path.isfile(os.path.join(root, name)) for name in ('episode_2_video.mp4', 'episode_2_qpos.png'))
    assert LeRobotEpisodes(root).num_episodes == 3


############################ Bad input ############################

def broken_copy(v3, tmp_path, change):
    root = str(tmp_path / 'broken')
    shutil.copytree(v3[0], root)
    change(root)
    return root


def edit_feature(root, key, height, width):
    """info.json giving the video feature `key` another frame size than its videos hold."""
    path = os.path.join(root, INFO_PATH)
    info = json.load(open(path))
    info['features'][key]['shape'][:2] = [height, width]
    info['features'][key]['info'].update({'video.height': height, 'video.width': width})
    json.dump(info, open(path, 'w'))


def edit_info(**changes):
    def change(root):
        path = os.path.join(root, INFO_PATH)
        info = json.load(open(path))
        info.update(changes)
        json.dump(info, open(path, 'w'))
    return change


def test_unsupported_version_and_foreign_folder(v3, tmp_path):
    root = broken_copy(v3, tmp_path, edit_info(codebase_version='v1.6'))
    with pytest.raises(LeRobotFormatError, match=r"info.json: codebase_version 'v1.6' is not supported; this project "
                                                 r"reads v2.0, v2.1, v3.0"):
        LeRobotEpisodes(root)
    os.makedirs(tmp_path / 'other')
    (tmp_path / 'other' / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='episode_0.hdf5: episode file not found'):
        get_norm_stats(str(tmp_path / 'other'), 2)


@pytest.mark.parametrize('change, message', [
    ({'fps': '50'}, r"fps '50' is not a positive number"),
    ({'total_episodes': '4'}, r"total_episodes '4' is not a count"),
    ({'features': {'observation.state': 'float32'}}, r'feature observation.state is not an object with a "shape"'),
])
def test_info_json_values_of_the_wrong_type_are_named(v3, tmp_path, change, message):
    root = broken_copy(v3, tmp_path, edit_info(**change))
    with pytest.raises(LeRobotFormatError, match=r'meta/info.json: ' + message):
        LeRobotEpisodes(root)


def test_missing_feature_is_named_with_the_dataset_features(v3, tmp_path):
    args = train_args(v3[0], tmp_path / 'ckpt', num_episodes=None, camera_names=['front'])
    with pytest.raises(LeRobotFormatError, match=r"no feature 'observation.images.front' \(camera 'front' .*"
                                                 r"the dataset has: observation.state, action"):
        imitate_episodes.main(args)
    assert not os.path.exists(tmp_path / 'ckpt')


@pytest.mark.parametrize('change, message', [
    (lambda root: os.remove(os.path.join(root, 'videos/observation.images.wrist/chunk-000/file-001.mp4')),
     'file-001.mp4: video missing'),
    (edit_info(fps=25), r'the table runs at 50 fps but meta/info.json says fps 25'),
    (lambda root: open(os.path.join(root, 'data/chunk-000/file-001.parquet'), 'wb').write(b'PAR1 broken'),
     'file-001.parquet: cannot be read as parquet'),
    (lambda root: edit_feature(root, 'observation.images.top', 96, 128),
     r'file-000.mp4: its frames are 32x48 but meta/info.json gives observation.images.top 96x128'),
    (lambda root: edit_feature(root, 'observation.images.wrist', -4, 10**9),
     r'observation.images.wrist has frames of -4x1000000000; sides of 1..8192 pixels are expected'),
])
def test_broken_datasets_stop_training_before_anything_is_written(v3, tmp_path, change, message):
    root = broken_copy(v3, tmp_path, change)
    with pytest.raises(LeRobotFormatError, match=message):
        imitate_episodes.main(train_args(root, tmp_path / 'ckpt', num_episodes=None, camera_names=None))
    assert not os.path.exists(tmp_path / 'ckpt')


def test_video_shorter_than_its_table_or_at_another_fps(v3, tmp_path):
    episodes = v3[1][:1]
    short = LeRobotEpisodes(write_v21(str(tmp_path / 'short'), episodes, video_trim=2))
    with pytest.raises(LeRobotFormatError, match=r'episode_000000.mp4: the video is shorter than its table: it ends '
                                                 r'at 0.120 s but episode 0 \(9 frames from 0.000 s\) needs a frame '
                                                 r'at 0.160 s'):
        short.check_frames(0, ['top'], LENGTHS[0])
    slow = LeRobotEpisodes(write_v21(str(tmp_path / 'slow'), episodes, video_fps=25))
    with pytest.raises(LeRobotFormatError, match='episode_000000.mp4: the video runs at 25 fps but meta/info.json '
                                                 'and the table say 50 fps'):
        slow.check_frames(0, ['top'], LENGTHS[0])


def test_stats_from_takes_a_lerobot_dataset_and_names_an_empty_folder(v3, tmp_path, capsys):
    """--stats_from accepts a LeRobot dataset wherever it accepts episode files; an empty folder is named."""
    root, episodes = v3
    policy_config = dict(TINY_ACT_CONFIG, camera_names=['top'])
    ckpt = write_tiny_checkpoint(str(tmp_path / 'ckpt'), policy_config, start_pose_stats([0] * 6, 0.5, 1.0))
    config = eval_config(ckpt, policy_config, stats_from=root, num_rollouts=1, save_video=False)
    normalizer = load_stats(config)
    expected = get_norm_stats(open_dataset(root))
    assert all(np.array_equal(normalizer.stats[key], expected[key]) for key in STATS_KEYS)
    np.testing.assert_allclose(normalizer.stats['action_mean'], np.concatenate([e.action for e in episodes]).mean(0),
                               rtol=1e-5, atol=1e-6)
    success_rate, _ = eval_bc(config, 'policy_best.ckpt')  # one rollout normalised with the dataset's statistics
    assert 0 <= success_rate <= 1 and 'Rollout 0' in capsys.readouterr().out
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=r'empty: holds no episodes \(episode_\*\.hdf5 files or a LeRobot dataset\)'):
        load_stats(dict(config, stats_from=str(tmp_path / 'empty')))


def test_one_writer_at_a_time_and_a_dead_writers_lock_is_taken_over(v3, tmp_path):
    root = str(tmp_path / 'dataset')
    shutil.copytree(v3[0], root)
    with lock_held_elsewhere(root) as holder:
        with pytest.raises(FolderBusy, match=rf'{root} is being written by process {holder.pid}'):
            LeRobotWriter(root)
        assert not os.path.exists(os.path.join(root, '.pending'))
    with LeRobotWriter(root) as writer:  # the holder is dead: its lock is taken over
        writer.add(make_episode(3, 4))
    assert LeRobotEpisodes(root).num_episodes == 4 and not os.path.exists(root + '.lock')


@pytest.mark.parametrize('where', ['_write_video', '_write_metadata'])
def test_a_full_disk_while_writing_is_disk_full_and_leaves_no_lock(tmp_path, monkeypatch, where):
    import errno

    from common.files import DiskFull
    from formats.lerobot_writer import LeRobotWriter
    root = str(tmp_path / 'dataset')

    def full(self, *args):  # PyAV's own write on a full disk raises its OSError subclass with the file's name
        raise OSError(errno.ENOSPC, 'No space left on device', os.path.join(self.work, 'videos', 'x.mp4'))
    monkeypatch.setattr(LeRobotWriter, where, full)
    with pytest.raises(DiskFull, match=r'no space left on device: .*dataset.partial/videos/x.mp4'):
        with LeRobotWriter(root, fps=50) as writer:
            writer.add(make_episode(0, 6))
    assert os.listdir(tmp_path) == []  # no dataset, no partial folder, no lock


def test_two_conversions_to_one_destination_cannot_mix(v3, tmp_path):
    dst = str(tmp_path / 'back')
    with lock_held_elsewhere(dst) as holder:
        with pytest.raises(FolderBusy, match=rf'{dst} is being written by process {holder.pid}'):
            convert_dataset.main({'to': 'hdf5', 'src': v3[0], 'dst': dst, 'num_episodes': 1, 'compress': None})
        assert not os.path.exists(dst) and not os.path.exists(dst + '.partial')


APPEND_KILLED_AT_RENAME = '''
import os, sys
import numpy as np
from formats.episode import Episode
from formats.lerobot_writer import LeRobotWriter
replace, calls, kill_at = os.replace, [0], int(sys.argv[2])
def killed(*args):
    calls[0] += 1
    if calls[0] == kill_at:
        os._exit(9)  # as kill -9: no clean-up runs
    replace(*args)
os.replace = killed
episode = Episode(**{key: np.load(sys.argv[3])[key] for key in ('qpos', 'action', 'qvel', 'effort')},
                  images={cam: np.load(sys.argv[3])[cam] for cam in ('top', 'wrist')})
with LeRobotWriter(sys.argv[1]) as writer:
    writer.add(episode)
'''


def append_killed_at_rename(root, kill_at, episode_file):
    """Append the episode of episode_file to root in a process killed at its kill_at-th rename -> its exit
    status: 9 when killed, 0 when it had fewer renames."""
    done = subprocess.run([sys.executable, '-c', APPEND_KILLED_AT_RENAME, root, str(kill_at), episode_file],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode in (0, 9), done.stderr
    return done.returncode


def test_an_append_killed_at_any_rename_is_completed_or_rolled_back(v3, tmp_path):
    """Killed at any rename (each atomic write's and each move's), the dataset opens whole: with the 3
    episodes it had when the kill came before the journal's commit, with the new one after it."""
    episode = make_episode(3, 4)
    episode_file = str(tmp_path / 'episode.npz')
    np.savez(episode_file, qpos=episode.qpos, action=episode.action, qvel=episode.qvel, effort=episode.effort,
             **episode.images)
    counts = []
    for kill_at in range(1, 40):
        root = str(tmp_path / f'dataset_{kill_at}')
        shutil.copytree(v3[0], root)
        status = append_killed_at_rename(root, kill_at, episode_file)
        if status == 0:  # no rename left to kill at: every one was tried
            break
        assert status == 9
        data = LeRobotEpisodes(root)  # completes or rolls back the append
        counts.append(data.num_episodes)
        assert data.info['total_episodes'] == data.num_episodes and not os.path.exists(os.path.join(root, '.pending'))
        if data.num_episodes == 4:
            assert np.array_equal(data.low_dim(3)[0], make_episode(3, 4).qpos)
            assert len(data.episode_frames(3, 'top')) == 4
        with LeRobotWriter(root) as writer:  # and takes the next append
            writer.add(make_episode(4, 3))
        assert LeRobotEpisodes(root).num_episodes == counts[-1] + 1
    assert 3 in counts and counts.count(4) >= 6  # data, videos, episodes metadata, tasks, stats, info.json
    assert counts == sorted(counts)  # rolled back before the commit, completed after it


def test_a_users_folder_named_like_a_staging_folder_is_never_deleted(v3, tmp_path):
    root, episodes = v3
    hdf5 = str(tmp_path / 'hdf5')
    os.makedirs(hdf5)
    store_episode(episode_path(hdf5, 0), episodes[0])
    conversions = {str(tmp_path / 'back'): {'to': 'hdf5', 'src': root, 'num_episodes': 1, 'compress': None},
                   str(tmp_path / 'lerobot'): {'to': 'lerobot', 'src': hdf5, 'fps': None, 'task': 'cube',
                                               'robot_type': None, 'vcodec': None, 'num_episodes': 1}}
    for dst, args in conversions.items():
        os.makedirs(dst + '.partial')
        notes = os.path.join(dst + '.partial', 'my_notes.txt')
        open(notes, 'w').write('mine')
        with pytest.raises(FileExistsError, match=rf'{dst}\.partial exists and is not a staging folder of this '
                                                  r'project.*nothing in it was touched'):
            convert_dataset.main({**args, 'dst': dst})
        assert open(notes).read() == 'mine' and not os.path.exists(dst)


@pytest.mark.parametrize('key, template', [
    ('data_path', '../outside/file-{file_index:03d}.parquet'),
    ('video_path', '/tmp/{video_key}/file-{file_index:03d}.mp4'),
])
def test_info_json_paths_outside_the_dataset_are_refused(v3, tmp_path, key, template):
    root = broken_copy(v3, tmp_path, edit_info(**{key: template}))
    with pytest.raises(LeRobotFormatError, match=rf'info.json: {key} .* points outside {root}; refused'):
        LeRobotEpisodes(root)


def test_a_damaged_video_is_named(tmp_path):
    root = str(tmp_path / 'dataset')
    with LeRobotWriter(root) as writer:
        writer.add(make_episode(0, 12))
    video = glob.glob(os.path.join(root, 'videos', 'observation.images.top', '*', '*.mp4'))[0]
    intact = open(video, 'rb').read()
    named = 0
    for seed in range(24):  # noise over a third of the way in: some damage the decoder shrugs off
        damaged = bytearray(intact)
        damaged[len(intact) // 3:len(intact) // 3 + 200] = np.random.default_rng(seed).bytes(200)
        open(video, 'wb').write(damaged)
        try:
            LeRobotEpisodes(root).episode_frames(0, 'top')
        except LeRobotFormatError as err:
            assert f'{video}: cannot be decoded (episode 0, camera \'top\')' in str(err) and 'damaged' in str(err)
            named += 1
    assert named


def test_the_origin_is_in_the_episode_rows_and_an_earlier_versions_marks_still_read(tmp_path, capsys):
    import pyarrow.parquet as pq

    from formats.lerobot_writer import append_episodes
    root = str(tmp_path / 'real')
    append_episodes(root, [make_episode(i, 6, sim=False) for i in range(2)], fps=50)
    info = json.load(open(os.path.join(root, INFO_PATH)))
    assert 'info' not in info['features']['action']  # features as LeRobot writes them: its merge compares them
    assert 'shadows' not in info['features']['observation.images.top']['info']
    paths = glob.glob(os.path.join(root, 'meta', 'episodes', '*', '*.parquet'))
    rows = [row for path in paths for row in pq.read_table(path).to_pylist()]
    assert [(row['sim'], row['shadows']) for row in rows] == [(False, True), (False, True)]
    for path in paths:  # a dataset of an earlier version: the marks in info.json, no columns
        pq.write_table(pq.read_table(path).drop(['sim', 'shadows']), path)
    info['features']['action']['info'] = {'sim': False}
    with open(os.path.join(root, INFO_PATH), 'w') as f:
        json.dump(info, f)
    assert [LeRobotEpisodes(root).low_dim(i)[2] for i in range(2)] == [False, False]
    assert 'not recorded' not in capsys.readouterr().out
    info['features']['action'].pop('info')  # a dataset written elsewhere: nothing tells
    with open(os.path.join(root, INFO_PATH), 'w') as f:
        json.dump(info, f)
    assert LeRobotEpisodes(root).low_dim(0)[2] is True
    assert 'whether the episodes are simulated or from a real robot is not recorded' in capsys.readouterr().out


def test_simulated_real_and_shadow_free_datasets_have_the_features_lerobots_merge_compares_equal(tmp_path):
    """LeRobot 0.6.1's merge (lerobot-edit-dataset --operation.type merge) requires the same fps, robot_type
    and features: every non-video feature equal, a video feature equal but for its encoder settings."""
    from formats.lerobot_writer import append_episodes
    made = {}
    for name, episode in (('sim', make_episode(0, 6)), ('real', make_episode(1, 6, sim=False)),
                          ('flat', replace(make_episode(2, 6), shadows=False))):
        append_episodes(str(tmp_path / name), [episode], fps=50, robot_type='aloha')
        made[name] = json.load(open(tmp_path / name / INFO_PATH))
    for name in ('real', 'flat'):
        assert made[name]['features'] == made['sim']['features'], name
        assert (made[name]['fps'], made[name]['robot_type']) == (50, 'aloha')
    origins = {name: [(e.sim, e.shadows) for e in LeRobotEpisodes(str(tmp_path / name)).entries] for name in made}
    assert origins == {'sim': [(True, True)], 'real': [(False, True)], 'flat': [(True, False)]}


def test_mixed_origins_keep_their_rows_and_renders_do_not_mix(v3, tmp_path):
    from formats.lerobot_writer import append_episodes
    root, episodes = v3  # episode 1 is a real robot's
    info = json.load(open(os.path.join(root, INFO_PATH)))
    assert 'info' not in info['features']['action']
    flat = str(tmp_path / 'flat')
    append_episodes(flat, [replace(make_episode(0, 6), shadows=False)], fps=50)
    with pytest.raises(LeRobotFormatError, match='rendered without shadows, this episode.s with'):
        append_episodes(flat, [make_episode(1, 6)], fps=50)
