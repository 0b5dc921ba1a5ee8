"""LeRobot ACT checkpoints: a `pretrained_model/` folder read as this project's ACT, and written from one.

    config.json                     {"type": "act", "input_features", "output_features", sizes, ...}
    model.safetensors               the weights under LeRobot's module names (KEY_MAP)
    policy_preprocessor.json        rename, batch, device and normaliser steps; the normaliser's
    policy_preprocessor_step_3_normalizer_processor.safetensors      statistics "<feature>.<stat>"
    policy_postprocessor.json       unnormaliser and device steps
    policy_postprocessor_step_0_unnormalizer_processor.safetensors
Before LeRobot 0.4 the statistics were buffers inside model.safetensors
(normalize_inputs.buffer_observation_state.mean, unnormalize_outputs.buffer_action.std, ...); both are read.

Features: observation.state is qpos, observation.images.<camera> the camera <camera>, action the action.
Arithmetic: LeRobot standardises inputs by (x - mean) / (std + eps) and unnormalises actions by
a * std + mean; this project by (x - mean) / std and a * std + mean, images by the policy's image_mean
and image_std. Reading folds eps into the inputs' std; writing takes it out again (to the float32 bit),
so a round trip returns the same numbers. The two models compute the same function of the same
weights: LeRobot's one decoder layer is the only one the original computes, and its image tokens come
camera after camera where the original puts cameras side by side, which attention without masks
does not see.
"""
import json
import os

import numpy as np
import torch

from common.checks import positive_int
from common.files import atomic_write, inside_folder, save_safetensors
from detr.resnet import BACKBONES
from formats.lerobot import ACTION, IMAGE_PREFIX, STATE, LeRobotFormatError, read_json
from policies.chunker import TEMPORAL_AGG_K

### The format (LeRobot's names)
CONFIG_FILE = 'config.json'
MODEL_FILE = 'model.safetensors'
PREPROCESSOR, POSTPROCESSOR = 'policy_preprocessor', 'policy_postprocessor'
NORMALIZER, UNNORMALIZER = 'normalizer_processor', 'unnormalizer_processor'
ENV_STATE = 'observation.environment_state'
EPS = 1e-8  # LeRobot's normaliser epsilon, when its processor file names none
OLD_STAT_BUFFERS = ('normalize_inputs.buffer_', 'normalize_targets.buffer_', 'unnormalize_outputs.buffer_')
NORM_MODES = ('MEAN_STD', 'MIN_MAX', 'IDENTITY')
# (this project's, LeRobot's) module names under `model.`; a name matches itself and what lies below it
KEY_MAP = (
    ('backbones.0.0.body', 'backbone'),
    ('transformer.encoder', 'encoder'),
    ('transformer.decoder', 'decoder'),
    ('encoder', 'vae_encoder'),
    ('cls_embed', 'vae_encoder_cls_embed'),
    ('encoder_action_proj', 'vae_encoder_action_input_proj'),
    ('encoder_joint_proj', 'vae_encoder_robot_state_input_proj'),
    ('latent_proj', 'vae_encoder_latent_output_proj'),
    ('pos_table', 'vae_encoder_pos_enc'),
    ('input_proj', 'encoder_img_feat_input_proj'),
    ('input_proj_robot_state', 'encoder_robot_state_input_proj'),
    ('latent_out_proj', 'encoder_latent_input_proj'),
    ('additional_pos_embed', 'encoder_1d_feature_pos_embed'),
    ('query_embed', 'decoder_pos_embed'),
    ('action_head', 'action_head'),
)
VAE_ENCODER_PREFIX = 'model.vae_encoder'  # LeRobot's CVAE encoder modules, absent when use_vae is false
NOT_IN_LEROBOT = ('model.is_pad_head.',)  # the original's padding head: trained, never used for actions


################################ Names ################################

def _rename(key, pairs):
    """model.<name>... renamed by the first (from, to) pair whose name is <name> or a prefix of it."""
    if not key.startswith('model.'):
        return None
    name = key[len('model.'):]
    for old, new in pairs:
        if name == old or name.startswith(old + '.'):
            return 'model.' + new + name[len(old):]
    return None


def to_lerobot_state_dict(state_dict, use_vae=True):
    """This project's ACT state dict -> (LeRobot's, [keys left out]): the decoder's first layer and
    norm only (the only ones the original computes), no is_pad_head, and without the VAE no CVAE
    encoder (LeRobot builds none then)."""
    out, dropped = {}, []
    for key, value in state_dict.items():
        unused_layer = key.startswith('model.transformer.decoder.layers.') and key.split('.')[4] != '0'
        new = None if unused_layer or key.startswith(NOT_IN_LEROBOT) else _rename(key, KEY_MAP)
        if new is not None and not use_vae and new.startswith(VAE_ENCODER_PREFIX):
            new = None
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    return out, dropped


def from_lerobot_state_dict(state_dict):
    """LeRobot's ACT state dict -> this project's names; the old layout's statistics buffers left out."""
    reverse = [(new, old) for old, new in KEY_MAP]
    out = {}
    for key, value in state_dict.items():
        if key.startswith(OLD_STAT_BUFFERS):
            continue
        new = _rename(key, reverse)
        if new is None:
            raise LeRobotFormatError(f'{MODEL_FILE}: weight {key!r} has no counterpart in this project\'s ACT')
        out[new] = value
    return out


################################ Reading ################################

def is_lerobot_config(config):
    """Whether a checkpoint folder's config.json object is a LeRobot policy's (it names its "type")."""
    return 'type' in config and 'policy_class' not in config


def image_features(lr_config):
    """{camera name: LeRobot feature key} of the VISUAL inputs, in the config's order."""
    return {key[len(IMAGE_PREFIX):]: key for key, feature in lr_config.get('input_features', {}).items()
            if feature.get('type') == 'VISUAL'}


SIZE_SETTINGS = {'chunk_size': 10_000, 'dim_model': 65_536, 'dim_feedforward': 262_144, 'n_encoder_layers': 256,
                 'n_heads': 1024, 'latent_dim': 65_536}  # config.json sizes -> the largest taken as a size


def value_problems(lr_config):
    """What makes a LeRobot config.json's values unusable (types, sizes, ranges) -> sentences."""
    problems = [f'{key} {lr_config.get(key)!r}: a whole number from 1 to {limit} is expected'
                for key, limit in SIZE_SETTINGS.items() if not positive_int(lr_config.get(key), limit)]
    if not problems and lr_config['dim_model'] % lr_config['n_heads']:
        problems.append(f"dim_model {lr_config['dim_model']} is not a multiple of n_heads {lr_config['n_heads']}")
    dropout = lr_config.get('dropout', 0.1)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f'dropout {dropout!r}: a number in [0, 1) is expected')
    for group in ('input_features', 'output_features'):
        features = lr_config.get(group)
        if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
            problems.append(f'{group}: an object of features ({{"observation.state": {{"shape": [...]}}, ...}}) '
                            f'is expected')
            continue
        for key, feature in features.items():
            shape = feature.get('shape')
            if not (isinstance(shape, list) and shape and all(positive_int(n, 1 << 16) for n in shape)):
                problems.append(f'{group} {key} shape {shape!r}: a list of positive sizes is expected')
    return problems


def check_lerobot_config(lr_config, path):
    """LeRobotFormatError naming the first setting this project's ACT cannot reproduce."""
    kind = lr_config.get('type')
    if kind != 'act':
        raise LeRobotFormatError(f'{path} is a LeRobot "{kind}" policy; only "act" checkpoints can be read '
                                 f'(this project\'s ACT, CNNMLP and Diffusion are trained here)')
    problems = value_problems(lr_config)
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))
    inputs = lr_config.get('input_features') or {}
    if lr_config.get('n_decoder_layers', 1) != 1:
        problems.append(f"n_decoder_layers {lr_config['n_decoder_layers']}: this ACT computes one decoder layer, "
                        f"as the original")
    if lr_config.get('vision_backbone') not in BACKBONES:
        problems.append(f"vision_backbone {lr_config.get('vision_backbone')!r}: the backbones here are "
                        f"{', '.join(BACKBONES)}")
    if lr_config.get('replace_final_stride_with_dilation'):
        problems.append('replace_final_stride_with_dilation: not supported (the original never dilates)')
    if lr_config.get('feedforward_activation', 'relu') != 'relu':
        problems.append(f"feedforward_activation {lr_config['feedforward_activation']!r}: only relu")
    if lr_config.get('use_vae', True) and lr_config.get('n_vae_encoder_layers') != lr_config.get('n_encoder_layers'):
        problems.append(f"n_vae_encoder_layers {lr_config.get('n_vae_encoder_layers')} differs from n_encoder_layers "
                        f"{lr_config.get('n_encoder_layers')}: the original's CVAE encoder has as many layers")
    if lr_config.get('n_obs_steps', 1) != 1:
        problems.append(f"n_obs_steps {lr_config['n_obs_steps']}: ACT takes one observation")
    if STATE not in inputs:
        problems.append(f'no {STATE} input: this ACT needs the robot state')
    if ENV_STATE in inputs:
        problems.append(f'{ENV_STATE} input: not supported')
    shapes = {tuple(inputs[key]['shape']) for key in image_features(lr_config).values()}
    if not shapes:
        problems.append('no image input (observation.images.*): this ACT needs at least one camera')
    elif len(shapes) > 1:
        problems.append(f'cameras of different sizes {sorted(shapes)}: one image size for all is supported')
    if ACTION not in (lr_config.get('output_features') or {}):
        problems.append(f'no {ACTION} output')
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))


def policy_config_from_lerobot(lr_config):
    """(this project's ACT policy_config, image size (H, W)) of a checked LeRobot config.json; image
    normalisation comes with the statistics."""
    inputs = lr_config['input_features']
    cameras = image_features(lr_config)
    image_hw = tuple(inputs[next(iter(cameras.values()))]['shape'][1:])
    policy_config = {
        'num_queries': lr_config['chunk_size'], 'kl_weight': float(lr_config['kl_weight']),
        'hidden_dim': lr_config['dim_model'], 'dim_feedforward': lr_config['dim_feedforward'],
        'enc_layers': lr_config['n_encoder_layers'], 'dec_layers': 1, 'nheads': lr_config['n_heads'],
        'latent_dim': lr_config['latent_dim'], 'dropout': lr_config['dropout'], 'pre_norm': lr_config['pre_norm'],
        'position_embedding': 'sine', 'backbone': lr_config['vision_backbone'], 'per_camera_backbone': False,
        'lr': lr_config.get('optimizer_lr', 1e-5), 'lr_backbone': lr_config.get('optimizer_lr_backbone', 1e-5),
        'weight_decay': lr_config.get('optimizer_weight_decay', 1e-4), 'pretrained_backbone': False,
        'camera_names': list(cameras), 'state_dim': inputs[STATE]['shape'][0],
        'action_dim': lr_config['output_features'][ACTION]['shape'][0],
        'use_vae': bool(lr_config.get('use_vae', True)),
    }
    return policy_config, image_hw


def _step(pipeline, registry_name):
    return next((s for s in pipeline.get('steps', []) if s.get('registry_name') == registry_name), None)


def _load_tensors(path):
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 (safetensors' own error types for a broken file)
        raise LeRobotFormatError(f'{path} cannot be read as safetensors ({err})') from None


def _state_file(folder, step, source):
    """The statistics file a processor step names, inside the checkpoint folder."""
    return os.path.join(folder, inside_folder(folder, step['state_file'], source, 'state_file', LeRobotFormatError))


def raw_statistics(folder, lr_config):
    """(inputs' stats, outputs' stats, eps, norm_map): {feature: {stat: float32 tensor}} from the
    processor files, or from model.safetensors' buffers in the layout before LeRobot 0.4."""
    norm_map = dict(lr_config.get('normalization_mapping') or {})
    pre_path = os.path.join(folder, PREPROCESSOR + '.json')
    if os.path.isfile(pre_path):
        pre = _step(read_json(pre_path), NORMALIZER)
        post_path = os.path.join(folder, POSTPROCESSOR + '.json')
        post = _step(read_json(post_path), UNNORMALIZER) if os.path.isfile(post_path) else None
        inputs = _grouped(_load_tensors(_state_file(folder, pre, pre_path))) if pre and 'state_file' in pre else {}
        outputs = (_grouped(_load_tensors(_state_file(folder, post, post_path)))
                   if post and 'state_file' in post else {})
        step_config = (pre or {}).get('config', {})
        return inputs, outputs, float(step_config.get('eps', EPS)), step_config.get('norm_map', norm_map)
    weights = _load_tensors(os.path.join(folder, MODEL_FILE))
    features = [*lr_config.get('input_features', {}), *lr_config.get('output_features', {})]
    inputs = _old_buffers(weights, ('normalize_inputs.buffer_',), features)
    outputs = _old_buffers(weights, ('unnormalize_outputs.buffer_',), features)
    return inputs, outputs, EPS, norm_map


def _grouped(flat):
    """{"<feature>.<stat>": tensor} -> {feature: {stat: float32 tensor}}"""
    out = {}
    for key, value in flat.items():
        feature, stat = key.rsplit('.', 1)
        out.setdefault(feature, {})[stat] = value.float()
    return out


def _old_buffers(weights, prefixes, features):
    """The statistics buffers of the old layout: feature 'a.b' is buffer '<prefix>a_b.<stat>'."""
    out = {}
    for feature in features:
        for prefix in prefixes:
            head = prefix + feature.replace('.', '_') + '.'
            for key, value in weights.items():
                if key.startswith(head):
                    out.setdefault(feature, {})[key[len(head):]] = value.float()
    return out


def _affine(stats, mode, eps, inverse):
    """(shift, scale) with which x -> (x - shift) / scale (or a -> a * scale + shift, inverse=True)
    reproduces LeRobot's normalisation mode for one feature; float32 tensors."""
    if mode == 'IDENTITY':
        return None
    if mode == 'MEAN_STD':
        mean, std = stats['mean'], stats['std']
        return mean, std if inverse else std + torch.tensor(eps, dtype=torch.float32)
    low, high = stats['min'], stats['max']  # MIN_MAX: 2 (x - min) / denom - 1, denom = max - min or eps
    denom = torch.where(high == low, torch.tensor(eps, dtype=torch.float32), high - low)
    return low + denom / 2, denom / 2


def statistics_from_lerobot(folder, lr_config):
    """(dataset_stats dict as the original's, image_mean, image_std) that reproduce the folder's
    LeRobot normalisation; LeRobotFormatError naming the statistics missing."""
    inputs, outputs, eps, norm_map = raw_statistics(folder, lr_config)
    bad = {t: m for t, m in norm_map.items() if m not in NORM_MODES}
    if bad:
        raise LeRobotFormatError(f'{folder}: normalization modes {bad} are not supported '
                                 f'(only {", ".join(NORM_MODES)})')
    needs = {'MEAN_STD': ('mean', 'std'), 'MIN_MAX': ('min', 'max'), 'IDENTITY': ()}
    cameras = image_features(lr_config)
    wanted = [(STATE, 'STATE', inputs, False), (ACTION, 'ACTION', outputs, True)]
    wanted += [(key, 'VISUAL', inputs, False) for key in cameras.values()]
    missing = [f'{feature}.{stat}' for feature, kind, source, _ in wanted
               for stat in needs[norm_map.get(kind, 'IDENTITY')] if stat not in source.get(feature, {})]
    if missing:
        raise LeRobotFormatError(
            f'{folder}: the normalisation statistics {", ".join(missing)} are missing (no {PREPROCESSOR}.json / '
            f'{POSTPROCESSOR}.json with their safetensors files, and none in {MODEL_FILE}); pass --stats_from '
            f'DATASET to take them from the dataset the policy was trained on')
    affine = {feature: _affine(source.get(feature), norm_map.get(kind, 'IDENTITY'), eps, inverse)
              for feature, kind, source, inverse in wanted}
    state_dim = lr_config['input_features'][STATE]['shape'][0]
    action_dim = lr_config['output_features'][ACTION]['shape'][0]
    identity = (torch.zeros(1), torch.ones(1))
    (qpos_mean, qpos_std), (action_mean, action_std) = (affine[STATE] or identity), (affine[ACTION] or identity)
    stats = {
        'qpos_mean': _vector(qpos_mean, state_dim), 'qpos_std': _vector(qpos_std, state_dim),
        'action_mean': _vector(action_mean, action_dim), 'action_std': _vector(action_std, action_dim),
    }
    for ours, theirs in (('action_min', 'min'), ('action_max', 'max')):
        if theirs in outputs.get(ACTION, {}):
            stats[ours] = _vector(outputs[ACTION][theirs], action_dim)
    image = [affine[key] or (torch.zeros(3), torch.ones(3)) for key in cameras.values()]
    image_mean = [[float(v) for v in mean.flatten().expand(3)] for mean, _ in image]
    image_std = [[float(v) for v in std.flatten().expand(3)] for _, std in image]
    if all(m == image_mean[0] for m in image_mean) and all(s == image_std[0] for s in image_std):
        image_mean, image_std = image_mean[0], image_std[0]
    return stats, image_mean, image_std


def _vector(tensor, size):
    return tensor.flatten().expand(size).numpy().astype(np.float32).copy()


def read_lerobot_config(folder, lr_config=None):
    """The folder's LeRobot config.json (lr_config: its object, already read), checked (check_lerobot_config)."""
    path = os.path.join(folder, CONFIG_FILE)
    lr_config = read_json(path) if lr_config is None else lr_config
    check_lerobot_config(lr_config, path)
    return lr_config


def read_lerobot_checkpoint(folder, statistics=True):
    """-> {'policy_config', 'image_size', 'stats', 'state_dict', 'features', 'use_vae'} of a LeRobot
    ACT folder; statistics False: no 'stats', and ImageNet's image normalisation."""
    lr_config = read_lerobot_config(folder)
    policy_config, image_hw = policy_config_from_lerobot(lr_config)
    stats = None
    if statistics:
        stats, image_mean, image_std = statistics_from_lerobot(folder, lr_config)
        policy_config.update(image_mean=image_mean, image_std=image_std)
    weights = _load_tensors(os.path.join(folder, MODEL_FILE))
    features = {STATE: 'qpos', ACTION: 'action',
                **{key: f'camera {camera!r}' for camera, key in image_features(lr_config).items()}}
    return {'policy_config': policy_config, 'image_size': image_hw, 'stats': stats,
            'state_dict': from_lerobot_state_dict(weights), 'features': features,
            'use_vae': lr_config.get('use_vae', True)}


def lerobot_run_config(folder, lr_config=None):
    """The config.json content of this project (checkpoints.folder.make_run_config's keys) that a LeRobot
    ACT folder amounts to (lr_config: its config.json object, already read), statistics files read for
    the image normalisation; no task name."""
    lr_config = read_lerobot_config(folder, lr_config)
    policy_config, image_hw = policy_config_from_lerobot(lr_config)
    try:
        _, image_mean, image_std = statistics_from_lerobot(folder, lr_config)
        policy_config.update(image_mean=image_mean, image_std=image_std)
    except LeRobotFormatError:
        pass  # reported where the statistics are needed (--stats_from can stand in)
    return {'policy_class': 'ACT', 'policy_config': policy_config, 'task_name': None,
            'camera_names': list(policy_config['camera_names']), 'image_size': list(image_hw),
            'state_dim': policy_config['state_dim'], 'action_dim': policy_config['action_dim'],
            'training': {}, 'lerobot': True}


def load_lerobot_weights(policy, checkpoint):
    """Load a LeRobot checkpoint's weights into this project's ACT `policy`, strictly -> [keys LeRobot
    does not hold]: is_pad_head set to zeros (it never shapes actions), and the CVAE encoder of a
    checkpoint trained without one (use_vae false; used in training only) kept as the policy built it."""
    given = checkpoint['state_dict']
    filled = {key: torch.zeros_like(value) if key.startswith(NOT_IN_LEROBOT) else value
              for key, value in policy.state_dict().items() if key not in given}
    policy.deserialize({**filled, **given})
    return list(filled)


def feature_listing(features):
    """'observation.state -> qpos, ...' for the user."""
    return ', '.join(f'{key} -> {ours}' for key, ours in features.items())


################################ Writing ################################

def without_eps(std, eps=EPS):
    """float32 s with float32(s + eps) == std: what LeRobot must store so that its std + eps is our std."""
    std = torch.as_tensor(std, dtype=torch.float32)
    eps_t = torch.tensor(eps, dtype=torch.float32)
    s = std - eps_t
    for _ in range(8):
        back = s + eps_t
        if torch.equal(back, std):
            return s
        s = torch.where(back > std, torch.nextafter(s, torch.full_like(s, -np.inf)),
                        torch.where(back < std, torch.nextafter(s, torch.full_like(s, np.inf)), s))
    raise ValueError(f'no float32 standard deviation gives {std.tolist()} once LeRobot adds {eps}')


def _feature(kind, shape):
    return {'type': kind, 'shape': list(shape)}


def lerobot_config(policy_config, image_hw, temporal_agg=False):
    """LeRobot's config.json of this project's ACT policy_config; temporal_agg: LeRobot ensembles the
    chunks as --temporal_agg does (coefficient 0.01, a query every step)."""
    cfg = policy_config
    inputs = {STATE: _feature('STATE', (cfg['state_dim'],)),
              **{IMAGE_PREFIX + cam: _feature('VISUAL', (3, *image_hw)) for cam in cfg['camera_names']}}
    return {
        'type': 'act', 'n_obs_steps': 1, 'input_features': inputs,
        'output_features': {ACTION: _feature('ACTION', (cfg['action_dim'],))},
        'device': 'cpu', 'use_amp': False, 'push_to_hub': False, 'repo_id': None, 'private': None, 'tags': None,
        'license': None, 'chunk_size': cfg['num_queries'], 'n_action_steps': 1 if temporal_agg else cfg['num_queries'],
        'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MEAN_STD', 'ACTION': 'MEAN_STD'},
        'vision_backbone': cfg['backbone'], 'pretrained_backbone_weights': None,
        'replace_final_stride_with_dilation': False, 'pre_norm': bool(cfg['pre_norm']), 'dim_model': cfg['hidden_dim'],
        'n_heads': cfg['nheads'], 'dim_feedforward': cfg['dim_feedforward'], 'feedforward_activation': 'relu',
        'n_encoder_layers': cfg['enc_layers'], 'n_decoder_layers': 1, 'use_vae': cfg.get('use_vae', True),
        'latent_dim': cfg['latent_dim'], 'n_vae_encoder_layers': cfg['enc_layers'],
        'temporal_ensemble_coeff': TEMPORAL_AGG_K if temporal_agg else None,
        'dropout': cfg['dropout'], 'kl_weight': cfg['kl_weight'], 'optimizer_lr': cfg['lr'],
        'optimizer_weight_decay': cfg['weight_decay'], 'optimizer_lr_backbone': cfg['lr_backbone'],
    }


def check_exportable(policy_config):
    """ValueError naming what LeRobot's ACT cannot hold."""
    problems = []
    if policy_config.get('per_camera_backbone'):
        problems.append('per_camera_backbone (LeRobot shares one backbone between cameras)')
    if policy_config.get('position_embedding', 'sine') != 'sine':
        problems.append(f"position_embedding {policy_config['position_embedding']!r} (LeRobot's is sine)")
    if problems:
        raise ValueError('this ACT cannot be written as a LeRobot checkpoint: ' + '; '.join(problems))


def lerobot_statistics(stats, policy_config):
    """(normaliser's {"<feature>.<stat>": tensor}, unnormaliser's): LeRobot's arithmetic on them is ours."""
    def tensor(values):
        return torch.as_tensor(np.asarray(values, dtype=np.float32))
    cameras = policy_config['camera_names']
    image_mean = tensor(policy_config['image_mean']).reshape(-1, 3).expand(len(cameras), 3)
    image_std = tensor(policy_config['image_std']).reshape(-1, 3).expand(len(cameras), 3)
    action = {f'{ACTION}.mean': tensor(stats['action_mean']), f'{ACTION}.std': tensor(stats['action_std'])}
    inputs = {f'{STATE}.mean': tensor(stats['qpos_mean']), f'{STATE}.std': without_eps(tensor(stats['qpos_std']))}
    for i, cam in enumerate(cameras):
        inputs[f'{IMAGE_PREFIX}{cam}.mean'] = image_mean[i].reshape(3, 1, 1).clone()
        inputs[f'{IMAGE_PREFIX}{cam}.std'] = without_eps(image_std[i]).reshape(3, 1, 1)
    return {**inputs, **action}, dict(action)


def _pipeline_files(config, normalizer_stats, unnormalizer_stats):
    """{file name: JSON object} and {file name: tensors} of the two processor pipelines."""
    features = {**config['input_features'], **config['output_features']}
    step = {'eps': EPS, 'norm_map': config['normalization_mapping']}
    device = {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}}
    pre_state = f'{PREPROCESSOR}_step_3_{NORMALIZER}.safetensors'
    post_state = f'{POSTPROCESSOR}_step_0_{UNNORMALIZER}.safetensors'
    pre = {'name': PREPROCESSOR, 'steps': [
        {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
        {'registry_name': 'to_batch_processor', 'config': {}},
        device,
        {'registry_name': NORMALIZER, 'config': {**step, 'features': features}, 'state_file': pre_state}]}
    post = {'name': POSTPROCESSOR, 'steps': [
        {'registry_name': UNNORMALIZER, 'config': {**step, 'features': dict(config['output_features'])},
         'state_file': post_state},
        device]}
    return ({PREPROCESSOR + '.json': pre, POSTPROCESSOR + '.json': post},
            {pre_state: normalizer_stats, post_state: unnormalizer_stats})


def write_lerobot_checkpoint(folder, policy_config, image_hw, state_dict, stats, temporal_agg=False):
    """Write a LeRobot ACT `pretrained_model/` folder (current layout) -> the keys left out of the weights."""
    check_exportable(policy_config)
    os.makedirs(folder, exist_ok=True)
    config = lerobot_config(policy_config, image_hw, temporal_agg)
    weights, dropped = to_lerobot_state_dict(state_dict, policy_config.get('use_vae', True))
    jsons, tensors = _pipeline_files(config, *lerobot_statistics(stats, policy_config))
    save_safetensors(weights, os.path.join(folder, MODEL_FILE))
    for name, values in tensors.items():
        save_safetensors(values, os.path.join(folder, name))
    for name, obj in {CONFIG_FILE: config, **jsons}.items():
        atomic_write(os.path.join(folder, name), lambda f, obj=obj: f.write(json.dumps(obj, indent=4)), mode='w')
    return dropped
