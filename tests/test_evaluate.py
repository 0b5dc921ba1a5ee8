"""evaluation/rollout.py and policies/chunker.py: temporal ensembling, the controller, the summary and
result file, and end-to-end rollouts of tiny untrained checkpoints (result file, videos, parallel workers,
bad inputs)."""
import ast
import os
import pickle

import numpy as np
import pytest
import torch

from constants import START_ARM_POSE
from evaluation.results import episode_outcome, result_file_name, rollout_line, summary_text, write_result_file
from evaluation.rollout import ChunkedController, Evaluator, eval_bc, load_policy, load_stats, rollout_results
from policies.chunker import ActionChunker, TemporalEnsembler
from tests.helpers import TASK, TINY_IMAGE_HW, eval_config, start_pose_stats, write_tiny_checkpoint


def original_full_buffer_ensemble(chunks, k=0.01):
    """The original's formulation: a zero [T, T + K, A] buffer, filled rows found by != 0."""
    T, K, A = chunks.shape
    all_time_actions = torch.zeros([T, T + K, A])
    actions = []
    for t in range(T):
        all_time_actions[[t], t:t + K] = chunks[t:t + 1]
        actions_for_curr_step = all_time_actions[:, t]
        actions_populated = torch.all(actions_for_curr_step != 0, axis=1)
        actions_for_curr_step = actions_for_curr_step[actions_populated]
        exp_weights = np.exp(-k * np.arange(len(actions_for_curr_step)))
        exp_weights = exp_weights / exp_weights.sum()
        exp_weights = torch.from_numpy(exp_weights).unsqueeze(dim=1)
        actions.append((actions_for_curr_step * exp_weights).sum(dim=0, keepdim=True))
    return torch.cat(actions)  # (T, A)


def run_ensembler(chunks, **kwargs):
    T, K, A = chunks.shape
    ensembler = TemporalEnsembler(K, **kwargs)
    return torch.stack([ensembler(chunks[t]) for t in range(T)]), ensembler


@pytest.mark.parametrize('T, K, A', [(30, 7, 3), (12, 1, 2), (5, 10, 4)])
def test_ensembler_equals_original_full_buffer_bitwise(T, K, A):
    chunks = torch.randn(T, K, A)
    chunks[4 % T, 0, 1 % A] = 0.0  # a prediction with an exact zero is skipped, as in the original
    ours, ensembler = run_ensembler(chunks)
    reference = original_full_buffer_ensemble(chunks)
    assert ours.dtype == reference.dtype == torch.float64
    assert torch.equal(ours, reference)
    assert ensembler.chunks.shape == (K, K, A)  # memory does not grow with the episode length


def test_ensembler_equals_offline_weighted_average():
    T, K, A = 25, 6, 5
    chunks = torch.rand(T, K, A) + 0.1  # no zeros: every prediction counts
    ours, _ = run_ensembler(chunks)
    for t in range(T):
        sources = range(max(0, t - K + 1), t + 1)  # query steps, oldest first
        predictions = np.stack([chunks[s, t - s].numpy() for s in sources])
        weights = np.exp(-0.01 * np.arange(len(predictions)))  # oldest prediction weighs most
        expected = np.average(predictions.astype(np.float64), axis=0, weights=weights)
        np.testing.assert_allclose(ours[t].numpy(), expected, rtol=1e-12)


def test_the_chunker_plays_numpy_and_torch_chunks_alike():
    """The one chunker serves the torch-free runtime (numpy) and evaluation (torch tensors)."""
    chunks = torch.rand(20, 6, 3) + 0.1
    for temporal_agg in (False, True):
        played = []
        for kind in (torch.Tensor.numpy, lambda chunk: chunk):
            chunker = ActionChunker(6, action_horizon=4, temporal_agg=temporal_agg, obs_horizon=2)
            actions = []
            for t in range(20):
                assert len(chunker.observe(t)) == 2
                actions.append(np.asarray(chunker.play(kind(chunks[t]) if chunker.query_due else None)))
            played.append(np.stack(actions))
        np.testing.assert_allclose(played[0], played[1], rtol=1e-12)
        assert temporal_agg or np.array_equal(played[0][5], chunks[4, 1].numpy())  # step 5 plays chunk 4's second


def test_ensembler_reset_and_k():
    chunks = torch.rand(8, 4, 2) + 0.1
    ensembler = TemporalEnsembler(4, k=0.5)
    first = torch.stack([ensembler(chunks[t]) for t in range(8)])
    ensembler.reset()
    second = torch.stack([ensembler(chunks[t]) for t in range(8)])
    assert torch.equal(first, second)
    assert torch.equal(first, original_full_buffer_ensemble(chunks, k=0.5))
    assert not torch.allclose(first, original_full_buffer_ensemble(chunks, k=0.01))


def test_summary_text_matches_original_layout():
    text = summary_text(highest_rewards=[4, 2, 4, 0], episode_returns=[10, 5, 20, 0], max_reward=4)
    assert text == ('\nSuccess rate: 0.5\nAverage return: 8.75\n\n'
                    'Reward >= 0: 4/4 = 100.0%\n'
                    'Reward >= 1: 3/4 = 75.0%\n'
                    'Reward >= 2: 3/4 = 75.0%\n'
                    'Reward >= 3: 2/4 = 50.0%\n'
                    'Reward >= 4: 2/4 = 50.0%\n')


def test_result_file_content(tmp_path):
    returns, highest = [10, 5, 20], [4, 2, 4]
    summary = summary_text(highest, returns, 4)
    path = tmp_path / result_file_name('policy_best.ckpt')
    write_result_file(str(path), summary, returns, highest)
    assert path.name == 'result_policy_best.txt'
    assert path.read_text() == summary + '[10, 5, 20]\n\n[4, 2, 4]'
    assert [p.name for p in tmp_path.iterdir()] == ['result_policy_best.txt']  # no temporary left


def test_result_file_name_of_other_checkpoints():
    assert result_file_name('policy_epoch_100_seed_0.ckpt') == 'result_policy_epoch_100_seed_0.txt'
    assert result_file_name('policy_last.ckpt') == 'result_policy_last.txt'


def test_episode_outcome_plain_numbers_and_missing_rewards():
    episode_return, highest = episode_outcome([None, 0, 1, 3, np.int64(2)])
    assert (episode_return, highest) == (6, 3)
    assert type(episode_return) is int  # written as 6, not np.int64(6), in the result file
    assert rollout_line(3, 6, 3, 4) == ('Rollout 3\nepisode_return=6, episode_highest_reward=3, '
                                        'env_max_reward=4, Success: False')


class RecordingPolicy:
    """Stands in for a policy (the interface the controller calls): records its inputs, returns
    chunk number n filled with n."""

    def __init__(self, num_queries, action_dim=2, action_horizon=None, obs_horizon=1):
        self.calls, self.chunk_size, self.action_dim = [], num_queries, action_dim
        self.action_horizon, self.obs_horizon = action_horizon or num_queries, obs_horizon

    def reset(self):
        pass

    def action_chunk(self, qpos, image):
        self.calls.append((qpos.clone(), image.clone()))
        return torch.full((1, self.chunk_size, self.action_dim), float(len(self.calls)))


def run_controller(policy, steps, temporal_agg=False):
    controller = ChunkedController(policy, temporal_agg)
    return [controller(torch.full((1, 3), float(t)), torch.full((1, 1, 3, 2, 2), float(t)))[0]
            for t in range(steps)]


def test_controller_plays_each_chunk_then_queries_again():
    policy = RecordingPolicy(num_queries=4)
    assert run_controller(policy, 10) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert [q[0, 0].item() for q, _ in policy.calls] == [0, 4, 8]  # queried at steps 0, 4, 8


def test_controller_action_horizon_and_observation_history():
    policy = RecordingPolicy(num_queries=6, action_horizon=2, obs_horizon=3)
    assert run_controller(policy, 5) == [1, 1, 2, 2, 3]
    qpos, image = policy.calls[2]  # the query at step 4 sees steps 2, 3, 4
    assert qpos.shape == (1, 3, 3) and image.shape == (1, 3, 1, 3, 2, 2)
    assert qpos[0, :, 0].tolist() == [2, 3, 4]
    assert policy.calls[0][0][0, :, 0].tolist() == [0, 0, 0]  # step 0 repeated, as in training


def test_controller_with_temporal_agg_queries_every_step():
    policy = RecordingPolicy(num_queries=3)
    actions = run_controller(policy, 4, temporal_agg=True)
    assert len(policy.calls) == 4
    w = np.exp(-0.01 * np.arange(3))
    np.testing.assert_allclose(actions, [1, np.average([1, 2], weights=w[:2]), np.average([1, 2, 3], weights=w),
                                         np.average([2, 3, 4], weights=w)])


### End to end on tiny untrained checkpoints
def tiny_stats(state_dim=14):
    """Statistics that keep an untrained policy's actions close to the start pose."""
    return start_pose_stats(START_ARM_POSE[:6], 1.0, 0.02, state_dim)


@pytest.fixture
def tiny_ckpt_dir(tmp_path, tiny_act_config):
    """A checkpoint directory with an untrained tiny ACT and its dataset_stats.pkl."""
    return write_tiny_checkpoint(tmp_path / 'ckpt', tiny_act_config, tiny_stats())


def read_video(path):
    import imageio
    with imageio.get_reader(str(path), format='FFMPEG') as reader:
        return [frame for frame in reader]


def test_two_rollouts_write_result_file_and_videos(tiny_ckpt_dir, tiny_act_config, capsys):
    config = eval_config(tiny_ckpt_dir, tiny_act_config, episode_len=6)
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
    config = eval_config(tiny_ckpt_dir, tiny_act_config, temporal_agg=True, episode_len=4, save_video=False)
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
    config = eval_config(tiny_ckpt_dir, dict(tiny_act_config, pretrained_backbone=True))
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
    config = eval_config(tiny_ckpt_dir, tiny_act_config)
    with pytest.raises(FileNotFoundError, match=r'policy_missing\.ckpt.*imitate_episodes\.py'):
        eval_bc(config, 'policy_missing.ckpt')


def test_missing_stats_names_file_and_training_command(tiny_ckpt_dir, tiny_act_config):
    os.remove(tiny_ckpt_dir / 'dataset_stats.pkl')
    with pytest.raises(FileNotFoundError, match=r'dataset_stats\.pkl.*imitate_episodes\.py'):
        eval_bc(eval_config(tiny_ckpt_dir, tiny_act_config), 'policy_best.ckpt')


def test_stats_of_another_state_size_is_a_clear_error(tiny_ckpt_dir, tiny_act_config):
    with open(tiny_ckpt_dir / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(tiny_stats(state_dim=10), f)
    with pytest.raises(ValueError, match=r"dataset_stats\.pkl: 'qpos_mean' has shape \(10,\)"):
        eval_bc(eval_config(tiny_ckpt_dir, tiny_act_config), 'policy_best.ckpt')


def test_checkpoint_of_another_chunk_size_is_a_clear_error(tiny_ckpt_dir, tiny_act_config):
    config = eval_config(tiny_ckpt_dir, dict(tiny_act_config, num_queries=7))
    with pytest.raises(ValueError, match=r'policy_best\.ckpt does not match'):
        eval_bc(config, 'policy_best.ckpt')


@pytest.mark.parametrize('key, value', [('eval_workers', 0), ('num_rollouts', 0)])
def test_bad_counts(tiny_ckpt_dir, tiny_act_config, key, value):
    with pytest.raises(ValueError, match=key):
        eval_bc(eval_config(tiny_ckpt_dir, tiny_act_config, **{key: value}), 'policy_best.ckpt')


def test_no_display_no_video_other_checkpoint(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    os.replace(tiny_ckpt_dir / 'policy_best.ckpt', tiny_ckpt_dir / 'policy_last.ckpt')
    config = eval_config(tiny_ckpt_dir, tiny_act_config, onscreen_render=True, num_rollouts=1, episode_len=2,
                         save_video=False)
    with pytest.warns(UserWarning, match='no display'):
        eval_bc(config, 'policy_last.ckpt')
    assert (tiny_ckpt_dir / 'result_policy_last.txt').is_file()
    assert not list(tiny_ckpt_dir.glob('*.mp4'))


def test_the_onscreen_view_shows_the_camera_the_tasks_simulation_names(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    from evaluation import rollout
    from simulation import simulation_of
    shown = []

    class View:
        def __init__(self, pause):
            pass

        def show(self, frame):
            shown.append(frame)

        def close(self):
            pass
    monkeypatch.setattr(rollout, 'display_available', lambda: True)
    monkeypatch.setattr(rollout, 'OnscreenView', View)
    cameras = []
    run_rollout = rollout.Evaluator.rollout
    monkeypatch.setattr(rollout.Evaluator, 'rollout', lambda self, *a, **k: cameras.append(self.view_camera)
                        or run_rollout(self, *a, **k))
    config = eval_config(tiny_ckpt_dir, tiny_act_config, onscreen_render=True, num_rollouts=1, episode_len=2,
                         save_video=False)
    eval_bc(config, 'policy_best.ckpt')
    assert cameras == [simulation_of(TASK).view_camera] and len(shown) == 2 and shown[0].ndim == 3


def test_real_robot_path_with_simulated_driver(tiny_ckpt_dir, tiny_act_config, monkeypatch):
    import real_robot
    opened = []
    open_grippers = real_robot.open_grippers
    monkeypatch.setattr(real_robot, 'open_grippers', lambda env, backend: opened.append(backend) or
                        open_grippers(env, backend))
    policy_config = dict(tiny_act_config, camera_names=['cam_high'])
    config = eval_config(tiny_ckpt_dir, policy_config, task_name='aloha_wear_shoe', real_robot=True,
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
    from sim_env import sample_object_pose
    policy_config = {'camera_names': ['top'], 'num_queries': 4, 'action_horizon': 2, 'down_dims': (16, 32),
                     'num_inference_steps': 2, 'lr': 1e-3, 'pretrained_backbone': False}
    stats = tiny_stats()
    stats.update(action_min=stats['action_mean'] - 0.5, action_max=stats['action_mean'] + 0.5)
    write_tiny_checkpoint(tmp_path, policy_config, stats, 'Diffusion')
    config = eval_config(tmp_path, policy_config, policy_class='Diffusion', episode_len=4, save_video=False)
    sequential = list(rollout_results(config, 'policy_best.ckpt'))
    assert not np.allclose(sequential[0]['final_qpos'], sequential[1]['final_qpos'], atol=1e-4)

    np.random.seed(1000)
    pose_of_rollout_1 = [sample_object_pose(TASK, rng=np.random) for _ in range(2)][1]
    evaluator = Evaluator(config, load_policy(config, 'policy_best.ckpt'), load_stats(config))
    torch.manual_seed(123)  # whatever state the process is in
    alone = evaluator.rollout(1, pose_of_rollout_1)
    np.testing.assert_allclose(alone['final_qpos'], sequential[1]['final_qpos'], atol=1e-6)


def spoil_action_head(ckpt_dir, value):
    """The checkpoint's action head made to give `value` (NaN, or a huge action) at every step."""
    path = ckpt_dir / 'policy_best.ckpt'
    state = torch.load(path)
    state['model.action_head.weight'].zero_()
    state['model.action_head.bias'].fill_(value)
    torch.save(state, path)


@pytest.mark.parametrize('workers', [1, 2])
def test_a_nan_action_ends_its_rollout_and_the_evaluation_goes_on(tiny_ckpt_dir, tiny_act_config, workers, capsys):
    spoil_action_head(tiny_ckpt_dir, float('nan'))
    config = eval_config(tiny_ckpt_dir, tiny_act_config, episode_len=6, eval_workers=workers)
    success_rate, _ = eval_bc(config, 'policy_best.ckpt')
    out = capsys.readouterr().out
    assert success_rate == 0.0
    assert out.count("Success: False (ended at step 0: the policy's action holds non-finite values (nan at index 0, "
                     "14 of 14); not sent)") == 2
    assert (tiny_ckpt_dir / 'result_policy_best.txt').is_file() and (tiny_ckpt_dir / 'report.html').is_file()
    assert 'ended at step 0' in (tiny_ckpt_dir / 'report.html').read_text()


def test_physics_that_diverge_end_the_rollout_with_mujocos_warning(tiny_ckpt_dir, tiny_act_config, capsys,
                                                                  monkeypatch):
    from dm_control.rl import control
    step = control.Environment.step

    def diverging(env, action):  # MuJoCo's own warning, raised as dm_control raises it, at step 3
        if env.physics.data.time > 2.5 * env.control_timestep():
            raise control.PhysicsError('Physics state is invalid. Warning(s) raised: mjWARN_BADQACC')
        return step(env, action)
    monkeypatch.setattr(control.Environment, 'step', diverging)
    eval_bc(eval_config(tiny_ckpt_dir, tiny_act_config, episode_len=6, save_video=False), 'policy_best.ckpt')
    out = capsys.readouterr().out
    assert out.count('Success: False (ended at step 3: the simulation diverged (Physics state is invalid. '
                     'Warning(s) raised: mjWARN_BADQACC))') == 2
    assert (tiny_ckpt_dir / 'result_policy_best.txt').is_file() and (tiny_ckpt_dir / 'report.html').is_file()
