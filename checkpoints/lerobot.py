"""A LeRobot `pretrained_model/` folder of either policy type read here: ACT (checkpoints/lerobot_act.py)
or Diffusion (checkpoints/lerobot_diffusion.py), chosen by config.json's "type"."""
import os

from checkpoints import lerobot_act, lerobot_diffusion
from checkpoints.lerobot_files import CONFIG_FILE, folder_file
from formats.lerobot import LeRobotFormatError, read_json
from policies.registry import lerobot_policy_class

CONVERTERS = {'act': lerobot_act, 'diffusion': lerobot_diffusion}  # LeRobot's policy type -> its files' module


def converter(kind):
    """The module that reads and writes LeRobot's policy type `kind` ('act', 'diffusion')."""
    return CONVERTERS[kind]


def lerobot_type(lerobot_json, folder):
    """(this project's policy class, the module reading it) of a LeRobot config.json object."""
    kind = lerobot_json.get('type')
    policy_class = lerobot_policy_class(kind) if isinstance(kind, str) and kind in CONVERTERS else None
    if policy_class is None:
        raise LeRobotFormatError(f'{os.path.join(folder, CONFIG_FILE)} is a LeRobot "{kind}" policy; the LeRobot '
                                 f'checkpoints read here are {", ".join(repr(t) for t in CONVERTERS)}')
    return policy_class, CONVERTERS[kind]


def _read_config(folder):
    return read_json(folder_file(folder, CONFIG_FILE), dict)


def _module(folder, lerobot_json=None):
    return lerobot_type(_read_config(folder) if lerobot_json is None else lerobot_json, folder)


def read_lerobot_checkpoint(folder, statistics=True):
    """The module's read_lerobot_checkpoint dict, with 'policy_class'."""
    lerobot_json = _read_config(folder)
    policy_class, module = _module(folder, lerobot_json)
    return {**module.read_lerobot_checkpoint(folder, statistics, lerobot_json), 'policy_class': policy_class}


def read_lerobot_config(folder):
    """The folder's config.json, checked by its type's rules."""
    lerobot_json = _read_config(folder)
    return _module(folder, lerobot_json)[1].read_lerobot_config(folder, lerobot_json)


def lerobot_run_config(folder, lerobot_json=None):
    """This project's run config of the folder (its type's lerobot_run_config)."""
    return _module(folder, lerobot_json)[1].lerobot_run_config(folder, lerobot_json)


def load_lerobot_weights(policy, checkpoint):
    """Load read_lerobot_checkpoint's weights into `policy` -> [keys LeRobot does not hold]."""
    return converter(policy.lerobot_type).load_lerobot_weights(policy, checkpoint)
