"""Simulation: observation contract, object poses, MuJoCo 3 corrections, rewards, scripted success."""
import numpy as np
import pytest

import sim_env
from constants import START_ARM_POSE
from ee_sim_env import make_ee_sim_env
from scripted_policy import (InsertionPolicy, PickAndTransferPolicy, axis_angle_quat, interpolate,
                             quat_multiply, waypoint)

SMALL = (24, 32)
TASKS = ['sim_transfer_cube_scripted', 'sim_insertion_scripted']
OBJECT_DIMS = {'sim_transfer_cube_scripted': 7, 'sim_insertion_scripted': 14}


def _check_low_dim(obs, object_dim):
    for key, size in (('qpos', 14), ('qvel', 14), ('env_state', object_dim)):
        assert obs[key].shape == (size,) and obs[key].dtype == np.float64, key


@pytest.mark.parametrize('task_name', TASKS)
def test_joint_env_reset_and_step(task_name):
    env = sim_env.make_sim_env(task_name, camera_names=['top', 'vis'], image_size=SMALL)
    ts = env.reset()
    assert list(ts.observation) == ['qpos', 'qvel', 'env_state', 'images']
    _check_low_dim(ts.observation, OBJECT_DIMS[task_name])
    assert set(ts.observation['images']) == {'top', 'vis'}
    for frame in ts.observation['images'].values():
        assert frame.shape == (*SMALL, 3) and frame.dtype == np.uint8 and frame.flags['C_CONTIGUOUS']
        assert frame.max() > 0
    assert env.task.max_reward == 4
    ts = env.step(ts.observation['qpos'])
    _check_low_dim(ts.observation, OBJECT_DIMS[task_name])
    assert ts.reward in range(5)


def test_start_pose_observation():
    env = sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=[])
    obs = env.reset().observation
    assert obs['images'] == {}
    np.testing.assert_allclose(obs['qpos'][:6], START_ARM_POSE[:6])
    np.testing.assert_allclose(obs['qpos'][7:13], START_ARM_POSE[8:14])
    # finger 0.02239 normalised by the puppet gripper position range
    np.testing.assert_allclose(obs['qpos'][[6, 13]], (0.02239 - 0.01844) / (0.05800 - 0.01844))


def test_ee_env_observation():
    env = make_ee_sim_env('sim_insertion_scripted', camera_names=['angle'], image_size=SMALL)
    obs = env.reset().observation
    assert list(obs) == ['qpos', 'qvel', 'env_state', 'images', 'mocap_pose_left', 'mocap_pose_right',
                         'gripper_ctrl']
    _check_low_dim(obs, 14)
    assert obs['images']['angle'].shape == (*SMALL, 3)
    assert obs['mocap_pose_left'].shape == (7,) and obs['gripper_ctrl'].shape == (4,)
    action = np.concatenate([obs['mocap_pose_left'], [1.0], obs['mocap_pose_right'], [0.0]])
    obs = env.step(action).observation
    assert obs['gripper_ctrl'][0] == pytest.approx(0.058) and obs['gripper_ctrl'][2] == pytest.approx(0.01844)


def test_gripper_links_start_at_the_mocap_poses():
    env = make_ee_sim_env('sim_transfer_cube_scripted', camera_names=[])
    obs = env.reset().observation
    xpos = env.physics.named.data.xpos
    np.testing.assert_allclose(xpos['vx300s_left/gripper_link'], obs['mocap_pose_left'][:3], atol=1e-4)
    np.testing.assert_allclose(xpos['vx300s_right/gripper_link'], obs['mocap_pose_right'][:3], atol=1e-4)


def test_unknown_task_and_camera():
    with pytest.raises(ValueError, match='sim_insertion_human'):
        sim_env.make_sim_env('sim_pour_tea')
    with pytest.raises(ValueError, match="unknown camera 'wrist'.*top"):
        sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=['wrist'])


def test_mujoco3_corrections():
    physics = sim_env.load_physics('bimanual_viperx_end_effector_transfer_cube.xml')
    model = physics.model
    np.testing.assert_allclose(model.eq_data[:, 10], 19.95, atol=0.01)
    assert model.opt.disableflags & int(sim_env.mujoco.mjtDisableBit.mjDSBL_MULTICCD)


def test_render_context_uses_the_project_shadow_map_size():
    env = sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=['top'], image_size=(24, 32))
    env.reset()
    assert env.physics.contexts.mujoco.ptr.shadowSize == sim_env.SHADOW_MAP_SIZE


def test_object_pose_handoff_and_sampling():
    env = sim_env.make_sim_env('sim_insertion_scripted', camera_names=[], seed=3)
    pose = sim_env.sample_object_pose('sim_insertion_scripted', np.random.default_rng(0))
    env.task.set_object_pose(pose)
    np.testing.assert_allclose(env.reset().observation['env_state'], pose)
    sampled = env.reset().observation['env_state']  # the hand-off applies to one reset only
    assert not np.allclose(sampled, pose)
    again = sim_env.make_sim_env('sim_insertion_scripted', camera_names=[], seed=3).reset()
    np.testing.assert_allclose(again.observation['env_state'], sampled)
    with pytest.raises(ValueError, match='14 values'):
        env.task.set_object_pose(pose[:7])
        env.reset()


@pytest.fixture
def legacy_box_pose():
    sim_env.BOX_POSE[0] = [0.05, 0.45, 0.05, 1, 0, 0, 0]
    yield sim_env.BOX_POSE[0]
    sim_env.BOX_POSE[0] = None


def test_legacy_box_pose_is_honoured(legacy_box_pose):
    env = sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=[])
    with pytest.warns(DeprecationWarning, match='set_object_pose'):
        obs = env.reset().observation
    np.testing.assert_allclose(obs['env_state'], [0.05, 0.45, 0.05, 1, 0, 0, 0])


def test_original_record_loop_draws_a_new_pose_every_episode(legacy_box_pose):
    """The original's loop: a fresh EE env and reset, then BOX_POSE[0] = its pose for the joint replay."""
    poses = []
    for _ in range(3):
        ee_env = make_ee_sim_env('sim_transfer_cube_scripted', camera_names=[])
        start = ee_env.reset().observation['env_state'].copy()
        poses.append(start)
        sim_env.BOX_POSE[0] = start
        with pytest.warns(DeprecationWarning, match='set_object_pose'):
            replay = sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=[]).reset()
        np.testing.assert_allclose(replay.observation['env_state'], start)  # the replay honours it
    assert len({tuple(np.round(p[:3], 6)) for p in poses}) == 3


def test_pose_ranges():
    rng = np.random.default_rng(0)
    boxes = np.array([sim_env.sample_box_pose(rng) for _ in range(200)])
    assert boxes.shape == (200, 7)
    assert boxes[:, 0].min() >= 0.0 and boxes[:, 0].max() <= 0.2
    assert boxes[:, 1].min() >= 0.4 and boxes[:, 1].max() <= 0.6
    np.testing.assert_array_equal(boxes[:, 2:], [[0.05, 1, 0, 0, 0]] * 200)
    peg, socket = sim_env.sample_insertion_pose(rng)
    assert 0.1 <= peg[0] <= 0.2 and -0.2 <= socket[0] <= -0.1
    np.random.seed(1)
    assert sim_env.sample_box_pose().shape == (7,)  # the original's global-RNG call still works


def pairs(*names):
    return {frozenset(p) for p in names}


BOX, TABLE, LEFT, RIGHT = 'red_box', 'table', sim_env.LEFT_FINGER, sim_env.RIGHT_FINGER


@pytest.mark.parametrize('contacts, stage', [
    (pairs(), 0),
    (pairs((BOX, TABLE)), 0),
    (pairs((BOX, RIGHT), (BOX, TABLE)), 1),
    (pairs((RIGHT, BOX)), 2),
    (pairs((BOX, RIGHT), (BOX, LEFT), (BOX, TABLE)), 3),
    (pairs((BOX, LEFT), (BOX, RIGHT)), 4),
    (pairs((LEFT, BOX)), 4),
])
def test_transfer_cube_reward_stages(contacts, stage):
    assert sim_env.transfer_cube_reward(contacts) == stage


@pytest.mark.parametrize('contacts, stage', [
    (pairs(('red_peg', TABLE), ('socket-1', TABLE)), 0),
    (pairs(('red_peg', RIGHT), ('socket-2', LEFT), ('socket-1', TABLE)), 1),
    (pairs(('red_peg', RIGHT), ('socket-3', LEFT)), 2),
    (pairs(('red_peg', 'socket-4')), 3),
    (pairs(('red_peg', 'socket-4'), ('red_peg', TABLE)), 0),
    (pairs(('red_peg', 'pin'), ('red_peg', TABLE)), 4),
])
def test_insertion_reward_stages(contacts, stage):
    assert sim_env.insertion_reward(contacts) == stage


def _reward_with_objects(env, pose):
    env.task.set_object_pose(pose)
    env.reset()
    return env.task.get_reward(env.physics)


def test_rewards_on_constructed_states():
    env = sim_env.make_sim_env('sim_transfer_cube_scripted', camera_names=[])
    assert _reward_with_objects(env, [0.1, 0.5, 0.019, 1, 0, 0, 0]) == 0  # resting on the table
    assert frozenset((BOX, TABLE)) in sim_env.contact_pairs(env.physics)
    for finger, stage in ((RIGHT, 2), (LEFT, 4)):  # cube in the air against one finger
        cube_xyz = env.physics.named.data.geom_xpos[finger] + [0, 0, 0.03]
        assert _reward_with_objects(env, [*cube_xyz, 1, 0, 0, 0]) == stage
        assert frozenset((BOX, finger)) in sim_env.contact_pairs(env.physics)
    env = sim_env.make_sim_env('sim_insertion_scripted', camera_names=[])
    in_air = [-0.15, 0.5, 0.2, 1, 0, 0, 0]
    assert _reward_with_objects(env, in_air + in_air) == 4  # peg inside the socket, on the pin
    assert _reward_with_objects(env, [0.15, 0.5, 0.01, 1, 0, 0, 0, -0.15, 0.5, 0.02, 1, 0, 0, 0]) == 0


def test_quaternions_and_interpolation():
    q = axis_angle_quat([0, 1, 0], -60)
    np.testing.assert_allclose(q, [np.cos(np.pi / 6), 0, -np.sin(np.pi / 6), 0])
    np.testing.assert_allclose(quat_multiply(q, axis_angle_quat([0, 1, 0], 60)), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(quat_multiply([0, 1, 0, 0], [0, 0, 1, 0]), [0, 0, 0, 1])  # i * j = k
    traj = [waypoint(0, [0, 0, 0], [1, 0, 0, 0], 0), waypoint(100, [1, 2, 3], [0, 1, 0, 0], 1)]
    xyz, quat, grip = interpolate(traj, 25)
    np.testing.assert_allclose(xyz, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(quat, [0.75, 0.25, 0, 0])
    assert grip == pytest.approx(0.25)


@pytest.mark.parametrize('task_name, policy_cls', [('sim_transfer_cube_scripted', PickAndTransferPolicy),
                                                   ('sim_insertion_scripted', InsertionPolicy)])
def test_scripted_ee_rollout_succeeds(task_name, policy_cls):
    env = make_ee_sim_env(task_name, camera_names=[])
    env.task.set_object_pose(sim_env.sample_object_pose(task_name, np.random.default_rng(0)))
    ts = env.reset()
    policy = policy_cls()
    rewards = []
    for _ in range(400):
        ts = env.step(policy(ts))
        rewards.append(ts.reward)
    assert max(rewards) == env.task.max_reward
    assert rewards[:50] == [0] * 50  # nothing touched while the arms approach
