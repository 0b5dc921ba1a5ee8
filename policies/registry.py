"""The policies by name -> class, config and instance: each one registered once, here or by whoever
adds one (`register_policy`), and nothing outside policies/ asks which one a policy is by its name.

The Diffusion policy (policies/diffusion.py) is imported only when it is asked for: it needs diffusers.
"""
import importlib
from dataclasses import dataclass

from policies.settings import COMMON_SETTINGS, default_text


@dataclass
class Registration:
    """One policy: its class, or 'module:Class' imported when first asked for, and a state-dict key that
    only its checkpoints hold (how a checkpoint without config.json, the original's, is recognised)."""
    source: object
    checkpoint_key: str = None

    def load(self):
        if not isinstance(self.source, str):
            return self.source
        module, name = self.source.split(':')
        return getattr(importlib.import_module(module), name)  # imported once, then found in sys.modules


_POLICIES = {}  # name -> Registration, in the order registered


def register_policy(name, source, checkpoint_key=None):
    """Make the policy class `source` (or 'module:Class') known as `name` (its policy_class): flags,
    training, evaluation, export and the runtime take it from then on."""
    _POLICIES[name] = Registration(source, checkpoint_key)


register_policy('ACT', 'policies.act:ACTPolicy', checkpoint_key='model.query_embed.weight')
register_policy('CNNMLP', 'policies.act:CNNMLPPolicy', checkpoint_key='model.mlp.0.weight')
register_policy('Diffusion', 'policies.diffusion:DiffusionPolicy', checkpoint_key='nets')


def policy_names():
    """The names of the policies known, in the order registered ('ACT', 'CNNMLP', 'Diffusion', ...)."""
    return tuple(_POLICIES)


def get_policy_class(policy_class):
    """The class registered as `policy_class` (imported on demand)."""
    if policy_class not in _POLICIES:
        raise ValueError(f"unknown policy_class '{policy_class}': expected one of {', '.join(_POLICIES)}")
    return _POLICIES[policy_class].load()


def lerobot_types():
    """{LeRobot policy type: policy_class} of the policies that convert to and from LeRobot's."""
    kinds = {name: get_policy_class(name).lerobot_type for name in _POLICIES}
    return {kind: name for name, kind in kinds.items() if kind}


def lerobot_policy_class(lerobot_type):
    """The policy_class whose checkpoints are LeRobot's policy type `lerobot_type` ('act', ...), or None."""
    return lerobot_types().get(lerobot_type)


def resolve_policy_config(policy_class, policy_config):
    """The complete config `make_policy` would build `policy_class` from."""
    return get_policy_class(policy_class).resolve_config(policy_config)


def checkpoint_policy_class(obj):
    """The policy class a loaded checkpoint object was written by, read from its keys; None if unknown."""
    if not isinstance(obj, dict):
        return None
    return next((name for name, entry in _POLICIES.items() if entry.checkpoint_key in obj), None)


def make_policy(policy_class, policy_config, load_pretrained=True):
    """Build a registered policy ('ACT', 'CNNMLP', 'Diffusion', ...) from its config dict. load_pretrained
    False leaves the image trunks without their ImageNet weights, for a checkpoint that replaces them."""
    return get_policy_class(policy_class)(policy_config, load_pretrained=load_pretrained)


def model_settings():
    """[(ModelSetting, its help with the defaults)] of every registered policy's flags: the common ones,
    then each policy's own in registration order (a flag declared twice counts once)."""
    classes = {name: get_policy_class(name) for name in _POLICIES}
    owners = {setting.flag: (setting, setting.defaults_of) for setting in COMMON_SETTINGS}
    for name, cls in classes.items():
        for setting in cls.settings:
            owners.setdefault(setting.flag, (setting, setting.defaults_of or (name,)))
    found = []
    for setting, policies in owners.values():
        defaults = f' {default_text(setting.key, {p: classes[p] for p in policies})}' if setting.show_default else ''
        found.append((setting, setting.help + defaults))
    return found
