"""The simulated robot (driver 'sim') behind the real-robot interface, and
`imitate_episodes.py --eval` on a real task config running end to end on it."""
import os
import runpy
import sys

import numpy as np
import pytest

import real_robot
from real_robot import settings
from tests.helpers import ROOT, TINY_IMAGE_HW, start_pose_stats, write_tiny_checkpoint


@pytest.fixture
def sim_env():
    env = real_robot.make_real_env(init_node=True, driver='sim', camera_names=['cam_high', 'cam_left_wrist'],
                                   image_size=TINY_IMAGE_HW)
    yield env
    env.close()


def test_sim_robot_moves_like_the_real_one(sim_env):
    ts = sim_env.reset()
    obs = ts.observation
    assert obs['qpos'].shape == obs['qvel'].shape == obs['effort'].shape == (14,)
    np.testing.assert_allclose(obs['qpos'][:6], settings.START_ARM_QPOS, atol=0.02)
    target = obs['qpos'].copy()
    target[0] += 0.2  # left waist: more than one step's worth, so the per-step limit applies
    ts = sim_env.step(target)
    assert ts.observation['qpos'][0] <= obs['qpos'][0] + settings.MAX_JOINT_STEP + 1e-3
    for _ in range(30):
        ts = sim_env.step(target)
    assert ts.observation['qpos'][0] == pytest.approx(target[0], abs=0.02)
    frame = ts.observation['images']['cam_high']
    assert frame.shape == TINY_IMAGE_HW + (3,) and frame.dtype == np.uint8 and frame.std() > 0
    unread = ts.observation['images']
    sim_env.step(target)
    assert unread['cam_high'] is frame  # frames already read are kept
    with pytest.raises(RuntimeError, match='before the next step'):
        unread['cam_left_wrist']  # noqa: B018 (a frame never read cannot be rendered after a step)
    gripper_before = ts.observation['qpos'][6]
    real_robot.open_grippers(sim_env)
    assert sim_env.get_qpos()[6] > gripper_before + 0.3


def test_unknown_simulated_camera_is_named():
    with pytest.raises(KeyError, match='cam_top'):
        real_robot.make_real_env(init_node=True, driver='sim', camera_names=['cam_top'])


def test_imitate_episodes_eval_on_a_real_task_with_the_sim_driver(tmp_path, tiny_act_config, monkeypatch, capsys):
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'tiny_real_task', {
        'dataset_dir': str(tmp_path / 'data'), 'num_episodes': 2, 'episode_len': 4, 'camera_names': ['cam_high']})
    ckpt_dir = str(tmp_path / 'ckpt')
    # statistics that keep the untrained policy's actions near the start pose
    write_tiny_checkpoint(ckpt_dir, dict(tiny_act_config, camera_names=['cam_high']),
                          start_pose_stats(settings.START_ARM_QPOS, 0.5, 0.05))
    c = tiny_act_config
    argv = ['imitate_episodes.py', '--eval', '--task_name', 'tiny_real_task', '--ckpt_dir', ckpt_dir,
            '--policy_class', 'ACT', '--chunk_size', str(c['num_queries']), '--hidden_dim', str(c['hidden_dim']),
            '--dim_feedforward', str(c['dim_feedforward']), '--enc_layers', str(c['enc_layers']),
            '--dec_layers', str(c['dec_layers']), '--nheads', str(c['nheads']), '--no-pretrained_backbone',
            '--seed', '0', '--device', 'cpu', '--num_rollouts', '1', '--image_size', *map(str, TINY_IMAGE_HW),
            '--robot_driver', 'sim', '--temporal_agg']
    monkeypatch.setattr(sys, 'argv', argv)
    runpy.run_path(os.path.join(ROOT, 'imitate_episodes.py'), run_name='__main__')
    out = capsys.readouterr().out
    assert 'Rollout 0' in out and 'Closing the robot environment' in out
    assert os.path.isfile(os.path.join(ckpt_dir, 'result_policy_best.txt'))
    assert os.path.isfile(os.path.join(ckpt_dir, 'video0.mp4'))
