"""The files of a LeRobot policy's `pretrained_model/` folder that do not depend on the policy type:
its config.json's features, the normaliser statistics (current layout and the one before LeRobot
0.4) and the processor pipelines that hold them. checkpoints/lerobot_act.py and
checkpoints/lerobot_diffusion.py read and write the type's own settings and weights.

    config.json                     {"type": ..., "input_features", "output_features", ...}
    model.safetensors               the weights under LeRobot's module names
    policy_preprocessor.json        rename, batch, device and normaliser steps; the normaliser's
    policy_preprocessor_step_3_normalizer_processor.safetensors      statistics "<feature>.<stat>"
    policy_postprocessor.json       unnormaliser and device steps
    policy_postprocessor_step_0_unnormalizer_processor.safetensors
Before LeRobot 0.4 the statistics were buffers inside model.safetensors
(normalize_inputs.buffer_observation_state.mean, unnormalize_outputs.buffer_action.std, ...); both are read.

Features: observation.state is qpos, observation.images.<camera> the camera <camera>, action the action.
Arithmetic: LeRobot standardises inputs by (x - mean) / (std + eps), scales MIN_MAX ones by
2 (x - min) / (max - min) - 1, and unnormalises actions by a * std + mean or (a + 1) / 2 (max - min) + min;
this project standardises qpos by (x - mean) / std, so reading folds eps (or the range) into qpos's
mean and std; writing takes eps out again (to the float32 bit), so a round trip returns the same numbers.
"""
import json
import os

import numpy as np
import torch

from common.checks import is_finite_number, is_positive_int
from common.files import atomic_write
from common.folders import inside_folder
from common.safe_load import save_safetensors
from formats.lerobot import ACTION, IMAGE_PREFIX, STATE, LeRobotFormatError, read_json

### The format (LeRobot's names)
CONFIG_FILE = 'config.json'
MODEL_FILE = 'model.safetensors'
PREPROCESSOR, POSTPROCESSOR = 'policy_preprocessor', 'policy_postprocessor'
NORMALIZER, UNNORMALIZER = 'normalizer_processor', 'unnormalizer_processor'
ENV_STATE = 'observation.environment_state'
EPS = 1e-8  # LeRobot's normaliser epsilon, when its processor file names none
OLD_STAT_BUFFERS = ('normalize_inputs.buffer_', 'normalize_targets.buffer_', 'unnormalize_outputs.buffer_')
NORM_MODES = ('MEAN_STD', 'MIN_MAX', 'IDENTITY')


def image_statistics(folder, lerobot_json, policy_config, required):
    """The folder's statistics (statistics_from_lerobot's dataset_stats dict), its image mean and std put
    into policy_config; None when they are missing and not required."""
    try:
        stats, image_mean, image_std = statistics_from_lerobot(folder, lerobot_json)
    except LeRobotFormatError:
        if required:
            raise
        return None
    policy_config.update(image_mean=image_mean, image_std=image_std)
    return stats


def feature_roles(lerobot_json):
    """{LeRobot feature: what it is here} of a config.json object, printed when a folder is loaded."""
    return {STATE: 'qpos', ACTION: 'action',
            **{key: f'camera {camera!r}' for camera, key in image_features(lerobot_json).items()}}


def run_config(policy_class, policy_config, image_hw):
    """The config.json content of this project (checkpoints.folder.make_run_config's keys) a LeRobot
    folder amounts to; no task name."""
    return {'policy_class': policy_class, 'policy_config': policy_config, 'task_name': None,
            'camera_names': list(policy_config['camera_names']), 'image_size': list(image_hw),
            'state_dim': policy_config['state_dim'], 'action_dim': policy_config['action_dim'],
            'training': {}, 'lerobot': True}


def policy_features(policy_config, image_hw):
    """config.json's input_features and output_features of a policy_config: the state, each camera, the action."""
    cfg = policy_config
    inputs = {STATE: feature_spec('STATE', (cfg['state_dim'],)),
              **{IMAGE_PREFIX + cam: feature_spec('VISUAL', (3, *image_hw)) for cam in cfg['camera_names']}}
    return {'input_features': inputs, 'output_features': {ACTION: feature_spec('ACTION', (cfg['action_dim'],))}}


def folder_file(folder, name):
    """The path of the file `name` of a LeRobot folder, refused when it is a link that leads out of the
    folder's tree (common.folders.link_tree: a hub cache snapshot's links into its blobs are read)."""
    return os.path.join(folder, inside_folder(folder, name, folder, 'the file', LeRobotFormatError))


def read_checked_config(folder, check, lerobot_json=None):
    """The folder's config.json object (lerobot_json: already read), its structure checked (structure_problems),
    then passed through check(lerobot_json, path)."""
    path = folder_file(folder, CONFIG_FILE)
    lerobot_json = read_json(path, dict) if lerobot_json is None else lerobot_json
    problems = structure_problems(lerobot_json)
    if problems:
        raise LeRobotFormatError(f'{path}: ' + '; '.join(problems))
    check(lerobot_json, path)
    return lerobot_json


def structure_problems(lerobot_json):
    """What makes a LeRobot config.json unreadable whatever its type -> sentences: the features (objects
    with a shape of positive sizes) and the normalization mapping (names of modes)."""
    problems = []
    for group in ('input_features', 'output_features'):
        features = lerobot_json.get(group)
        if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
            problems.append(f'{group}: an object of features ({{"observation.state": {{"shape": [...]}}, ...}}) '
                            f'is expected')
            continue
        for key, feature in features.items():
            shape = feature.get('shape')
            if not (isinstance(shape, list) and shape and all(is_positive_int(n, 1 << 16) for n in shape)):
                problems.append(f'{group} {key} shape {shape!r}: a list of positive whole sizes is expected')
            if not isinstance(feature.get('type', ''), str):
                problems.append(f"{group} {key} type {feature.get('type')!r}: a name such as \"STATE\" is expected")
    mapping = lerobot_json.get('normalization_mapping')
    if mapping is not None and not (isinstance(mapping, dict) and all(isinstance(v, str) for v in mapping.values())):
        problems.append(f'normalization_mapping {mapping!r}: an object such as {{"STATE": "MEAN_STD"}} is expected')
    return problems


def number_problems(cfg, keys, optional=()):
    """Sentences for the settings `keys` of cfg that are not finite numbers (those in `optional` may be null)."""
    return [f'{key} {cfg[key]!r}: a number is expected' for key in keys
            if key in cfg and not (is_finite_number(cfg[key]) or (key in optional and cfg[key] is None))]


def is_lerobot_config(config):
    """Whether a checkpoint folder's config.json object is a LeRobot policy's (it names its "type")."""
    return 'type' in config and 'policy_class' not in config



def image_features(lerobot_json):
    """{camera name: LeRobot feature key} of the VISUAL inputs, in the config's order."""
    return {key[len(IMAGE_PREFIX):]: key for key, feature in lerobot_json.get('input_features', {}).items()
            if feature.get('type') == 'VISUAL'}



def _step(path, registry_name):
    """The step `registry_name` of the processor pipeline file `path` (None when it has none), checked:
    an object, its config an object with a number eps and an object norm_map."""
    pipeline = read_json(path, dict)
    steps = pipeline.get('steps', [])
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise LeRobotFormatError(f'{path}: steps {steps!r}: a list of step objects is expected')
    step = next((s for s in steps if s.get('registry_name') == registry_name), None)
    config = (step or {}).get('config', {})
    if not isinstance(config, dict):
        raise LeRobotFormatError(f'{path}: the {registry_name} step\'s config {config!r}: an object is expected')
    problems = number_problems(config, ('eps',))
    if not isinstance(config.get('norm_map', {}), dict):
        problems.append(f"norm_map {config['norm_map']!r}: an object such as {{\"STATE\": \"MEAN_STD\"}} is expected")
    if problems:
        raise LeRobotFormatError(f'{path}: the {registry_name} step\'s ' + '; '.join(problems))
    return step



def load_tensors(path):
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 (safetensors' own error types for a broken file)
        raise LeRobotFormatError(f'{path} cannot be read as safetensors ({err})') from None



def _state_file(folder, step, source):
    """The statistics file a processor step names, inside the checkpoint folder."""
    return os.path.join(folder, inside_folder(folder, step['state_file'], source, 'state_file', LeRobotFormatError))



def raw_statistics(folder, lerobot_json):
    """(inputs' stats, outputs' stats, eps, norm_map): {feature: {stat: float32 tensor}} from the
    processor files, or from model.safetensors' buffers in the layout before LeRobot 0.4."""
    norm_map = dict(lerobot_json.get('normalization_mapping') or {})
    pre_path = folder_file(folder, PREPROCESSOR + '.json')
    if os.path.isfile(pre_path):
        pre = _step(pre_path, NORMALIZER)
        post_path = folder_file(folder, POSTPROCESSOR + '.json')
        post = _step(post_path, UNNORMALIZER) if os.path.isfile(post_path) else None
        inputs = _statistics_file(folder, pre, pre_path) if pre and 'state_file' in pre else {}
        outputs = _statistics_file(folder, post, post_path) if post and 'state_file' in post else {}
        step_config = (pre or {}).get('config', {})
        return inputs, outputs, float(step_config.get('eps', EPS)), step_config.get('norm_map', norm_map)
    weights = load_tensors(folder_file(folder, MODEL_FILE))
    features = [*lerobot_json.get('input_features', {}), *lerobot_json.get('output_features', {})]
    inputs = _old_buffers(weights, ('normalize_inputs.buffer_',), features)
    outputs = _old_buffers(weights, ('unnormalize_outputs.buffer_',), features)
    return inputs, outputs, EPS, norm_map



def _statistics_file(folder, step, source):
    """{feature: {stat: float32 tensor}} of the statistics file a processor step names; its tensors are
    named "<feature>.<stat>"."""
    path = _state_file(folder, step, source)
    out = {}
    for key, value in load_tensors(path).items():
        if '.' not in key:
            raise LeRobotFormatError(f'{path}: tensor {key!r}: names "<feature>.<stat>" such as '
                                     f'"observation.state.mean" are expected')
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



def statistics_from_lerobot(folder, lerobot_json):
    """(dataset_stats dict as the original's, image_mean, image_std) that reproduce the folder's
    LeRobot normalisation; LeRobotFormatError naming the statistics missing."""
    inputs, outputs, eps, norm_map = raw_statistics(folder, lerobot_json)
    bad = {t: m for t, m in norm_map.items() if m not in NORM_MODES}
    if bad:
        raise LeRobotFormatError(f'{folder}: normalization modes {bad} are not supported '
                                 f'(only {", ".join(NORM_MODES)})')
    needs = {'MEAN_STD': ('mean', 'std'), 'MIN_MAX': ('min', 'max'), 'IDENTITY': ()}
    cameras = image_features(lerobot_json)
    wanted = [(STATE, 'STATE', inputs, False), (ACTION, 'ACTION', outputs, True)]
    wanted += [(key, 'VISUAL', inputs, False) for key in cameras.values()]
    missing = [f'{feature}.{stat}' for feature, kind, source, _ in wanted
               for stat in needs[norm_map.get(kind, 'IDENTITY')] if stat not in source.get(feature, {})]
    if missing:
        raise LeRobotFormatError(
            f'{folder}: the normalisation statistics {", ".join(missing)} are missing (no {PREPROCESSOR}.json / '
            f'{POSTPROCESSOR}.json with their safetensors files, and none in {MODEL_FILE}); pass --stats_from '
            f'DATASET to take them from the dataset the policy was trained on')
    state_dim = lerobot_json['input_features'][STATE]['shape'][0]
    action_dim = lerobot_json['output_features'][ACTION]['shape'][0]
    sizes = {'STATE': state_dim, 'ACTION': action_dim, 'VISUAL': 3}  # values per statistic (or one for all)
    wrong = [f'{feature}.{stat} has {tuple(value.shape)}' for feature, kind, source, _ in wanted
             for stat, value in source.get(feature, {}).items() if value.numel() not in (1, sizes[kind])]
    if wrong:
        raise LeRobotFormatError(f'{folder}: the normalisation statistics {", ".join(wrong)}: one value, or one per '
                                 f'value of the feature ({STATE} {state_dim}, {ACTION} {action_dim}, a camera 3 '
                                 f'channels) is expected')
    affine = {feature: _affine(source.get(feature), norm_map.get(kind, 'IDENTITY'), eps, inverse)
              for feature, kind, source, inverse in wanted}
    identity = (torch.zeros(1), torch.ones(1))
    (qpos_mean, qpos_std), (action_mean, action_std) = (affine[STATE] or identity), (affine[ACTION] or identity)
    if norm_map.get('ACTION') == 'MIN_MAX' and {'mean', 'std'} <= set(outputs.get(ACTION, {})):
        # the dataset's own, as the original's statistics hold them (a MIN_MAX policy does not use them)
        action_mean, action_std = outputs[ACTION]['mean'], outputs[ACTION]['std']
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



def feature_listing(features):
    """'observation.state -> qpos, ...' for the user."""
    return ', '.join(f'{key} -> {ours}' for key, ours in features.items())



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



def feature_spec(kind, shape):
    return {'type': kind, 'shape': list(shape)}



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


def lerobot_statistics(stats, policy_config, action_mode='MEAN_STD'):
    """(normaliser's {"<feature>.<stat>": tensor}, unnormaliser's) of this project's statistics, so that
    LeRobot's arithmetic on them is ours: qpos and images MEAN_STD, actions `action_mode` (MEAN_STD from
    action_mean / action_std, MIN_MAX from action_min / action_max, with the mean and std beside them as
    LeRobot's statistics files hold every statistic)."""
    def tensor(values):
        return torch.as_tensor(np.asarray(values, dtype=np.float32))
    cameras = policy_config['camera_names']
    image_mean = tensor(policy_config['image_mean']).reshape(-1, 3).expand(len(cameras), 3)
    image_std = tensor(policy_config['image_std']).reshape(-1, 3).expand(len(cameras), 3)
    action = {f'{ACTION}.mean': tensor(stats['action_mean']), f'{ACTION}.std': tensor(stats['action_std'])}
    if action_mode == 'MIN_MAX':
        action.update({f'{ACTION}.min': tensor(stats['action_min']), f'{ACTION}.max': tensor(stats['action_max'])})
    inputs = {f'{STATE}.mean': tensor(stats['qpos_mean']), f'{STATE}.std': without_eps(tensor(stats['qpos_std']))}
    for i, cam in enumerate(cameras):
        inputs[f'{IMAGE_PREFIX}{cam}.mean'] = image_mean[i].reshape(3, 1, 1).clone()
        inputs[f'{IMAGE_PREFIX}{cam}.std'] = without_eps(image_std[i]).reshape(3, 1, 1)
    return {**inputs, **action}, dict(action)


def write_lerobot_folder(folder, config, weights, stats, policy_config):
    """Write a `pretrained_model/` folder (current layout): config.json, the weights and the two
    processor pipelines with `stats` (this project's dataset_stats dict) in config's normalisation modes."""
    os.makedirs(folder, exist_ok=True)
    action_mode = config['normalization_mapping']['ACTION']
    jsons, tensors = _pipeline_files(config, *lerobot_statistics(stats, policy_config, action_mode))
    save_safetensors(weights, os.path.join(folder, MODEL_FILE))
    for name, values in tensors.items():
        save_safetensors(values, os.path.join(folder, name))
    for name, obj in {CONFIG_FILE: config, **jsons}.items():
        atomic_write(os.path.join(folder, name), lambda f, obj=obj: f.write(json.dumps(obj, indent=4)), mode='w')
