"""The Koch arm (real_robot/robots/koch/), added as one folder: LeRobot's calibration files and units on
emulated Dynamixel buses (real packets both ways), calibration, recording in both formats, teleoperation,
replay and evaluation through the project's own commands, with the SO arms' safety layer."""
import ast
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import real_robot
import record_episodes
import replay_episodes
from real_robot import robots
from real_robot import settings as robot_settings
from real_robot.bots import RobotFault
from real_robot.cameras import TEST_PATTERN
from real_robot.dynamixel import DynamixelBus
from real_robot.emulator import ServoBusEmulator
from real_robot.lerobot_calibration import (CalibrationError, Units, load_calibration, save_calibration,
                                             write_calibration)
from real_robot.robots.koch import arm as koch_arm
from real_robot.robots.koch import calibrate as koch_calibrate
from real_robot.robots.koch import settings
from tests.helpers import PROCESS_TIMEOUT_S, ROOT

pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini

# LeRobot's koch_follower layout: shoulder_pan and wrist_roll over the whole turn
CALIBRATION = {
    'shoulder_pan': {'id': 1, 'drive_mode': 0, 'homing_offset': -40, 'range_min': 0, 'range_max': 4095},
    'shoulder_lift': {'id': 2, 'drive_mode': 0, 'homing_offset': 30, 'range_min': 900, 'range_max': 3200},
    'elbow_flex': {'id': 3, 'drive_mode': 0, 'homing_offset': -20, 'range_min': 850, 'range_max': 3100},
    'wrist_flex': {'id': 4, 'drive_mode': 0, 'homing_offset': 10, 'range_min': 800, 'range_max': 3300},
    'wrist_roll': {'id': 5, 'drive_mode': 0, 'homing_offset': 0, 'range_min': 0, 'range_max': 4095},
    'gripper': {'id': 6, 'drive_mode': 0, 'homing_offset': 5, 'range_min': 1900, 'range_max': 3000},
}
LEADER_CALIBRATION = {**CALIBRATION, 'elbow_flex': {**CALIBRATION['elbow_flex'], 'drive_mode': 1}}
TASK = 'tiny_koch_task'
EPISODE_LEN = 10
LEADER_PAN_RAW = 3000  # where the operator holds the leader's shoulder_pan (Present_Position steps)


def emulated_arm(role):
    return ServoBusEmulator(settings.SERVO_IDS, models=dict(zip(settings.SERVO_IDS, settings.MODELS[role])))


def write_to_servos(port, calibration):
    bus = DynamixelBus('koch', port)
    try:
        write_calibration(bus, calibration, koch_arm.STORED)
    finally:
        bus.close()


@pytest.fixture
def station(tmp_path, monkeypatch):
    """A follower and a leader Koch arm on emulated buses, calibrated, a test-pattern camera and a tiny task."""
    emulators = {'koch_follower': emulated_arm('follower'), 'koch_leader': emulated_arm('leader')}
    for name, emulator in emulators.items():
        calibration = LEADER_CALIBRATION if name == 'koch_leader' else CALIBRATION
        path = str(tmp_path / f'{name}.json')
        save_calibration(path, calibration)
        write_to_servos(emulator.port, calibration)
        monkeypatch.setitem(settings.KOCH_ARMS, name, {'port': emulator.port, 'calibration': path})
    monkeypatch.setitem(robot_settings.CAMERA_DEVICES, 'front', TEST_PATTERN)
    monkeypatch.setattr(robot_settings, 'CAMERA_HW', (24, 32))
    monkeypatch.setattr(settings, 'OPENING_MOVE_TIME_S', 0.2)
    dataset_dir = str(tmp_path / TASK)
    task = {**real_robot.TASK_CONFIGS['koch_pick_place'], 'dataset_dir': dataset_dir, 'num_episodes': 1,
            'episode_len': EPISODE_LEN, 'camera_names': ['front']}
    monkeypatch.setitem(real_robot.TASK_CONFIGS, TASK, task)
    yield emulators, dataset_dir
    for emulator in emulators.values():
        emulator.close()


def units():
    return Units(CALIBRATION, settings.BODY_UNITS, apply_drive_mode=False)


def operator_holds_the_leader(emulators):
    emulators['koch_leader'].servos[1].set_present_position(LEADER_PAN_RAW)


### files, units and the arm
def test_the_task_runs_on_the_koch_robot():
    task = real_robot.get_task_config('koch_pick_place')
    assert robots.robot_of(task).name == 'koch' and task['robot_type'] == 'koch_follower'
    from tasks import lerobot_settings
    assert lerobot_settings('koch_pick_place')['names'][0] == 'shoulder_pan.pos'


def test_lerobot_units_and_the_servo_mirrored_drive_mode():
    u = units()
    assert u.to_units([2047.5, 900, 3100, 800, 0, 1900]).tolist() == pytest.approx([0, -100, 100, -100, -100, 0])
    leader = Units(LEADER_CALIBRATION, settings.BODY_UNITS, apply_drive_mode=False)
    assert leader.to_units([2000] * 6).tolist() == pytest.approx(u.to_units([2000] * 6).tolist())  # not mirrored twice
    raw = [1500, 1000, 2000, 3000, 100, 2500]
    assert np.abs(u.to_raw(u.to_units(raw)) - raw).max() <= 1


def test_bad_calibration_files_are_named(tmp_path):
    path = tmp_path / 'koch.json'
    path.write_text(json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'id': 9}}))
    with pytest.raises(CalibrationError, match=r'koch\.json: gripper has servo ID 9, expected 6'):
        load_calibration(str(path), koch_arm.LAYOUT)
    with pytest.raises(CalibrationError, match=r'missing\.json: no calibration file.*robots\.koch\.calibrate'):
        load_calibration(str(tmp_path / 'missing.json'), koch_arm.LAYOUT)


def test_an_arm_of_other_servos_or_calibration_is_refused_by_name(station, tmp_path):
    emulators, _ = station
    leader_file = settings.KOCH_ARMS['koch_leader']['calibration']
    with pytest.raises(RobotFault, match=r'servo 1 \(shoulder_pan\).*model number 1190, expected 1060 \(XL430-W250, '
                                         r'a Koch follower\)'):
        koch_arm.KochArm('koch_follower', emulators['koch_leader'].port, leader_file)
    moved = tmp_path / 'moved.json'
    moved.write_text(json.dumps({**CALIBRATION, 'wrist_flex': {**CALIBRATION['wrist_flex'], 'range_min': 700}}))
    with pytest.raises(RobotFault, match=r'wrist_flex range_min 700 in the file, 800 in the servo.*--from_file'):
        koch_arm.KochArm('koch_follower', emulators['koch_follower'].port, str(moved))
    saved = tmp_path / 'saved.json'
    koch_calibrate.main({'arm': 'koch_follower', 'port': emulators['koch_follower'].port, 'out': str(saved),
                         'from_file': str(moved)})
    koch_arm.KochArm('koch_follower', emulators['koch_follower'].port, str(saved)).close()


def test_interactive_calibration_homes_at_the_middle_and_records_the_ranges(station, tmp_path):
    emulators, _ = station
    servos = emulators['koch_leader'].servos
    swept = {'shoulder_lift': (1000, 3000), 'elbow_flex': (900, 3100), 'wrist_flex': (700, 3400),
             'gripper': (2000, 2900)}

    def middle():
        for i, servo in servos.items():
            servo.set_present_position(2100 + 10 * i)  # reads 2100 + 10 i through the file's offset

    def sweep():
        for joint, extremes in swept.items():
            for position in extremes + (2047,):
                servos[CALIBRATION[joint]['id']].set_present_position(position)
                time.sleep(0.1)
    steps = iter([middle, sweep])
    bus = koch_arm.open_koch_bus('koch_leader', emulators['koch_leader'].port, 'leader')
    try:
        calibration = koch_calibrate.calibrate(bus, 'leader', ask=lambda message: next(steps)(),
                                               show=lambda *args, **kwargs: None)
    finally:
        bus.close()
    for joint, entry in calibration.items():
        assert (entry['range_min'], entry['range_max']) == swept.get(joint, (0, 4095))
        assert entry['drive_mode'] == (joint == 'elbow_flex')
        assert servos[entry['id']].get('drive_mode') == entry['drive_mode']
    shaft = 2100 + 10 - CALIBRATION['shoulder_pan']['homing_offset']  # where middle() put it
    assert calibration['shoulder_pan']['homing_offset'] == 2047 - shaft
    path = str(tmp_path / 'new.json')
    save_calibration(path, calibration)
    koch_arm.KochArm('koch_leader', emulators['koch_leader'].port, path, role='leader').close()


### the robot's commands
def test_record_then_replay(station, capsys):
    emulators, dataset_dir = station
    operator_holds_the_leader(emulators)
    path = record_episodes.main({'task_name': TASK, 'episode_idx': None})
    assert path == os.path.join(dataset_dir, 'episode_0.hdf5')
    import h5py
    with h5py.File(path, 'r') as root:
        assert root['observations/qpos'].shape == root['action'].shape == (EPISODE_LEN, 6)
        assert root['observations/images/front'].shape == (EPISODE_LEN, 24, 32, 3)
        action, qpos = root['action'][()], root['observations/qpos'][()]
    np.testing.assert_allclose(action[:, 0], units().to_units([LEADER_PAN_RAW] + [2048] * 5)[0], atol=1e-3)
    assert abs(units().to_raw(qpos[-1])[0] - LEADER_PAN_RAW) <= 2  # the follower moved to the leader
    assert all(s.get('torque_enable') == 0 for s in emulators['koch_follower'].servos.values())
    assert all(s.get('torque_enable') == 0 for s in emulators['koch_leader'].servos.values())  # the trigger too
    leader_gripper = emulators['koch_leader'].servos[6]
    assert leader_gripper.get('operating_mode') == 5 and emulators['koch_follower'].servos[1].get('operating_mode') == 4

    emulators['koch_follower'].servos[1].goal_history.clear()
    replay_episodes.main({'dataset_dir': dataset_dir, 'episode_idx': 0, 'task_name': TASK})
    assert LEADER_PAN_RAW in emulators['koch_follower'].servos[1].goal_history


def test_record_into_a_lerobot_dataset_and_teleoperate_alone(station):
    from formats.lerobot import LeRobotEpisodes
    emulators, dataset_dir = station
    operator_holds_the_leader(emulators)
    record_episodes.main({'task_name': TASK, 'format': 'lerobot', 'task': 'Pick the cube'})
    data = LeRobotEpisodes(dataset_dir)
    assert data.info['fps'] == 30 and data.info['robot_type'] == 'koch_follower'
    assert data.info['features']['action']['names'] == [f'{joint}.pos' for joint in settings.JOINTS]
    emulators['koch_follower'].servos[1].goal_history.clear()
    assert record_episodes.main({'task_name': TASK, 'teleop_only': True, 'num_steps': 5}) is None
    assert LEADER_PAN_RAW in emulators['koch_follower'].servos[1].goal_history


def test_evaluation_runs_the_policy_on_the_arm_within_its_limits(station, tmp_path, tiny_act_config):
    from evaluation.rollout import eval_bc
    from tests.helpers import eval_config, write_tiny_checkpoint
    emulators, _ = station
    pose = units().to_units([s.get('present_position') for s in emulators['koch_follower'].servos.values()])
    far = pose + 60  # a jump far past the per-step limit: the safety layer takes it in steps
    stats = {'qpos_mean': np.zeros(6, np.float32), 'qpos_std': np.full(6, 50, np.float32),
             'action_mean': far.astype(np.float32), 'action_std': np.full(6, 0.01, np.float32),
             'example_qpos': np.zeros((5, 6), np.float32)}
    policy_config = dict(tiny_act_config, camera_names=['front'], state_dim=6, action_dim=6)
    ckpt_dir = write_tiny_checkpoint(tmp_path / 'ckpt', policy_config, stats)
    config = eval_config(ckpt_dir, policy_config, task_name=TASK, real_robot=True, episode_len=4,
                         state_dim=6, action_dim=6, num_rollouts=1)
    eval_bc(config, 'policy_best.ckpt')
    goals = np.array(emulators['koch_follower'].servos[2].goal_history)
    assert len(goals) >= 4 and np.abs(np.diff(goals)).max() <= settings.MAX_STEP
    assert all(s.get('torque_enable') == 0 for s in emulators['koch_follower'].servos.values())


def test_other_drivers_are_refused_before_a_port_opens(station):
    with pytest.raises(ValueError, match='Koch arms are driven by their Dynamixel driver'):
        real_robot.make_eval_env(driver='feetech', task_name=TASK)
    with pytest.raises(ValueError, match='--robot_driver sim: Koch arms'):
        record_episodes.main({'task_name': TASK, 'teleop_only': True, 'num_steps': 1, 'robot_driver': 'sim'})


def test_calibrate_help_works():
    out = subprocess.run([sys.executable, '-m', 'real_robot.robots.koch.calibrate', '--help'], capture_output=True,
                         text=True, cwd=ROOT, timeout=PROCESS_TIMEOUT_S)
    assert out.returncode == 0 and '--from_file' in out.stdout


def names_and_strings(path):
    """The identifiers, imported modules and string constants of a module's code (not its docstrings)."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value
        elif isinstance(node, (ast.Name, ast.Attribute, ast.alias, ast.ImportFrom)):
            yield getattr(node, 'id', None) or getattr(node, 'attr', None) or getattr(node, 'name', None) \
                or getattr(node, 'module', None) or ''


def test_the_robot_is_declared_by_its_folder_alone():
    """No code of the library outside its folder names the Koch arm but its task's entry."""
    assert robots.robot_of({'robot': 'koch'}).teleop == 'leader_arms'
    from tests.test_architecture import library_files
    folder = os.path.join('real_robot', 'robots', 'koch')
    naming = [path for path in library_files() if not path.startswith(folder)
              and any('koch' in text.lower() for text in names_and_strings(path))]
    assert naming == ['constants.py']


def test_a_missing_port_is_named_with_where_to_set_it(tmp_path):
    path = str(tmp_path / 'koch.json')
    save_calibration(path, CALIBRATION)
    with pytest.raises(RobotFault, match=r"arm 'koch_follower': serial port /dev/ttyKOCH_NONE not found.*KOCH_ARMS"):
        koch_arm.KochArm('koch_follower', '/dev/ttyKOCH_NONE', path)
