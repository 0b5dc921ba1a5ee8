"""The one normaliser: dataset statistics and the maps between robot units and what a policy sees.

Training, evaluation, the real robot, the export graph and the torch-free runtime all normalise
through these functions; they take numpy arrays and torch tensors alike. This module does not
import torch.
"""
import os
import pickle

import numpy as np

from common.files import atomic_write
from common.safe_load import load_stats_pickle

STATS_KEYS = ('qpos_mean', 'qpos_std', 'action_mean', 'action_std')  # what every dataset_stats.pkl holds
ACTION_NORMALIZATIONS = ('mean_std', 'min_max')


def standardize(x, mean, std):
    """(x - mean) / std: qpos for every policy, actions for ACT and CNNMLP."""
    return (x - mean) / std


def unstandardize(x, mean, std):
    return x * std + mean


def to_unit_range(x, low, high):
    """x in [low, high] -> [-1, 1]: Diffusion's actions."""
    return (x - low) / (high - low) * 2 - 1


def from_unit_range(x, low, high):
    return (x + 1) / 2 * (high - low) + low


class Normalizer:
    """The dataset statistics and the maps between robot units and what the policy sees.

    qpos is always standardised by mean and std. Actions are standardised the same way
    ('mean_std': ACT, CNNMLP) or scaled to [-1, 1] by the widened min and max ('min_max':
    Diffusion). Training, evaluation and the real robot all normalise through this class; `stats`
    is the original's dataset_stats.pkl dict, saved and loaded unchanged.
    """

    def __init__(self, stats, action_normalization='mean_std', source='dataset statistics'):
        if action_normalization not in ACTION_NORMALIZATIONS:
            raise ValueError(f'action_normalization must be one of {ACTION_NORMALIZATIONS}, '
                             f'got {action_normalization!r}')
        missing = [k for k in STATS_KEYS if k not in stats]
        if action_normalization == 'min_max':
            missing += [k for k in ('action_min', 'action_max') if k not in stats]
        if missing:
            hint = (' (written by an older version; the Diffusion policy needs them: train it again to write '
                    'new statistics)' if set(missing) <= {'action_min', 'action_max'} else '')
            raise KeyError(f'{source} has no {", ".join(missing)}{hint} (keys: {sorted(stats)})')
        for key in STATS_KEYS + ('action_min', 'action_max'):
            if key in stats and not np.isfinite(stats[key]).all():
                raise ValueError(f'{source}: {key!r} holds non-finite values {np.asarray(stats[key]).tolist()}; '
                                 f'the data it was computed from has NaN or infinite values')
        self.stats, self.action_normalization = stats, action_normalization

    @classmethod
    def load(cls, path, action_normalization='mean_std'):
        """The dataset_stats.pkl at `path`."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f'dataset statistics not found: {path}')
        return cls(load_stats_pickle(path), action_normalization, source=path)

    def save(self, path):
        """Write the statistics as the original's dataset_stats.pkl, atomically."""
        atomic_write(path, lambda f: pickle.dump(self.stats, f))

    @property
    def state_dim(self):
        return len(self.stats['qpos_mean'])

    @property
    def action_dim(self):
        return len(self.stats['action_mean'])

    def check_sizes(self, state_dim, action_dim, source):
        """Raise when the statistics do not fit a policy of these state and action sizes."""
        expected = {'qpos_mean': state_dim, 'qpos_std': state_dim, 'action_mean': action_dim, 'action_std': action_dim}
        for key, size in expected.items():
            if np.shape(self.stats[key]) != (size,):
                raise ValueError(f"{source}: '{key}' has shape {np.shape(self.stats[key])} but the policy expects "
                                 f"({size},) (state_dim={state_dim}, action_dim={action_dim}); the statistics and "
                                 f"the checkpoint come from different runs or the size flags differ from training")

    def normalize_qpos(self, qpos):
        """qpos (..., S) in robot units -> standardised float32."""
        return standardize(qpos, self.stats['qpos_mean'], self.stats['qpos_std']).astype(np.float32)

    def normalize_action(self, action):
        """Actions (..., A) in robot units -> policy targets float32."""
        if self.action_normalization == 'min_max':
            return to_unit_range(action, self.stats['action_min'], self.stats['action_max']).astype(np.float32)
        return standardize(action, self.stats['action_mean'], self.stats['action_std']).astype(np.float32)

    def unnormalize_action(self, action):
        """Policy outputs (..., A) -> actions in robot units."""
        if self.action_normalization == 'min_max':
            return from_unit_range(action, self.stats['action_min'], self.stats['action_max'])
        return unstandardize(action, self.stats['action_mean'], self.stats['action_std'])
