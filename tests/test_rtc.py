"""Real-Time Chunking (policies/rtc.py): the soft mask, the guided clean chunk, guided sampling with a
denoiser whose answer is known, the executor's guide, and the settings that cannot go with it."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from cli.flags import UsageError
from policies import diffusion as dp
from policies.executor import ChunkExecutor, DelayedPolicy
from policies.rtc import Inpainting, guidance_weight, guided_clean_chunk, soft_mask
from tests.test_diffusion_policy import observation, tiny_config


def test_soft_mask_holds_the_delay_decays_over_the_overlap_and_frees_the_rest():
    weights = soft_mask(delay=2, overlap=6, horizon=8)
    c = np.array([4, 3, 2, 1]) / 5  # (H - s - i) / (H - s - d + 1) for i = 2..5, H - s = 6
    expected = [1, 1, *(c * (np.exp(c) - 1) / (math.e - 1)), 0, 0]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert np.all(np.diff(weights) <= 0)
    np.testing.assert_array_equal(soft_mask(delay=9, overlap=4, horizon=6), [1, 1, 1, 1, 0, 0])  # d past the queue
    np.testing.assert_array_equal(soft_mask(delay=0, overlap=0, horizon=3), [0, 0, 0])


def test_guidance_weight_is_the_flow_weight_at_the_matching_time_and_clipped():
    alpha, sigma = 0.6, 0.8
    tau = alpha / (alpha + sigma)
    r2 = (1 - tau) ** 2 / (tau ** 2 + (1 - tau) ** 2)
    assert guidance_weight(alpha, sigma, 100.0) == pytest.approx((1 - tau) / (tau * r2))
    assert guidance_weight(alpha, sigma, 100.0) == pytest.approx(1 / (alpha * sigma))  # alpha^2 + sigma^2 = 1
    assert guidance_weight(alpha, sigma, 1.0) == 1.0
    assert guidance_weight(0.0, 1.0, 5.0) == guidance_weight(1.0, 0.0, 5.0) == 5.0


def test_guided_clean_chunk_of_a_linear_denoiser():
    # x0 = k x_t has the Jacobian k I, so g = k W (Y - k x_t) and the guided x0 is k x_t + sigma w g.
    k, alpha, sigma = 0.5, 0.6, 0.8
    sample, target = torch.randn(1, 4, 2), torch.randn(1, 4, 2)
    inpainting = Inpainting(target, torch.tensor([1.0, 0.5, 0.0, 0.0]), max_weight=100.0)
    guided = guided_clean_chunk(lambda x: k * x, sample, alpha, sigma, inpainting)
    g = k * inpainting.weights[:, None] * (target - k * sample)
    torch.testing.assert_close(guided, k * sample + sigma / (alpha * sigma) * g)
    assert not guided.requires_grad
    torch.testing.assert_close(guided[:, 2:], k * sample[:, 2:])  # no weight, no guidance


class GaussianPosterior(nn.Module):
    """The exact denoiser of chunks whose every value is independently N(0, s^2): E[x0 | x_t] =
    alpha s^2 / (alpha^2 s^2 + sigma^2) x_t, answered as the noise or the clean chunk. Its Jacobian is
    diagonal, so guidance reaches only the weighted positions."""

    def __init__(self, alphas_cumprod, prediction_type, s=0.5):
        super().__init__()
        self.alphas_cumprod, self.prediction_type, self.s = alphas_cumprod, prediction_type, s

    def condition(self, timestep, global_cond):
        return [(timestep, timestep)]

    def forward(self, sample, timestep, global_cond, films=None):
        a = self.alphas_cumprod[films[0][0]].view(-1, 1, 1)  # (B, 1, 1)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        clean = alpha * self.s ** 2 / (a * self.s ** 2 + sigma ** 2) * sample
        return clean if self.prediction_type == 'sample' else (sample - alpha * clean) / sigma


def guided_and_free(prediction_type, scheduler, weights, target, max_weight):
    policy = dp.DiffusionPolicy(tiny_config(scheduler=scheduler, prediction_type=prediction_type, num_queries=6,
                                            num_inference_steps=10)).eval()
    policy.ema_nets['policy']['noise_pred_net'] = GaussianPosterior(policy.noise_scheduler.alphas_cumprod,
                                                                    prediction_type)
    qpos, image = observation(batch=1)
    torch.manual_seed(0)
    free = policy.action_chunk(qpos, image)
    torch.manual_seed(0)
    guided = policy.action_chunk(qpos, image, inpainting=Inpainting(target, torch.tensor(weights), max_weight))
    return free, guided


@pytest.mark.parametrize('max_weight, held_fraction', [(5.0, 0.2), (100.0, 0.002)])
@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
@pytest.mark.parametrize('scheduler', ['ddim', 'dpmsolver'])
def test_guided_sampling_holds_the_weighted_positions_and_leaves_the_free_ones(prediction_type, scheduler,
                                                                                max_weight, held_fraction):
    # The ceiling beta bounds the pull in the last, least noisy steps: the paper's 5 closes most of the
    # gap in 10 steps, a ceiling of 100 all of it.
    target = torch.full((1, 6, 14), 0.3)
    free, guided = guided_and_free(prediction_type, scheduler, [1.0, 1.0, 0.5, 0.0, 0.0, 0.0], target, max_weight)
    held = (guided[:, :2] - target[:, :2]).abs().mean()
    assert held < held_fraction * (free[:, :2] - target[:, :2]).abs().mean()
    assert (guided[:, 2] - target[:, 2]).abs().mean() < (free[:, 2] - target[:, 2]).abs().mean()
    torch.testing.assert_close(guided[:, 3:], free[:, 3:])  # the same noise, no weight: the same actions


def test_the_executor_hands_a_guided_query_the_queue_and_the_delay():
    guides = []

    def query(history, guide):
        guides.append(guide)
        t = executor.t
        return np.arange(t, t + 8, dtype=np.float64)[:, None]

    executor = ChunkExecutor(chunk_size=8, threshold=4, strategy='rtc')
    delayed = DelayedPolicy(query, executor, lambda seconds: 3)
    actions = [float(delayed(None)[0]) for _ in range(12)]
    assert actions == list(range(12))  # merged as replace: each step its own action
    assert guides[0] is None  # the first chunk: nothing queued
    queued, delay = guides[1]  # requested at step 4 with steps 4-7 queued
    assert [float(a[0]) for a in queued] == [4, 5, 6, 7] and delay == 3


def test_rtc_in_a_delayed_rollout_of_a_diffusion_policy():
    from evaluation.execution import DelayedController, Execution
    policy = dp.DiffusionPolicy(tiny_config(num_queries=6, action_horizon=3)).eval()
    controller = DelayedController(policy, Execution('rtc', threshold=3, delay_steps=2))
    qpos, image = observation(batch=1)
    torch.manual_seed(0)
    with torch.inference_mode():  # as the rollout steps: the queue and the observations are inference tensors
        actions = np.stack([controller(qpos, image) for _ in range(10)])
    assert actions.shape == (10, 14) and np.isfinite(actions).all()
    assert controller.result()['delays'][1:] == [2, 2, 2] and controller.result()['starved_steps'] == 0


@pytest.mark.parametrize('given, message', [
    ({'inference_delay': 2, 'execution': 'rtc', 'policy_class': 'ACT'}, r"--execution rtc guides a Diffusion"),
    ({'inference_delay': 2, 'max_guidance_weight': 3.0}, r'--max_guidance_weight is the ceiling'),
    ({'max_guidance_weight': 3.0}, r'--max_guidance_weight set the asynchronous execution'),
])
def test_rtc_flags_that_cannot_go_together(given, message):
    from cli.run_config import execution_settings
    with pytest.raises(UsageError, match=message):
        execution_settings({'task_name': 'sim_transfer_cube_scripted', 'policy_class': 'Diffusion', **given}, {})


def test_rtc_flags_make_the_settings():
    from cli.run_config import execution_settings
    args = {'task_name': 'sim_transfer_cube_scripted', 'policy_class': 'Diffusion', 'inference_delay': 5,
            'execution': 'rtc', 'max_guidance_weight': 2.0}
    execution = execution_settings(args, {})
    assert execution.strategy == 'rtc' and execution.max_guidance_weight == 2.0
    assert 'rtc (guidance weight at most 2)' in execution.describe()


def test_an_export_refuses_rtc():
    from deploy.runtime import RealtimeRunner
    with pytest.raises(ValueError, match=r"'rtc' guides the denoising through the policy's gradients"):
        RealtimeRunner(runner=None, strategy='rtc', threshold=None, stall_s=None)


@pytest.mark.parametrize('policy_class, expected', [('Diffusion', ['replace', 'ensemble', 'rtc']),
                                                    ('ACT', ['replace', 'ensemble'])])
def test_the_realtime_bench_runs_rtc_for_diffusion_only(tmp_path, policy_class, expected):
    from bench import realtime
    from checkpoints.folder import make_run_config, write_config
    policy_config = {'num_queries': 6, 'camera_names': ['top'], 'state_dim': 14, 'action_dim': 14}
    write_config(tmp_path, make_run_config(policy_class, policy_config, 'sim_transfer_cube_scripted', (8, 8)))
    assert realtime.strategies_of(str(tmp_path)) == expected
    args = dict(realtime.parse_args(['--ckpt_dir', str(tmp_path), '--delays', '5', '--strategies', 'rtc',
                                     '--queue_threshold', '3', '--no_synchronous', '--no_realtime']))
    expected = ['--inference_delay', '5', '--execution', 'rtc', '--queue_threshold', '3']
    assert realtime.cases(args) == {'rtc_d5': expected}


def test_the_guidance_bench_reports_each_ceiling(tmp_path, capfd):
    import json

    from bench import rtc_guidance
    from tests.helpers import write_tiny_episode
    from tests.test_export import TINY_DIFFUSION_CONFIG, tiny_run
    for i in range(2):
        write_tiny_episode(str(tmp_path / f'episode_{i}.hdf5'), camera_names=TINY_DIFFUSION_CONFIG['camera_names'],
                           seed=i)
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'Diffusion', dict(TINY_DIFFUSION_CONFIG, num_queries=6, obs_horizon=1))
    capfd.readouterr()
    threads = torch.get_num_threads()  # the bench sets its own; later tests compare runs bit for bit
    try:
        rtc_guidance.main(rtc_guidance.parse_args(['--ckpt_dir', ckpt_dir, '--ckpt', 'policy_best.ckpt',
                                                   '--dataset_dir', str(tmp_path), '--delay', '2',
                                                   '--queue_threshold', '4', '--betas', '5', '100',
                                                   '--observations', '2']))
    finally:
        torch.set_num_threads(threads)
    out = capfd.readouterr().out
    report = json.loads(out[out.index('{\n'):])  # after the policy's own messages
    assert set(report) >= {'unguided', 'beta_5.0', 'beta_100.0'}
    assert report['beta_100.0']['held'] <= report['unguided']['held']
