"""A checkpoint folder (--ckpt_dir): what training writes there and how evaluation reads it back.

    config.json                        this project's: what the folder holds (policy class and config,
                                       cameras, image size, state/action sizes, project version)
    dataset_stats.pkl                  the original's normalisation statistics (formats/normalize.py)
    policy_best.ckpt, policy_last.ckpt policy.serialize(): a raw state_dict for ACT and CNNMLP (the
    policy_{unit}_{n}_seed_{s}.ckpt    original's format), {'nets', 'ema', 'ema_step'} for Diffusion;
                                       .safetensors instead of .ckpt with --save_format safetensors
    training_state.pt                  everything --resume needs (training/loop.py)
    train_val_{key}_seed_{s}.png       training curves
    result_{ckpt}.txt, video{i}.mp4    evaluation results (evaluation/)
A folder written by the original code has no config.json: evaluation then takes everything from
the command-line flags, as the original did. A LeRobot ACT `pretrained_model/` folder is read in
place of all of these (lerobot_act.py); checkpoints/reader.py tells the three kinds apart.
"""
import json
import os

import torch

from common.checks import check_values, is_name_list, is_positive_int, is_positive_ints
from common.files import atomic_write
from common.safe_load import load_json, save_safetensors
from constants import PROJECT_VERSION

CONFIG_FILE = 'config.json'
STATS_FILE = 'dataset_stats.pkl'
TRAINING_STATE = 'training_state.pt'  # everything --resume needs (training/loop.py)
BEST_CKPT = 'policy_best.ckpt'  # the checkpoint evaluation, export and --init_from read by default
REQUIRED_CONFIG_KEYS = ('policy_class', 'policy_config', 'camera_names', 'state_dim', 'action_dim')
SAVE_FORMATS = {'ckpt': '.ckpt', 'safetensors': '.safetensors'}  # --save_format -> extension of policy files


def atomic_save(obj, path, save=torch.save):
    """Write obj with save(obj, file) atomically: an interrupted write leaves the previous file intact."""
    atomic_write(path, lambda f: save(obj, f))


def save_policy(obj, ckpt_dir, stem, save_format='ckpt'):
    """Write policy.serialize()'s object as {stem}.ckpt (torch.save, the original's format) or
    {stem}.safetensors, atomically -> the path."""
    path = os.path.join(ckpt_dir, stem + SAVE_FORMATS[save_format])
    (save_safetensors if save_format == 'safetensors' else atomic_save)(obj, path)
    return path


def policy_file(ckpt_dir, name):
    """The path of checkpoint `name` in ckpt_dir; a name of one format that the folder holds only
    in the other (policy_best.ckpt of a safetensors run) resolves to the file it holds."""
    path = os.path.join(ckpt_dir, name)
    stem, ext = os.path.splitext(path)
    if not os.path.isfile(path) and ext in SAVE_FORMATS.values():
        others = [stem + e for e in SAVE_FORMATS.values() if e != ext and os.path.isfile(stem + e)]
        return others[0] if others else path
    return path


def make_run_config(policy_class, policy_config, task_name, image_size, training=None, shadows=True):
    """The config.json content. policy_config: the complete dict make_policy takes;
    image_size (H, W) the policy's; training: the settings of the run, for the record; shadows:
    False when the training frames were rendered without shadows (sim evaluation renders alike)."""
    return {
        'project_version': PROJECT_VERSION,
        'policy_class': policy_class,
        'policy_config': policy_config,
        'task_name': task_name,
        'camera_names': list(policy_config['camera_names']),
        'image_size': list(image_size),
        'shadows': bool(shadows),
        'state_dim': policy_config['state_dim'],
        'action_dim': policy_config['action_dim'],
        'training': training or {},
    }


def write_config(ckpt_dir, config):
    atomic_write(os.path.join(ckpt_dir, CONFIG_FILE), lambda f: json.dump(config, f, indent=2), mode='w')


def _version(text, path):
    try:
        return tuple(int(part) for part in str(text).split('.'))
    except ValueError:
        raise ValueError(f"{path}: project_version {text!r} is not a version number like '1.0.0'") from None


def load_config_json(ckpt_dir):
    """(path, object) of the folder's config.json, this project's or LeRobot's; object None when the
    folder has none (a folder of the original's)."""
    path = os.path.join(ckpt_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return path, None
    try:
        config = load_json(path)
    except ValueError as err:
        detail = str(err).removeprefix(f'{path}: ')
        raise ValueError(f'{path} cannot be read as JSON ({detail}); fix or remove it and give every model '
                         f'flag') from None
    if not isinstance(config, dict):
        raise ValueError(f'{path}: expected a JSON object, got {type(config).__name__}')
    return path, config


def checked_config(config, path):
    """This project's config.json object, checked: a version this project reads, the keys evaluation needs."""
    written_by = config.get('project_version', '0')
    if _version(written_by, path) > _version(PROJECT_VERSION, path):
        raise ValueError(f'{path} was written by version {written_by} of this project, newer than this one '
                         f'({PROJECT_VERSION}): update the project to read it, or move the file away and give '
                         f'every model flag')
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise KeyError(f'{path} has no {", ".join(missing)}; fix or remove it and give every model flag')
    return check_values(config, path, config_problem, ValueError, '; fix or remove it and give every model flag')


def config_problem(config):
    """What is wrong with the values of a config.json object, or None."""
    if not isinstance(config['policy_class'], str):
        return f"policy_class {config['policy_class']!r} is not a policy name"
    if not isinstance(config['policy_config'], dict):
        return f"policy_config is a {type(config['policy_config']).__name__}, not an object"
    if not is_name_list(config['camera_names']):
        return f"camera_names {config['camera_names']!r} is not a list of camera names"
    if config.get('image_size') is not None and not is_positive_ints(config['image_size'], 2):
        return f"image_size {config['image_size']!r} is not two positive integers [H, W]"
    for key in ('state_dim', 'action_dim'):
        if not is_positive_int(config[key]):
            return f'{key} {config[key]!r} is not a positive integer'
    return None



def read_config(ckpt_dir):
    """The folder's config.json of this project, checked, or None when it has none (a folder of the
    original's). Any folder, LeRobot's too: checkpoints.reader.open_checkpoint."""
    path, config = load_config_json(ckpt_dir)
    return None if config is None else checked_config(config, path)
