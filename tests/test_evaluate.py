"""Evaluation helpers: temporal ensembling, the summary text and the result file."""
import numpy as np
import pytest
import torch

from evaluate import (ChunkedController, TemporalEnsembler, episode_outcome, result_file_name, rollout_line, summary_text,
                      write_result_file)


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
    ensembler = TemporalEnsembler(K, A, **kwargs)
    return torch.cat([ensembler(chunks[t:t + 1]) for t in range(T)]), ensembler


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


def test_ensembler_reset_and_k():
    chunks = torch.rand(8, 4, 2) + 0.1
    ensembler = TemporalEnsembler(4, 2, k=0.5)
    first = torch.cat([ensembler(chunks[t:t + 1]) for t in range(8)])
    ensembler.reset()
    second = torch.cat([ensembler(chunks[t:t + 1]) for t in range(8)])
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
    """Stands in for a policy: records its inputs, returns chunk number n filled with n."""

    def __init__(self, num_queries, action_dim=2, **attributes):
        self.calls, self.num_queries, self.action_dim = [], num_queries, action_dim
        self.__dict__.update(attributes)

    def __call__(self, qpos, image):
        self.calls.append((qpos.clone(), image.clone()))
        return torch.full((1, self.num_queries, self.action_dim), float(len(self.calls)))


def run_controller(policy, steps, temporal_agg=False):
    controller = ChunkedController(policy, policy.num_queries, temporal_agg, policy.action_dim, 'cpu')
    return [controller(t, torch.full((1, 3), float(t)), torch.full((1, 1, 3, 2, 2), float(t)))[0]
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
