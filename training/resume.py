"""What --resume checks before a run goes on from its training state: the same settings (RESUME_KEYS,
the complete policy config) and the same data (formats.stats.dataset_record)."""
import os

from common.safe_load import load_torch_file
from formats.stats import data_changes
from policies.registry import resolve_policy_config
from training.settings import TrainSettings

RESUME_KEYS = ('policy_class', 'policy_config', *TrainSettings.names('resume'))
INITIAL_WEIGHT_KEYS = ('backbone_weights', 'pretrained_backbone')  # replaced by the saved weights anyway


def resumable_policy_config(policy_class, policy_config):
    """The complete policy config without the initial-weight keys, which the saved weights replace."""
    resolved = resolve_policy_config(policy_class, policy_config)
    return {k: v for k, v in resolved.items() if k not in INITIAL_WEIGHT_KEYS}


def run_settings(config, step_mode):
    """What a resumed run must share with the run that wrote the training state."""
    settings = {k: config[k] for k in RESUME_KEYS}
    settings['policy_config'] = resumable_policy_config(config['policy_class'], config['policy_config'])
    settings['step_mode'] = step_mode
    return settings


def read_training_state(path):
    """The training state at `path`, read admitting only tensors, arrays and plain values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--resume: no training state at {path}; start without --resume')
    return load_torch_file(path, 'training state')


def check_resume(state, config, path):
    """Raise unless the run of `config` may continue from `state`: the same settings (RESUME_KEYS)."""
    then = dict(state['run'])
    now = run_settings(config, config['num_steps'] is not None)
    if isinstance(then.get('policy_config'), dict):  # compared complete, whatever the writer left to defaults
        then['policy_config'] = resumable_policy_config(then['policy_class'], then['policy_config'])
    differ = [k for k in now if then.get(k) != now[k]]
    if differ:
        raise ValueError(f'--resume: {path} was written with different settings: ' + '; '.join(
            f'{k}: {then.get(k)!r} then, {now[k]!r} now' for k in differ))


def check_resume_data(state, record, path, any_data=False):
    """Raise unless the data of `record` (formats.stats.dataset_record) is the data the state was trained
    on; with any_data, print what changed and go on."""
    if state.get('data') is None:
        print(f'--resume: {path} holds no record of its data (an older version wrote it): the data is not checked')
        return
    changes = data_changes(state['data'], record)
    if changes and not any_data:
        raise ValueError(f'--resume: the data differs from the data {path} was trained on: ' + '; '.join(changes)
                         + '. Point --dataset_dir at that data, or add --resume_any_data to go on with this data')
    if changes:
        print('--resume_any_data: going on with changed data (' + '; '.join(changes) + ')')
