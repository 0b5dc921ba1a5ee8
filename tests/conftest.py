"""Fixtures shared by the test files (plain helpers are in tests/helpers.py)."""
import os
import random

import numpy as np
import pytest

from tests.helpers import TINY_ACT_CONFIG, write_tiny_episode

os.environ.setdefault('MUJOCO_GL', 'egl')


def pytest_configure(config):
    """A worker of `pytest -n N` (make test) computes on one thread: N workers share the cores."""
    if os.environ.get('PYTEST_XDIST_WORKER'):
        import torch
        torch.set_num_threads(1)


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
def one_thread():
    """Tiny models run fastest on one thread, and a busy shared CPU cannot stall a second one."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_act_config():
    """Config dict of a tiny ACT policy (keys as the original's policy_config)."""
    return dict(TINY_ACT_CONFIG)


@pytest.fixture
def tiny_dataset(tmp_path):
    """A directory of 5 tiny episodes (20 steps, one 'top' camera, 24x32 frames)."""
    dataset_dir = tmp_path / 'tiny_dataset'
    dataset_dir.mkdir()
    for i in range(5):
        write_tiny_episode(str(dataset_dir / f'episode_{i}.hdf5'), seed=i)
    return str(dataset_dir)


@pytest.fixture
def patient_servos(monkeypatch):
    """The servo-bus emulator answers from a thread of this process on a shared CPU: allow it more
    time than real servos need before a reply counts as missing."""
    from real_robot import settings
    monkeypatch.setattr(settings, 'SERVO_REPLY_TIMEOUT_MS', 2000.0)  # a busy machine delays its thread


@pytest.fixture(scope='session')
def two_epoch_run(tmp_path_factory):
    """One two-epoch `imitate_episodes.main` run on 5 tiny episodes (batch 2: two steps per epoch),
    shared by the tests that read its files: -> (args, printed output)."""
    import contextlib
    import io
    import imitate_episodes
    from tests.helpers import train_args
    root = tmp_path_factory.mktemp('two_epochs')
    os.makedirs(root / 'data')
    for i in range(5):
        write_tiny_episode(str(root / 'data' / f'episode_{i}.hdf5'), seed=i)
    args = train_args(root / 'data', root / 'ckpt')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        imitate_episodes.main(args)
    return args, printed.getvalue()
