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
from common.checks import is_positive_int
from detr.resnet import BACKBONES
from formats.lerobot import ACTION, STATE, LeRobotFormatError
from policies.act import actions_per_query
from policies.chunker import TEMPORAL_AGG_K
from policies.registry import lerobot_policy_class

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


def value_problems(lerobot_json):
    """What makes a LeRobot config.json's values unusable (types, sizes, ranges) -> sentences."""
    problems = [f'{key} {lerobot_json.get(key)!r}: a whole number from 1 to {limit} is expected'
                for key, limit in SIZE_SETTINGS.items() if not is_positive_int(lerobot_json.get(key), limit)]
    if not problems and lerobot_json['dim_model'] % lerobot_json['n_heads']:
        problems.append(f"dim_model {lerobot_json['dim_model']} is not a multiple of n_heads {lerobot_json['n_heads']}")
    steps = lerobot_json.get('n_action_steps', lerobot_json.get('chunk_size'))
    if not problems and not is_positive_int(steps, lerobot_json['chunk_size']):
        problems.append(f"n_action_steps {steps!r}: a whole number from 1 to chunk_size {lerobot_json['chunk_size']} "
                        f"is expected")
    dropout = lerobot_json.get('dropout', 0.1)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f'dropout {dropout!r}: a number in [0, 1) is expected')
    return problems + number_problems(lerobot_json, NUMBER_SETTINGS, optional=('temporal_ensemble_coeff',))


def check_lerobot_config(lerobot_json, path):
    """LeRobotFormatError naming the first setting this project's ACT cannot reproduce."""
    kind = lerobot_json.get('type')
    if kind != 'act':
        raise LeRobotFormatError(f'{path} is a LeRobot "{kind}" policy; not an "act" checkpoint')
    problems = value_problems(lerobot_json)
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))
    inputs = lerobot_json.get('input_features') or {}
    if lerobot_json.get('n_decoder_layers', 1) != 1:
        problems.append(f"n_decoder_layers {lerobot_json['n_decoder_layers']}: this ACT computes one decoder layer, "
                        f"as the original")
    if lerobot_json.get('vision_backbone') not in BACKBONES:
        problems.append(f"vision_backbone {lerobot_json.get('vision_backbone')!r}: the backbones here are "
                        f"{', '.join(BACKBONES)}")
    if lerobot_json.get('replace_final_stride_with_dilation'):
        problems.append('replace_final_stride_with_dilation: not supported (the original never dilates)')
    if lerobot_json.get('feedforward_activation', 'relu') != 'relu':
        problems.append(f"feedforward_activation {lerobot_json['feedforward_activation']!r}: only relu")
    vae_layers, layers = lerobot_json.get('n_vae_encoder_layers'), lerobot_json.get('n_encoder_layers')
    if lerobot_json.get('use_vae', True) and vae_layers != layers:
        problems.append(f"n_vae_encoder_layers {vae_layers} differs from n_encoder_layers {layers}: the original's "
                        f"CVAE encoder has as many layers")
    if lerobot_json.get('n_obs_steps', 1) != 1:
        problems.append(f"n_obs_steps {lerobot_json['n_obs_steps']}: ACT takes one observation")
    if STATE not in inputs:
        problems.append(f'no {STATE} input: this ACT needs the robot state')
    if ENV_STATE in inputs:
        problems.append(f'{ENV_STATE} input: not supported')
    shapes = {tuple(inputs[key]['shape']) for key in image_features(lerobot_json).values()}
    if not shapes:
        problems.append('no image input (observation.images.*): this ACT needs at least one camera')
    elif len(shapes) > 1:
        problems.append(f'cameras of different sizes {sorted(shapes)}: one image size for all is supported')
    if ACTION not in (lerobot_json.get('output_features') or {}):
        problems.append(f'no {ACTION} output')
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))


def policy_config_from_lerobot(lerobot_json):
    """(this project's ACT policy_config, image size (H, W)) of a checked LeRobot config.json; image
    normalisation comes with the statistics."""
    inputs = lerobot_json['input_features']
    cameras = image_features(lerobot_json)
    image_hw = tuple(inputs[next(iter(cameras.values()))]['shape'][1:])
    policy_config = {
        'num_queries': lerobot_json['chunk_size'], 'action_horizon': action_horizon(lerobot_json),
        'kl_weight': float(lerobot_json['kl_weight']),
        'hidden_dim': lerobot_json['dim_model'], 'dim_feedforward': lerobot_json['dim_feedforward'],
        'enc_layers': lerobot_json['n_encoder_layers'], 'dec_layers': 1, 'nheads': lerobot_json['n_heads'],
        'latent_dim': lerobot_json['latent_dim'], 'dropout': lerobot_json['dropout'],
        'pre_norm': lerobot_json['pre_norm'],
        'position_embedding': 'sine', 'backbone': lerobot_json['vision_backbone'], 'per_camera_backbone': False,
        'lr': lerobot_json.get('optimizer_lr', 1e-5), 'lr_backbone': lerobot_json.get('optimizer_lr_backbone', 1e-5),
        'weight_decay': lerobot_json.get('optimizer_weight_decay', 1e-4), 'pretrained_backbone': False,
        'camera_names': list(cameras), 'state_dim': inputs[STATE]['shape'][0],
        'action_dim': lerobot_json['output_features'][ACTION]['shape'][0],
        'use_vae': bool(lerobot_json.get('use_vae', True)),
    }
    return policy_config, image_hw


def action_horizon(lerobot_json):
    """The actions played per query of a checked LeRobot ACT config: its n_action_steps, or None (the
    whole chunk) where it ensembles (temporal_ensemble_coeff; here --temporal_agg) or names none."""
    if lerobot_json.get('temporal_ensemble_coeff') is not None:
        return None
    return lerobot_json.get('n_action_steps')


def read_lerobot_config(folder, lerobot_json=None):
    """The folder's LeRobot config.json (lerobot_json: its object, already read), checked by check_lerobot_config."""
    return read_checked_config(folder, check_lerobot_config, lerobot_json)


def read_lerobot_checkpoint(folder, statistics=True, lerobot_json=None):
    """-> {'policy_config', 'image_size', 'stats', 'state_dict', 'features', 'use_vae'} of a LeRobot
    ACT folder (lerobot_json: its config.json object, already read); statistics False: no 'stats', and
    ImageNet's image normalisation."""
    lerobot_json = read_lerobot_config(folder, lerobot_json)
    policy_config, image_hw = policy_config_from_lerobot(lerobot_json)
    stats = image_statistics(folder, lerobot_json, policy_config, required=True) if statistics else None
    weights = load_tensors(folder_file(folder, MODEL_FILE))
    return {'policy_config': policy_config, 'image_size': image_hw, 'stats': stats,
            'state_dict': from_lerobot_state_dict(weights), 'features': feature_roles(lerobot_json),
            'use_vae': lerobot_json.get('use_vae', True)}


def lerobot_run_config(folder, lerobot_json=None):
    """The config.json content of this project that a LeRobot ACT folder amounts to (lerobot_json: its
    config.json object, already read), statistics files read for the image normalisation (where they are
    missing, --stats_from stands in where the statistics are needed); no task name."""
    lerobot_json = read_lerobot_config(folder, lerobot_json)
    policy_config, image_hw = policy_config_from_lerobot(lerobot_json)
    image_statistics(folder, lerobot_json, policy_config, required=False)
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
