"""Teleoperation recording and replay end to end on four emulated servo buses and test-pattern
cameras: the original real-robot HDF5 layout, written atomically, and actions replayed."""
import os

import h5py
import numpy as np
import pytest

import constants
import real_robot
import replay_episodes
from real_robot import settings
from real_robot.cameras import TEST_PATTERN
from real_robot.emulator import ServoBusEmulator
from real_robot.protocol import position_to_rad, rad_to_position
from recording import robot as record_episodes
from tests.helpers import PROCESS_TIMEOUT_S

CAMERA_NAMES = ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']
EPISODE_LEN = 12
LEADER_LEFT_WAIST = 0.25  # rad: where the operator holds the left leader arm


pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini


@pytest.fixture
def station(tmp_path, monkeypatch):
    """Four emulated arms and test-pattern cameras wired into settings, and a tiny real task."""
    emulators = {name: ServoBusEmulator() for name in settings.SERVO_PORTS}
    for name, emu in emulators.items():
        monkeypatch.setitem(settings.SERVO_PORTS, name, emu.port)
    for cam in CAMERA_NAMES:
        monkeypatch.setitem(settings.CAMERA_DEVICES, cam, TEST_PATTERN)
    monkeypatch.setattr(settings, 'CAMERA_HW', (24, 32))
    monkeypatch.setattr(settings, 'OPENING_MOVE_TIME_S', 0.1)
    monkeypatch.setattr(settings, 'RESET_ARM_MOVE_TIME_S', 0.1)
    monkeypatch.setattr(settings, 'SAFE_MOVE_TIME_S', 0.1)
    dataset_dir = str(tmp_path / 'tiny_real_task')
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'tiny_real_task', {
        'dataset_dir': dataset_dir, 'num_episodes': 1, 'episode_len': EPISODE_LEN, 'camera_names': CAMERA_NAMES})
    yield emulators, dataset_dir
    for emu in emulators.values():
        emu.close()


def test_record_then_replay(station, capsys, monkeypatch):
    emulators, dataset_dir = station
    ceremony = record_episodes.opening_ceremony

    def ceremony_then_operator_moves_the_leader(*bots):
        ceremony(*bots)  # ends with the leaders released (torque off) to the operator
        emulators['master_left'].servos[1].set_present_position(rad_to_position(LEADER_LEFT_WAIST))
    monkeypatch.setattr(record_episodes, 'opening_ceremony', ceremony_then_operator_moves_the_leader)
    path = record_episodes.main({'task_name': 'tiny_real_task', 'episode_idx': None, 'robot_driver': 'dynamixel'})
    out = capsys.readouterr()
    assert path == os.path.join(dataset_dir, 'episode_0.hdf5')
    assert 'Avg freq:' in out.out and 'Started!' in out.out
    assert os.listdir(dataset_dir) == ['episode_0.hdf5']  # no temporary file left behind

    with h5py.File(path, 'r') as root:
        assert dict(root.attrs) == {'sim': False}
        for key in ('observations/qpos', 'observations/qvel', 'observations/effort', 'action'):
            assert root[key].shape == (EPISODE_LEN, 14) and root[key].dtype == np.float32
        for cam in CAMERA_NAMES:
            frames = root[f'observations/images/{cam}']
            assert frames.shape == (EPISODE_LEN, 24, 32, 3) and frames.dtype == np.uint8
            assert frames.chunks == (1, 24, 32, 3)
        action = root['action'][()]
        qpos = root['observations/qpos'][()]
    # the operator's pose is the action; the follower starts at the start pose and follows it
    np.testing.assert_allclose(action[:, 0], LEADER_LEFT_WAIST, atol=2e-3)
    assert qpos[0, 0] == pytest.approx(settings.START_ARM_QPOS[0], abs=0.01)
    np.testing.assert_allclose(action[:, 7:13], np.tile(settings.START_ARM_QPOS, (EPISODE_LEN, 1)), atol=2e-3)
    assert qpos[-1, 0] == pytest.approx(LEADER_LEFT_WAIST, abs=0.02)
    # recording ends with the followers parked without torque
    follower = emulators['puppet_left'].servos
    assert all(servo.get('torque_enable') == 0 for servo in follower.values())

    with pytest.raises(FileExistsError, match='--overwrite'):
        record_episodes.main({'task_name': 'tiny_real_task', 'episode_idx': 0, 'robot_driver': 'dynamixel'})

    emulators['puppet_left'].servos[1].goal_history.clear()
    replay_episodes.main({'dataset_dir': dataset_dir, 'episode_idx': 0, 'robot_driver': 'dynamixel'})
    log = capsys.readouterr().out
    assert 'Closing the robot environment' in log
    waist_goals = [position_to_rad(value) for value in emulators['puppet_left'].servos[1].goal_history]
    assert max(waist_goals) == pytest.approx(LEADER_LEFT_WAIST, abs=2e-3)  # the replayed action was sent
    gripper_goal = position_to_rad(emulators['puppet_right'].servos[settings.GRIPPER_SERVO_ID].get('goal_position'))
    assert gripper_goal == pytest.approx(constants.PUPPET_GRIPPER_JOINT_OPEN, abs=2e-3)  # grippers opened


def test_aloha_teleoperation_alone_records_nothing(station, monkeypatch):
    emulators, dataset_dir = station
    ceremony = record_episodes.opening_ceremony

    def ceremony_then_operator_moves_the_leader(*bots):
        ceremony(*bots)
        emulators['master_left'].servos[1].set_present_position(rad_to_position(LEADER_LEFT_WAIST))
    monkeypatch.setattr(record_episodes, 'opening_ceremony', ceremony_then_operator_moves_the_leader)
    record_episodes.main({'task_name': 'tiny_real_task', 'teleop_only': True, 'num_steps': 20,
                          'robot_driver': 'dynamixel'})
    waist_goals = [position_to_rad(value) for value in emulators['puppet_left'].servos[1].goal_history]
    assert max(waist_goals) == pytest.approx(LEADER_LEFT_WAIST, abs=2e-3)  # the follower copied the leader
    assert not os.path.exists(dataset_dir)
    assert all(servo.get('torque_enable') == 0 for servo in emulators['puppet_left'].servos.values())


def test_record_into_a_lerobot_dataset_then_replay(station, monkeypatch):
    from formats.lerobot import LeRobotEpisodes
    emulators, dataset_dir = station
    args = {'task_name': 'tiny_real_task', 'episode_idx': None, 'robot_driver': 'dynamixel', 'format': 'lerobot'}
    for _ in range(2):
        assert record_episodes.main(args) == dataset_dir
    data = LeRobotEpisodes(dataset_dir)
    assert data.num_episodes == 2 and sorted(data.camera_names) == sorted(CAMERA_NAMES) and data.info['fps'] == 50
    episode = data.read_episode(1)
    assert episode.qpos.shape == episode.effort.shape == (EPISODE_LEN, 14) and not episode.sim
    with pytest.raises(ValueError, match='takes episode 2 next'):
        record_episodes.main({**args, 'episode_idx': 0})
    emulators['puppet_left'].servos[1].goal_history.clear()
    replay_episodes.main({'dataset_dir': dataset_dir, 'episode_idx': 1, 'robot_driver': 'dynamixel'})
    assert emulators['puppet_left'].servos[1].goal_history


def test_replay_of_a_missing_episode_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='episode_7.hdf5'):
        replay_episodes.main({'dataset_dir': str(tmp_path), 'episode_idx': 7, 'robot_driver': 'dynamixel'})


def _nan_action(path):
    with h5py.File(path, 'r+') as root:
        root['/action'][7, 3] = np.nan


def _string_actions(path):
    with h5py.File(path, 'r+') as root:
        shape = root['/action'].shape
        del root['/action']
        root['/action'] = np.full(shape, b'x', dtype='S3')


def _truncated(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize('damage, state_dim, message', [
    (_nan_action, 14, r'episode_0.hdf5: action\[7, 3\] is nan'),
    (_string_actions, 14, r"episode_0.hdf5: dataset '/action' holds \|S3 values; numbers are expected"),
    (_truncated, 14, r'episode_0.hdf5: cannot be read as an HDF5 episode file'),
    (None, 6, r'episode_0.hdf5: its actions have 6 values, the arms take 14 .* the arms did not move'),
])
def test_an_episode_that_cannot_be_replayed_is_refused_before_the_arms_move(tmp_path, monkeypatch, damage, state_dim,
                                                                            message):
    from real_robot.robot_env import RobotEnv
    from tests.helpers import write_tiny_episode
    path = str(tmp_path / 'episode_0.hdf5')
    write_tiny_episode(path, state_dim=state_dim)
    if damage:
        damage(path)
    moves = []
    monkeypatch.setattr(RobotEnv, 'reset', lambda self, *a: moves.append('reset'))
    monkeypatch.setattr(RobotEnv, 'step', lambda self, action: moves.append(action))
    with pytest.raises(ValueError, match=message):
        replay_episodes.main({'dataset_dir': str(tmp_path), 'episode_idx': 0, 'robot_driver': 'sim'})
    assert moves == []


def test_teleoperation_needs_leader_arms():
    with pytest.raises(ValueError, match='no leader arms'):
        real_robot.make_master_bots('sim')


@pytest.mark.parametrize('script', ['record_episodes.py', 'replay_episodes.py'])
def test_help_works(script):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, script), '--help'], capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT_S)
    assert result.returncode == 0 and '--robot_driver' in result.stdout and '--episode_idx' in result.stdout
