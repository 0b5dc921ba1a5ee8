"""LeRobot Diffusion checkpoints: read (both statistics layouts) with the actions LeRobot's pipeline
computes for the same noise (DDPM and DDIM, both prediction types, shared and per-camera encoders,
group and batch norm, FiLM with and without scale), and the settings that cannot be reproduced."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from checkpoints import lerobot_diffusion
from checkpoints.lerobot import read_lerobot_checkpoint
from cli import run_config
from convert_checkpoint import to_act, to_lerobot
from detr.resnet import build_resnet_trunk
from evaluation.rollout import load_policy, load_stats
from formats.lerobot import LeRobotFormatError
from formats.normalize import Normalizer
from policies.registry import get_policy_class, make_policy, resolve_policy_config
from tests.helpers import write_tiny_episode
from tests.test_lerobot_act import eval_args, write_lerobot_folder

STATE_DIM, ACTION_DIM = 5, 4
CAMERAS = ['front', 'wrist']
IMAGE_HW = (70, 90)  # the crop's feature map 2x3, the whole frame's 3x3: keypoints that move
EPS = 1e-8
TRUNK_NAMES = {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3', '7': 'layer4'}


pytestmark = pytest.mark.usefixtures('one_thread')


################ LeRobot's side, written from its format and model facts ################

def lerobot_config(**overrides):
    config = {
        'type': 'diffusion', 'n_obs_steps': 2, 'horizon': 8, 'n_action_steps': 4,
        'input_features': {'observation.state': {'type': 'STATE', 'shape': [STATE_DIM]},
                           **{f'observation.images.{cam}': {'type': 'VISUAL', 'shape': [3, *IMAGE_HW]}
                              for cam in CAMERAS}},
        'output_features': {'action': {'type': 'ACTION', 'shape': [ACTION_DIM]}},
        'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MIN_MAX', 'ACTION': 'MIN_MAX'},
        'vision_backbone': 'resnet18', 'crop_shape': [64, 80], 'crop_is_random': True,
        'pretrained_backbone_weights': None, 'use_group_norm': True, 'spatial_softmax_num_keypoints': 4,
        'use_separate_rgb_encoder_per_camera': False, 'down_dims': [16, 32], 'kernel_size': 3, 'n_groups': 4,
        'diffusion_step_embed_dim': 16, 'use_film_scale_modulation': True, 'noise_scheduler_type': 'DDPM',
        'num_train_timesteps': 10, 'beta_schedule': 'squaredcos_cap_v2', 'beta_start': 0.0001, 'beta_end': 0.02,
        'prediction_type': 'epsilon', 'clip_sample': True, 'clip_sample_range': 1.0, 'num_inference_steps': None,
    }
    config.update(overrides)
    return config


def lerobot_stats(seed=1, action_dim=ACTION_DIM):
    g = torch.Generator().manual_seed(seed)
    low_state, low_action = torch.randn(STATE_DIM, generator=g), torch.randn(action_dim, generator=g)
    stats = {'observation.state.min': low_state,
             'observation.state.max': low_state + torch.rand(STATE_DIM, generator=g) + 0.1,
             'action.min': low_action, 'action.max': low_action + torch.rand(action_dim, generator=g) + 0.1}
    for cam in CAMERAS:
        stats[f'observation.images.{cam}.mean'] = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25
        stats[f'observation.images.{cam}.std'] = torch.rand(3, 1, 1, generator=g) * 0.2 + 0.1
    return stats


def _trunk(w, prefix, cfg):
    """The ResNet trunk of LeRobot's rgb encoder (torchvision's layers up to layer4) at `prefix`."""
    norm = ((lambda c: torch.nn.GroupNorm(c // 16, c)) if cfg['use_group_norm'] else torch.nn.BatchNorm2d)
    trunk = build_resnet_trunk(cfg['vision_backbone'], norm_layer=norm)
    own = {}
    for key, value in w.items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix):].partition('.')
            own[f'{TRUNK_NAMES[index]}.{rest}'] = value
    trunk.load_state_dict(own)
    return trunk.eval()


def _rgb_encoder(image, w, p, cfg):
    """DiffusionRgbEncoder in evaluation: centre crop, trunk, spatial softmax, linear, ReLU."""
    if cfg['crop_shape'] is not None:
        (h, wd), (H, W) = cfg['crop_shape'], image.shape[-2:]
        top, left = int(round((H - h) / 2.0)), int(round((W - wd) / 2.0))
        image = image[..., top:top + h, left:left + wd]
    fmap = _trunk(w, p + 'backbone.', cfg)(image)
    maps = F.conv2d(fmap, w[p + 'pool.nets.weight'], w[p + 'pool.nets.bias'])
    attention = F.softmax(maps.reshape(-1, maps.shape[-2] * maps.shape[-1]), dim=-1)
    keypoints = (attention @ w[p + 'pool.pos_grid']).view(image.shape[0], -1)
    return F.relu(F.linear(keypoints, w[p + 'out.weight'], w[p + 'out.bias']))


def _conv_block(x, w, p, groups):
    k = w[p + 'block.0.weight'].shape[-1]
    x = F.conv1d(x, w[p + 'block.0.weight'], w[p + 'block.0.bias'], padding=k // 2)
    return F.mish(F.group_norm(x, groups, w[p + 'block.1.weight'], w[p + 'block.1.bias']))


def _residual_block(x, cond, w, p, cfg):
    out = _conv_block(x, w, p + 'conv1.', cfg['n_groups'])
    embed = F.linear(F.mish(cond), w[p + 'cond_encoder.1.weight'], w[p + 'cond_encoder.1.bias']).unsqueeze(-1)
    if cfg['use_film_scale_modulation']:
        channels = out.shape[1]
        out = embed[:, :channels] * out + embed[:, channels:]
    else:
        out = out + embed
    out = _conv_block(out, w, p + 'conv2.', cfg['n_groups'])
    if p + 'residual_conv.weight' in w:
        x = F.conv1d(x, w[p + 'residual_conv.weight'], w[p + 'residual_conv.bias'])
    return out + x


def _unet(sample, t, global_cond, w, cfg):
    """DiffusionConditionalUnet1d: sample (B, T, A), t int, global_cond (B, G) -> (B, T, A)."""
    p = 'diffusion.unet.'
    half = cfg['diffusion_step_embed_dim'] // 2
    freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    angles = torch.full((sample.shape[0], 1), t, dtype=torch.long) * freqs
    embed = torch.cat([angles.sin(), angles.cos()], dim=-1)
    embed = F.linear(F.mish(F.linear(embed, w[p + 'diffusion_step_encoder.1.weight'],
                                     w[p + 'diffusion_step_encoder.1.bias'])),
                     w[p + 'diffusion_step_encoder.3.weight'], w[p + 'diffusion_step_encoder.3.bias'])
    cond = torch.cat([embed, global_cond], dim=-1)
    x, skips = sample.transpose(1, 2), []
    for i in range(len(cfg['down_dims'])):
        q = f'{p}down_modules.{i}.'
        x = _residual_block(_residual_block(x, cond, w, q + '0.', cfg), cond, w, q + '1.', cfg)
        skips.append(x)
        if q + '2.weight' in w:
            x = F.conv1d(x, w[q + '2.weight'], w[q + '2.bias'], stride=2, padding=1)
    for i in range(2):
        x = _residual_block(x, cond, w, f'{p}mid_modules.{i}.', cfg)
    for i in range(len(cfg['down_dims']) - 1):
        q = f'{p}up_modules.{i}.'
        x = torch.cat([x, skips.pop()], dim=1)
        x = _residual_block(_residual_block(x, cond, w, q + '0.', cfg), cond, w, q + '1.', cfg)
        x = F.conv_transpose1d(x, w[q + '2.weight'], w[q + '2.bias'], stride=2, padding=1)
    x = _conv_block(x, w, p + 'final_conv.0.', 8)
    return F.conv1d(x, w[p + 'final_conv.1.weight'], w[p + 'final_conv.1.bias']).transpose(1, 2)


def _scheduler(cfg):
    from diffusers import DDIMScheduler, DDPMScheduler
    kind = {'DDPM': DDPMScheduler, 'DDIM': DDIMScheduler}[cfg['noise_scheduler_type']]
    return kind(num_train_timesteps=cfg['num_train_timesteps'], beta_start=cfg['beta_start'],
                beta_end=cfg['beta_end'], beta_schedule=cfg['beta_schedule'], clip_sample=cfg['clip_sample'],
                clip_sample_range=cfg['clip_sample_range'], prediction_type=cfg['prediction_type'])


@torch.no_grad()
def lerobot_pipeline(folder, qpos, images, seed):
    """LeRobot's normalise -> DiffusionModel.generate_actions -> unnormalise, by hand from the folder's
    files, its noise drawn from torch's generator after manual_seed(seed): qpos (B, To, S) raw, images
    {camera: (B, To, 3, H, W) in [0, 1]} -> raw actions (B, n_action_steps, A)."""
    with open(os.path.join(folder, 'config.json')) as f:
        cfg = json.load(f)
    w = load_file(os.path.join(folder, 'model.safetensors'))
    pre = load_file(os.path.join(folder, 'policy_preprocessor_step_3_normalizer_processor.safetensors'))
    post = load_file(os.path.join(folder, 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'))
    if cfg['normalization_mapping']['STATE'] == 'MIN_MAX':
        low, high = pre['observation.state.min'], pre['observation.state.max']
        state = 2 * (qpos - low) / (high - low) - 1  # (B, To, S)
    else:
        state = (qpos - pre['observation.state.mean']) / (pre['observation.state.std'] + EPS)
    batch, steps = qpos.shape[:2]
    features = []
    for i, cam in enumerate(CAMERAS):
        key = f'observation.images.{cam}'
        image = ((images[cam] - pre[key + '.mean']) / (pre[key + '.std'] + EPS)).flatten(0, 1)  # (B To, 3, H, W)
        encoder = 'diffusion.rgb_encoder.' if not cfg['use_separate_rgb_encoder_per_camera'] else \
            f'diffusion.rgb_encoder.{i}.'
        features.append(_rgb_encoder(image, w, encoder, cfg).view(batch, steps, -1))
    global_cond = torch.cat([state, *features], dim=-1).flatten(1)
    torch.manual_seed(seed)
    sample = torch.randn(batch, cfg['horizon'], ACTION_DIM)
    scheduler = _scheduler(cfg)
    scheduler.set_timesteps(cfg['num_inference_steps'] or cfg['num_train_timesteps'])
    for t in scheduler.timesteps:
        sample = scheduler.step(_unet(sample, int(t), global_cond, w, cfg), t, sample).prev_sample
    start = cfg['n_obs_steps'] - 1
    actions = sample[:, start:start + cfg['n_action_steps']]
    return (actions + 1) / 2 * (post['action.max'] - post['action.min']) + post['action.min']


################ This project's side ################

def tiny_lerobot_folder(folder, config, layout='processors', seed=0):
    """A LeRobot Diffusion folder of a random network: this project's lerobot-style Diffusion built
    from the config and written under LeRobot's names, batch norms given trained-looking statistics."""
    policy_config, image_hw = lerobot_diffusion.policy_config_from_lerobot(config)
    torch.manual_seed(seed)
    policy = make_policy('Diffusion', resolve_policy_config('Diffusion', policy_config))
    network = policy.ema_nets.state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for key, value in network.items():
        if key.endswith(('running_mean', 'bias')) and value.is_floating_point():
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
        elif key.endswith(('running_var', 'block.1.weight', '.bn1.weight', '.bn2.weight')):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    weights = lerobot_diffusion.lerobot_weights(policy.cfg, image_hw, network)
    return write_lerobot_folder(folder, weights, lerobot_stats(action_dim=policy.action_dim), layout, config)


def observation(batch=2, steps=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    qpos = torch.randn(batch, steps, STATE_DIM, generator=g)
    images = {cam: torch.rand(batch, steps, 3, *IMAGE_HW, generator=g) for cam in CAMERAS}
    return qpos, images


def our_actions(policy, normalizer, qpos, images, seed):
    """This project's evaluation arithmetic: raw qpos and [0, 1] images -> raw actions."""
    qpos_n = torch.from_numpy(normalizer.normalize_qpos(qpos.double().numpy()))
    stacked = torch.stack([images[cam] for cam in policy.camera_names], dim=2)  # (B, To, K, 3, H, W)
    torch.manual_seed(seed)
    chunk = policy.action_chunk(qpos_n, stacked)[:, :policy.action_horizon]
    return torch.from_numpy(normalizer.unnormalize_action(chunk.numpy()))


def loaded(folder):
    """What --eval loads from a folder: (config, policy, normalizer)."""
    config = run_config.eval_config(eval_args(folder), 'cpu')
    return config, load_policy(config, config['eval_ckpt']), load_stats(config)


################ Reading ################

CASES = {
    'DDPM epsilon, shared encoder, group norm': {},
    'DDPM sample': {'prediction_type': 'sample'},
    'DDIM epsilon, 5 steps': {'noise_scheduler_type': 'DDIM', 'num_inference_steps': 5},
    'DDIM sample, per-camera encoders, batch norm, FiLM bias only, no crop': {
        'noise_scheduler_type': 'DDIM', 'prediction_type': 'sample', 'use_separate_rgb_encoder_per_camera': True,
        'use_group_norm': False, 'use_film_scale_modulation': False, 'crop_shape': None},
}


@pytest.mark.parametrize('case', CASES)
def test_a_lerobot_diffusion_checkpoint_gives_lerobots_actions(tmp_path, case, capsys):
    config = lerobot_config(**CASES[case])
    folder = tiny_lerobot_folder(str(tmp_path / 'lr'), config)
    run, policy, normalizer = loaded(folder)
    assert run['policy_class'] == 'Diffusion' and run['camera_names'] == CAMERAS
    assert policy.chunk_size == 7 and policy.action_horizon == 4 and policy.obs_horizon == 2
    assert 'LeRobot Diffusion checkpoint' in capsys.readouterr().out
    qpos, images = observation()
    expected = lerobot_pipeline(folder, qpos, images, seed=5)
    ours = our_actions(policy, normalizer, qpos, images, seed=5)
    assert expected.shape == ours.shape == (2, 4, ACTION_DIM)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-4)


def test_the_layout_before_lerobot_0_4_reads_the_same(tmp_path):
    config = lerobot_config()
    new = tiny_lerobot_folder(str(tmp_path / 'new'), config)
    old = tiny_lerobot_folder(str(tmp_path / 'old'), config, layout='old')
    qpos, images = observation(seed=2)
    (_, p_new, n_new), (_, p_old, n_old) = loaded(new), loaded(old)
    np.testing.assert_array_equal(our_actions(p_old, n_old, qpos, images, 1).numpy(),
                                  our_actions(p_new, n_new, qpos, images, 1).numpy())


@pytest.mark.parametrize('override, message', [
    ({'resize_shape': [24, 24]}, r'resize_shape \[24, 24\]: not supported'),
    ({'n_action_steps': 8}, r'n_action_steps 8: at most horizon - n_obs_steps \+ 1 = 7'),
    ({'noise_scheduler_type': 'PNDM'}, r"noise_scheduler_type 'PNDM'"),
    ({'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MIN_MAX', 'ACTION': 'MEAN_STD'}},
     r"ACTION normalization 'MEAN_STD'"),
    ({'crop_shape': [80, 10]}, r'crop_shape \[80, 10\] is larger than the 70x90 images'),
    ({'horizon': 0}, r'horizon 0: a whole number'),
    ({'type': 'vqbet'}, r'LeRobot "vqbet" policy; the LeRobot checkpoints read here are'),
])
def test_settings_this_diffusion_cannot_reproduce_are_named(tmp_path, override, message):
    folder = tiny_lerobot_folder(str(tmp_path / 'lr'), lerobot_config())
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(lerobot_config(**override), f)
    with pytest.raises(LeRobotFormatError, match=message):
        read_lerobot_checkpoint(folder)


################ Converting and round trips ################

def our_stats(seed=0):
    rng = np.random.default_rng(seed)
    low = rng.normal(size=ACTION_DIM).astype(np.float32)
    return {'qpos_mean': rng.normal(size=STATE_DIM).astype(np.float32),
            'qpos_std': rng.uniform(0.05, 2, STATE_DIM).astype(np.float32),
            'action_mean': rng.normal(size=ACTION_DIM).astype(np.float32),
            'action_std': rng.uniform(0.05, 2, ACTION_DIM).astype(np.float32),
            'action_min': low, 'action_max': low + rng.uniform(0.1, 1, ACTION_DIM).astype(np.float32)}


def write_our_folder(folder, policy, stats, image_hw=IMAGE_HW):
    from checkpoints.folder import make_run_config, write_config
    os.makedirs(folder, exist_ok=True)
    torch.save(policy.serialize(), os.path.join(folder, 'policy_best.ckpt'))
    Normalizer(stats, 'min_max').save(os.path.join(folder, 'dataset_stats.pkl'))
    write_config(folder, make_run_config('Diffusion', policy.cfg, 'sim_transfer_cube_scripted', image_hw))
    return folder


def lerobot_style_policy(seed=0, **overrides):
    """A random lerobot-style Diffusion of this project, its averaged weights apart from its trained ones."""
    config, _ = lerobot_diffusion.policy_config_from_lerobot(lerobot_config(**overrides))
    torch.manual_seed(seed)
    policy = make_policy('Diffusion', resolve_policy_config('Diffusion', {
        **config, 'image_mean': [[0.4, 0.5, 0.6], [0.3, 0.3, 0.3]], 'image_std': [[0.2, 0.25, 0.3], [0.1, 0.2, 0.3]]}))
    with torch.no_grad():
        for p in policy.ema_nets.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return policy.eval()


def test_a_lerobot_diffusion_folder_converts_to_ours_with_the_same_actions(tmp_path, capsys):
    config = lerobot_config(noise_scheduler_type='DDIM', num_inference_steps=5)
    folder = tiny_lerobot_folder(str(tmp_path / 'lr'), config)
    to_act(folder, str(tmp_path / 'ours'))
    assert 'from LeRobot Diffusion checkpoint' in capsys.readouterr().out
    _, policy, normalizer = loaded(str(tmp_path / 'ours'))
    assert policy.cfg['style'] == 'lerobot' and policy.cfg['scheduler'] == 'ddim'
    qpos, images = observation(seed=3)
    np.testing.assert_allclose(our_actions(policy, normalizer, qpos, images, 2).numpy(),
                               lerobot_pipeline(folder, qpos, images, 2).numpy(), atol=1e-4)


def test_ours_to_lerobot_and_back_returns_the_averaged_weights_and_statistics_bit_for_bit(tmp_path):
    policy, stats = lerobot_style_policy(seed=4, use_separate_rgb_encoder_per_camera=True), our_stats(1)
    ours = write_our_folder(str(tmp_path / 'ours'), policy, stats)
    to_lerobot(ours, str(tmp_path / 'lr'))
    with open(tmp_path / 'lr' / 'config.json') as f:
        written = json.load(f)
    assert written['type'] == 'diffusion' and written['horizon'] == 8 and written['n_obs_steps'] == 2
    assert written['normalization_mapping']['ACTION'] == 'MIN_MAX'
    qpos, images = observation(seed=6)
    # LeRobot's own arithmetic on the written folder gives this policy's actions
    np.testing.assert_allclose(lerobot_pipeline(str(tmp_path / 'lr'), qpos, images, 7).numpy(),
                               our_actions(policy, Normalizer(stats, 'min_max'), qpos, images, 7).numpy(),
                               atol=1e-4)
    to_act(str(tmp_path / 'lr'), str(tmp_path / 'back'))
    back = torch.load(tmp_path / 'back' / 'policy_best.ckpt', weights_only=True)
    for key, value in policy.serialize()['ema'].items():
        assert torch.equal(back['ema'][key], value), key
        assert torch.equal(back['nets'][key], value), key  # LeRobot keeps one set: the averaged one
    back_stats = Normalizer.load(str(tmp_path / 'back' / 'dataset_stats.pkl')).stats
    for key, value in stats.items():
        np.testing.assert_array_equal(back_stats[key], value, err_msg=key)
    with open(tmp_path / 'back' / 'config.json') as f:
        back_config = json.load(f)['policy_config']
    for key in ('image_mean', 'image_std'):  # the float32 values the policy computes with
        np.testing.assert_array_equal(np.float32(back_config[key]), np.float32(policy.cfg[key]), err_msg=key)


def test_only_the_lerobot_style_converts_to_lerobot(tmp_path):
    torch.manual_seed(0)
    policy = make_policy('Diffusion', resolve_policy_config('Diffusion', {
        'camera_names': CAMERAS, 'num_queries': 8, 'state_dim': STATE_DIM, 'action_dim': ACTION_DIM,
        'down_dims': [16, 32], 'pretrained_backbone': False}))
    ours = write_our_folder(str(tmp_path / 'ours'), policy, our_stats())
    with pytest.raises(ValueError, match=r"style 'act_plus_plus'.*--diffusion_style lerobot"):
        to_lerobot(ours, str(tmp_path / 'lr'))
    assert not os.path.exists(tmp_path / 'lr')


################ Training in LeRobot's style, fine-tuning from a LeRobot folder ################

@pytest.mark.parametrize('style, obs_horizon, window', [('lerobot', 2, (2, 1)), ('lerobot', 1, (1, 0)),
                                                      ('act_plus_plus', 2, (2, 0))])
def test_a_training_sample_holds_the_policys_window(style, obs_horizon, window):
    from policies.diffusion import DiffusionPolicy
    cfg = DiffusionPolicy.resolve_config({'camera_names': CAMERAS, 'num_queries': 8, 'style': style,
                                          'obs_horizon': obs_horizon})
    assert DiffusionPolicy.sample_window(cfg) == window  # (observation steps, actions start this far back)
    assert get_policy_class('ACT').sample_window({}) == (1, 0)


def test_lerobot_style_targets_start_at_the_oldest_observation(tmp_path):
    from training.data import EpisodicDataset
    write_tiny_episode(str(tmp_path / 'episode_0.hdf5'), episode_len=6, state_dim=STATE_DIM, seed=1)
    stats = {'qpos_mean': np.zeros(STATE_DIM), 'qpos_std': np.ones(STATE_DIM), 'action_mean': np.zeros(STATE_DIM),
             'action_std': np.ones(STATE_DIM), 'action_min': np.full(STATE_DIM, -10.0),
             'action_max': np.full(STATE_DIM, 10.0)}
    ours = EpisodicDataset([0], str(tmp_path), ['top'], stats, 'Diffusion', obs_horizon=2)
    lead = EpisodicDataset([0], str(tmp_path), ['top'], stats, 'Diffusion', obs_horizon=2, action_lead=1)
    actions = ours.actions[0]  # (6, A) normalised
    for seed in range(20):
        start = int(np.random.default_rng(seed).integers(6))
        *_, action, is_pad = lead[(0, seed)]
        *_, own, own_pad = ours[(0, seed)]
        if start == 0:  # the step before the episode: its first action, padded
            np.testing.assert_array_equal(action[:2], actions[[0, 0]])
            assert is_pad[0] and not is_pad[1]
        else:
            np.testing.assert_array_equal(action[:7 - start], actions[start - 1:])
            np.testing.assert_array_equal(action[1:], own[:-1])
            np.testing.assert_array_equal(is_pad[1:], own_pad[:-1])


def train_args(*flags):
    import imitate_episodes
    return vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', 'sim_transfer_cube', '--policy_class', 'Diffusion', '--num_epochs', '2', '--batch_size', '2',
         '--device', 'cpu', '--camera_names', *CAMERAS, *flags]))


def tiny_data(folder, n=4):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        write_tiny_episode(os.path.join(folder, f'episode_{i}.hdf5'), state_dim=STATE_DIM, camera_names=CAMERAS,
                           image_hw=IMAGE_HW, seed=i)
    return folder


def test_fine_tune_from_a_lerobot_diffusion_folder_takes_its_settings(tmp_path, capsys):
    import imitate_episodes
    folder = tiny_lerobot_folder(str(tmp_path / 'lr'), lerobot_config())
    data = tiny_data(str(tmp_path / 'data'))
    ckpt = tmp_path / 'tuned'
    imitate_episodes.main(train_args('--ckpt_dir', str(ckpt), '--dataset_dir', data, '--num_episodes', '4',
                                     '--init_from', folder, '--freeze_backbone', '--n_action_steps', '3'))
    out = capsys.readouterr().out
    # the data's actions have 5 joints, the checkpoint's 4: only the UNet's action-sized ends start afresh
    assert f'--init_from {folder}: kept' in out and 'initialised afresh (4)' in out
    assert 'final_conv.1.weight ((4, 16, 1) there, (5, 16, 1) here)' in out
    with open(ckpt / 'config.json') as f:
        config = json.load(f)['policy_config']
    expected, _ = lerobot_diffusion.policy_config_from_lerobot(lerobot_config())
    for key in ('style', 'num_queries', 'obs_horizon', 'crop_shape', 'num_keypoints', 'shared_encoder',
                'step_embed_dim', 'film_scale', 'backbone_norm', 'down_dims', 'num_train_timesteps', 'scheduler'):
        assert _plain(config[key]) == _plain(expected[key]), key
    assert config['action_horizon'] == 3  # a flag given wins
    tuned = torch.load(ckpt / 'policy_last.ckpt', weights_only=True)
    start = lerobot_diffusion.from_lerobot_state_dict(load_file(os.path.join(folder, 'model.safetensors')), True)
    trunk = [k for k in start if k.startswith('policy.backbones.') and k.endswith('conv1.weight')]
    assert trunk and all(torch.equal(tuned['nets'][k], start[k]) for k in trunk)  # --freeze_backbone
    unet = 'policy.noise_pred_net.mid_modules.0.blocks.0.block.0.weight'
    assert not torch.equal(tuned['nets'][unet], start[unet])  # trained on
    # the EMA restarted from the loaded weights and followed the training
    assert not torch.equal(tuned['ema'][unet], start[unet]) and tuned['ema_step'] > 0


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def test_train_in_lerobots_style_with_its_flag_names_then_convert(tmp_path):
    import imitate_episodes
    data = tiny_data(str(tmp_path / 'data'))
    ckpt = tmp_path / 'ours'
    imitate_episodes.main(train_args(
        '--ckpt_dir', str(ckpt), '--dataset_dir', data, '--num_episodes', '4', '--diffusion_style', 'lerobot',
        '--horizon', '8', '--n_obs_steps', '2', '--n_action_steps', '4', '--crop_shape', '64', '80',
        '--noise_scheduler_type', 'DDIM', '--num_inference_steps', '5', '--down_dims', '16', '32'))
    with open(ckpt / 'config.json') as f:
        config = json.load(f)['policy_config']
    assert (config['style'], config['num_queries'], config['obs_horizon'], config['action_horizon'],
            config['crop_shape'], config['scheduler']) == ('lerobot', 8, 2, 4, [64, 80], 'ddim')
    to_lerobot(str(ckpt), str(tmp_path / 'lr'), 'policy_last.ckpt')
    with open(tmp_path / 'lr' / 'config.json') as f:
        written = json.load(f)
    assert (written['horizon'], written['n_obs_steps'], written['n_action_steps'], written['crop_shape'],
            written['noise_scheduler_type']) == (8, 2, 4, [64, 80], 'DDIM')


def test_lerobot_command_line_names_for_diffusion():
    from cli.lerobot_names import translate_lerobot_flags
    argv, said = translate_lerobot_flags(['--policy.type=diffusion', '--policy.crop_shape=[84, 84]',
                                          '--policy.down_dims', '(64,128)', '--policy.prediction_type=sample',
                                          '--policy.noise_scheduler_type=DDIM'])
    assert argv == ['--policy_class', 'Diffusion', '--crop_shape', '84', '84', '--down_dims', '64', '128',
                    '--prediction_type', 'sample', '--scheduler', 'ddim']
    assert '--policy.crop_shape=[84, 84] -> --crop_shape 84 84' in said


def test_a_lerobot_diffusion_folder_exports_for_the_runtime(tmp_path):
    import export_policy
    from deploy.runtime import PolicyRunner
    config = lerobot_config(noise_scheduler_type='DDIM', num_inference_steps=5)
    folder = tiny_lerobot_folder(str(tmp_path / 'lr'), config)
    out = str(tmp_path / 'export')
    export_policy.main(['--ckpt_dir', folder, '--out', out, '--task_name', 'sim_transfer_cube'])
    runner = PolicyRunner(out)
    qpos, images = observation(seed=4)
    frames = np.stack([(images[cam].permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()
                       for cam in CAMERAS], axis=2)  # (B, To, K, H, W, 3)
    unit = torch.from_numpy(frames).permute(0, 1, 2, 5, 3, 4).float() / 255
    torch.manual_seed(9)
    noise = torch.randn(2, 8, ACTION_DIM)
    exported = runner.query(qpos.numpy(), frames, noise=noise.numpy())  # (B, 7, A) from the current step
    expected = lerobot_pipeline(folder, qpos, {cam: unit[:, :, i] for i, cam in enumerate(CAMERAS)}, seed=9)
    assert exported.shape == (2, 7, ACTION_DIM)
    np.testing.assert_allclose(exported[:, :4], expected.numpy(), atol=1e-4)


################ A look inside the denoising ################

def test_the_trace_ends_at_the_chunk_ddim_returns():
    policy = lerobot_style_policy(seed=2, noise_scheduler_type='DDIM', num_inference_steps=5)
    qpos, images = observation(seed=1)
    stacked = torch.stack([images[cam] for cam in CAMERAS], dim=2)
    trace = []
    torch.manual_seed(3)
    chunk = policy.action_chunk(qpos, stacked, trace=trace)
    assert [t for t, _ in trace] == [8, 6, 4, 2, 0] and all(c.shape == chunk.shape == (2, 7, ACTION_DIM)
                                                            for _, c in trace)
    torch.testing.assert_close(trace[-1][1], chunk)  # DDIM's last step lands on its clean estimate
    assert (trace[0][1] - chunk).abs().max() > 1e-3  # the first estimate is another chunk


def test_eval_offline_of_a_diffusion_policy_draws_its_denoising_and_samples(tmp_path, capsys):
    import imitate_episodes
    from evaluation.report import report_html
    config = lerobot_config(noise_scheduler_type='DDIM', num_inference_steps=5,
                            output_features={'action': {'type': 'ACTION', 'shape': [STATE_DIM]}})  # the data's
    folder = tiny_lerobot_folder(str(tmp_path / 'model' / 'pretrained_model'), config)
    data = tiny_data(str(tmp_path / 'data'), n=1)
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--eval_offline', '--ckpt_dir', folder, '--task_name', 'sim_transfer_cube', '--dataset_dir', data,
         '--num_episodes', '1', '--diversity_samples', '3', '--device', 'cpu'])))
    out = capsys.readouterr().out
    beside = tmp_path / 'model'  # LeRobot's folder holds LeRobot's files only
    for name in ('offline_eval.png', 'offline_denoising.png', 'offline_diversity.png'):
        assert (beside / name).is_file() and name in out
    page = report_html(str(beside), 'model.safetensors', [{'rollout_id': 0, 'highest_reward': 1,
                                                          'episode_return': 1}], 4, None)
    assert page.count('<img alt="offline_') == 3
