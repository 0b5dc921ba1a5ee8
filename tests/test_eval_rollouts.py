"""End-to-end evaluation on a tiny untrained checkpoint: result file, videos, parallel rollouts."""
import ast
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import TINY_IMAGE_HW
from constants import START_ARM_POSE
from evaluate import Evaluator, eval_bc, load_policy, load_stats, rollout_results, summary_text

TASK = 'sim_transfer_cube_scripted'


def tiny_stats(state_dim=14):
    """Statistics that keep an untrained policy's actions close to the start pose."""
    arm = list(START_ARM_POSE[:6])
    action_mean = np.array(arm + [1.0] + arm + [1.0], dtype=np.float32)[:state_dim]
    action_std = np.full(state_dim, 0.02, dtype=np.float32)
    return {'qpos_mean': np.zeros(state_dim, dtype=np.float32), 'qpos_std': np.ones(state_dim, dtype=np.float32),
            'action_mean': action_mean, 'action_std': action_std,
            'action_min': action_mean - 0.05, 'action_max': action_mean + 0.05,
            'example_qpos': np.zeros((20, state_dim), dtype=np.float32)}


def make_config(ckpt_dir, policy_config, **overrides):
    config = {
        'num_epochs': 1, 'ckpt_dir': str(ckpt_dir), 'episode_len': 10, 'state_dim': 14, 'action_dim': 14,
        'lr': policy_config['lr'], 'policy_class': 'ACT', 'onscreen_render': False,
        'policy_config': policy_config, 'task_name': TASK, 'seed': 0, 'temporal_agg': False,
        'camera_names': policy_config['camera_names'], 'real_robot': False, 'device': 'cpu',
        'image_size': TINY_IMAGE_HW, 'num_rollouts': 2, 'eval_ckpt': 'policy_best.ckpt', 'save_video': True,
        'eval_workers': 1, 'robot_backend': 'builtin', 'robot_driver': 'auto', 'amp': 'off',
    }
    config.update(overrides)
    return config


@pytest.fixture
def tiny_ckpt_dir(tmp_path, tiny_act_config):
    """A checkpoint directory with an untrained tiny ACT and its dataset_stats.pkl."""
    from policy import make_policy
    ckpt_dir = tmp_path / 'ckpt'
    ckpt_dir.mkdir()
    torch.save(make_policy('ACT', tiny_act_config).serialize(), ckpt_dir / 'policy_best.ckpt')
    with open(ckpt_dir / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(tiny_stats(), f)
    return ckpt_dir


def read_video(path):
    import imageio
    with imageio.get_reader(str(path), format='FFMPEG') as reader:
        return [frame for frame in reader]


def test_two_rollouts_write_result_file_and_videos(tiny_ckpt_dir, tiny_act_config, capsys):
    config = make_config(tiny_ckpt_dir, tiny_act_config, episode_len=6)
    success_rate, avg_return = eval_bc(config, 'policy_best.ckpt')

    out = capsys.readouterr().out
    assert 'Rollout 0\nepisode_return=' in out and 'Rollout 1\n' in out and 'Success rate: ' in out
    text = (tiny_ckpt_dir / 'result_policy_best.txt').read_text()
    head, highest = text.rsplit('\n\n', 1)  # summary, returns list, blank line, highest-rewards list
    summary, returns = head.rsplit('\n', 1)
    returns, highest = ast.literal_eval(returns), ast.literal_eval(highest)
    assert len(returns) == len(highest) == 2
    assert summary + '\n' == summary_text(highest, returns, 4)
    assert summary.startswith(f'\nSuccess rate: {success_rate}\nAverage return: {avg_return}\n')
    for i in range(2):
        frames = read_video(tiny_ckpt_dir / f'video{i}.mp4')
        assert len(frames) == config['episode_len']  # one frame per control step
        assert frames[0].shape == (*TINY_IMAGE_HW, 3)
    assert not any(name.startswith('.tmp') for name in os.listdir(tiny_ckpt_dir))


def test_parallel_rollouts_equal_sequential_and_start_from_sampled_poses(tiny_ckpt_dir, tiny_act_config):
    from sim_env import sample_object_pose
    config = make_config(tiny_ckpt_dir, tiny_act_config, temporal_agg=True, episode_len=4, save_video=False)
    sequential = list(rollout_results(config, 'policy_best.ckpt'))
    parallel = list(rollout_results(dict(config, eval_workers=2), 'policy_best.ckpt'))
    assert [r['rollout_id'] for r in parallel] == [0, 1]
    for seq, par in zip(sequential, parallel):
        assert seq['rewards'] == par['rewards']
        np.testing.assert_allclose(seq['final_qpos'], par['final_qpos'], atol=1e-5)
        np.testing.assert_allclose(seq['final_env_state'], par['final_env_state'], atol=1e-5)
    np.random.seed(1000)  # the original's evaluation seed, poses drawn in rollout order
    for result in sequential:
        pose = sample_object_pose(TASK, rng=np.random)
        np.testing.assert_allclose(result['final_env_state'][:2], pose[:2], atol=1e-3)  # cube x, y


def test_checkpoint_replaces_imagenet_weights_without_fetching_them(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    import warnings
    from detr import resnet
    monkeypatch.setattr(resnet, 'download_imagenet_weights', lambda name: pytest.fail('tried to download'))
    monkeypatch.setattr(resnet, '_hub_cache_file', lambda name: str(tiny_ckpt_dir / 'no_such_file.pth'))
    monkeypatch.setattr(resnet, '_warned_random_init', False)
    config = make_config(tiny_ckpt_dir, dict(tiny_act_config, pretrained_backbone=True))
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        policy = load_policy(config, 'policy_best.ckpt')
    saved = torch.load(tiny_ckpt_dir / 'policy_best.ckpt')
    for key, value in policy.serialize().items():
        assert torch.equal(value, saved[key]), key

    def offline(name):
        raise OSError('network is unreachable')
    monkeypatch.setattr(resnet, 'download_imagenet_weights', offline)
    with pytest.warns(RuntimeWarning, match='random initialisation'):  # outside, training warns as before
        resnet.load_imagenet_weights(resnet.build_resnet_trunk('resnet18'), 'resnet18')


def test_missing_checkpoint_names_file_and_training_command(tiny_ckpt_dir, tiny_act_config):
    config = make_config(tiny_ckpt_dir, tiny_act_config)
    with pytest.raises(FileNotFoundError, match=r'policy_missing\.ckpt.*imitate_episodes\.py'):
        eval_bc(config, 'policy_missing.ckpt')


def test_missing_stats_names_file_and_training_command(tiny_ckpt_dir, tiny_act_config):
    os.remove(tiny_ckpt_dir / 'dataset_stats.pkl')
    with pytest.raises(FileNotFoundError, match=r'dataset_stats\.pkl.*imitate_episodes\.py'):
        eval_bc(make_config(tiny_ckpt_dir, tiny_act_config), 'policy_best.ckpt')


def test_stats_of_another_state_size_is_a_clear_error(tiny_ckpt_dir, tiny_act_config):
    with open(tiny_ckpt_dir / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(tiny_stats(state_dim=10), f)
    with pytest.raises(ValueError, match=r"dataset_stats\.pkl: 'qpos_mean' has shape \(10,\)"):
        eval_bc(make_config(tiny_ckpt_dir, tiny_act_config), 'policy_best.ckpt')


def test_checkpoint_of_another_chunk_size_is_a_clear_error(tiny_ckpt_dir, tiny_act_config):
    config = make_config(tiny_ckpt_dir, dict(tiny_act_config, num_queries=7))
    with pytest.raises(ValueError, match=r'policy_best\.ckpt does not match'):
        eval_bc(config, 'policy_best.ckpt')


@pytest.mark.parametrize('key, value', [('eval_workers', 0), ('num_rollouts', 0)])
def test_bad_counts(tiny_ckpt_dir, tiny_act_config, key, value):
    with pytest.raises(ValueError, match=key):
        eval_bc(make_config(tiny_ckpt_dir, tiny_act_config, **{key: value}), 'policy_best.ckpt')


def test_no_display_no_video_other_checkpoint(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    os.replace(tiny_ckpt_dir / 'policy_best.ckpt', tiny_ckpt_dir / 'policy_last.ckpt')
    config = make_config(tiny_ckpt_dir, tiny_act_config, onscreen_render=True, num_rollouts=1, episode_len=2,
                         save_video=False)
    with pytest.warns(UserWarning, match='no display'):
        eval_bc(config, 'policy_last.ckpt')
    assert (tiny_ckpt_dir / 'result_policy_last.txt').is_file()
    assert not list(tiny_ckpt_dir.glob('*.mp4'))


def test_real_robot_path_with_simulated_driver(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    import real_robot
    opened = []
    open_grippers = real_robot.open_grippers
    monkeypatch.setattr(real_robot, 'open_grippers', lambda env, backend: opened.append(backend) or
                        open_grippers(env, backend))
    policy_config = dict(tiny_act_config, camera_names=['cam_high'])
    config = make_config(tiny_ckpt_dir, policy_config, task_name='aloha_wear_shoe', real_robot=True,
                         robot_driver='sim', episode_len=3, eval_workers=2)
    with pytest.warns(UserWarning, match='eval_workers is ignored on the real robot'):
        success_rate, _ = eval_bc(config, 'policy_best.ckpt')
    assert opened == ['builtin', 'builtin']  # grippers opened after every rollout
    # the robot gives no reward: as in the original, every rollout reaches the "max reward" 0
    assert success_rate == 1.0
    assert 'Reward >= 0: 2/2 = 100.0%' in (tiny_ckpt_dir / 'result_policy_best.txt').read_text()
    assert len(list(tiny_ckpt_dir.glob('video*.mp4'))) == 2


def test_diffusion_sampling_is_seeded_per_rollout(tmp_path):
    """Diffusion draws noise at every query: rollout i gets the same noise whatever ran before it
    (so parallel workers reproduce a sequential evaluation)."""
    from policy import make_policy
    from sim_env import sample_object_pose
    policy_config = {'camera_names': ['top'], 'num_queries': 4, 'action_horizon': 2, 'down_dims': (16, 32),
                     'num_inference_steps': 2, 'lr': 1e-3, 'pretrained_backbone': False}
    torch.save(make_policy('Diffusion', policy_config).serialize(), tmp_path / 'policy_best.ckpt')
    stats = tiny_stats()
    stats.update(action_min=stats['action_mean'] - 0.5, action_max=stats['action_mean'] + 0.5)
    with open(tmp_path / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(stats, f)
    config = make_config(tmp_path, policy_config, policy_class='Diffusion', episode_len=4, save_video=False)
    sequential = list(rollout_results(config, 'policy_best.ckpt'))
    assert not np.allclose(sequential[0]['final_qpos'], sequential[1]['final_qpos'], atol=1e-4)

    np.random.seed(1000)
    pose_of_rollout_1 = [sample_object_pose(TASK, rng=np.random) for _ in range(2)][1]
    evaluator = Evaluator(config, load_policy(config, 'policy_best.ckpt'), load_stats(config))
    torch.manual_seed(123)  # whatever state the process is in
    alone = evaluator.rollout(1, pose_of_rollout_1)
    np.testing.assert_allclose(alone['final_qpos'], sequential[1]['final_qpos'], atol=1e-6)
