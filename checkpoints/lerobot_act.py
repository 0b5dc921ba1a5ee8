"""LeRobot ACT checkpoints: a `pretrained_model/` folder read as this project's ACT, and written from one
(the type-independent files: checkpoints/lerobot_files.py).

Weights: model.safetensors under LeRobot's module names (KEY_MAP). The two models compute the same
function of the same weights: LeRobot's one decoder layer is the only one the original computes, and
its image tokens come camera after camera where the original puts cameras side by side, which
attention without masks does not see.
"""
import torch

from checkpoints.lerobot_files import (ENV_STATE, MODEL_FILE, OLD_STAT_BUFFERS, feature_roles, folder_file,
                                       image_features, image_statistics, load_tensors, number_problems, policy_features,
                                       read_checked_config, run_config, write_lerobot_folder)
from common.checks import positive_int
from detr.resnet import BACKBONES
from formats.lerobot import ACTION, STATE, LeRobotFormatError
from policies.registry import lerobot_policy_class
from policies.act import actions_per_query
from policies.chunker import TEMPORAL_AGG_K

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

NUMBER_SETTINGS = ('kl_weight', 'optimizer_lr', 'optimizer_lr_backbone', 'optimizer_weight_decay',
                   'temporal_ensemble_coeff')  # config.json settings that must be numbers (the last may be null)
SIZE_SETTINGS = {'chunk_size': 10_000, 'dim_model': 65_536, 'dim_feedforward': 262_144, 'n_encoder_layers': 256,
                 'n_heads': 1024, 'latent_dim': 65_536}  # config.json sizes -> the largest taken as a size


def value_problems(lr_config):
    """What makes a LeRobot config.json's values unusable (types, sizes, ranges) -> sentences."""
    problems = [f'{key} {lr_config.get(key)!r}: a whole number from 1 to {limit} is expected'
                for key, limit in SIZE_SETTINGS.items() if not positive_int(lr_config.get(key), limit)]
    if not problems and lr_config['dim_model'] % lr_config['n_heads']:
        problems.append(f"dim_model {lr_config['dim_model']} is not a multiple of n_heads {lr_config['n_heads']}")
    steps = lr_config.get('n_action_steps', lr_config.get('chunk_size'))
    if not problems and not positive_int(steps, lr_config['chunk_size']):
        problems.append(f"n_action_steps {steps!r}: a whole number from 1 to chunk_size {lr_config['chunk_size']} "
                        f"is expected")
    dropout = lr_config.get('dropout', 0.1)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f'dropout {dropout!r}: a number in [0, 1) is expected')
    return problems + number_problems(lr_config, NUMBER_SETTINGS, optional=('temporal_ensemble_coeff',))


def check_lerobot_config(lr_config, path):
    """LeRobotFormatError naming the first setting this project's ACT cannot reproduce."""
    kind = lr_config.get('type')
    if kind != 'act':
        raise LeRobotFormatError(f'{path} is a LeRobot "{kind}" policy; not an "act" checkpoint')
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
        'num_queries': lr_config['chunk_size'], 'action_horizon': action_horizon(lr_config),
        'kl_weight': float(lr_config['kl_weight']),
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


def action_horizon(lr_config):
    """The actions played per query of a checked LeRobot ACT config: its n_action_steps, or None (the
    whole chunk) where it ensembles (temporal_ensemble_coeff; here --temporal_agg) or names none."""
    if lr_config.get('temporal_ensemble_coeff') is not None:
        return None
    return lr_config.get('n_action_steps')


def read_lerobot_config(folder, lr_config=None):
    """The folder's LeRobot config.json (lr_config: its object, already read), checked by check_lerobot_config."""
    return read_checked_config(folder, check_lerobot_config, lr_config)


def read_lerobot_checkpoint(folder, statistics=True, lr_config=None):
    """-> {'policy_config', 'image_size', 'stats', 'state_dict', 'features', 'use_vae'} of a LeRobot
    ACT folder (lr_config: its config.json object, already read); statistics False: no 'stats', and
    ImageNet's image normalisation."""
    lr_config = read_lerobot_config(folder, lr_config)
    policy_config, image_hw = policy_config_from_lerobot(lr_config)
    stats = image_statistics(folder, lr_config, policy_config, required=True) if statistics else None
    weights = load_tensors(folder_file(folder, MODEL_FILE))
    return {'policy_config': policy_config, 'image_size': image_hw, 'stats': stats,
            'state_dict': from_lerobot_state_dict(weights), 'features': feature_roles(lr_config),
            'use_vae': lr_config.get('use_vae', True)}


def lerobot_run_config(folder, lr_config=None):
    """The config.json content of this project that a LeRobot ACT folder amounts to (lr_config: its
    config.json object, already read), statistics files read for the image normalisation (where they are
    missing, --stats_from stands in where the statistics are needed); no task name."""
    lr_config = read_lerobot_config(folder, lr_config)
    policy_config, image_hw = policy_config_from_lerobot(lr_config)
    image_statistics(folder, lr_config, policy_config, required=False)
    return run_config(lerobot_policy_class('act'), policy_config, image_hw)


def load_lerobot_weights(policy, checkpoint):
    """Load a LeRobot checkpoint's weights into this project's ACT `policy`, strictly -> [keys LeRobot
    does not hold]: is_pad_head set to zeros (it never shapes actions), and the CVAE encoder of a
    checkpoint trained without one (use_vae false; used in training only) kept as the policy built it."""
    given = checkpoint['state_dict']
    filled = {key: torch.zeros_like(value) if key.startswith(NOT_IN_LEROBOT) else value
              for key, value in policy.state_dict().items() if key not in given}
    policy.deserialize({**filled, **given})
    return list(filled)


################################ Writing ################################

def lerobot_config(policy_config, image_hw, temporal_agg=False):
    """LeRobot's config.json of this project's ACT policy_config; temporal_agg: LeRobot ensembles the
    chunks as --temporal_agg does (coefficient 0.01, a query every step)."""
    cfg = policy_config
    return {
        'type': 'act', 'n_obs_steps': 1, **policy_features(cfg, image_hw),
        'device': 'cpu', 'use_amp': False, 'push_to_hub': False, 'repo_id': None, 'private': None, 'tags': None,
        'license': None, 'chunk_size': cfg['num_queries'],
        'n_action_steps': 1 if temporal_agg else actions_per_query(cfg),
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


def write_lerobot_checkpoint(folder, policy_config, image_hw, state_dict, stats, temporal_agg=False):
    """Write a LeRobot ACT `pretrained_model/` folder (current layout) -> the keys left out of the weights."""
    check_exportable(policy_config)
    config = lerobot_config(policy_config, image_hw, temporal_agg)
    weights, dropped = to_lerobot_state_dict(state_dict, policy_config.get('use_vae', True))
    write_lerobot_folder(folder, config, weights, stats, policy_config)
    return dropped


def write_converted(folder, policy_config, image_hw, state_dict, stats, temporal_agg=False):
    """write_lerobot_checkpoint for checkpoints/convert.py -> what the conversion left out, for its message."""
    dropped = write_lerobot_checkpoint(folder, policy_config, image_hw, state_dict, stats, temporal_agg)
    return (f'; left out {len(dropped)} tensors that never shape actions (decoder layers after the first, '
            f'is_pad_head)')
