"""Long checks (`make test-slow`): full scripted sets with cameras off, one full-size episode."""
import h5py
import numpy as np
import pytest

import record_sim_episodes
from constants import get_sim_task_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('task_name, required', [('sim_transfer_cube_scripted', 49),
                                                 ('sim_insertion_scripted', 48)])
def test_full_scripted_set_succeeds(task_name, required):
    config = get_sim_task_config(task_name)
    recorder = record_sim_episodes.EpisodeRecorder(task_name, camera_names=[], image_size=(480, 640),
                                                   episode_len=config['episode_len'])
    results = [recorder.record(idx) for idx in range(config['num_episodes'])]
    assert sum(r['success'] for r in results) >= required
    assert sum(r['ee_success'] for r in results) >= required


def test_full_size_episode_layout(tmp_path):
    record_sim_episodes.main({'task_name': 'sim_transfer_cube_scripted', 'dataset_dir': str(tmp_path),
                              'num_episodes': 1})
    with h5py.File(tmp_path / 'episode_0.hdf5', 'r') as root:
        images = root['/observations/images/top']
        assert images.shape == (400, 480, 640, 3) and images.chunks == (1, 480, 640, 3)
        assert root['/action'].shape == (400, 14) and root['/action'].dtype == np.float32
    assert abs((tmp_path / 'episode_0.hdf5').stat().st_size - 368_740_832) < 10_000
