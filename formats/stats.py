"""The normalisation statistics of a dataset: the original's dataset_stats.pkl values over all steps
of the training episodes, and the record that identifies the data a run was trained on."""
import os

import numpy as np
import torch

from formats.datasets import open_dataset
from formats.episode import first_non_finite
from formats.normalize import STATS_KEYS

STD_MIN = 1e-2  # NOTE(faithful): the original clips stds from below only, so a constant joint does not divide by 0
MINMAX_EPS = 1e-4  # widening of action_min / action_max so [-1, 1]-scaled targets stay inside


def get_norm_stats(dataset, num_episodes=None):
    """Normalisation statistics over all steps of episodes 0..num_episodes-1 (all when None) of
    `dataset`: an opened dataset (formats.datasets.open_dataset) or its folder, as the original's call.

    Returns action_mean, action_std, qpos_mean, qpos_std (each (D,) float32; stds clipped
    below at 1e-2), action_min, action_max ((A,), widened by MINMAX_EPS; used by Diffusion) and example_qpos.
    """
    source = open_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    num_episodes = source.num_episodes if num_episodes is None else num_episodes
    if num_episodes < 1:
        raise ValueError(f'{source.dataset_dir}: holds no episodes (episode_*.hdf5 files or a LeRobot dataset) to '
                         f'compute dataset statistics from')
    episodes = [source.low_dim(i) for i in range(num_episodes)]
    check_dims(source, episodes)
    for i, (qpos, action, _) in enumerate(episodes):
        check_finite(source.name(i), {source.array_names['qpos']: qpos, source.array_names['action']: action})
    all_qpos = torch.from_numpy(np.concatenate([qpos for qpos, _, _ in episodes]))  # (sum T, S)
    all_action = torch.from_numpy(np.concatenate([action for _, action, _ in episodes]))  # (sum T, A)
    stats = {}
    for name, data in (('action', all_action), ('qpos', all_qpos)):
        stats[f'{name}_mean'] = data.mean(dim=0).numpy()
        stats[f'{name}_std'] = torch.clip(data.std(dim=0), min=STD_MIN).numpy()
    stats['action_min'] = all_action.min(dim=0).values.numpy() - MINMAX_EPS
    stats['action_max'] = all_action.max(dim=0).values.numpy() + MINMAX_EPS
    # NOTE(faithful): the original stores the whole qpos trajectory of the last episode here.
    stats['example_qpos'] = episodes[-1][0]
    return stats


def check_dims(source, episodes):
    """Raise when episodes disagree on state or action size, naming the first that differs."""
    first_qpos_dim, first_action_dim = episodes[0][0].shape[1], episodes[0][1].shape[1]
    for i, (qpos, action, _) in enumerate(episodes):
        if qpos.shape[1] != first_qpos_dim or action.shape[1] != first_action_dim:
            raise ValueError(f'{source.name(i)}: qpos has {qpos.shape[1]} dims and action '
                             f'{action.shape[1]}, but {source.name(0)} has {first_qpos_dim} and {first_action_dim}')


def check_finite(path, arrays):
    """Raise naming the file, dataset and first (step, dim) of a NaN or infinite value in {name: (T, D)}."""
    for name, values in arrays.items():
        found = first_non_finite(values)
        if found:
            step, dim, count = found
            raise ValueError(f'{path}: {name} holds {values[step, dim]} at step {step}, dim {dim} '
                             f'({count} non-finite values in all); training on it would give NaN losses')


def dataset_record(source, num_episodes, stats):
    """What identifies the training data of the opened dataset `source`, saved with the training
    state: the size of each file the episodes lie in and the statistics over them (plain ints and lists)."""
    return {'files': source.fingerprint(num_episodes),
            'stats': {k: np.asarray(stats[k]).tolist() for k in STATS_KEYS}}


def data_changes(then, now, tolerance=1e-5):
    """Sentences naming what differs between two dataset records; empty when the data is the same."""
    changes = []
    for title, names in (('episodes gone', sorted(set(then['files']) - set(now['files']))),
                         ('episodes added', sorted(set(now['files']) - set(then['files'])))):
        if names:
            changes.append(f'{title}: {", ".join(names[:5])}{" ..." if len(names) > 5 else ""}')
    resized = [f'{n} {then["files"][n]} bytes then, {now["files"][n]} now' for n in sorted(then['files'])
               if n in now['files'] and then['files'][n] != now['files'][n]]
    if resized:
        changes.append(f'{len(resized)} episodes changed size ({"; ".join(resized[:3])})')
    for key in STATS_KEYS:
        a, b = np.asarray(then['stats'][key]), np.asarray(now['stats'][key])
        if a.shape != b.shape:
            changes.append(f'{key} has shape {a.shape} then, {b.shape} now')
        elif not np.allclose(a, b, rtol=tolerance, atol=tolerance):
            changes.append(f'{key} differs by up to {np.abs(a - b).max():.3g}')
    return changes
