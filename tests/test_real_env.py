"""The real-robot environment on emulated servo buses and generated camera frames: observation
layout, gripper geometry, safety clamps, watchdog, and the safe path after faults."""
import dm_env
import numpy as np
import pytest

import constants
import real_robot
from real_robot import settings
from real_robot.bots import finger_position
from real_robot.cameras import Camera, CameraError, GeneratedSource, OpenCVSource
from real_robot.dynamixel import DynamixelBot
from real_robot.emulator import ServoBusEmulator
from real_robot.protocol import position_to_rad
from real_robot.real_env import RealEnv

CAMERA_NAMES = ('cam_high', 'cam_left_wrist')
HW = (24, 32)


pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini


@pytest.fixture
def fast_safety(monkeypatch):
    """Short motions and limits so that the safe path runs in a fraction of a second."""
    monkeypatch.setattr(settings, 'SAFE_MOVE_TIME_S', 0.1)
    monkeypatch.setattr(settings, 'CAMERA_TIMEOUT_S', 0.3)


@pytest.fixture
def rig(fast_safety):
    """(env, [left emulator, right emulator], {name: GeneratedSource}) with torque on."""
    emulators = [ServoBusEmulator(), ServoBusEmulator()]
    bots = [DynamixelBot(name, emu.port, settings.PUPPET_MODEL)
            for name, emu in zip(('puppet_left', 'puppet_right'), emulators)]
    sources = {name: GeneratedSource(hw=HW, fps=100, seed=i) for i, name in enumerate(CAMERA_NAMES)}
    cameras = {name: Camera(name, source) for name, source in sources.items()}
    for camera in cameras.values():
        camera.wait_first_frame(1.0)
    env = RealEnv(*bots, cameras)
    yield env, emulators, sources
    env.close()
    for emu in emulators:
        emu.close()


def torques(emulator):
    return [servo.get('torque_enable') for servo in emulator.servos.values()]


def arm_goals_rad(emulator):
    return np.array([position_to_rad(emulator.servos[i].get('goal_position')) for i in settings.ARM_SERVO_IDS])


def test_finger_linkage_reproduces_the_calibrated_gripper_constants():
    assert finger_position(constants.PUPPET_GRIPPER_JOINT_OPEN, 'vx300s') == pytest.approx(
        constants.PUPPET_GRIPPER_POSITION_OPEN, abs=2e-4)
    assert finger_position(constants.PUPPET_GRIPPER_JOINT_CLOSE, 'vx300s') == pytest.approx(
        constants.PUPPET_GRIPPER_POSITION_CLOSE, abs=2e-4)
    assert finger_position(constants.MASTER_GRIPPER_JOINT_OPEN, 'wx250s') == pytest.approx(
        constants.MASTER_GRIPPER_POSITION_OPEN, abs=2e-4)
    assert finger_position(constants.MASTER_GRIPPER_JOINT_CLOSE, 'wx250s') == pytest.approx(
        constants.MASTER_GRIPPER_POSITION_CLOSE, abs=2e-4)


def test_task_configs_have_the_four_cameras_under_data_dir():
    config = real_robot.TASK_CONFIGS['aloha_wear_shoe']
    assert config['episode_len'] == 1000
    assert config['camera_names'] == ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']
    assert config['dataset_dir'].startswith(constants.DATA_DIR)
    with pytest.raises(KeyError, match='aloha_wear_shoe'):
        real_robot.get_task_config('no_such_task')


def test_setup_sets_modes_and_torque(rig):
    env, emulators, _ = rig
    for emu in emulators:
        assert torques(emu) == [1] * 7
        assert emu.servos[settings.GRIPPER_SERVO_ID].get('operating_mode') == 5  # current-based position
        assert emu.servos[1].get('operating_mode') == 3  # position


def test_reset_and_step_give_aloha_observations(rig):
    env, emulators, sources = rig
    ts = env.reset(fake=True)
    assert ts.step_type == dm_env.StepType.FIRST and ts.reward == 0 and ts.discount is None
    obs = ts.observation
    assert list(obs) == ['qpos', 'qvel', 'effort', 'images']
    assert obs['qpos'].shape == obs['qvel'].shape == obs['effort'].shape == (14,)
    assert set(obs['images']) == set(CAMERA_NAMES)
    assert all(frame.shape == HW + (3,) and frame.dtype == np.uint8 for frame in obs['images'].values())
    action = obs['qpos'].copy()
    action[0] += 0.05  # left waist
    action[6] = 1.0  # left gripper open
    for _ in range(15):
        ts = env.step(action)
    assert ts.step_type == dm_env.StepType.MID
    left = emulators[0].servos
    assert position_to_rad(left[1].get('goal_position')) == pytest.approx(action[0], abs=2e-3)
    assert position_to_rad(left[settings.GRIPPER_SERVO_ID].get('goal_position')) == pytest.approx(
        constants.PUPPET_GRIPPER_JOINT_OPEN, abs=2e-3)
    assert ts.observation['qpos'][0] == pytest.approx(action[0], abs=0.01)
    # the normalised gripper observation comes from the finger position: ~1 when open
    assert ts.observation['qpos'][6] == pytest.approx(1.0, abs=0.02)


def test_step_paces_to_dt(rig, monkeypatch):
    import time
    env, _, _ = rig
    clock, tick_times = env.clock, []

    def timed_tick():
        type(clock).tick(clock)
        tick_times.append(time.monotonic())
    monkeypatch.setattr(clock, 'tick', timed_tick)
    action = env.reset(fake=True).observation['qpos']
    for _ in range(6):
        env.step(action)
    # ticks return on a DT schedule, so five periods pass between the first and the last tick
    # however long the observation reads take (less only by the first tick's oversleep)
    assert tick_times[-1] - tick_times[0] >= 4.5 * constants.DT


def test_targets_clamped_to_limits_and_max_step(rig):
    env, emulators, _ = rig
    qpos = env.reset(fake=True).observation['qpos']
    action = qpos.copy()
    action[1] = -3.0  # left shoulder far below its limit
    action[3] = qpos[3] + 1.0  # a jump of 1 rad
    action[13] = 5.0  # right gripper far beyond open
    env.step(action)
    goals = arm_goals_rad(emulators[0])
    assert goals[1] == pytest.approx(max(qpos[1] - settings.MAX_JOINT_STEP, settings.PUPPET_JOINT_LIMITS[1][0]),
                                     abs=2e-3)
    assert goals[3] == pytest.approx(qpos[3] + settings.MAX_JOINT_STEP, abs=2e-3)
    right_gripper = position_to_rad(emulators[1].servos[settings.GRIPPER_SERVO_ID].get('goal_position'))
    assert right_gripper == pytest.approx(
        constants.PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN(settings.GRIPPER_COMMAND_RANGE[1]), abs=2e-3)
    for _ in range(40):
        env.step(action)
    assert arm_goals_rad(emulators[0])[1] == pytest.approx(settings.PUPPET_JOINT_LIMITS[1][0], abs=2e-3)


def test_watchdog_holds_position_when_the_policy_stalls(rig, monkeypatch):
    import time
    monkeypatch.setattr(settings, 'POLICY_STALL_S', 0.1)
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos'].copy()
    action[0] += 0.05
    env.step(action)
    writes_before = len(emulators[0].instructions)
    time.sleep(0.4)
    assert env.watchdog.stalls == 1  # once per stall, not once per watchdog period
    assert len(emulators[0].instructions) > writes_before  # it read and re-commanded the present pose
    env.step(action)  # the loop goes on from the held pose


def assert_safe_path(emulators, reason_pattern, error, capsys):
    out = capsys.readouterr().out
    assert 'SAFETY STOP' in out and 'safe pose' in out
    assert reason_pattern in str(error.value)
    for emu in emulators:
        healthy = [s for s in emu.servos.values() if not s.silent]
        assert all(s.get('torque_enable') == 0 for s in healthy)
        np.testing.assert_allclose(
            [position_to_rad(emu.servos[i].get('goal_position')) for i in settings.ARM_SERVO_IDS],
            settings.SAFE_ARM_POSE, atol=2e-3)


def test_corrupted_status_packets_end_in_the_safe_path(rig, capsys):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos']
    emulators[0].corrupt_replies(1)
    env.step(action)  # one corrupted packet is retried
    emulators[0].corrupt_replies(-1)
    with pytest.raises(real_robot.RobotFault) as error:
        env.step(action)
    assert_safe_path(emulators, 'corrupted status packet', error, capsys)
    assert "bus 'puppet_left'" in str(error.value)


def test_timed_out_servo_ends_in_the_safe_path(rig, capsys):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos']
    emulators[1].silence(4)
    with pytest.raises(real_robot.RobotFault) as error:
        env.step(action)
    assert_safe_path(emulators, "servo 4 (elbow) on bus 'puppet_right'", error, capsys)
    assert 'did not answer' in str(error.value)


def test_stalled_camera_ends_in_the_safe_path(rig, capsys):
    env, emulators, sources = rig
    action = env.reset(fake=True).observation['qpos']
    sources['cam_left_wrist'].stalled.set()
    with pytest.raises(CameraError) as error:
        for _ in range(100):  # frames younger than CAMERA_STALE_S are still used
            env.step(action)
    assert_safe_path(emulators, "camera 'cam_left_wrist'", error, capsys)
    assert 'stalled' in str(error.value)


def test_ctrl_c_ends_in_the_safe_path(rig, capsys, monkeypatch):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos']

    real_tick = env.clock.tick

    def interrupted_once():
        monkeypatch.setattr(env.clock, 'tick', real_tick)
        raise KeyboardInterrupt
    monkeypatch.setattr(env.clock, 'tick', interrupted_once)
    with pytest.raises(KeyboardInterrupt) as error:
        env.step(action)
    assert 'interrupted (Ctrl-C)' in capsys.readouterr().out
    assert all(torques(emu) == [0] * 7 for emu in emulators)
    assert error.type is KeyboardInterrupt


def test_a_nan_action_is_never_sent_and_ends_in_the_safe_path(rig, capsys):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos'].copy()
    env.step(action)
    action[4] = np.nan
    with pytest.raises(real_robot.RobotFault, match=r'step 1: the action holds non-finite values \(nan at index 4') \
            as error:
        env.step(action)
    assert_safe_path(emulators, 'not sent, the arms held their position', error, capsys)


def test_a_serial_port_that_goes_away_is_a_fault_naming_it(rig, capsys):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos']
    env.step(action)
    emulators[0].close()  # the left arm's adapter unplugged mid-episode
    emulators[0].close = lambda: None  # closed already, for the fixture's clean-up
    with pytest.raises(real_robot.RobotFault, match=rf"bus 'puppet_left': serial port {emulators[0].port} failed"):
        env.step(action)
    out = capsys.readouterr().out
    assert 'SAFETY STOP' in out and 'Port is in use' not in out
    emulators[1].wait_idle()
    assert all(s.get('torque_enable') == 0 for s in emulators[1].servos.values())  # the other arm is released


def test_servo_hardware_error_is_reported_in_words(rig, capsys):
    env, emulators, _ = rig
    action = env.reset(fake=True).observation['qpos']
    emulators[0].set_hardware_error(settings.GRIPPER_SERVO_ID, 1 << 2)
    with pytest.raises(real_robot.RobotFault, match=r'servo 9 \(gripper\).*hardware alert: overheating'):
        env.step(action)


def test_get_action_reads_leader_arms():
    emulators = [ServoBusEmulator(positions={1: 2248, 9: 1800}), ServoBusEmulator()]
    try:
        bots = [DynamixelBot(name, emu.port, settings.MASTER_MODEL)
                for name, emu in zip(('master_left', 'master_right'), emulators)]
        action = real_robot.get_action(*bots)
        assert action.shape == (14,)
        assert action[0] == pytest.approx(position_to_rad(2248))
        assert action[6] == pytest.approx(constants.MASTER_GRIPPER_JOINT_NORMALIZE_FN(position_to_rad(1800)))
        for bot in bots:
            bot.close()
    finally:
        for emu in emulators:
            emu.close()


def test_missing_camera_names_device_and_how_to_list():
    with pytest.raises(CameraError, match=r"(?s)'cam_high'.*/dev/CAM_NOWHERE not found.*v4l2-ctl --list-devices"):
        OpenCVSource('cam_high', '/dev/CAM_NOWHERE')


def test_driver_choice_and_bad_names():
    assert real_robot.resolve_driver('auto') == 'dynamixel'  # no Interbotix modules here
    with pytest.raises(ValueError, match='--robot_driver'):
        real_robot.resolve_driver('ros2')
    with pytest.raises(ValueError, match='--robot_backend'):
        real_robot.make_eval_env(backend='nope')


def test_aloha_scripts_backend_without_the_package_says_what_to_install():
    with pytest.raises(ImportError, match=r'(?s)aloha_scripts.*github.com/tonyzhaozh/aloha.*--robot_backend builtin'):
        real_robot.make_eval_env(backend='aloha_scripts')


def test_missing_serial_port_error_from_make_real_env(monkeypatch):
    monkeypatch.setitem(settings.SERVO_PORTS, 'puppet_left', '/dev/ttyDXL_missing_left')
    with pytest.raises(real_robot.RobotFault, match='/dev/ttyDXL_missing_left not found'):
        real_robot.make_real_env(init_node=True, driver='dynamixel')
