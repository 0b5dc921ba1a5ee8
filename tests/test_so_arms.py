"""SO-100 / SO-101 arms without hardware: the Feetech protocol, LeRobot's units and calibration files,
the calibration procedure, the safety layer and its fault paths, teleoperated recording (HDF5 and
LeRobot), replay and policy evaluation, all on emulated STS3215 buses and test-pattern cameras."""
import json
import os
import time

import h5py
import numpy as np
import pytest

import real_robot
import record_episodes
import replay_episodes
from real_robot import calibrate as calibration_cli
from real_robot import feetech_protocol as F
from real_robot import settings
from real_robot import so_env
from real_robot.bots import RobotFault
from real_robot.cameras import TEST_PATTERN
from real_robot.feetech import FeetechBus, SOArm, load_calibration
from real_robot.lerobot_calibration import CalibrationError, Units, save_calibration
from real_robot.feetech_emulator import FeetechBusEmulator

pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini

# A calibration in LeRobot's file format (shoulder_pan's entry is LeRobot's documented example)
CALIBRATION = {
    'shoulder_pan': {'id': 1, 'drive_mode': 0, 'homing_offset': -1365, 'range_min': 746, 'range_max': 3477},
    'shoulder_lift': {'id': 2, 'drive_mode': 0, 'homing_offset': 120, 'range_min': 900, 'range_max': 3200},
    'elbow_flex': {'id': 3, 'drive_mode': 0, 'homing_offset': -300, 'range_min': 850, 'range_max': 3100},
    'wrist_flex': {'id': 4, 'drive_mode': 0, 'homing_offset': 50, 'range_min': 800, 'range_max': 3300},
    'wrist_roll': {'id': 5, 'drive_mode': 0, 'homing_offset': 10, 'range_min': 0, 'range_max': 4095},
    'gripper': {'id': 6, 'drive_mode': 0, 'homing_offset': -200, 'range_min': 2000, 'range_max': 3400},
}
EPISODE_LEN = 10
LEADER_PAN_RAW = 3000  # where the operator holds the leader's shoulder_pan (Present_Position steps)


def joint_id(joint):
    return CALIBRATION[joint]['id']


@pytest.fixture
def station(tmp_path, monkeypatch):
    """A follower and a leader SO arm on emulated buses, calibrated, a test-pattern camera and a tiny SO task."""
    emulators = {name: FeetechBusEmulator() for name in ('so_follower', 'so_leader')}
    for name, emulator in emulators.items():
        emulator.calibrate(CALIBRATION)
        path = str(tmp_path / f'{name}.json')
        save_calibration(path, CALIBRATION)
        monkeypatch.setitem(settings.SO_ARMS, name, {'port': emulator.port, 'calibration': path})
    monkeypatch.setitem(settings.CAMERA_DEVICES, 'front', TEST_PATTERN)
    monkeypatch.setattr(settings, 'CAMERA_HW', (24, 32))
    monkeypatch.setattr(settings, 'SO_OPENING_MOVE_TIME_S', 0.2)
    dataset_dir = str(tmp_path / 'tiny_so_task')
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'tiny_so_task', {
        'dataset_dir': dataset_dir, 'num_episodes': 1, 'episode_len': EPISODE_LEN, 'camera_names': ['front'],
        'robot': 'so', 'followers': ['so_follower'], 'leaders': ['so_leader'], 'fps': 30,
        'robot_type': 'so_follower'})
    yield emulators, dataset_dir
    for emulator in emulators.values():
        emulator.close()


@pytest.fixture
def env(station):
    environment = real_robot.make_so_env(real_robot.get_task_config('tiny_so_task'))
    yield environment
    environment.close()


### protocol and units
def test_packets_match_the_feetech_manual():
    assert F.build_packet(1, F.PING).hex() == 'ffff010201fb'
    assert F.build_packet(1, F.READ, bytes([0x38, 0x02])).hex() == 'ffff0104023802be'  # read Present_Position
    status = F.build_status(1, 0x20, bytes([0x00, 0x08]))
    assert F.parse_packet(status) == (1, 0x20, b'\x00\x08')
    assert F.describe_status_error(0x20 | 0x01) == 'input voltage error, overload (persistent load beyond the motor ' \
                                                   'torque)'
    with pytest.raises(F.PacketError, match='checksum'):
        F.parse_packet(status[:-1] + bytes([status[-1] ^ 0xFF]))
    buffer, found = bytearray(b'\x00\xff' + status + b'\xff'), []
    while (split := F.split_packet(buffer))[1]:
        found.append(split[0])
        del buffer[:split[1]]
    assert [packet for packet in found if packet] == [status] and buffer == b'\xff'  # noise skipped, rest kept
    assert F.split_packet(bytearray(status[:-1])) == (None, 0)


def test_sign_magnitude_registers():
    assert F.encode('homing_offset', -1365) == (1 << 11) | 1365
    assert F.decode('homing_offset', (1 << 11) | 1365) == -1365
    assert F.decode('present_load', (1 << 10) | 7) == -7 and F.encode('goal_position', 4095) == 4095
    with pytest.raises(ValueError, match='sign at bit 11'):
        F.encode('homing_offset', 2048)


def test_units_are_lerobots():
    units = Units(CALIBRATION, 'degrees')
    mid = (746 + 3477) / 2
    raw = np.array([3477, 900, 1975, 2050, 0, 2700])
    expected = [(3477 - mid) * 360 / 4095, (900 - 2050) * 360 / 4095, 0.0, 0.0, -2047.5 * 360 / 4095, 50.0]
    np.testing.assert_allclose(units.to_units(raw), expected)
    assert units.to_raw(units.to_units(raw)).tolist() == [3477, 900, 1975, 2050, 0, 2700]
    assert units.to_raw([0, 0, 0, 0, 0, 0])[0] == 2111  # int(2111.5): LeRobot truncates
    ranged = Units(CALIBRATION, 'range_m100_100')
    np.testing.assert_allclose(ranged.to_units([746, 3200, 1975, 5000, 0, 1000]), [-100, 100, 0, 100, -100, 0])
    flipped = Units({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'drive_mode': 1}}, 'range_m100_100')
    assert flipped.to_units([746, 900, 850, 800, 0, 2350])[-1] == pytest.approx(75.0)
    assert flipped.to_raw([0, 0, 0, 0, 0, 75])[-1] == 2350


### driver on the emulated bus
def test_sync_read_and_write_through_the_sdk(station):
    emulators, _ = station
    arm = SOArm('so_follower', emulators['so_follower'].port, settings.SO_ARMS['so_follower']['calibration'])
    try:
        arm.configure()
        servos = emulators['so_follower'].servos
        assert all(s.get('return_delay_time') == 0 and s.get('acceleration') == 254 for s in servos.values())
        assert servos[6].get('max_torque_limit') == settings.SO_GRIPPER_MAX_TORQUE
        emulators['so_follower'].instructions.clear()
        state = arm.read()
        assert emulators['so_follower'].instructions == [(F.SYNC_READ, F.BROADCAST_ID)]  # one packet, six replies
        present = [s.get('present_position') for s in servos.values()]
        np.testing.assert_allclose(state.position, arm.units.to_units(present))
        arm.torque(True)
        assert all(s.get('torque_enable') == 1 and s.get('lock') == 1 for s in servos.values())
        arm.command_arm(arm.units.to_units([3000, 2000, 2000, 2000, 2000, 9999]))
        emulators['so_follower'].wait_idle()  # a sync write gets no reply
        assert [s.get('goal_position') for s in servos.values()] == [3000, 2000, 2000, 2000, 2000, 3400]
        arm.torque(False)
        assert all(s.get('torque_enable') == 0 and s.get('lock') == 0 for s in servos.values())
    finally:
        arm.close()


def test_missing_port_silent_servo_and_wrong_model_are_named(station, tmp_path):
    emulators, _ = station
    path = settings.SO_ARMS['so_follower']['calibration']
    with pytest.raises(RobotFault, match=r'serial port /dev/nope not found.*serial\.tools\.list_ports'):
        SOArm('so_follower', '/dev/nope', path)
    emulators['so_follower'].silence(3)
    with pytest.raises(RobotFault, match=r'servo 3 \(elbow_flex\) on arm .so_follower.*did not answer.*ID and baud'):
        SOArm('so_follower', emulators['so_follower'].port, path)
    with FeetechBusEmulator(model_numbers={4: 1020}) as other:
        other.calibrate(CALIBRATION)
        with pytest.raises(RobotFault, match=r'servo 4 \(wrist_flex\).*model number 1020, expected 777'):
            SOArm('so_follower', other.port, path)


### calibration
def test_calibration_procedure_writes_lerobots_file(station, tmp_path):
    emulators, _ = station
    servos = emulators['so_follower'].servos
    swept = {'shoulder_pan': (700, 3500), 'shoulder_lift': (1000, 3000), 'elbow_flex': (900, 2900),
             'wrist_flex': (600, 3600), 'gripper': (1900, 2600)}

    def middle():
        for i, servo in servos.items():
            servo.move_by_hand(2000 + 10 * i - servo.get('homing_offset'))  # encoder position 2000 + 10 i

    def sweep():
        for joint, extremes in swept.items():
            for position in extremes + (2047,):
                servos[joint_id(joint)].move_by_hand(position)
                time.sleep(0.1)
    steps = iter([middle, sweep])
    bus = FeetechBus('so_follower', emulators['so_follower'].port)
    try:
        calibration = calibration_cli.calibrate(bus, ask=lambda message: next(steps)(),
                                                show=lambda *args, **kwargs: None)
    finally:
        bus.close()
    for joint, entry in calibration.items():
        servo = servos[entry['id']]
        assert entry['homing_offset'] == 2000 + 10 * entry['id'] - 2047
        assert (entry['range_min'], entry['range_max']) == swept.get(joint, (0, 4095))
        assert servo.get('homing_offset') == entry['homing_offset']
        assert (servo.get('min_position_limit'), servo.get('max_position_limit')) == swept.get(joint, (0, 4095))
    path = str(tmp_path / 'new.json')
    save_calibration(path, calibration)
    assert load_calibration(path) == calibration and json.load(open(path))['gripper']['id'] == 6
    SOArm('so_follower', emulators['so_follower'].port, path).close()  # the servos hold what the file says


def test_a_joint_that_did_not_move_saves_nothing(station):
    emulators, _ = station
    bus = FeetechBus('so_follower', emulators['so_follower'].port)
    try:
        with pytest.raises(CalibrationError, match='shoulder_pan, shoulder_lift.*did not move.*nothing was saved'):
            calibration_cli.calibrate(bus, ask=lambda message: None, show=lambda *args, **kwargs: None)
    finally:
        bus.close()


def test_a_lerobot_file_is_used_as_it_is_and_from_file_writes_it(station, tmp_path, capsys):
    emulators, _ = station
    lerobot_file = tmp_path / 'my_awesome_follower_arm.json'
    moved = {**CALIBRATION, 'wrist_flex': {**CALIBRATION['wrist_flex'], 'range_min': 700}}
    lerobot_file.write_text(json.dumps(moved, indent=4))
    with pytest.raises(RobotFault, match=r'not the one stored in the servos \(wrist_flex range_min 700 in the file, '
                                         r'800 in the servo\).*--from_file'):
        SOArm('so_follower', emulators['so_follower'].port, str(lerobot_file))
    out = tmp_path / 'saved.json'
    calibration_cli.main({'robot': 'so101', 'role': 'follower', 'port': emulators['so_follower'].port,
                          'out': str(out), 'from_file': str(lerobot_file)})
    assert json.loads(out.read_text()) == moved
    assert emulators['so_follower'].servos[4].get('min_position_limit') == 700
    SOArm('so_follower', emulators['so_follower'].port, str(lerobot_file)).close()


@pytest.mark.parametrize('content, message', [
    ('not json', 'JSON expected'),
    (json.dumps({'waist': {}}), r"another arm: joints \['waist'\]"),
    (json.dumps({**CALIBRATION, 'elbow_flex': {**CALIBRATION['elbow_flex'], 'id': 7}}), 'elbow_flex has servo ID 7'),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'range_max': 2000}}),
     'gripper: range 2000..2000 is empty'),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'range_min': None}}), 'expected integer'),
])
def test_bad_calibration_files_are_named(tmp_path, content, message):
    path = tmp_path / 'calibration.json'
    path.write_text(content)
    with pytest.raises(CalibrationError, match=message) as error:
        load_calibration(str(path))
    assert str(path) in str(error.value)
    with pytest.raises(CalibrationError, match=r'missing\.json: no calibration file.*real_robot\.calibrate'):
        load_calibration(str(tmp_path / 'missing.json'))


### the environment and its safety layer
def follower_goals(emulators):
    emulators['so_follower'].wait_idle()
    return [s.get('goal_position') for s in emulators['so_follower'].servos.values()]


def settle(emulator):
    """Put every emulated motor at its goal, which it otherwise approaches only asymptotically, so
    the position read next is the one the environment reads."""
    emulator.wait_idle()
    for servo in emulator.servos.values():
        servo.move_by_hand(servo.get('goal_position'))


def test_steps_are_clamped_to_the_range_and_the_max_step(station, env):
    emulators, _ = station
    ts = env.reset()
    assert ts.observation['qpos'].shape == (6,) and ts.observation['images']['front'].shape == (24, 32, 3)
    settle(emulators['so_follower'])
    start = [s.get('present_position') for s in emulators['so_follower'].servos.values()]
    arm = env.bots[0]
    ts = env.step(arm.units.to_units([4000, 100, 2000, 2000, 2000, 2700]))
    goals = np.array(follower_goals(emulators))
    expected = np.clip(np.clip([4000, 100, 2000, 2000, 2000, 2700], arm.units.low, arm.units.high),
                       np.array(start) - settings.SO_MAX_STEP, np.array(start) + settings.SO_MAX_STEP)
    np.testing.assert_array_equal(goals, np.round(expected))
    assert ts.observation['qvel'].shape == ts.observation['effort'].shape == (6,)
    with pytest.raises(ValueError, match=r'expected \(6,\) \(shoulder_pan\.pos'):
        env.step(np.zeros(14))


def test_a_nan_action_never_moves_the_arm_and_releases_torque(station, env, capsys):
    emulators, _ = station
    action = env.reset().observation['qpos']
    env.step(action)
    settle(emulators['so_follower'])
    held = follower_goals(emulators)
    with pytest.raises(RobotFault, match=r'step 1: the action holds non-finite values \(nan at index 0, 6 of 6\)'):
        env.step(np.full(6, np.nan))
    emulators['so_follower'].wait_idle()
    assert np.abs(np.array(follower_goals(emulators)) - held).max() <= 1  # held, never walked to the minimum
    assert 'SAFETY STOP' in capsys.readouterr().out
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


def test_an_arm_outside_its_range_is_not_powered(station):
    emulators, _ = station
    emulators['so_follower'].servos[3].move_by_hand(3500)  # elbow_flex range 850..3100
    with pytest.raises(RobotFault, match=r'elbow_flex is at 3500 steps, outside its calibrated range 850\.\.3100.*'
                                         r'nothing was moved'):
        real_robot.make_so_env(real_robot.get_task_config('tiny_so_task'))
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


@pytest.mark.parametrize('fault, message', [
    (lambda emulator: emulator.corrupt_replies(-1), r'corrupted status packet.*kept failing for SERVO_TIMEOUT_S'),
    (lambda emulator: emulator.silence(2), r'servo 2 \(shoulder_lift\).*did not answer.*kept failing'),
    (lambda emulator: emulator.set_error(6, 32), r'servo 6 \(gripper\).*reports: overload'),
])
def test_faults_end_in_torque_off_with_the_servo_named(station, env, capsys, fault, message):
    emulators, _ = station
    action = env.reset().observation['qpos']
    env.step(action)
    fault(emulators['so_follower'])
    with pytest.raises(RobotFault, match=message):
        for _ in range(3):
            env.step(action)
    out = capsys.readouterr().out
    assert 'SAFETY STOP' in out and 'Releasing torque' in out
    emulators['so_follower'].corrupt_replies(0)
    emulators['so_follower'].wait_idle()
    for servo_id, servo in emulators['so_follower'].servos.items():
        if not servo.silent:
            assert servo.get('torque_enable') == 0, servo_id


def test_ctrl_c_releases_torque(station, env, monkeypatch, capsys):
    emulators, _ = station
    env.reset()

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(env.clock, 'tick', interrupted)
    with pytest.raises(KeyboardInterrupt):
        env.step(env.get_qpos())
    assert 'interrupted (Ctrl-C)' in capsys.readouterr().out
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


def test_aloha_drivers_are_refused_for_so_tasks(station):
    with pytest.raises(ValueError, match='SO arms are driven by the Feetech driver'):
        real_robot.make_eval_env(driver='dynamixel', task_name='tiny_so_task')
    with pytest.raises(ValueError, match='feetech drives SO-100'):
        real_robot.make_real_env(init_node=False, driver='feetech')


### recording, replay, evaluation
def operator_holds_the_leader(emulators, monkeypatch):
    make_leaders = so_env.make_so_leaders

    def leaders_then_operator(task_config):
        leaders = make_leaders(task_config)
        emulators['so_leader'].servos[1].move_by_hand(LEADER_PAN_RAW)
        return leaders
    monkeypatch.setattr(so_env, 'make_so_leaders', leaders_then_operator)


def test_record_then_replay(station, monkeypatch, capsys):
    emulators, dataset_dir = station
    operator_holds_the_leader(emulators, monkeypatch)
    path = record_episodes.main({'task_name': 'tiny_so_task', 'episode_idx': None})
    assert path == os.path.join(dataset_dir, 'episode_0.hdf5') and os.listdir(dataset_dir) == ['episode_0.hdf5']
    assert 'Avg freq:' in capsys.readouterr().out
    units = Units(CALIBRATION)
    with h5py.File(path, 'r') as root:
        assert dict(root.attrs) == {'sim': False}
        for key in ('observations/qpos', 'observations/qvel', 'observations/effort', 'action'):
            assert root[key].shape == (EPISODE_LEN, 6)
        assert root['observations/images/front'].shape == (EPISODE_LEN, 24, 32, 3)
        action, qpos = root['action'][()], root['observations/qpos'][()]
    # the leader's pose is the action; the follower moved to it before recording started
    np.testing.assert_allclose(action[:, 0], units.to_units([LEADER_PAN_RAW, 0, 0, 0, 0, 0])[0], atol=1e-3)
    assert abs(units.to_raw(qpos[-1])[0] - LEADER_PAN_RAW) <= 2
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())  # released at the end

    emulators['so_follower'].servos[1].goal_history.clear()
    replay_episodes.main({'dataset_dir': dataset_dir, 'episode_idx': 0, 'task_name': 'tiny_so_task'})
    assert LEADER_PAN_RAW in emulators['so_follower'].servos[1].goal_history


def test_teleoperation_alone_copies_the_leader_and_records_nothing(station, monkeypatch, capsys):
    emulators, dataset_dir = station
    operator_holds_the_leader(emulators, monkeypatch)
    assert record_episodes.main({'task_name': 'tiny_so_task', 'teleop_only': True, 'num_steps': 5}) is None
    assert LEADER_PAN_RAW in emulators['so_follower'].servos[1].goal_history
    assert not os.path.exists(dataset_dir) or os.listdir(dataset_dir) == []
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())
    assert 'step/s' in capsys.readouterr().err  # the achieved rate


def test_a_leader_teleoperates_a_simulated_follower(station, monkeypatch):
    from real_robot import so_sim
    emulators, _ = station
    operator_holds_the_leader(emulators, monkeypatch)
    made = []
    make = so_sim.make_sim_so_env
    monkeypatch.setattr(so_sim, 'make_sim_so_env', lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    record_episodes.main({'task_name': 'tiny_so_task', 'teleop_only': True, 'num_steps': 8, 'robot_driver': 'sim'})
    rig = made[0].bots[0].rig
    assert rig.realtime  # paced for the person at the leader
    leader_pan = Units(CALIBRATION).to_units([LEADER_PAN_RAW, 0, 0, 0, 0, 0])[0]  # 78 degrees
    follower_pan = rig.env.task.units.to_units(rig.radians()[0])[0]
    assert abs(follower_pan - leader_pan) < 2.0


def test_teleoperation_ends_at_ctrl_c_with_the_safe_stop(station, monkeypatch, capsys):
    emulators, _ = station
    operator_holds_the_leader(emulators, monkeypatch)
    read, reads = so_env.get_so_action, []

    def operator_presses_ctrl_c(leaders):  # one read to reach the leaders' pose, then one per step
        reads.append(1)
        if len(reads) == 5:
            raise KeyboardInterrupt
        return read(leaders)
    monkeypatch.setattr(so_env, 'get_so_action', operator_presses_ctrl_c)
    record_episodes.main({'task_name': 'tiny_so_task', 'teleop_only': True})  # returns: Ctrl-C is how it ends
    out = capsys.readouterr().out
    assert 'SAFETY STOP: interrupted (Ctrl-C)' in out and 'Teleoperation ended after 3 steps' in out
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


def test_record_into_a_lerobot_dataset(station, monkeypatch):
    from formats.lerobot import LeRobotEpisodes
    emulators, dataset_dir = station
    operator_holds_the_leader(emulators, monkeypatch)
    record_episodes.main({'task_name': 'tiny_so_task', 'format': 'lerobot', 'task': 'Pick the cube'})
    data = LeRobotEpisodes(dataset_dir)
    assert data.info['fps'] == 30 and data.info['robot_type'] == 'so_follower'
    assert data.info['features']['action']['names'][0] == 'shoulder_pan.pos'
    assert data.read_episode(0).qpos.shape == (EPISODE_LEN, 6)


def test_evaluation_runs_the_policy_on_the_arm(station, tmp_path, tiny_act_config):
    from evaluation.rollout import eval_bc
    from tests.helpers import eval_config, write_tiny_checkpoint
    emulators, _ = station
    pose = Units(CALIBRATION).to_units([s.get('present_position') for s in emulators['so_follower'].servos.values()])
    stats = {'qpos_mean': np.zeros(6, np.float32), 'qpos_std': np.full(6, 50, np.float32),
             'action_mean': pose.astype(np.float32), 'action_std': np.full(6, 0.5, np.float32),
             'example_qpos': np.zeros((5, 6), np.float32)}
    policy_config = dict(tiny_act_config, camera_names=['front'], state_dim=6, action_dim=6)
    ckpt_dir = write_tiny_checkpoint(tmp_path / 'ckpt', policy_config, stats)
    config = eval_config(ckpt_dir, policy_config, task_name='tiny_so_task', real_robot=True, episode_len=4,
                         state_dim=6, action_dim=6, num_rollouts=1)
    eval_bc(config, 'policy_best.ckpt')
    import imageio
    with imageio.get_reader(str(ckpt_dir / 'video0.mp4'), format='FFMPEG') as video:
        assert video.get_meta_data()['fps'] == 30  # the arm's control rate
    goals = emulators['so_follower'].servos[1].goal_history
    assert len(goals) >= 4 and abs(goals[-1] - Units(CALIBRATION).to_raw(pose)[0]) <= 10
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


def test_calibrate_help_works():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-m', 'real_robot.calibrate', '--help'], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and '--from_file' in out.stdout
