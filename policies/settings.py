"""The model settings a command line sets, each declared once: its flag, the policy_config key it sets,
its help, the range it admits and LeRobot's names for it. imitate_episodes.py's model flags, their
checks, the flag -> policy_config translation and LeRobot's names (cli/) all derive from
`model_settings()`; each value's default stays the policy's own (`Policy.defaults`), shown in --help.

A policy adds settings of its own with its `settings` class attribute (a tuple of ModelSetting):
they become flags like these.
"""
import argparse
import math
from dataclasses import dataclass

from detr.resnet import BACKBONES


@dataclass(frozen=True)
class Range:
    """What a numeric setting admits: test(value) and the words for it."""
    test: object
    text: str

    def problem(self, flag, value):
        """A message naming --flag when `value` is outside the range, or None."""
        if not math.isfinite(value):
            return f'--{flag} must be a finite number, got {value}'
        return None if self.test(value) else f'--{flag} must be {self.text}, got {value}'


AT_LEAST_1 = Range(lambda v: v >= 1, 'at least 1')
AT_LEAST_0 = Range(lambda v: v >= 0, '0 or more')
MORE_THAN_0 = Range(lambda v: v > 0, 'more than 0')
FRACTION = Range(lambda v: 0 <= v < 1, 'in [0, 1)')


@dataclass(frozen=True)
class ModelSetting:
    """One model flag. help ends with the defaults of the policies it is for (their `defaults` of `key`);
    `original`: one of the original's flags, listed among them in --help."""
    flag: str  # --flag, also the parsed argument's name
    key: str  # the policy_config key it sets
    help: str
    type: object = None  # argparse type (None for a switch)
    switch: str = None  # 'on' (store_true, None when not given) or 'both' (--flag / --no-flag)
    choices: tuple = None
    nargs: object = None
    metavar: object = None
    range: Range = None
    aliases: tuple = ()  # more option strings of ours ('--horizon')
    off_alias: str = None  # an option string that turns a 'both' switch off ('--no_vae')
    lerobot: tuple = ()  # LeRobot's names taking the same value ('--policy.chunk_size')
    defaults_of: tuple = ()  # the policies whose default --help shows (a policy's own settings: that policy)
    show_default: bool = True  # False: the help says the default itself, or there is none
    original: bool = False

    def argparse_spec(self):
        """(option strings, argparse keywords) without the help."""
        spec = {'dest': self.flag}
        if self.switch == 'on':
            spec.update(action='store_true', default=None)
        elif self.switch == 'both':
            spec['action'] = argparse.BooleanOptionalAction
        else:
            spec['type'] = self.type
        for name in ('choices', 'nargs', 'metavar'):
            if getattr(self, name) is not None:
                spec[name] = getattr(self, name)
        return (f'--{self.flag}', *self.aliases), spec


BOTH = ('ACT', 'Diffusion')
# The settings every policy reads (each policy's own follow from its `settings`), in --help's order
COMMON_SETTINGS = (
    ModelSetting('lr', 'lr', 'learning rate (the backbone uses --lr_backbone)', float, range=MORE_THAN_0,
                 lerobot=('--policy.optimizer_lr',), defaults_of=BOTH, original=True),
    ModelSetting('chunk_size', 'num_queries', "actions predicted per query (ACT num_queries; Diffusion's prediction "
                 "horizon, LeRobot's --horizon)", int, range=AT_LEAST_1, aliases=('--horizon',),
                 lerobot=('--policy.chunk_size', '--policy.horizon'), defaults_of=BOTH, original=True),
    ModelSetting('backbone', 'backbone', 'image backbone', choices=BACKBONES, defaults_of=BOTH),
    ModelSetting('weight_decay', 'weight_decay', 'AdamW weight decay', float, range=AT_LEAST_0,
                 lerobot=('--policy.optimizer_weight_decay',), defaults_of=BOTH),
    ModelSetting('backbone_weights', 'backbone_weights', 'file of ImageNet backbone weights (default: the torch hub '
                 'cache)', str, show_default=False),
    ModelSetting('pretrained_backbone', 'pretrained_backbone', 'start from ImageNet weights', switch='both',
                 defaults_of=BOTH),
    ModelSetting('action_horizon', 'action_horizon', "actions executed per query, without --temporal_agg (LeRobot's "
                 "--n_action_steps) (default: ACT its whole chunk, as the original; Diffusion min(8, the actions a "
                 "query returns))", int, range=AT_LEAST_1, aliases=('--n_action_steps',),
                 lerobot=('--policy.n_action_steps',), show_default=False),
)


def default_text(key, policy_classes):
    """'(default: X)' of a policy_config key: the `defaults` of each of policy_classes ({name: class})."""
    values = {name: cls.defaults[key] for name, cls in policy_classes.items()}
    if len(set(map(str, values.values()))) == 1:
        return f'(default: {next(iter(values.values()))})'
    return '(default: ' + ', '.join(f'{v} for {name}' for name, v in values.items()) + ')'
