"""Diffusion policy: UNet and keypoint layers, training signal, sampling, EMA, checkpoints,
augmentation, bad settings, and a short imitate_episodes.py run with an evaluation rollout."""
import json
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from policies import diffusion as dp
from policies import diffusion_nets as nets
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TINY_IMAGE_HW, eval_config

TINY_DOWN_DIMS = (16, 32)


def tiny_config(**overrides):
    """A tiny Diffusion policy_config: 2-level UNet of widths 16/32, chunk 5, one camera."""
    config = {'camera_names': ['top'], 'num_queries': 5, 'state_dim': 14, 'action_dim': 14,
              'down_dims': TINY_DOWN_DIMS, 'lr': 1e-3, 'pretrained_backbone': False}
    config.update(overrides)
    return config


def observation(batch=2, num_cams=1, obs_horizon=1, state_dim=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = (batch,) if obs_horizon == 1 else (batch, obs_horizon)
    return torch.randn(*lead, state_dim, generator=g), torch.rand(*lead, num_cams, 3, *TINY_IMAGE_HW, generator=g)


pytestmark = pytest.mark.usefixtures('one_thread')


def sample(policy, qpos, image, seed):
    torch.manual_seed(seed)
    return policy(qpos, image)


### Layers
def test_step_embedding_is_sines_then_cosines():
    emb = nets.SinusoidalStepEmbedding(4)(torch.tensor([3.0]))
    k = 3.0
    expected = [math.sin(k), math.sin(k / 10000), math.cos(k), math.cos(k / 10000)]
    assert torch.allclose(emb[0], torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize('length', [5, 7, 8, 16])
def test_unet_keeps_any_chunk_length(length):
    unet = nets.ConditionalUnet1D(3, global_cond_dim=6, down_dims=(8, 16, 32), kernel_size=3, n_groups=4)
    out = unet(torch.randn(2, length, 3), torch.tensor([0, 7]), torch.randn(2, 6))
    assert out.shape == (2, length, 3)


def test_unet_uses_step_and_condition():
    unet = nets.ConditionalUnet1D(3, global_cond_dim=6, down_dims=TINY_DOWN_DIMS)
    x, cond = torch.randn(1, 8, 3), torch.randn(1, 6)
    base = unet(x, 1, cond)
    assert not torch.allclose(base, unet(x, 30, cond))
    assert not torch.allclose(base, unet(x, 1, cond + 1))


def test_spatial_softmax_finds_a_peak_on_a_non_square_map():
    layer = nets.SpatialSoftmax(1, num_keypoints=1)
    with torch.no_grad():
        layer.nets.weight.fill_(1.0)
        layer.nets.bias.zero_()
    h, w, row, col = 5, 9, 1, 6
    features = torch.zeros(1, 1, h, w)
    features[0, 0, row, col] = 100.0  # the softmax puts all its mass here
    keypoint = layer(features)[0, 0]
    assert torch.allclose(keypoint, torch.tensor([-1 + 2 * col / (w - 1), -1 + 2 * row / (h - 1)]), atol=1e-4)


def test_keypoint_layer_follows_the_image_size():
    policy = dp.DiffusionPolicy(tiny_config()).eval()
    for hw in [(24, 32), (40, 40)]:
        qpos, _ = observation()
        assert policy(qpos, torch.rand(2, 1, 3, *hw)).shape == (2, 5, 14)


### Training signal and sampling
def toy_batch(batch=8, image_hw=TINY_IMAGE_HW, seed=0):
    """Actions that are a smooth function of qpos, with a per-step ramp, inside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    qpos = torch.randn(batch, 14, generator=g)
    image = torch.rand(batch, 1, 3, *image_hw, generator=g)
    ramp = torch.linspace(0, 0.3, 5).view(1, 5, 1)
    actions = (torch.tanh(qpos).unsqueeze(1) * 0.6 + ramp).clamp(-1, 1)  # (B, 5, 14)
    is_pad = torch.zeros(batch, 5, dtype=torch.bool)
    is_pad[0, -2:] = True
    return qpos, image, actions, is_pad


def test_tiny_policy_drives_its_loss_well_below_the_start():
    # The image trunk is frozen and the frames are 16x16 to keep this quick on a CPU; the keypoint
    # layer, projection and UNet train through the policy's own loss, optimizer and EMA hook.
    torch.manual_seed(0)
    policy = dp.DiffusionPolicy(tiny_config(down_dims=(64, 128), augment_images=False)).train()
    policy.nets['policy']['backbones'].requires_grad_(False)
    optimizer = policy.configure_optimizers()
    batch = toy_batch(batch=16, image_hw=(16, 16))
    history = []
    for _ in range(150):
        loss = policy(*batch)['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.post_step()
        history.append(loss.item())
    start, end = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert end < 0.8 * start, (start, end)


def test_loss_ignores_padded_steps_the_act_plus_plus_way():
    policy = dp.DiffusionPolicy(tiny_config()).eval()
    qpos, image, actions, _ = toy_batch(batch=2)
    all_pad = torch.ones(2, 5, dtype=torch.bool)
    assert policy(qpos, image, actions, all_pad)['loss'].item() == 0.0
    torch.manual_seed(3)
    full = policy(qpos, image, actions, torch.zeros(2, 5, dtype=torch.bool))['loss']
    torch.manual_seed(3)
    none = policy(qpos, image, actions)['loss']
    assert full.item() == none.item() > 0


def test_longer_action_sequences_are_cut_to_the_chunk():
    policy = dp.DiffusionPolicy(tiny_config()).eval()
    qpos, image, actions, is_pad = toy_batch(batch=2)
    long_actions = torch.cat([actions, torch.zeros(2, 15, 14)], dim=1)
    long_pad = torch.cat([is_pad, torch.ones(2, 15, dtype=torch.bool)], dim=1)
    torch.manual_seed(1)
    short = policy(qpos, image, actions, is_pad)['loss']
    torch.manual_seed(1)
    assert policy(qpos, image, long_actions, long_pad)['loss'].item() == short.item()


def test_sampling_is_deterministic_for_a_seed():
    policy = dp.DiffusionPolicy(tiny_config()).eval()
    qpos, image = observation()
    first = sample(policy, qpos, image, seed=5)
    assert torch.equal(first, sample(policy, qpos, image, seed=5))
    assert not torch.equal(first, sample(policy, qpos, image, seed=6))


@pytest.mark.parametrize('scheduler', ['ddim', 'ddpm', 'dpmsolver'])
def test_every_scheduler_samples_chunks_in_range(scheduler):
    policy = dp.DiffusionPolicy(tiny_config(scheduler=scheduler, num_queries=7)).eval()
    qpos, image = observation(batch=3)
    actions = sample(policy, qpos, image, seed=0)
    assert actions.shape == (3, 7, 14) and actions.dtype == torch.float32
    assert torch.isfinite(actions).all() and actions.abs().max() <= 1.0 + 1e-5  # clipped x0, scaled actions
    expected = {'dpmsolver': 'DPMSolverMultistepScheduler'}.get(scheduler, scheduler.upper() + 'Scheduler')
    assert policy.noise_scheduler.__class__.__name__ == expected


@pytest.mark.parametrize('steps', [1, 3, 7, 10, 50])
def test_dpmsolver_samples_on_ddims_timesteps(steps):
    ddim, dpm = dp.make_noise_scheduler('ddim', dp.DEFAULTS), dp.make_noise_scheduler('dpmsolver', dp.DEFAULTS)
    for scheduler in (ddim, dpm):
        dp.set_sampling_steps(scheduler, steps)
    assert dpm.timesteps.tolist() == ddim.timesteps.tolist() == dp.ddim_timesteps(50, steps)
    assert dpm.sigmas[-1] == 0 and len(dpm.sigmas) == steps + 1  # the last step lands on the clean chunk


class Oracle(nn.Module):
    """A denoiser that knows the clean chunk: from x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise it
    returns the noise ('epsilon') or x_0 ('sample') exactly. In sampling its one FiLM pair carries the
    step where the UNet's carry the condition."""

    def __init__(self, chunk, alphas_cumprod, prediction_type):
        super().__init__()
        self.chunk, self.alphas_cumprod = chunk, alphas_cumprod  # (B, T, A), (num_train_timesteps,)
        self.prediction_type = prediction_type

    def condition(self, timestep, global_cond):
        return [(timestep, timestep)]  # (S B,) each

    def forward(self, sample, timestep, global_cond, films=None):
        if self.prediction_type == 'sample':
            return self.chunk.expand_as(sample)
        a = self.alphas_cumprod[timestep if films is None else films[0][0]].view(-1, 1, 1)  # (B, 1, 1)
        return (sample - a.sqrt() * self.chunk) / (1 - a).sqrt()


@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
@pytest.mark.parametrize('scheduler', ['ddim', 'ddpm', 'dpmsolver'])
def test_sampling_with_an_exact_denoiser_returns_the_chunk(scheduler, prediction_type):
    # The sampling loop (FiLM computed once per query, the scheduler's steps) must turn exact
    # predictions into the clean chunk; a wrong step, schedule or FiLM row would leave it noisy.
    policy = dp.DiffusionPolicy(tiny_config(scheduler=scheduler, prediction_type=prediction_type,
                                            num_queries=7, num_inference_steps=5)).eval()
    qpos, image = observation(batch=3)
    chunk = torch.rand(3, 7, 14) * 1.6 - 0.8
    policy.ema_nets['policy']['noise_pred_net'] = Oracle(chunk, policy.noise_scheduler.alphas_cumprod,
                                                         prediction_type)
    assert torch.allclose(sample(policy, qpos, image, seed=0), chunk, atol=1e-4)


@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
def test_loss_targets_the_noise_or_the_chunk(prediction_type):
    policy = dp.DiffusionPolicy(tiny_config(prediction_type=prediction_type)).train()
    qpos, image, actions, _ = toy_batch(batch=2)
    policy.nets['policy']['noise_pred_net'] = Oracle(actions, policy.noise_scheduler.alphas_cumprod,
                                                     prediction_type)
    assert policy(qpos, image, actions)['loss'].item() < 1e-8
    wrong = 'sample' if prediction_type == 'epsilon' else 'epsilon'
    policy.nets['policy']['noise_pred_net'] = Oracle(actions, policy.noise_scheduler.alphas_cumprod, wrong)
    assert policy(qpos, image, actions)['loss'].item() > 0.1


def test_observation_horizon_two():
    policy = dp.DiffusionPolicy(tiny_config(obs_horizon=2))
    qpos, image = observation(batch=2, obs_horizon=2)
    actions, is_pad = torch.rand(2, 5, 14) * 2 - 1, torch.zeros(2, 5, dtype=torch.bool)
    assert policy.train()(qpos, image, actions, is_pad)['loss'].item() > 0
    assert policy.eval()(qpos, image).shape == (2, 5, 14)
    with pytest.raises(ValueError, match='--obs_horizon 2'):
        policy(*observation(batch=2))


### EMA and checkpoints
def test_ema_follows_the_diffusers_warm_up_toward_the_weights():
    policy = dp.DiffusionPolicy(tiny_config(ema_power=0.75))
    param = policy.nets['policy']['linears'][0].bias
    ema_param = policy.ema_nets['policy']['linears'][0].bias
    start = ema_param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    policy.post_step()  # step 1: decay 0, the average jumps to the weights
    assert torch.equal(ema_param, param)
    with torch.no_grad():
        param.add_(1.0)
    policy.post_step()  # step 2: decay 1 - (1 + 1) ** -0.75
    decay = 1 - 2 ** -0.75
    assert torch.allclose(ema_param, decay * (start + 1) + (1 - decay) * param, atol=1e-6)
    gaps = []
    for _ in range(5):
        policy.post_step()
        gaps.append((ema_param - param).abs().max().item())
    assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] > 0


def train_a_little(policy, steps=3):
    optimizer = policy.configure_optimizers()
    policy.train()
    for _ in range(steps):
        loss = policy(*toy_batch(batch=2))['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.post_step()
    return policy.eval()


def test_save_load_round_trip_with_ema(tmp_path):
    torch.manual_seed(0)
    trained = train_a_little(dp.DiffusionPolicy(tiny_config()))
    path = tmp_path / 'policy_best.ckpt'
    torch.save(trained.serialize(), path)
    torch.manual_seed(1)
    loaded = dp.DiffusionPolicy(tiny_config())
    loaded.deserialize(torch.load(path))
    loaded.eval()
    for mine, theirs in [(trained.nets, loaded.nets), (trained.ema_nets, loaded.ema_nets)]:
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.ema.optimization_step == 3
    qpos, image = observation()
    assert torch.equal(sample(trained, qpos, image, 0), sample(loaded, qpos, image, 0))
    unet, ema_unet = trained.nets['policy']['noise_pred_net'], trained.ema_nets['policy']['noise_pred_net']
    assert all(not torch.equal(p, q) for p, q in zip(unet.parameters(), ema_unet.parameters()))  # a real average


def test_inference_runs_the_ema_weights():
    torch.manual_seed(0)
    source = dp.DiffusionPolicy(tiny_config()).eval()
    other = dp.DiffusionPolicy(tiny_config()).eval()
    other.deserialize({'nets': other.nets.state_dict(), 'ema': source.nets.state_dict()})
    qpos, image = observation()
    assert torch.equal(sample(other, qpos, image, 0), sample(source, qpos, image, 0))


def test_act_plus_plus_checkpoint_layout_loads():
    """act-plus-plus saved {'nets', 'ema'} with robomimic's constant keypoint grid and temperature."""
    policy = dp.DiffusionPolicy(tiny_config())
    nets = dict(policy.nets.state_dict())
    nets.update({'policy.pools.0.pos_x': torch.zeros(1, 300), 'policy.pools.0.pos_y': torch.zeros(1, 300),
                 'policy.pools.0.temperature': torch.ones(1)})
    policy.deserialize({'nets': nets, 'ema': nets})
    assert 'policy.noise_pred_net.down_modules.0.0.blocks.0.block.0.weight' in nets
    assert 'policy.backbones.0.nets.4.0.conv1.weight' in nets  # torchvision names under robomimic's Sequential


def test_checkpoint_mismatches_are_explained():
    policy = dp.DiffusionPolicy(tiny_config())
    with pytest.raises(KeyError, match="'nets'.*ACT or CNNMLP"):
        policy.deserialize(policy.nets.state_dict())
    other_actions = dp.DiffusionPolicy(tiny_config(action_dim=10)).serialize()
    with pytest.raises(ValueError, match='action_dim'):
        policy.deserialize(other_actions)
    two_cams = dp.DiffusionPolicy(tiny_config(camera_names=['top', 'wrist'])).serialize()
    with pytest.raises(ValueError, match='unexpected keys.*cameras'):
        policy.deserialize(two_cams)


def test_checkpoint_without_ema_falls_back_to_the_weights():
    policy = dp.DiffusionPolicy(tiny_config())
    source = dp.DiffusionPolicy(tiny_config())
    with pytest.warns(UserWarning, match='no EMA'):
        policy.deserialize({'nets': source.nets.state_dict(), 'ema': None})
    assert all(torch.equal(a, b) for a, b in zip(policy.ema_nets.parameters(), source.nets.parameters()))


### Augmentation
def test_augmentation_keeps_shapes_and_range_and_varies():
    images = torch.rand(6, 3, 24, 32)
    out = nets.augment_images(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)
    assert not torch.allclose(out[0], out[1])  # parameters drawn per image
    assert not torch.allclose(nets.augment_images(images), out)


def test_centre_crop_zooms_around_the_centre():
    ramp = torch.linspace(0, 1, 33).view(1, 1, 1, 33).expand(1, 3, 21, 33).contiguous()
    out = nets.centre_crop(ramp)
    assert out.shape == ramp.shape
    assert torch.allclose(out[..., 16], ramp[..., 16], atol=1e-5)  # centre column stays
    assert out[..., 0].mean() > ramp[..., 0].mean() and out[..., -1].mean() < ramp[..., -1].mean()


def test_augmentation_only_in_training():
    policy = dp.DiffusionPolicy(tiny_config())
    frames = torch.rand(2, 3, 24, 32)
    policy.train()
    assert not torch.allclose(policy._prepare_images(frames), policy._prepare_images(frames))
    policy.eval()
    assert torch.equal(policy._prepare_images(frames), nets.centre_crop(frames))
    plain = dp.DiffusionPolicy(tiny_config(augment_images=False)).train()
    assert torch.equal(plain._prepare_images(frames), frames)


### Settings
@pytest.mark.parametrize('overrides, message', [
    ({'scheduler': 'euler'}, "--scheduler must be one of ddim, ddpm, dpmsolver; got 'euler'"),
    ({'prediction_type': 'v_prediction'}, "--prediction_type must be one of epsilon, sample; got 'v_prediction'"),
    ({'action_horizon': 6}, r'--action_horizon must be between 1 and the 5 actions a query returns'),
    ({'obs_horizon': 0}, '--obs_horizon must be >= 1'),
    ({'num_inference_steps': 60}, '--num_inference_steps must be between 1 and the 50'),
    ({'amp': 'fp8'}, '--amp must be one of off, bf16, fp16'),
    ({'camera_names': []}, 'at least one camera'),
    ({'down_dims': (16, 30)}, r'--down_dims must be .* a multiple of the 8 group-norm groups; got \[16, 30\]'),
    ({'down_dims': ()}, '--down_dims must be one or more'),
])
def test_bad_settings_name_the_flag(overrides, message):
    with pytest.raises(ValueError, match=message):
        dp.resolve_config(tiny_config(**overrides))


def test_missing_keys_and_defaults():
    with pytest.raises(KeyError, match='num_queries'):
        dp.resolve_config({'camera_names': ['top']})
    cfg = dp.resolve_config(tiny_config(action_horizon=None, scheduler=None, weight_decay=None))
    assert cfg['action_horizon'] == 5 and cfg['scheduler'] == 'ddim' and cfg['weight_decay'] == 1e-6
    assert dp.resolve_config(tiny_config(num_queries=100))['action_horizon'] == 8
    assert cfg['num_train_timesteps'] == 50 and cfg['num_inference_steps'] == 10 and cfg['ema_power'] == 0.75


def test_bad_input_shapes():
    policy = dp.DiffusionPolicy(tiny_config()).eval()
    qpos, image = observation()
    with pytest.raises(ValueError, match=r'qpos \(B, 14\) and image \(B, 1, 3, H, W\)'):
        policy(qpos[:, :10], image)
    with pytest.raises(ValueError, match=r'actions must be \(B, T >= 5, 14\)'):
        policy(qpos, image, torch.zeros(2, 3, 14))


def test_optimizer_settings():
    policy = dp.DiffusionPolicy(tiny_config(lr=2e-4))
    group = policy.configure_optimizers().param_groups[0]
    assert group['lr'] == 2e-4 and group['weight_decay'] == 1e-6
    assert sum(p.numel() for p in group['params']) == sum(p.numel() for p in policy.nets.parameters())


def test_import_does_not_load_diffusers_and_make_policy_builds_it():
    code = ('import sys, policies.diffusion, policy; assert "diffusers" not in sys.modules; '
            'p = policy.make_policy("Diffusion", {"camera_names": ["top"], "num_queries": 4, "down_dims": (8, 16)}); '
            'assert type(p).__name__ == "DiffusionPolicy" and "diffusers" in sys.modules')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         timeout=PROCESS_TIMEOUT_S,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr


### End to end: imitate_episodes.py --policy_class Diffusion, then one evaluation rollout
def test_two_epoch_training_run_then_one_rollout(tiny_dataset, tmp_path):
    ckpt_dir = tmp_path / 'ckpt'
    flags = ['--task_name', 'sim_transfer_cube_scripted', '--ckpt_dir', str(ckpt_dir), '--policy_class', 'Diffusion',
             '--dataset_dir', tiny_dataset, '--num_episodes', '5', '--camera_names', 'top', '--batch_size', '2',
             '--num_epochs', '2', '--chunk_size', '5', '--lr', '1e-4', '--seed', '0', '--device', 'cpu',
             '--down_dims', *map(str, TINY_DOWN_DIMS), '--no-augment_images', '--prediction_type', 'sample']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, 'imitate_episodes.py', *flags], cwd=ROOT, capture_output=True, text=True,
                         timeout=PROCESS_TIMEOUT_S, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    for name in ('dataset_stats.pkl', 'policy_best.ckpt', 'policy_last.ckpt'):
        assert (ckpt_dir / name).is_file(), f'{name} missing: {sorted(os.listdir(ckpt_dir))}'
    checkpoint = torch.load(ckpt_dir / 'policy_last.ckpt')
    assert set(checkpoint) >= {'nets', 'ema'} and checkpoint['ema_step'] > 0
    with open(ckpt_dir / 'dataset_stats.pkl', 'rb') as f:
        stats = pickle.load(f)
    assert {'action_min', 'action_max'} <= set(stats)
    with open(ckpt_dir / 'config.json') as f:
        saved = json.load(f)['policy_config']
    assert saved['down_dims'] == list(TINY_DOWN_DIMS) and saved['augment_images'] is False
    assert saved['prediction_type'] == 'sample'

    from evaluation.rollout import eval_bc
    config = eval_config(ckpt_dir, tiny_config(lr=1e-4, prediction_type='sample'), policy_class='Diffusion',
                         episode_len=12, temporal_agg=True, num_rollouts=1, save_video=False)
    success_rate, avg_return = eval_bc(config, 'policy_best.ckpt', save_episode=False)
    assert 0.0 <= success_rate <= 1.0 and avg_return >= 0
    assert (ckpt_dir / 'result_policy_best.txt').is_file()
