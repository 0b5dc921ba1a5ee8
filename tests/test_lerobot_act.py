"""LeRobot ACT checkpoints: read (both statistics layouts) with the actions LeRobot's pipeline
computes, written so LeRobot's arithmetic gives ours, round trips, fine-tuning from one, bad input."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import imitate_episodes
from checkpoints import lerobot_act, lerobot_files
from cli import run_config
from convert_checkpoint import to_act, to_lerobot
from detr.reference import randomise_batch_norm
from detr.resnet import build_resnet_trunk
from evaluation.rollout import load_policy, load_stats
from formats.normalize import Normalizer
from policies.registry import make_policy, resolve_policy_config
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TINY_ACT_CONFIG, TINY_IMAGE_HW, write_tiny_episode

STATE_DIM, ACTION_DIM = 6, 5
CAMERAS = ['top', 'wrist']
EPS = 1e-8


def tiny_act(seed=0, **overrides):
    """A random tiny ACT with a trained-looking trunk (non-trivial frozen batch norms)."""
    torch.manual_seed(seed)
    config = resolve_policy_config('ACT', {**TINY_ACT_CONFIG, 'camera_names': CAMERAS, 'state_dim': STATE_DIM,
                                           'action_dim': ACTION_DIM, **overrides})
    policy = make_policy('ACT', config)
    randomise_batch_norm(policy)
    return policy.eval()


def random_stats(seed=0):
    rng = np.random.default_rng(seed)
    return {'qpos_mean': rng.normal(size=STATE_DIM).astype(np.float32),
            'qpos_std': rng.uniform(0.05, 2, STATE_DIM).astype(np.float32),
            'action_mean': rng.normal(size=ACTION_DIM).astype(np.float32),
            'action_std': rng.uniform(0.05, 2, ACTION_DIM).astype(np.float32)}


################ LeRobot's side, written from its format facts ################

def lerobot_config(image_hw=TINY_IMAGE_HW, **overrides):
    c = TINY_ACT_CONFIG
    config = {
        'type': 'act', 'n_obs_steps': 1, 'chunk_size': c['num_queries'], 'n_action_steps': c['num_queries'],
        'input_features': {'observation.state': {'type': 'STATE', 'shape': [STATE_DIM]},
                           **{f'observation.images.{cam}': {'type': 'VISUAL', 'shape': [3, *image_hw]}
                              for cam in CAMERAS}},
        'output_features': {'action': {'type': 'ACTION', 'shape': [ACTION_DIM]}},
        'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MEAN_STD', 'ACTION': 'MEAN_STD'},
        'vision_backbone': 'resnet18', 'pretrained_backbone_weights': None, 'replace_final_stride_with_dilation': False,
        'pre_norm': False, 'dim_model': c['hidden_dim'], 'n_heads': c['nheads'],
        'dim_feedforward': c['dim_feedforward'],
        'feedforward_activation': 'relu', 'n_encoder_layers': c['enc_layers'], 'n_decoder_layers': 1, 'use_vae': True,
        'latent_dim': 32, 'n_vae_encoder_layers': c['enc_layers'], 'temporal_ensemble_coeff': None, 'dropout': 0.1,
        'kl_weight': 10.0, 'optimizer_lr': 1e-5, 'optimizer_weight_decay': 1e-4, 'optimizer_lr_backbone': 1e-5,
    }
    config.update(overrides)
    return config


def lerobot_stats(seed=1):
    """{"<feature>.<stat>": tensor} as LeRobot's normaliser holds them: per-camera image statistics."""
    g = torch.Generator().manual_seed(seed)
    stats = {'observation.state.mean': torch.randn(STATE_DIM, generator=g),
             'observation.state.std': torch.rand(STATE_DIM, generator=g) + 0.05,
             'action.mean': torch.randn(ACTION_DIM, generator=g),
             'action.std': torch.rand(ACTION_DIM, generator=g) + 0.05}
    for cam in CAMERAS:
        stats[f'observation.images.{cam}.mean'] = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25
        stats[f'observation.images.{cam}.std'] = torch.rand(3, 1, 1, generator=g) * 0.2 + 0.1
    return stats


def write_lerobot_folder(folder, weights, stats, layout='processors', config=None):
    """A pretrained_model/ folder as LeRobot writes it: the current layout, or the one before 0.4."""
    os.makedirs(folder, exist_ok=True)
    config = config or lerobot_config()
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f)
    if layout == 'processors':
        action = {k: v for k, v in stats.items() if k.startswith('action.')}
        pre_file = 'policy_preprocessor_step_3_normalizer_processor.safetensors'
        post_file = 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'
        save_file(stats, os.path.join(folder, pre_file))
        save_file(action, os.path.join(folder, post_file))
        norm = {'eps': EPS, 'norm_map': config['normalization_mapping']}
        with open(os.path.join(folder, 'policy_preprocessor.json'), 'w') as f:
            json.dump({'name': 'policy_preprocessor', 'steps': [
                {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
                {'registry_name': 'to_batch_processor', 'config': {}},
                {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}},
                {'registry_name': 'normalizer_processor', 'config': norm, 'state_file': pre_file}]}, f)
        with open(os.path.join(folder, 'policy_postprocessor.json'), 'w') as f:
            json.dump({'name': 'policy_postprocessor', 'steps': [
                {'registry_name': 'unnormalizer_processor', 'config': norm, 'state_file': post_file},
                {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}}]}, f)
    else:
        for key, value in stats.items():
            feature, stat = key.rsplit('.', 1)
            prefixes = ['unnormalize_outputs', 'normalize_targets'] if feature == 'action' else ['normalize_inputs']
            for prefix in prefixes:
                weights = {**weights, f"{prefix}.buffer_{feature.replace('.', '_')}.{stat}": value.clone()}
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(folder, 'model.safetensors'))
    return folder


def _mha(q, k, v, w, prefix, heads):
    return F.multi_head_attention_forward(
        q, k, v, q.shape[-1], heads, w[prefix + 'in_proj_weight'], w[prefix + 'in_proj_bias'], None, None, False,
        0.0, w[prefix + 'out_proj.weight'], w[prefix + 'out_proj.bias'], training=False, need_weights=False)[0]


def _norm(x, w, prefix):
    return F.layer_norm(x, x.shape[-1:], w[prefix + 'weight'], w[prefix + 'bias'])


def _linear(x, w, prefix):
    return F.linear(x, w[prefix + 'weight'], w[prefix + 'bias'])


def _sine_2d(fmap, dim):
    """LeRobot's ACTSinusoidalPositionEmbedding2d: (B, C, h, w) -> (1, 2 dim, h, w)."""
    ones = torch.ones_like(fmap[0, :1])
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    freq = 10000 ** (2 * (torch.arange(dim) // 2) / dim)
    x, y = x.unsqueeze(-1) / freq, y.unsqueeze(-1) / freq
    px = torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(3)
    py = torch.stack((y[..., 0::2].sin(), y[..., 1::2].cos()), dim=-1).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


@torch.no_grad()
def lerobot_pipeline(folder, qpos, images):
    """LeRobot's normalise -> ACT (inference) -> unnormalise, by hand from the folder's files:
    qpos (B, S) raw, images {camera: (B, 3, H, W) in [0, 1]} -> raw actions (B, chunk, A)."""
    with open(os.path.join(folder, 'config.json')) as f:
        cfg = json.load(f)
    w = load_file(os.path.join(folder, 'model.safetensors'))
    pre = load_file(os.path.join(folder, 'policy_preprocessor_step_3_normalizer_processor.safetensors'))
    post = load_file(os.path.join(folder, 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'))
    d, heads = cfg['dim_model'], cfg['n_heads']
    state = (qpos - pre['observation.state.mean']) / (pre['observation.state.std'] + EPS)
    trunk = build_resnet_trunk(cfg['vision_backbone'])
    trunk.load_state_dict({k[len('model.backbone.'):]: v for k, v in w.items() if k.startswith('model.backbone.')})
    batch = qpos.shape[0]
    tokens = [_linear(torch.zeros(batch, cfg['latent_dim']), w, 'model.encoder_latent_input_proj.'),
              _linear(state, w, 'model.encoder_robot_state_input_proj.')]
    pos = list(w['model.encoder_1d_feature_pos_embed.weight'].unsqueeze(1))
    for cam, image in images.items():
        key = f'observation.images.{cam}'
        fmap = trunk((image - pre[key + '.mean']) / (pre[key + '.std'] + EPS))
        embed = _sine_2d(fmap, d // 2)
        proj = 'model.encoder_img_feat_input_proj.'
        feats = F.conv2d(fmap, w[proj + 'weight'], w[proj + 'bias'])
        tokens.extend(feats.flatten(2).permute(2, 0, 1))
        pos.extend(embed.flatten(2).permute(2, 0, 1))
    x, pos = torch.stack(tokens), torch.stack(pos)  # (S, B, D), (S, 1, D)
    for i in range(cfg['n_encoder_layers']):
        p = f'model.encoder.layers.{i}.'
        x = _norm(x + _mha(x + pos, x + pos, x, w, p + 'self_attn.', heads), w, p + 'norm1.')
        x = _norm(x + _linear(F.relu(_linear(x, w, p + 'linear1.')), w, p + 'linear2.'), w, p + 'norm2.')
    query = w['model.decoder_pos_embed.weight'].unsqueeze(1)
    y = torch.zeros(cfg['chunk_size'], batch, d)
    p = 'model.decoder.layers.0.'
    y = _norm(y + _mha(y + query, y + query, y, w, p + 'self_attn.', heads), w, p + 'norm1.')
    y = _norm(y + _mha(y + query, x + pos, x, w, p + 'multihead_attn.', heads), w, p + 'norm2.')
    y = _norm(y + _linear(F.relu(_linear(y, w, p + 'linear1.')), w, p + 'linear2.'), w, p + 'norm3.')
    actions = _linear(_norm(y, w, 'model.decoder.norm.').transpose(0, 1), w, 'model.action_head.')
    return actions * post['action.std'] + post['action.mean']


def observation(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    qpos = torch.randn(batch, STATE_DIM, generator=g)
    images = {cam: torch.rand(batch, 3, *TINY_IMAGE_HW, generator=g) for cam in CAMERAS}
    return qpos, images


def our_actions(policy, normalizer, qpos, images):
    """This project's evaluation arithmetic: raw qpos and [0, 1] images -> raw actions."""
    qpos_n = torch.from_numpy(normalizer.normalize_qpos(qpos.double().numpy()))
    stacked = torch.stack([images[cam] for cam in policy.camera_names], dim=1)
    with torch.no_grad():
        chunk = policy.action_chunk(qpos_n, stacked)
    return torch.from_numpy(normalizer.unnormalize_action(chunk.numpy()))


@pytest.fixture
def lerobot_folder(tmp_path):
    """A LeRobot-layout checkpoint written by the test: LeRobot names for a random tiny ACT's weights."""
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act(seed=3).state_dict())
    return write_lerobot_folder(str(tmp_path / 'pretrained_model'), weights, lerobot_stats())


def eval_args(ckpt_dir, *extra):
    return vars(imitate_episodes.build_parser().parse_args(
        ['--eval', '--ckpt_dir', str(ckpt_dir), '--task_name', 'sim_transfer_cube', '--device', 'cpu', *extra]))


################ Reading ################

@pytest.mark.parametrize('layout', ['processors', 'buffers in model.safetensors'])
def test_a_lerobot_checkpoint_gives_lerobots_actions(tmp_path, layout, capsys):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act(seed=3).state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats(),
                                  layout='processors' if layout == 'processors' else 'old')
    reference = write_lerobot_folder(str(tmp_path / 'reference'), weights, lerobot_stats())
    config = run_config.eval_config(eval_args(folder), 'cpu')  # what --eval runs on
    assert config['policy_class'] == 'ACT' and config['camera_names'] == CAMERAS
    assert config['image_size'] == TINY_IMAGE_HW and config['policy_config']['dec_layers'] == 1
    policy, normalizer = load_policy(config, config['eval_ckpt']), load_stats(config)
    assert 'observation.state -> qpos' in capsys.readouterr().out
    qpos, images = observation()
    expected = lerobot_pipeline(reference, qpos, images)
    np.testing.assert_allclose(our_actions(policy, normalizer, qpos, images).numpy(), expected.numpy(), atol=1e-5)


def test_eval_rolls_out_a_lerobot_checkpoint(lerobot_folder, monkeypatch, capsys):
    from constants import SIM_TASK_CONFIGS
    monkeypatch.setitem(SIM_TASK_CONFIGS['sim_transfer_cube_scripted'], 'episode_len', 3)
    # the sim task has 14 joints: a LeRobot ALOHA policy has them too
    config = lerobot_config(**{'input_features': {
        'observation.state': {'type': 'STATE', 'shape': [14]},
        'observation.images.top': {'type': 'VISUAL', 'shape': [3, *TINY_IMAGE_HW]}},
        'output_features': {'action': {'type': 'ACTION', 'shape': [14]}}})
    torch.manual_seed(0)
    policy = make_policy('ACT', {**TINY_ACT_CONFIG, 'dec_layers': 1})
    weights, _ = lerobot_act.to_lerobot_state_dict(policy.state_dict())
    stats = {'observation.state.mean': torch.zeros(14), 'observation.state.std': torch.ones(14),
             'action.mean': torch.zeros(14), 'action.std': torch.full((14,), 0.01),
             'observation.images.top.mean': torch.full((3, 1, 1), 0.5),
             'observation.images.top.std': torch.ones(3, 1, 1)}
    folder = write_lerobot_folder(os.path.join(os.path.dirname(lerobot_folder), 'aloha'), weights, stats,
                                  config=config)
    imitate_episodes.main(eval_args(folder, '--num_rollouts', '1', '--no_video'))
    assert 'policy_best.ckpt: success_rate=' in capsys.readouterr().out


def test_missing_statistics_are_named_and_stats_from_stands_in(tmp_path):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, {}, layout='old')
    with pytest.raises(lerobot_act.LeRobotFormatError, match=r'observation\.state\.mean.*action\.std.*--stats_from'):
        to_act(folder, str(tmp_path / 'act'))
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(2):
        write_tiny_episode(str(data / f'episode_{i}.hdf5'), state_dim=STATE_DIM, seed=i)
    with pytest.raises(ValueError, match=r"'action_mean' has shape \(6,\) but the policy expects \(5,\)"):
        to_act(folder, str(tmp_path / 'act'), stats_from=str(data))


@pytest.mark.parametrize('override, message', [
    ({'type': 'vqbet'}, r'"vqbet" policy; the LeRobot checkpoints read here are'),
    ({'n_decoder_layers': 2}, 'n_decoder_layers 2'),
    ({'vision_backbone': 'efficientnet_b0'}, "vision_backbone 'efficientnet_b0'"),
    ({'n_vae_encoder_layers': 3}, 'n_vae_encoder_layers 3'),
])
def test_settings_this_act_cannot_reproduce_are_refused(tmp_path, override, message):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats(), config=lerobot_config(**override))
    with pytest.raises(lerobot_act.LeRobotFormatError, match=message):
        to_act(folder, str(tmp_path / 'act'))


@pytest.mark.parametrize('override, message', [
    ({'chunk_size': -1}, r'chunk_size -1: a whole number from 1 to 10000 is expected'),
    ({'chunk_size': 1e10}, r'chunk_size 10000000000.0: a whole number'),
    ({'dim_model': 'abc'}, r"dim_model 'abc': a whole number"),
    ({'n_heads': 3}, r'dim_model 32 is not a multiple of n_heads 3'),
    ({'dropout': 5}, r'dropout 5: a number in \[0, 1\) is expected'),
    ({'input_features': 'observation.state'}, r'input_features: an object of features'),
    ({'output_features': {'action': {'type': 'ACTION', 'shape': []}}}, r'output_features action shape \[\]'),
    ({'n_action_steps': 6}, 'n_action_steps 6: a whole number from 1 to chunk_size 5'),
    ({'n_action_steps': 0}, 'n_action_steps 0: a whole number from 1 to chunk_size 5'),
])
def test_unusable_values_in_a_lerobot_config_are_named(tmp_path, override, message):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats(), config=lerobot_config(**override))
    with pytest.raises(lerobot_act.LeRobotFormatError, match=r'config.json: .*' + message):
        to_act(folder, str(tmp_path / 'act'))


def test_feature_shapes_that_disagree_with_the_weights_are_refused(tmp_path):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    config = lerobot_config()
    config['input_features']['observation.state']['shape'] = [STATE_DIM + 1]
    stats = {**lerobot_stats(), 'observation.state.mean': torch.zeros(STATE_DIM + 1),
             'observation.state.std': torch.ones(STATE_DIM + 1)}
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, stats, config=config)
    with pytest.raises(ValueError, match=r'encoder_joint_proj.weight checkpoint \(32, 6\) vs policy \(32, 7\)'):
        to_act(folder, str(tmp_path / 'act'))


################ Writing and round trips ################

def write_our_folder(folder, policy, stats, image_hw=TINY_IMAGE_HW):
    from checkpoints.folder import make_run_config, write_config
    os.makedirs(folder, exist_ok=True)
    torch.save(policy.state_dict(), os.path.join(folder, 'policy_best.ckpt'))
    Normalizer(stats).save(os.path.join(folder, 'dataset_stats.pkl'))
    write_config(folder, make_run_config('ACT', policy.cfg, 'sim_transfer_cube_scripted', image_hw))
    return folder


def test_our_checkpoint_in_lerobots_layout_gives_our_actions(tmp_path):
    policy, stats = tiny_act(seed=5), random_stats()
    ours = write_our_folder(str(tmp_path / 'ours'), policy, stats)
    to_lerobot(ours, str(tmp_path / 'lr'))
    assert sorted(os.listdir(tmp_path / 'lr')) == [
        'config.json', 'model.safetensors', 'policy_postprocessor.json',
        'policy_postprocessor_step_0_unnormalizer_processor.safetensors', 'policy_preprocessor.json',
        'policy_preprocessor_step_3_normalizer_processor.safetensors']
    qpos, images = observation(seed=2)
    expected = our_actions(policy, Normalizer(stats), qpos, images)
    np.testing.assert_allclose(lerobot_pipeline(str(tmp_path / 'lr'), qpos, images).numpy(), expected.numpy(),
                               atol=1e-5)
    with open(tmp_path / 'lr' / 'config.json') as f:
        config = json.load(f)
    assert config['type'] == 'act' and config['n_decoder_layers'] == 1 and config['pretrained_backbone_weights'] is None
    assert config['input_features']['observation.images.wrist'] == {'type': 'VISUAL', 'shape': [3, *TINY_IMAGE_HW]}
    assert config['device'] == 'cpu' and config['temporal_ensemble_coeff'] is None  # LeRobot warns on a null device
    assert config['n_action_steps'] == config['chunk_size']
    to_lerobot(ours, str(tmp_path / 'ensembled'), temporal_agg=True)
    with open(tmp_path / 'ensembled' / 'config.json') as f:
        ensembled = json.load(f)
    # LeRobot's ACTConfig requires n_action_steps 1 with temporal ensembling
    assert ensembled['temporal_ensemble_coeff'] == 0.01 and ensembled['n_action_steps'] == 1
    to_act(str(tmp_path / 'ensembled'), str(tmp_path / 'back'))  # and it reads back


@pytest.mark.parametrize('steps, coeff, horizon', [(2, None, 2), (5, None, 5), (1, 0.01, 5)])
def test_n_action_steps_is_the_actions_played_per_chunk(lerobot_folder, tmp_path, steps, coeff, horizon):
    # LeRobot plays n_action_steps of each chunk; with temporal ensembling (n_action_steps 1) the
    # whole chunk is ensembled, here --temporal_agg
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act(seed=3).state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats(),
                                  config=lerobot_config(n_action_steps=steps, temporal_ensemble_coeff=coeff))
    config = run_config.eval_config(eval_args(folder), 'cpu')
    assert load_policy(config, config['eval_ckpt']).action_horizon == horizon
    given = run_config.eval_config(eval_args(folder, '--action_horizon', '3'), 'cpu')  # a flag given wins
    assert load_policy(given, given['eval_ckpt']).action_horizon == 3


def test_our_action_horizon_is_lerobots_n_action_steps(tmp_path):
    ours = write_our_folder(str(tmp_path / 'ours'), tiny_act(seed=5, action_horizon=2), random_stats())
    to_lerobot(ours, str(tmp_path / 'lr'))
    with open(tmp_path / 'lr' / 'config.json') as f:
        assert json.load(f)['n_action_steps'] == 2
    to_act(str(tmp_path / 'lr'), str(tmp_path / 'back'))
    with open(tmp_path / 'back' / 'config.json') as f:
        assert json.load(f)['policy_config']['action_horizon'] == 2


def test_act_without_the_vae_converts_both_ways(tmp_path):
    policy, stats = tiny_act(seed=3, use_vae=False), random_stats(2)
    ours = write_our_folder(str(tmp_path / 'ours'), policy, stats)
    to_lerobot(ours, str(tmp_path / 'lr'))
    lerobot_json = json.load(open(tmp_path / 'lr' / 'config.json'))
    weights = load_file(str(tmp_path / 'lr' / 'model.safetensors'))
    assert lerobot_json['use_vae'] is False and not any(k.startswith('model.vae_encoder') for k in weights)
    to_act(str(tmp_path / 'lr'), str(tmp_path / 'back'))
    back_config = json.load(open(tmp_path / 'back' / 'config.json'))['policy_config']
    assert back_config['use_vae'] is False
    back_state = torch.load(tmp_path / 'back' / 'policy_best.ckpt', weights_only=True)
    back = make_policy('ACT', back_config, load_pretrained=False).deserialize(back_state).eval()
    qpos, images = observation(seed=5)
    back_stats = Normalizer.load(str(tmp_path / 'back' / 'dataset_stats.pkl')).stats
    assert torch.equal(our_actions(back, Normalizer(back_stats), qpos, images),
                       our_actions(policy, Normalizer(stats), qpos, images))


def test_round_trip_ours_lerobot_ours_is_bit_exact(tmp_path):
    policy, stats = tiny_act(seed=6), random_stats(1)
    ours = write_our_folder(str(tmp_path / 'ours'), policy, stats)
    to_lerobot(ours, str(tmp_path / 'lr'))
    to_act(str(tmp_path / 'lr'), str(tmp_path / 'back'))
    back_state = torch.load(tmp_path / 'back' / 'policy_best.ckpt', weights_only=True)
    for key, value in policy.state_dict().items():
        if key.startswith('model.is_pad_head') or key.startswith('model.transformer.decoder.layers.1.'):
            continue  # not held by LeRobot: never shape actions
        assert torch.equal(back_state[key], value), key
    back_stats = Normalizer.load(str(tmp_path / 'back' / 'dataset_stats.pkl')).stats
    for key, value in stats.items():
        assert np.array_equal(back_stats[key], value), key
    with open(tmp_path / 'back' / 'config.json') as f:
        back_config = json.load(f)
    back = make_policy('ACT', back_config['policy_config'], load_pretrained=False).deserialize(back_state).eval()
    qpos, images = observation(seed=4)
    assert torch.equal(our_actions(back, Normalizer(back_stats), qpos, images),
                       our_actions(policy, Normalizer(stats), qpos, images))
    # and on to LeRobot's layout again: the same files
    to_lerobot(str(tmp_path / 'back'), str(tmp_path / 'lr2'))
    for name in ('model.safetensors', 'policy_preprocessor_step_3_normalizer_processor.safetensors'):
        first, second = load_file(str(tmp_path / 'lr' / name)), load_file(str(tmp_path / 'lr2' / name))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_lerobot_std_written_so_that_adding_eps_gives_ours_exactly():
    std = torch.tensor([0.01, 0.0123, 1.0, 3.7, 1e-2 + 3e-9], dtype=torch.float32)
    assert torch.equal(lerobot_files.without_eps(std) + torch.tensor(EPS, dtype=torch.float32), std)


def test_convert_checkpoint_refuses_to_overwrite_and_explains(tmp_path, lerobot_folder):
    to_act(lerobot_folder, str(tmp_path / 'act'))
    done = subprocess.run([sys.executable, 'convert_checkpoint.py', '--to', 'act', lerobot_folder,
                           str(tmp_path / 'act')], cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 1 and 'Traceback' not in done.stderr and 'already holds policy_best.ckpt' in done.stderr


def test_per_camera_image_normalisation_is_a_policy_setting():
    policy = tiny_act(image_mean=[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], image_std=[0.5, 0.5, 0.5])
    assert tuple(policy.image_mean.shape) == (2, 3, 1, 1) and tuple(policy.image_std.shape) == (3, 1, 1)
    with pytest.raises(ValueError, match=r'image_mean must hold 3 values or one triple per camera \(2, 3\)'):
        tiny_act(image_mean=[0.1, 0.2])


################ Fine-tuning ################

def test_fine_tune_from_a_lerobot_checkpoint_on_another_camera(lerobot_folder, tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(4):  # 14 joints and one camera named cam_high: other heads, another camera
        write_tiny_episode(str(data / f'episode_{i}.hdf5'), camera_names=('cam_high',), seed=i)
    ckpt = tmp_path / 'tuned'
    flags = ['--device', 'cpu']  # the model's sizes come from the checkpoint
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', 'sim_transfer_cube', '--policy_class', 'ACT', '--ckpt_dir', str(ckpt), '--dataset_dir',
         str(data), '--num_episodes', '4', '--camera_names', 'cam_high', '--num_epochs', '2', '--batch_size', '2',
         '--init_from', lerobot_folder, '--freeze_backbone', *flags])))
    out = capsys.readouterr().out
    assert '--init_from ' + lerobot_folder + ': kept' in out
    assert 'model.input_proj_robot_state.weight ((32, 6) there, (32, 14) here)' in out
    assert 'model.action_head.weight' in out and 'model.is_pad_head.weight (absent)' in out
    with open(ckpt / 'config.json') as f:
        config = json.load(f)
    assert config['policy_config']['dec_layers'] == 1 and config['camera_names'] == ['cam_high']
    assert config['training']['init_from'] == lerobot_folder
    tuned = torch.load(ckpt / 'policy_last.ckpt', weights_only=True)
    start = lerobot_act.from_lerobot_state_dict(load_file(os.path.join(lerobot_folder, 'model.safetensors')))
    trunk = [k for k in start if k.startswith('model.backbones.') and k.endswith('conv1.weight')]
    assert trunk and all(torch.equal(tuned[k], start[k]) for k in trunk)  # --freeze_backbone
    assert not torch.equal(tuned['model.transformer.encoder.layers.0.linear1.weight'],
                           start['model.transformer.encoder.layers.0.linear1.weight'])  # trained on


def test_fine_tuning_from_a_lerobot_folder_with_a_bad_value_writes_nothing(tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(2):
        write_tiny_episode(str(data / f'episode_{i}.hdf5'), camera_names=('cam_high',), seed=i)
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats(),
                                  config=lerobot_config(optimizer_lr='fast'))
    ckpt = tmp_path / 'tuned'
    with pytest.raises(lerobot_act.LeRobotFormatError, match=r"lr/config.json: optimizer_lr 'fast': a number"):
        imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
            ['--task_name', 'sim_transfer_cube', '--policy_class', 'ACT', '--ckpt_dir', str(ckpt), '--dataset_dir',
             str(data), '--num_episodes', '2', '--camera_names', 'cam_high', '--num_epochs', '1', '--batch_size', '2',
             '--init_from', folder, '--device', 'cpu'])))
    assert not os.path.exists(ckpt) or os.listdir(ckpt) == []


def test_keep_init_stats_takes_the_checkpoints_statistics(tmp_path):
    policy, stats = tiny_act(seed=7), random_stats(2)
    ours = write_our_folder(str(tmp_path / 'ours'), policy, stats)
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(4):
        write_tiny_episode(str(data / f'episode_{i}.hdf5'), state_dim=STATE_DIM, camera_names=CAMERAS, seed=i)
    base = ['--task_name', 'sim_transfer_cube', '--policy_class', 'ACT', '--dataset_dir', str(data), '--num_episodes',
            '4', '--num_epochs', '1', '--batch_size', '2', '--device', 'cpu', '--init_from', ours]
    with pytest.raises(ValueError, match=r"'action_mean' has shape \(5,\) but the policy expects \(6,\)"):
        imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
            base + ['--ckpt_dir', str(tmp_path / 'a'), '--keep_init_stats'])))
    # same sizes: the checkpoint's statistics are those written
    for i in range(4):
        path = str(data / f'episode_{i}.hdf5')
        os.remove(path)
        write_tiny_episode(path, state_dim=STATE_DIM, camera_names=CAMERAS, seed=i)
    stats_6 = {**stats, 'action_mean': np.zeros(STATE_DIM, np.float32), 'action_std': np.ones(STATE_DIM, np.float32)}
    Normalizer(stats_6).save(os.path.join(ours, 'dataset_stats.pkl'))
    torch.manual_seed(7)
    policy_6 = make_policy('ACT', {**policy.cfg, 'action_dim': STATE_DIM})
    torch.save(policy_6.state_dict(), os.path.join(ours, 'policy_best.ckpt'))
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        base + ['--ckpt_dir', str(tmp_path / 'b'), '--keep_init_stats'])))
    written = Normalizer.load(str(tmp_path / 'b' / 'dataset_stats.pkl')).stats
    assert np.array_equal(written['qpos_mean'], stats['qpos_mean'])


@pytest.mark.slow
def test_a_lerobot_checkpoint_exports_for_the_runtime(lerobot_folder, tmp_path):
    import json

    import export_policy
    out = tmp_path / 'onnx'
    export_policy.main(['--ckpt_dir', lerobot_folder, '--out', str(out), '--task_name', 'sim_transfer_cube'])
    manifest = json.loads((out / 'policy.json').read_text())  # the export matched the eager policy to 1e-4
    assert manifest['source_checkpoint']['file'] == 'model.safetensors' and manifest['camera_names'] == CAMERAS


def test_a_processor_file_outside_the_checkpoint_is_refused(tmp_path):
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act().state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'lr'), weights, lerobot_stats())
    path = os.path.join(folder, 'policy_preprocessor.json')
    pipeline = json.load(open(path))
    pipeline['steps'][-1]['state_file'] = os.path.join(str(tmp_path), 'elsewhere.safetensors')
    json.dump(pipeline, open(path, 'w'))
    with pytest.raises(lerobot_act.LeRobotFormatError, match=r'policy_preprocessor.json: state_file .* points outside'):
        to_act(folder, str(tmp_path / 'act'))
