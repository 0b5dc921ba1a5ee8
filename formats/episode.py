"""The neutral episode: what every dataset format reads into and writes from, and the interface
each format's dataset offers (formats.datasets.open_dataset picks the format of a folder).

A dataset (`HDF5Episodes`, `LeRobotEpisodes`) offers: num_episodes, camera_names, name(i),
low_dim(i) -> (qpos (T, S), action (T, A), sim), check_frames(i, cameras, length),
frame_shape(i, camera), frames(i, camera, steps), episode_frames(i, camera),
read_episode(i, cameras) -> Episode, fingerprint(count), shadows(count), and array_names (what
messages call qpos and action).
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """One episode in memory; qvel and effort are None when the file has none."""
    qpos: np.ndarray  # (T, S) float32
    action: np.ndarray  # (T, A) float32
    images: dict = field(default_factory=dict)  # {camera: (T, H, W, 3) uint8}
    qvel: np.ndarray = None  # (T, S) float32
    effort: np.ndarray = None  # (T, S) float32
    sim: bool = True
    shadows: bool = True  # False: simulated frames rendered without shadows


def first_non_finite(values):
    """(step, index, count) of the first NaN or infinite value of `values` (T, D) and how many there are,
    or None when every value is a finite number."""
    bad = np.argwhere(~np.isfinite(values))
    return (int(bad[0][0]), int(bad[0][1]), len(bad)) if len(bad) else None


def check_finite(values, where, what):
    """`values` (T, D) when every value is a finite number; else ValueError naming `where`, the array
    `what`, and the first step and index that is NaN or infinite."""
    found = first_non_finite(values)
    if found:
        step, index, count = found
        raise ValueError(f'{where}: {what}[{step}, {index}] is {values[step, index]} ({count} values are not '
                         f'finite numbers)')
    return values
