"""The simulated SO-101: its model, units, rewards, scripted demonstrations, recording in both
formats, and a tiny policy trained and evaluated on it; the full scripted set in the slow run."""
import json
import os

import numpy as np
import pytest

import constants

import recording.sim
from recording.sim import episode_rng
from simulation import simulation_of
from so101_sim import scene
from so101_sim.env import (DEGREES_PER_RADIAN, FEATURE_NAMES, START_POSE, STATE_DIM, Units, make_so101_env,
                           pick_place_reward, sample_cube_pose)
import tasks
from tests.test_so_arms import station  # noqa: F401 (the emulated SO arms, a fixture)

TASK = 'sim_so101_pick_place'
SMALL = [24, 32]
STEPS = 60  # steps of the recorded and evaluated test episodes (the task has 300)


@pytest.fixture(scope='module')
def env():
    return make_so101_env(camera_names=['front', 'wrist'], image_size=SMALL, seed=0, shadows=False)


@pytest.fixture(scope='module')
def blind_env():
    """The environment with no camera: a scripted episode in a few seconds."""
    return make_so101_env(camera_names=[], shadows=False)


@pytest.fixture(scope='module')
def kinematics():
    from so101_sim.scripted import Kinematics
    return Kinematics()


def test_the_model_has_the_arm_the_cube_and_the_real_task_cameras(env):
    model = env.physics.model
    assert [model.id2name(model.actuator_trnid[i, 0], 'joint') for i in range(model.nu)] == list(scene.JOINTS)
    assert np.allclose(model.actuator_gainprm[:, 0], scene.POSITION_GAIN)
    assert sorted(model.id2name(i, 'camera') for i in range(model.ncam)) == ['front', 'wrist']
    assert model.mesh_facenum.sum() < 40_000  # simplified from the asset's 320,000 triangles
    assert simulation_of(TASK).state_dim == STATE_DIM
    assert tasks.get_sim_task_config(TASK)['camera_names'] == ['front', 'wrist']
    assert env.control_timestep() == pytest.approx(1 / 30)


def test_simplified_meshes_keep_their_shape():
    corners = scene.read_stl(scene.asset_path('assets/base_so101_v2.stl'))
    vertices, faces = scene.simplified_mesh(corners, scene.MESH_CELL)
    assert len(faces) < len(corners)
    low, high = corners.reshape(-1, 3).min(0), corners.reshape(-1, 3).max(0)
    assert np.abs(vertices.min(0) - low).max() < scene.MESH_CELL and np.abs(vertices.max(0) - high).max() < scene.MESH_CELL


def test_reset_and_step_give_lerobot_units(env):
    pose = np.array([0.2, 0.1, scene.CUBE_HALF, 1, 0, 0, 0])
    env.task.set_object_pose(pose)
    ts = env.reset()
    obs = ts.observation
    assert set(obs) == {'qpos', 'qvel', 'env_state', 'images'}
    assert obs['qpos'].shape == obs['qvel'].shape == (STATE_DIM,) and np.allclose(obs['qpos'], START_POSE)
    assert np.array_equal(obs['env_state'], pose)
    assert {cam: frame.shape for cam, frame in obs['images'].items()} == {'front': (*SMALL, 3), 'wrist': (*SMALL, 3)}
    target = np.array([10.0, -20.0, 30.0, 60.0, -15.0, 50.0])
    for _ in range(30):
        ts = env.step(target)
    assert np.abs(ts.observation['qpos'] - target).max() < 1.5  # degrees and gripper units
    with pytest.raises(ValueError, match=r'expected \(6,\) \(shoulder_pan, shoulder_lift'):
        env.step(np.zeros(14))


def test_units_are_the_real_arms_calibrated_units(env):
    """A joint `steps` encoder steps from the middle of its range reads (steps * 360 / 4095) degrees on the
    real arm (LeRobot's calibration, real_robot/feetech.py): the simulated joint there reads the same."""
    from real_robot.settings import SO_JOINTS
    assert tuple(scene.JOINTS) == SO_JOINTS and FEATURE_NAMES == ['shoulder_pan.pos', 'shoulder_lift.pos',
                                                                   'elbow_flex.pos', 'wrist_flex.pos',
                                                                   'wrist_roll.pos', 'gripper.pos']
    units = Units(env.physics.model.ptr)
    steps = np.array([100, -300, 512, 0, 1000, 0])
    radians = steps * 2 * np.pi / 4096
    assert np.allclose(units.to_units(radians)[:5], steps[:5] * 360 / 4095)
    assert units.to_units(units.low)[5] == pytest.approx(0) and units.to_units(units.high)[5] == pytest.approx(100)
    assert np.allclose(units.to_radians(units.to_units(radians)), radians)
    assert DEGREES_PER_RADIAN == pytest.approx(180 / np.pi * 4096 / 4095)


@pytest.mark.parametrize('touching, xy, stage', [
    (set(), (0.2, 0.1), 0), ({'table', 'gripper'}, (0.2, 0.1), 1), ({'gripper', 'moving_jaw_so101_v1'}, (0.2, 0.1), 2),
    ({'gripper', 'moving_jaw_so101_v1'}, scene.TARGET_CENTRE, 3), ({'table'}, scene.TARGET_CENTRE, 4),
    ({'table', 'gripper'}, scene.TARGET_CENTRE, 1), ({'table'}, (0.2, 0.1), 0)])
def test_reward_stages(touching, xy, stage):
    assert pick_place_reward(touching, np.array(xy)) == stage


def test_a_scripted_episode_picks_and_places_the_cube(blind_env, kinematics):
    from so101_sim.scripted import scripted_episode
    env = blind_env
    config = tasks.get_sim_task_config(TASK)
    pose = sample_cube_pose(np.random.default_rng(3))
    actions, rewards = scripted_episode(env, kinematics, pose, config['episode_len'])
    assert actions.shape == (config['episode_len'], STATE_DIM) and rewards.max() == 4
    assert np.all(np.diff(np.flatnonzero(np.diff(rewards) > 0)) > 0)  # the stages in order
    assert np.abs(env.physics.data.qpos[STATE_DIM:STATE_DIM + 2] - scene.TARGET_CENTRE).max() < scene.TARGET_RADIUS


@pytest.mark.parametrize('approach, miss, succeeds', [('fixed_jaw', -0.012, True), ('fixed_jaw', 0.012, False),
                                                     ('middle', -0.012, True), ('middle', 0.012, True)])
def test_how_far_off_the_scripted_grasp_may_come_down(blind_env, kinematics, approach, miss, succeeds):
    """Coming down with the cube against the fixed jaw (the demonstrations) forgives a miss away from
    that jaw only; with the cube in the middle of the open jaws, a centimetre either way."""
    from so101_sim.scripted import APPROACHES, scripted_episode
    steps = tasks.get_sim_task_config(TASK)['episode_len']
    pose = sample_cube_pose(np.random.default_rng(3))
    _, rewards = scripted_episode(blind_env, kinematics, pose, steps, miss=miss, approach=APPROACHES[approach])
    assert (rewards.max() == 4) == succeeds


@pytest.mark.parametrize('miss', [0.0, 0.01])
def test_the_alignment_bench_measures_the_cube_in_the_gripper_frame(blind_env, kinematics, miss):
    """The scripted grasp, aimed `miss` m off across the jaws, measured where it starts closing: on
    the demonstrations' offset but across the jaws, square to the cube."""
    from bench.so101_alignment import CLOSING, closing_alignment
    from so101_sim.scripted import MIDDLE_OFFSET, ScriptedPickPlace, aimed_off
    pose = sample_cube_pose(np.random.default_rng(3))
    blind_env.task.set_object_pose(pose)
    ts = blind_env.reset()
    policy = ScriptedPickPlace(kinematics, aimed_off(pose, miss))
    for closing in (False, True):  # open from the start pose's half-open gripper, then closing
        while ((action := policy(ts))[-1] < CLOSING) != closing:
            ts = blind_env.step(action)
    figures = closing_alignment(kinematics, ts.observation['qpos'], ts.observation['env_state'], pose, MIDDLE_OFFSET)
    assert abs(figures['along_fingers_mm']) < 4 and abs(figures['along_jaws_mm']) < 4
    assert abs(figures['across_jaws_mm'] + 1000 * miss) < 3
    assert abs(figures['jaws_to_faces_deg']) < 1 and figures['cube_pushed_mm'] < 1


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """Two episodes of STEPS steps (the scripted motion's start: the cube is not reached)."""
    root = tmp_path_factory.mktemp('so101')
    args = {'task_name': TASK, 'dataset_dir': str(root / 'hdf5'), 'num_episodes': 2, 'seed': 0, 'num_workers': 1,
            'image_size': SMALL, 'no_shadows': True}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
        results = recording.sim.main(args)
    return root, results


def test_recorded_episodes_in_the_original_layout_replay_the_scripted_motion(recorded):
    import h5py
    root, results = recorded
    assert [(r['ee_return'], r['episode_return']) for r in results] == [(0.0, 0.0)] * 2
    steps = STEPS
    with h5py.File(root / 'hdf5' / 'episode_0.hdf5', 'r') as f:
        assert f['action'].shape == f['observations/qpos'].shape == (steps, STATE_DIM)
        assert f['observations/images/front'].shape == f['observations/images/wrist'].shape == (steps, *SMALL, 3)
        assert np.allclose(f['observations/qpos'][0], START_POSE)
        assert np.abs(f['observations/qpos'][1:, :5] - f['action'][:-1, :5]).max() < 2  # tracked within 2 degrees


def test_lerobot_recording_has_the_so_feature_names(recorded, tmp_path, monkeypatch):
    from formats.lerobot import LeRobotEpisodes
    monkeypatch.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    root = tmp_path / 'lerobot'
    recording.sim.main({'task_name': TASK, 'dataset_dir': str(root), 'num_episodes': 1, 'image_size': SMALL,
                              'format': 'lerobot'})
    info = json.load(open(root / 'meta' / 'info.json'))
    assert info['robot_type'] == 'so_follower' and info['fps'] == 30
    assert info['features']['observation.state']['names'] == FEATURE_NAMES
    assert info['features']['action']['names'] == FEATURE_NAMES
    velocity = [name.replace('.pos', '.vel') for name in FEATURE_NAMES]  # shoulder_pan.vel, ...
    assert info['features']['observation.velocity']['names'] == velocity
    assert {'observation.images.front', 'observation.images.wrist'} <= set(info['features'])
    assert LeRobotEpisodes(str(root)).read_episode(0).action.shape == (STEPS, STATE_DIM)


def train_tiny_policy(recorded, tmp_path, monkeypatch):
    """A tiny ACT trained two epochs on the recording -> imitate_episodes.py's arguments."""
    import imitate_episodes
    monkeypatch.setitem(constants.SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    from tests.helpers import train_args
    root, _ = recorded
    args = train_args(root / 'hdf5', tmp_path / 'ckpt', task_name=TASK, camera_names=['front', 'wrist'],
                      num_episodes=2, batch_size=2, num_epochs=2)
    imitate_episodes.main(args)
    return args


def test_a_tiny_policy_trains_and_evaluates_on_the_recording(recorded, tmp_path, monkeypatch):
    import imitate_episodes
    args = train_tiny_policy(recorded, tmp_path, monkeypatch)
    config = json.load(open(tmp_path / 'ckpt' / 'config.json'))
    assert config['policy_config']['state_dim'] == STATE_DIM and config['task_name'] == TASK
    imitate_episodes.main(dict(args, eval=True, num_rollouts=1, eval_ckpt='policy_last.ckpt', save_video=False))
    result = json.load(open(tmp_path / 'ckpt' / 'result_policy_last.json'))
    assert result['num_rollouts'] == 1 and set(result['stages']) == {'0', '1', '2', '3', '4'}
    assert os.path.isfile(tmp_path / 'ckpt' / 'report.html')
    imitate_episodes.main(dict(args, eval_offline=True, eval_ckpt='policy_last.ckpt'))
    offline = json.load(open(tmp_path / 'ckpt' / 'offline_eval.json'))
    assert list(offline['per_joint']) == list(constants.SO_JOINT_NAMES)  # the arm's own joint names
    from bench import so101_alignment
    report = so101_alignment.main(['--ckpt_dir', str(tmp_path / 'ckpt'), '--eval_ckpt', 'policy_last.ckpt',
                                   '--num_rollouts', '1'])
    assert [r['rollout_id'] for r in report['rollouts']] == [0] and report['approach'] == 'middle'
    assert sum(group['rollouts'] for group in report['summary'].values()) == 1
    import export_policy
    from policy_runtime import PolicyRunner
    export_policy.main(['--ckpt_dir', str(tmp_path / 'ckpt'), '--ckpt', 'policy_last.ckpt', '--out',
                        str(tmp_path / 'export')])
    runner = PolicyRunner(str(tmp_path / 'export'))
    assert runner.manifest['control_hz'] == 30 and runner.camera_names == ['front', 'wrist']
    action = runner.act(np.array(START_POSE, np.float32), np.zeros((2, *SMALL, 3), np.uint8))
    assert action.shape == (STATE_DIM,) and np.all(np.isfinite(action))


@pytest.mark.serial  # the emulated Feetech bus answers against the clock (pytest.ini)
def test_a_sim_trained_checkpoint_runs_on_the_emulated_arm(recorded, station, tmp_path, monkeypatch, capsys):
    """Sim to real: the checkpoint trained on the simulated SO-101 drives a real SO task's follower on the
    emulated bus, through the same command, the units and joint order being the real arm's."""
    import imitate_episodes
    import real_robot
    from real_robot import settings
    from tests.test_so_arms import CALIBRATION, TEST_PATTERN
    emulators, _ = station
    monkeypatch.setitem(settings.CAMERA_DEVICES, 'wrist', TEST_PATTERN)
    monkeypatch.setitem(real_robot.TASK_CONFIGS['tiny_so_task'], 'camera_names', ['front', 'wrist'])
    args = train_tiny_policy(recorded, tmp_path, monkeypatch)
    monkeypatch.setitem(real_robot.TASK_CONFIGS['tiny_so_task'], 'episode_len', 4)
    imitate_episodes.main(dict(args, eval=True, task_name='tiny_so_task', num_rollouts=1,
                               eval_ckpt='policy_last.ckpt', no_video=True))
    goals = emulators['so_follower'].servos[CALIBRATION['shoulder_pan']['id']].goal_history
    low, high = CALIBRATION['shoulder_pan']['range_min'], CALIBRATION['shoulder_pan']['range_max']
    assert len(goals) >= 4 and all(low <= g <= high for g in goals)  # commanded, within the calibrated range
    assert all(s.get('torque_enable') == 0 for s in emulators['so_follower'].servos.values())


@pytest.mark.slow
def test_the_full_scripted_set_succeeds(kinematics):
    from so101_sim.scripted import scripted_episode
    config = tasks.get_sim_task_config(TASK)
    env = make_so101_env(camera_names=[], shadows=False)
    successes = 0
    for episode in range(config['num_episodes']):
        rng = episode_rng(0, episode)  # as record_sim_episodes.py --seed 0 records it
        _, rewards = scripted_episode(env, kinematics, sample_cube_pose(rng), config['episode_len'] + 1, rng=rng)
        successes += rewards.max() == 4
    assert successes >= 49


### --robot_driver sim for the SO tasks: the simulated arm behind the real SO environment
@pytest.fixture
def sim_so_env():
    from real_robot import make_eval_env
    env = make_eval_env(driver='sim', task_name='so101_pick_place', camera_names=['front', 'wrist'],
                        image_size=SMALL)
    yield env
    env.close()


def test_the_real_so_task_runs_on_the_simulated_arm_with_its_units_and_clamps(sim_so_env):
    from real_robot import settings
    ts = sim_so_env.reset()
    obs = ts.observation
    assert set(obs) == {'qpos', 'qvel', 'effort', 'images'}
    assert np.abs(obs['qpos'] - START_POSE).max() < 0.1  # the calibrated units are the simulation's
    assert {cam: obs['images'][cam].shape for cam in ('front', 'wrist')} == {'front': (*SMALL, 3),
                                                                             'wrist': (*SMALL, 3)}
    target = obs['qpos'] + np.array([40.0, 0, 0, 0, 0, 0])
    largest = settings.SO_MAX_STEP * 360 / 4095  # degrees a target may move per step (the safety clamp)
    previous = obs['qpos'][0]
    for _ in range(3):
        qpos = sim_so_env.step(target).observation['qpos']
        assert qpos[0] - previous < largest + 1.0
        previous = qpos[0]
    assert previous < START_POSE[0] + 3 * largest + 1.0  # still on its way: the target was clamped


def test_the_sim_driver_refuses_what_the_scene_lacks():
    from real_robot import make_eval_env
    with pytest.raises(ValueError, match='one arm; this task has 2 followers'):
        make_eval_env(driver='sim', task_name='so101_bimanual')
    with pytest.raises(KeyError, match="no simulated camera 'top' in the SO-101 scene"):
        make_eval_env(driver='sim', task_name='so101_pick_place', camera_names=['top'])


def test_the_simulated_arm_has_the_real_arms_calibration_layout():
    from real_robot import settings
    from real_robot.so_sim import MID_STEP, sim_calibration
    env = make_so101_env(camera_names=[])
    units = Units(env.physics.model.ptr)
    calibration = sim_calibration(units.low, units.high)
    assert list(calibration) == list(settings.SO_JOINTS)
    assert (calibration['wrist_roll']['range_min'], calibration['wrist_roll']['range_max']) == (0, 4095)
    for joint in ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex'):
        entry = calibration[joint]
        assert entry['range_min'] + entry['range_max'] == 2 * MID_STEP  # 0 degrees at the model's zero


def test_convert_dataset_takes_the_tasks_lerobot_settings(recorded, tmp_path):
    import convert_dataset
    root, _ = recorded
    args = vars(convert_dataset.build_parser().parse_args(
        ['--to', 'lerobot', str(root / 'hdf5'), str(tmp_path / 'lr'), '--task_name', TASK, '--num_episodes', '1']))
    convert_dataset.main(args)
    info = json.load(open(tmp_path / 'lr' / 'meta' / 'info.json'))
    assert (info['fps'], info['robot_type']) == (30, 'so_follower')
    assert info['features']['observation.state']['names'] == FEATURE_NAMES
    import pyarrow.parquet as pq
    assert pq.read_table(tmp_path / 'lr' / 'meta' / 'tasks.parquet').to_pylist()[0]['task'] == \
        'Pick up the red cube and put it on the green target'
    with pytest.raises(ValueError, match='has 6 state values, but the task names 12'):
        convert_dataset.main(dict(args, dst=str(tmp_path / 'lr2'), task_name='so101_bimanual'))


def test_the_grasp_bench_reports_successes_per_approach_and_miss(capsys):
    from bench import so101_grasp
    so101_grasp.main(so101_grasp.parse_args(['--episodes', '1', '--misses', '0.01']))
    report = json.loads(capsys.readouterr().out)
    assert report == {'episodes': 1, 'successes': {'fixed_jaw': {'+0.010': 0}, 'middle': {'+0.010': 1}}}


def test_the_render_bench_compares_multisample_counts():
    """In its own process, so that MuJoCo's own Renderer never shares a test worker's EGL state with
    the dm_control cameras of the other tests."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-m', 'bench.so101_render', '--image_size', '24', '32', '--timed_frames', '2'],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                         env={**os.environ, 'OMP_NUM_THREADS': '1'}).stdout
    report = json.loads(out)
    assert list(report['samples']) == ['4', '0'] and report['reference'] == '4 samples'
    changed = report['samples']['0']['vs_reference']
    assert 0 < changed['pixels_changed'] < 0.5  # the edges of the arm and the cube, not the whole frame
