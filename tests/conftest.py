"""Shared test set-up: repo root on sys.path, seeded RNGs, tiny model configs and datasets."""
import os
import random
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('MUJOCO_GL', 'egl')

TINY_IMAGE_HW = (24, 32)  # small frames keep the default test run fast


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture
def tiny_act_config():
    """Config dict of a tiny ACT policy (keys as the original's policy_config)."""
    return {
        'lr': 1e-4, 'num_queries': 5, 'kl_weight': 10.0, 'hidden_dim': 32, 'dim_feedforward': 64,
        'lr_backbone': 1e-5, 'backbone': 'resnet18', 'enc_layers': 1, 'dec_layers': 2, 'nheads': 2,
        'camera_names': ['top'], 'state_dim': 14, 'action_dim': 14, 'pretrained_backbone': False,
    }


def write_episode(path, episode_len=20, state_dim=14, camera_names=('top',), image_hw=TINY_IMAGE_HW,
                  sim=True, seed=0):
    """Write one episode in the original HDF5 layout (FACTS.md) with random content."""
    import h5py
    rng = np.random.default_rng(seed)
    h, w = image_hw
    with h5py.File(path, 'w', rdcc_nbytes=1024 ** 2 * 2) as root:
        root.attrs['sim'] = sim
        obs = root.create_group('observations')
        images = obs.create_group('images')
        for cam in camera_names:
            frames = rng.integers(0, 256, size=(episode_len, h, w, 3), dtype=np.uint8)
            images.create_dataset(cam, data=frames, dtype='uint8', chunks=(1, h, w, 3))
        for key in ('qpos', 'qvel'):
            obs.create_dataset(key, data=rng.normal(size=(episode_len, state_dim)).astype(np.float32))
        if not sim:
            obs.create_dataset('effort', data=rng.normal(size=(episode_len, state_dim)).astype(np.float32))
        root.create_dataset('action', data=rng.normal(size=(episode_len, state_dim)).astype(np.float32))
    return path


@pytest.fixture
def tiny_dataset(tmp_path):
    """A directory of 5 tiny episodes (20 steps, one 'top' camera, 24x32 frames)."""
    dataset_dir = tmp_path / 'tiny_dataset'
    dataset_dir.mkdir()
    for i in range(5):
        write_episode(str(dataset_dir / f'episode_{i}.hdf5'), seed=i)
    return str(dataset_dir)
