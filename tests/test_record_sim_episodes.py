"""record_sim_episodes.py on short, small episodes; the full scripted sets and a full-size
episode in the slow run."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import constants

import recording.sim
from formats import hdf5
import tasks
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TASK

STEPS = 10  # recorded steps per test episode (the real task has 400)
SMALL = [24, 32]
CAMERAS = ['top', 'angle']


def record(dataset_dir, **overrides):
    args = {'task_name': TASK, 'dataset_dir': str(dataset_dir), 'num_episodes': 2, 'onscreen_render': False,
            'seed': 0, 'num_workers': 1, 'camera_names': CAMERAS, 'image_size': SMALL, 'compress': False}
    args.update(overrides)
    return recording.sim.main(args)


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """Two short episodes recorded in-process, and the same two by two workers with --compress."""
    root = tmp_path_factory.mktemp('recorded')
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
        record(root / 'plain')
        record(root / 'parallel', num_workers=2, compress=True)
    return root


def read_all(path):
    with h5py.File(path, 'r') as root:
        return {name: root[name][()] for name in ('action', 'observations/qpos', 'observations/qvel',
                                                   *(f'observations/images/{c}' for c in CAMERAS))}


def test_recorded_layout_is_the_original(recorded):
    assert sorted(os.listdir(recorded / 'plain')) == ['episode_0.hdf5', 'episode_1.hdf5']
    with h5py.File(recorded / 'plain' / 'episode_0.hdf5', 'r') as root:
        assert dict(root.attrs) == {'sim': True} and isinstance(root.attrs['sim'], np.bool_)
        names = []
        root.visit(names.append)
        assert sorted(names) == ['action', 'observations', 'observations/images', 'observations/images/angle',
                                 'observations/images/top', 'observations/qpos', 'observations/qvel']
        for key in ('action', 'observations/qpos', 'observations/qvel'):
            dset = root[key]
            assert dset.shape == (STEPS, 14) and dset.dtype == np.float32 and dset.chunks is None
        for cam in CAMERAS:
            dset = root[f'observations/images/{cam}']
            assert dset.shape == (STEPS, *SMALL, 3) and dset.dtype == np.uint8
            assert dset.chunks == (1, *SMALL, 3) and dset.compression is None
            assert dset[0].max() > 0
        action, qpos = root['action'][()], root['observations/qpos'][()]
    np.testing.assert_allclose(qpos[0, :6], constants.START_ARM_POSE[:6], atol=1e-6)
    assert action[0, 6] == pytest.approx(0.0)  # scripted grippers start commanded closed
    assert action[-1, 6] > 0.0 and action[-1, 13] > 0.0  # and open towards the first waypoint
    assert np.all((action[:, [6, 13]] >= 0) & (action[:, [6, 13]] <= 1))


def test_workers_and_compression_reproduce_the_episodes(recorded):
    for idx in range(2):
        plain = read_all(recorded / 'plain' / f'episode_{idx}.hdf5')
        parallel = read_all(recorded / 'parallel' / f'episode_{idx}.hdf5')
        for key in plain:
            np.testing.assert_array_equal(plain[key], parallel[key], err_msg=key)
    with h5py.File(recorded / 'parallel' / 'episode_0.hdf5', 'r') as root:
        assert root['observations/images/top'].compression == 'gzip'
    first, second = (read_all(recorded / 'plain' / f'episode_{i}.hdf5') for i in range(2))
    assert not np.array_equal(first['observations/images/top'], second['observations/images/top'])


def test_recording_into_a_lerobot_dataset_appends_the_same_episodes(recorded, tmp_path, monkeypatch):
    from formats.lerobot import LeRobotEpisodes
    monkeypatch.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    root = tmp_path / 'lerobot'
    record(root, num_episodes=1, format='lerobot')
    record(root, num_episodes=2, format='lerobot')  # appends episode 1 only
    data = LeRobotEpisodes(str(root))
    assert data.num_episodes == 2 and sorted(data.camera_names) == sorted(CAMERAS)
    assert not os.path.exists(f'{root}.recording')
    info = json.load(open(root / 'meta' / 'info.json'))
    assert info['robot_type'] == 'aloha'  # as convert_dataset.py writes: LeRobot merges only datasets of one type
    import pyarrow.parquet as pq
    assert pq.read_table(root / 'meta' / 'tasks.parquet').to_pylist()[0]['task'] == \
        'Transfer the cube from the right gripper to the left'
    other = tmp_path / 'other'
    record(other, num_episodes=1, format='lerobot', task='pick it up')
    assert pq.read_table(other / 'meta' / 'tasks.parquet').to_pylist()[0]['task'] == 'pick it up'
    for i in range(2):
        expected = read_all(recorded / 'plain' / f'episode_{i}.hdf5')
        episode = data.read_episode(i)
        assert np.array_equal(episode.action, expected['action']) and episode.sim
        assert np.array_equal(episode.qvel, expected['observations/qvel'])
        for cam in CAMERAS:
            assert np.abs(episode.images[cam].astype(int) - expected[f'observations/images/{cam}']).mean() < 8


def test_rerun_skips_valid_episodes_and_redoes_broken_ones(recorded, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    dataset_dir = tmp_path / 'data'
    shutil.copytree(recorded / 'plain', dataset_dir)
    before = os.stat(dataset_dir / 'episode_0.hdf5').st_mtime_ns
    assert record(dataset_dir) == []
    out = capsys.readouterr().out
    assert 'episode_0.hdf5 exists: skipping' in out and 'Success: 0 / 0' in out
    assert os.stat(dataset_dir / 'episode_0.hdf5').st_mtime_ns == before
    with open(dataset_dir / 'episode_1.hdf5', 'r+b') as f:  # truncated by a non-atomic writer
        f.truncate(1000)
    results = record(dataset_dir)
    assert [r['episode_idx'] for r in results] == [1]
    assert 'Success: ' in capsys.readouterr().out
    for key, value in read_all(recorded / 'plain' / 'episode_1.hdf5').items():
        np.testing.assert_array_equal(read_all(dataset_dir / 'episode_1.hdf5')[key], value)
    assert sorted(os.listdir(dataset_dir)) == ['episode_0.hdf5', 'episode_1.hdf5']
    with pytest.raises(ValueError, match='episode_0.hdf5 already exists with another layout'):
        record(dataset_dir, image_size=[48, 64])


def test_no_shadows_marks_the_episodes_and_refuses_a_mixed_folder(recorded, tmp_path, monkeypatch):
    monkeypatch.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    dataset_dir = tmp_path / 'data'
    record(dataset_dir, num_episodes=1, no_shadows=True)
    with h5py.File(dataset_dir / 'episode_0.hdf5', 'r') as root:
        assert root.attrs['shadows'] == False  # noqa: E712 (a numpy bool)
    with h5py.File(recorded / 'plain' / 'episode_0.hdf5', 'r') as root:
        assert 'shadows' not in root.attrs  # the original layout, untouched by default
    flat, shaded = read_all(dataset_dir / 'episode_0.hdf5'), read_all(recorded / 'plain' / 'episode_0.hdf5')
    for key in ('action', 'observations/qpos', 'observations/qvel'):  # the same physics
        np.testing.assert_array_equal(flat[key], shaded[key])
    assert any((flat[f'observations/images/{c}'] != shaded[f'observations/images/{c}']).any() for c in CAMERAS)
    assert not hdf5.HDF5Episodes(str(dataset_dir)).shadows(1)
    shutil.copy(recorded / 'plain' / 'episode_1.hdf5', dataset_dir / 'episode_1.hdf5')
    with pytest.raises(ValueError, match='1 of 2 episodes were rendered without shadows'):
        hdf5.HDF5Episodes(str(dataset_dir)).shadows(2)
    shutil.copy(recorded / 'plain' / 'episode_1.hdf5', dataset_dir / 'episode_2.hdf5')
    with pytest.raises(ValueError, match='episode_1.hdf5 already exists .*rendered with shadows, --no_shadows given'):
        record(dataset_dir, num_episodes=3, no_shadows=True)
    # a LeRobot dataset marks it in its episode rows, which LeRobot's merge keeps; training reads it back
    record(tmp_path / 'lerobot', num_episodes=1, no_shadows=True, format='lerobot')
    import pyarrow.parquet as pq
    rows = pq.read_table(tmp_path / 'lerobot' / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet').to_pylist()
    assert [(row['sim'], row['shadows']) for row in rows] == [(True, False)]
    from formats.datasets import open_dataset
    assert not open_dataset(str(tmp_path / 'lerobot')).shadows(1)


class ExplodingArray:
    """Stands in for qvel and fails in the middle of writing an episode."""

    def __array__(self, dtype=None, copy=None):
        raise KeyboardInterrupt


def test_interrupted_write_leaves_the_old_file_and_no_temporary(recorded, tmp_path):
    path = tmp_path / 'episode_0.hdf5'
    shutil.copy(recorded / 'plain' / 'episode_0.hdf5', path)
    good = read_all(path)
    data = {'images': {'top': np.zeros((STEPS, *SMALL, 3), np.uint8)},
            'qpos': np.zeros((STEPS, 14)), 'qvel': ExplodingArray(), 'action': np.zeros((STEPS, 14))}
    with pytest.raises(KeyboardInterrupt):
        hdf5.write_episode(str(path), **data)
    assert os.listdir(tmp_path) == ['episode_0.hdf5']
    np.testing.assert_array_equal(read_all(path)['observations/images/top'], good['observations/images/top'])


@pytest.mark.parametrize('overrides, message', [
    ({'task_name': 'sim_pour_tea'}, r'known sim tasks are sim_transfer_cube \(= sim_transfer_cube_scripted\).*human'),
    ({'task_name': 'sim_insertion_human'}, r'scripted tasks are sim_transfer_cube \(= .*, sim_insertion_scripted'),
    ({'num_episodes': -1}, '--num_episodes must be 0 or more'),
    ({'camera_names': ['top', 'wrist']}, "unknown camera 'wrist'"),
    ({'image_size': [0, 32]}, '--image_size'),
    ({'num_workers': 2, 'onscreen_render': True}, '--num_workers 1'),
])
def test_bad_inputs_write_nothing(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        record(tmp_path / 'data', **overrides)
    assert not (tmp_path / 'data').exists()


def test_unwritable_dataset_dir(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(ValueError, match='--dataset_dir .* is not a writable folder'):
        record(blocker / 'data')


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)


def test_command_line_errors_exit_non_zero(tmp_path):
    done = run_script('record_sim_episodes.py', '--task_name', TASK, '--dataset_dir', str(tmp_path / 'd'),
                      '--camera_names', 'wrist')
    assert done.returncode != 0
    assert "unknown camera 'wrist'" in done.stderr and 'Traceback' not in done.stderr
    assert run_script('record_sim_episodes.py', '--help').returncode == 0


### Slow: the full scripted sets with cameras off, one full-size episode
@pytest.mark.slow
@pytest.mark.parametrize('task_name, required', [('sim_transfer_cube_scripted', 49),
                                                 ('sim_insertion_scripted', 48)])
def test_full_scripted_set_succeeds(task_name, required):
    config = tasks.get_sim_task_config(task_name)
    recorder = recording.sim.EpisodeRecorder(task_name, camera_names=[], image_size=(480, 640),
                                                   episode_len=config['episode_len'])
    results = [recorder.record(idx) for idx in range(config['num_episodes'])]
    assert sum(r['success'] for r in results) >= required
    assert sum(r['ee_success'] for r in results) >= required


@pytest.mark.slow
def test_full_size_episode_layout(tmp_path):
    recording.sim.main({'task_name': 'sim_transfer_cube_scripted', 'dataset_dir': str(tmp_path),
                              'num_episodes': 1})
    with h5py.File(tmp_path / 'episode_0.hdf5', 'r') as root:
        images = root['/observations/images/top']
        assert images.shape == (400, 480, 640, 3) and images.chunks == (1, 480, 640, 3)
        assert root['/action'].shape == (400, 14) and root['/action'].dtype == np.float32
    assert abs((tmp_path / 'episode_0.hdf5').stat().st_size - 368_740_832) < 10_000
