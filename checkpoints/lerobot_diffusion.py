"""LeRobot Diffusion checkpoints: a `pretrained_model/` folder of LeRobot's Diffusion read as this
project's Diffusion policy in its 'lerobot' style (policies/diffusion.py), and written from one (the
type-independent files: checkpoints/lerobot_files.py).

Weights: model.safetensors holds LeRobot's DiffusionModel under `diffusion.`: `rgb_encoder` (one, or
one per camera: `rgb_encoder.<i>`) with `backbone.<0..7>` (conv1, bn1, relu, maxpool, layer1..4, the
indices of this project's trunk), `pool.nets` (the keypoint convolution), `pool.pos_grid` (a constant,
recomputed here) and `out` (the keypoints' projection); `unet` with this project's UNet names except
`conv1` / `conv2` for the residual blocks' two conv blocks (`blocks.0` / `blocks.1` here) and the
down- and upsampling convolutions named by their index (`down_modules.<i>.2`, here `.2.conv`).
LeRobot keeps no EMA: its weights are both the trained and the averaged ones here, and writing
stores the averaged ones, which inference uses.
"""
import torch

from checkpoints.lerobot_files import (ENV_STATE, MODEL_FILE, OLD_STAT_BUFFERS, feature_roles, folder_file,
                                       image_features, image_statistics, load_tensors, number_problems, policy_features,
                                       read_checked_config, run_config, write_lerobot_folder)
from common.checks import is_positive_int
from detr.resnet import BACKBONES, trunk_output_hw
from formats.lerobot import ACTION, STATE, LeRobotFormatError
from policies.registry import lerobot_policy_class
from policies.diffusion import BETA_SCHEDULES, PREDICTION_TYPES
from policies.diffusion_nets import keypoint_grid

PREFIX = 'diffusion.'
SCHEDULERS = {'DDPM': 'ddpm', 'DDIM': 'ddim'}  # LeRobot's noise_scheduler_type -> --scheduler
# config.json settings that must be whole numbers, with the largest taken
SIZE_SETTINGS = {'horizon': 10_000, 'n_action_steps': 10_000, 'n_obs_steps': 1_000, 'kernel_size': 63,
                 'n_groups': 4096, 'diffusion_step_embed_dim': 65_536, 'spatial_softmax_num_keypoints': 4096,
                 'num_train_timesteps': 100_000}
NUMBER_SETTINGS = ('beta_start', 'beta_end', 'clip_sample_range', 'optimizer_lr', 'optimizer_weight_decay')
# LeRobot's defaults for settings a config.json may leave out (its DiffusionConfig)
LEROBOT_DEFAULTS = {
    'n_obs_steps': 2, 'horizon': 64, 'n_action_steps': 32, 'vision_backbone': 'resnet18', 'resize_shape': None,
    'crop_shape': None, 'crop_is_random': True, 'use_group_norm': False, 'spatial_softmax_num_keypoints': 32,
    'use_separate_rgb_encoder_per_camera': True, 'down_dims': [512, 1024, 2048], 'kernel_size': 5, 'n_groups': 8,
    'diffusion_step_embed_dim': 128, 'use_film_scale_modulation': True, 'noise_scheduler_type': 'DDPM',
    'num_train_timesteps': 100, 'beta_schedule': 'squaredcos_cap_v2', 'beta_start': 1e-4, 'beta_end': 0.02,
    'prediction_type': 'epsilon', 'clip_sample': True, 'clip_sample_range': 1.0, 'num_inference_steps': None,
    'optimizer_lr': 1e-4, 'optimizer_weight_decay': 1e-6,
    'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MIN_MAX', 'ACTION': 'MIN_MAX'},
}


def settings(lerobot_json):
    """config.json's values over LeRobot's defaults."""
    return {**LEROBOT_DEFAULTS, **{k: v for k, v in lerobot_json.items() if k in LEROBOT_DEFAULTS}}


################################ Names ################################

def _unet_to_lerobot(name):
    """A UNet key below `noise_pred_net.` -> LeRobot's below `unet.`."""
    name = name.replace('.blocks.0.', '.conv1.').replace('.blocks.1.', '.conv2.')
    for level in ('down_modules', 'up_modules'):
        if name.startswith(level + '.') and '.2.conv.' in name:
            name = name.replace('.2.conv.', '.2.')
    return name


def _unet_from_lerobot(name):
    name = name.replace('.conv1.', '.blocks.0.').replace('.conv2.', '.blocks.1.')
    parts = name.split('.')
    if parts[0] in ('down_modules', 'up_modules') and len(parts) == 4 and parts[2] == '2':
        name = '.'.join([*parts[:3], 'conv', parts[3]])
    return name


ENCODER_PARTS = (('backbones', 'backbone'), ('pools', 'pool'), ('linears', 'out'))  # (ours, LeRobot's)


def to_lerobot_state_dict(state_dict, shared_encoder):
    """This project's Diffusion network weights (`nets` or `ema`, keys `policy.`...) -> LeRobot's, without
    the keypoint grids (lerobot_weights adds them)."""
    out = {}
    for key, value in state_dict.items():
        part, _, rest = key[len('policy.'):].partition('.')
        if part == 'noise_pred_net':
            out[PREFIX + 'unet.' + _unet_to_lerobot(rest)] = value
            continue
        index, _, rest = rest.partition('.')
        theirs = dict(ENCODER_PARTS)[part]
        if part == 'backbones':
            rest = rest[len('nets.'):]
        encoder = 'rgb_encoder.' if shared_encoder else f'rgb_encoder.{index}.'
        out[f'{PREFIX}{encoder}{theirs}.{rest}'] = value
    return out


def from_lerobot_state_dict(weights, shared_encoder):
    """LeRobot's DiffusionModel weights -> this project's network keys; the keypoint grids and the old
    layout's statistics buffers left out."""
    ours = {theirs: mine for mine, theirs in ENCODER_PARTS}
    out = {}
    for key, value in weights.items():
        if key.startswith(OLD_STAT_BUFFERS) or key.endswith('.pos_grid'):
            continue
        if not key.startswith(PREFIX):
            raise LeRobotFormatError(f"{MODEL_FILE}: weight {key!r} is not under {PREFIX!r}: not LeRobot's Diffusion")
        name = key[len(PREFIX):]
        if name.startswith('unet.'):
            out['policy.noise_pred_net.' + _unet_from_lerobot(name[len('unet.'):])] = value
            continue
        if not name.startswith('rgb_encoder.'):
            raise LeRobotFormatError(f'{MODEL_FILE}: weight {key!r} has no counterpart in this project\'s Diffusion')
        rest = name[len('rgb_encoder.'):]
        index = '0'
        if not shared_encoder:
            index, _, rest = rest.partition('.')
        part, _, rest = rest.partition('.')
        if part not in ours:
            raise LeRobotFormatError(f'{MODEL_FILE}: weight {key!r} has no counterpart in this project\'s Diffusion')
        nets = 'nets.' if part == 'backbone' else ''
        out[f'policy.{ours[part]}.{index}.{nets}{rest}'] = value
    return out


################################ Reading ################################

def value_problems(cfg):
    """What makes a LeRobot Diffusion config.json's values unusable (types, sizes) -> sentences."""
    problems = [f'{key} {cfg.get(key)!r}: a whole number from 1 to {limit} is expected'
                for key, limit in SIZE_SETTINGS.items() if not is_positive_int(cfg.get(key), limit)]
    problems += number_problems(cfg, NUMBER_SETTINGS)
    dims = cfg['down_dims']
    if not (isinstance(dims, list) and dims and all(is_positive_int(d, 65_536) for d in dims)):
        problems.append(f'down_dims {dims!r}: a list of channel counts is expected')
    for key in ('crop_shape', 'resize_shape'):
        shape = cfg[key]
        if shape is not None and not (isinstance(shape, list) and len(shape) == 2
                                      and all(is_positive_int(n, 1 << 16) for n in shape)):
            problems.append(f'{key} {shape!r}: null or [H, W] is expected')
    steps = cfg['num_inference_steps']
    if steps is not None and not is_positive_int(steps, 100_000):
        problems.append(f'num_inference_steps {steps!r}: null or a whole number is expected')
    return problems


def check_lerobot_config(lerobot_json, path):
    """LeRobotFormatError naming the first setting this project's Diffusion cannot reproduce."""
    cfg = settings(lerobot_json)
    problems = value_problems(cfg)
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))
    inputs = lerobot_json.get('input_features') or {}
    if cfg['vision_backbone'] not in BACKBONES:
        problems.append(f"vision_backbone {cfg['vision_backbone']!r}: the backbones here are {', '.join(BACKBONES)}")
    if cfg['resize_shape'] is not None:
        problems.append(f"resize_shape {cfg['resize_shape']}: not supported (record or convert the frames at the "
                        f"size the policy sees)")
    if cfg['noise_scheduler_type'] not in SCHEDULERS:
        problems.append(f"noise_scheduler_type {cfg['noise_scheduler_type']!r}: LeRobot's are {', '.join(SCHEDULERS)}")
    if cfg['prediction_type'] not in PREDICTION_TYPES:
        problems.append(f"prediction_type {cfg['prediction_type']!r}: {' or '.join(PREDICTION_TYPES)} expected")
    if cfg['beta_schedule'] not in BETA_SCHEDULES:
        problems.append(f"beta_schedule {cfg['beta_schedule']!r}: {', '.join(BETA_SCHEDULES)} expected")
    playable = cfg['horizon'] - cfg['n_obs_steps'] + 1
    if not 1 <= cfg['n_action_steps'] <= playable:
        problems.append(f"n_action_steps {cfg['n_action_steps']}: at most horizon - n_obs_steps + 1 = {playable}")
    modes = cfg['normalization_mapping'] or {}
    if modes.get('ACTION') != 'MIN_MAX':
        problems.append(f"ACTION normalization {modes.get('ACTION')!r}: this Diffusion scales actions MIN_MAX")
    if STATE not in inputs:
        problems.append(f'no {STATE} input: this Diffusion needs the robot state')
    if ENV_STATE in inputs:
        problems.append(f'{ENV_STATE} input: not supported')
    problems += _image_problems(cfg, inputs)
    if ACTION not in (lerobot_json.get('output_features') or {}):
        problems.append(f'no {ACTION} output')
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))


def _image_problems(cfg, inputs):
    shapes = {tuple(inputs[key].get('shape') or ()) for key in image_features({'input_features': inputs}).values()}
    if not shapes:
        return ['no image input (observation.images.*): this Diffusion needs at least one camera']
    if len(shapes) > 1:
        return [f'cameras of different sizes {sorted(shapes)}: one image size for all is supported']
    shape = next(iter(shapes))
    if len(shape) != 3 or shape[0] != 3:
        return [f'image shape {list(shape)}: [3, H, W] expected']
    crop = cfg['crop_shape']
    if crop is not None and (crop[0] > shape[1] or crop[1] > shape[2]):
        return [f'crop_shape {crop} is larger than the {shape[1]}x{shape[2]} images']
    return []


def policy_config_from_lerobot(lerobot_json):
    """(this project's Diffusion policy_config in the lerobot style, image size (H, W)) of a checked
    LeRobot config.json; image normalisation comes with the statistics."""
    cfg = settings(lerobot_json)
    inputs = lerobot_json['input_features']
    cameras = image_features(lerobot_json)
    image_hw = tuple(inputs[next(iter(cameras.values()))]['shape'][1:])
    policy_config = {
        'style': 'lerobot', 'num_queries': cfg['horizon'], 'action_horizon': cfg['n_action_steps'],
        'obs_horizon': cfg['n_obs_steps'], 'crop_shape': cfg['crop_shape'],
        'num_keypoints': cfg['spatial_softmax_num_keypoints'],
        'shared_encoder': not cfg['use_separate_rgb_encoder_per_camera'],
        'step_embed_dim': cfg['diffusion_step_embed_dim'], 'film_scale': bool(cfg['use_film_scale_modulation']),
        'backbone_norm': 'group' if cfg['use_group_norm'] else 'batch', 'backbone': cfg['vision_backbone'],
        'pretrained_backbone': False, 'augment_images': False,
        'down_dims': list(cfg['down_dims']), 'kernel_size': cfg['kernel_size'], 'n_groups': cfg['n_groups'],
        'scheduler': SCHEDULERS[cfg['noise_scheduler_type']], 'num_train_timesteps': cfg['num_train_timesteps'],
        'num_inference_steps': cfg['num_inference_steps'] or cfg['num_train_timesteps'],
        'beta_schedule': cfg['beta_schedule'], 'beta_start': cfg['beta_start'], 'beta_end': cfg['beta_end'],
        'prediction_type': cfg['prediction_type'], 'clip_sample': bool(cfg['clip_sample']),
        'clip_sample_range': float(cfg['clip_sample_range']),
        'lr': cfg['optimizer_lr'], 'weight_decay': cfg['optimizer_weight_decay'],
        'camera_names': list(cameras), 'state_dim': inputs[STATE]['shape'][0],
        'action_dim': lerobot_json['output_features'][ACTION]['shape'][0],
    }
    return policy_config, image_hw


def read_lerobot_config(folder, lerobot_json=None):
    """The folder's LeRobot config.json (lerobot_json: its object, already read), checked by check_lerobot_config."""
    return read_checked_config(folder, check_lerobot_config, lerobot_json)


def read_lerobot_checkpoint(folder, statistics=True, lerobot_json=None):
    """-> {'policy_config', 'image_size', 'stats', 'state_dict', 'features'} of a LeRobot Diffusion
    folder (lerobot_json: its config.json object, already read); 'state_dict' the network's weights
    (trained and averaged alike); statistics False: no 'stats'."""
    lerobot_json = read_lerobot_config(folder, lerobot_json)
    policy_config, image_hw = policy_config_from_lerobot(lerobot_json)
    stats = image_statistics(folder, lerobot_json, policy_config, required=statistics)
    weights = load_tensors(folder_file(folder, MODEL_FILE))
    return {'policy_config': policy_config, 'image_size': image_hw, 'stats': stats if statistics else None,
            'state_dict': from_lerobot_state_dict(weights, policy_config['shared_encoder']),
            'features': feature_roles(lerobot_json)}


def lerobot_run_config(folder, lerobot_json=None):
    """The config.json content of this project that a LeRobot Diffusion folder amounts to; no task name."""
    lerobot_json = read_lerobot_config(folder, lerobot_json)
    policy_config, image_hw = policy_config_from_lerobot(lerobot_json)
    image_statistics(folder, lerobot_json, policy_config, required=False)  # else --stats_from stands in
    return run_config(lerobot_policy_class('diffusion'), policy_config, image_hw)


def load_lerobot_weights(policy, checkpoint):
    """Load a LeRobot Diffusion checkpoint's weights into `policy` as its trained and averaged
    weights, strictly -> [] (LeRobot holds every tensor of the network)."""
    weights = checkpoint['state_dict']
    policy.deserialize({'nets': weights, 'ema': weights, 'ema_step': 0})
    return []


################################ Writing ################################

def check_exportable(policy_config):
    """ValueError naming the setting LeRobot's Diffusion cannot hold (it computes the lerobot style only)."""
    if policy_config.get('style') != 'lerobot':
        raise ValueError(f"this Diffusion policy has style {policy_config.get('style')!r}: LeRobot's Diffusion "
                         f"computes the lerobot style only (train with --diffusion_style lerobot), so it cannot be "
                         f"written as a LeRobot checkpoint")
    if policy_config['scheduler'] not in SCHEDULERS.values():
        raise ValueError(f"scheduler {policy_config['scheduler']!r}: LeRobot samples with DDPM or DDIM "
                         f"(convert with the policy's --scheduler ddim or ddpm)")


def lerobot_config(policy_config, image_hw):
    """LeRobot's config.json of this project's lerobot-style Diffusion policy_config."""
    cfg = policy_config
    crop = None if cfg['crop_shape'] is None else list(cfg['crop_shape'])
    theirs = {v: k for k, v in SCHEDULERS.items()}
    return {
        'type': 'diffusion', 'n_obs_steps': cfg['obs_horizon'], **policy_features(cfg, image_hw),
        'device': 'cpu', 'use_amp': False, 'push_to_hub': False, 'repo_id': None, 'private': None, 'tags': None,
        'license': None, 'horizon': cfg['num_queries'], 'n_action_steps': cfg['action_horizon'],
        # qpos standardised as here; LeRobot's Diffusion takes any mode per feature type
        'normalization_mapping': {'VISUAL': 'MEAN_STD', 'STATE': 'MEAN_STD', 'ACTION': 'MIN_MAX'},
        'drop_n_last_frames': cfg['num_queries'] - cfg['action_horizon'] - cfg['obs_horizon'] + 1,
        'vision_backbone': cfg['backbone'], 'resize_shape': None, 'crop_ratio': 1.0, 'crop_shape': crop,
        'crop_is_random': True, 'pretrained_backbone_weights': None,
        'use_group_norm': cfg['backbone_norm'] == 'group',
        'spatial_softmax_num_keypoints': cfg['num_keypoints'],
        'use_separate_rgb_encoder_per_camera': not cfg['shared_encoder'], 'down_dims': list(cfg['down_dims']),
        'kernel_size': cfg['kernel_size'], 'n_groups': cfg['n_groups'],
        'diffusion_step_embed_dim': cfg['step_embed_dim'],
        'use_film_scale_modulation': cfg['film_scale'], 'noise_scheduler_type': theirs[cfg['scheduler']],
        'num_train_timesteps': cfg['num_train_timesteps'], 'beta_schedule': cfg['beta_schedule'],
        'beta_start': cfg['beta_start'], 'beta_end': cfg['beta_end'], 'prediction_type': cfg['prediction_type'],
        'clip_sample': cfg['clip_sample'], 'clip_sample_range': cfg['clip_sample_range'],
        'num_inference_steps': cfg['num_inference_steps'], 'do_mask_loss_for_padding': False,
        'optimizer_lr': cfg['lr'], 'optimizer_weight_decay': cfg['weight_decay'],
    }


def lerobot_weights(policy_config, image_hw, network):
    """LeRobot's model.safetensors tensors of a network state dict (the averaged weights), with the
    keypoint grids its SpatialSoftmax keeps as buffers."""
    weights = to_lerobot_state_dict(network, policy_config['shared_encoder'])
    h, w = trunk_output_hw(*(policy_config['crop_shape'] or image_hw))
    grid = torch.from_numpy(keypoint_grid(h, w))
    for key in [k for k in weights if k.endswith('.pool.nets.weight')]:
        weights[key[:-len('nets.weight')] + 'pos_grid'] = grid.clone()
    return weights


def write_lerobot_checkpoint(folder, policy_config, image_hw, checkpoint, stats):
    """Write a LeRobot Diffusion `pretrained_model/` folder from this project's Diffusion checkpoint dict
    ({'nets', 'ema', ...}): the averaged weights, which inference uses."""
    check_exportable(policy_config)
    config = lerobot_config(policy_config, image_hw)
    weights = lerobot_weights(policy_config, image_hw, checkpoint['ema'])
    write_lerobot_folder(folder, config, weights, stats, policy_config)


def write_converted(folder, policy_config, image_hw, checkpoint, stats, temporal_agg=False):
    """write_lerobot_checkpoint for checkpoints/convert.py (temporal_agg: ACT's only) -> which weights, for its
    message."""
    write_lerobot_checkpoint(folder, policy_config, image_hw, checkpoint, stats)
    return ': the averaged (EMA) weights, which inference uses (LeRobot keeps one set)'
