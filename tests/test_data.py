"""training/data.py, formats/stats.py and formats/normalize.py: the episodic dataset, sampling,
statistics, the Normalizer, and the data errors."""
import os

import h5py
import numpy as np
import pytest
import torch

from formats import hdf5
from formats import normalize
from formats import stats as dataset_stats
from policies import inputs
from tests.helpers import write_tiny_episode as write_episode
from training import data


def copy_dataset(src_dir, dst_dir, compression, num_episodes=5):
    """The episodes of src_dir written again with another image compression."""
    os.makedirs(dst_dir)
    for i in range(num_episodes):
        e = hdf5.read_episode(hdf5.episode_path(src_dir, i))
        hdf5.write_episode(hdf5.episode_path(dst_dir, i), e.qpos, e.action, e.images, qvel=e.qvel,
                               sim=e.sim, compression=compression)
    return str(dst_dir)


def batches(dataset_dir, epochs=2, **kwargs):
    np.random.seed(1)
    train_loader, val_loader, stats, _ = data.load_data(dataset_dir, 5, ['top'], 2, 2, **kwargs)
    out = []
    for epoch in range(epochs):
        for loader in (train_loader, val_loader):
            loader.sampler.set_epoch(epoch)
            out.extend(loader)
    return out, stats


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for batch_a, batch_b in zip(a, b):
        for x, y in zip(batch_a, batch_b):
            assert torch.equal(x, y)


def test_sample_shapes_and_original_semantics(tiny_dataset):
    out, stats = batches(tiny_dataset, epochs=1)
    image, qpos, action, is_pad = out[0]
    assert image.shape == (2, 1, 24, 32, 3) and image.dtype == torch.uint8
    assert qpos.shape == (2, 14) and action.shape == (2, 20, 14) and is_pad.shape == (2, 20)
    assert len(out) == 3  # 4 training episodes at batch 2, then 1 validation episode


def test_sample_matches_file_at_its_start_step(tiny_dataset):
    stats = dataset_stats.get_norm_stats(tiny_dataset, 5)
    dataset = data.EpisodicDataset([3], tiny_dataset, ['top'], stats)
    seed = 12345
    start = np.random.default_rng(seed).integers(20)
    image, qpos, action, is_pad = dataset[(0, seed)]
    with h5py.File(hdf5.episode_path(tiny_dataset, 3), 'r') as root:
        raw_action = root['/action'][()]
        np.testing.assert_array_equal(image[0], root['/observations/images/top'][start])
        raw_qpos = root['/observations/qpos'][start]
    np.testing.assert_allclose(qpos, (raw_qpos - stats['qpos_mean']) / stats['qpos_std'], rtol=1e-6)
    n = 20 - start
    np.testing.assert_allclose(action[:n], (raw_action[start:] - stats['action_mean']) / stats['action_std'],
                               rtol=1e-6)
    assert not is_pad[:n].any() and is_pad[n:].all()
    # padded steps hold the normalised zero action, as the original's pad-then-normalise gave
    np.testing.assert_allclose(action[n:], np.broadcast_to(-stats['action_mean'] / stats['action_std'],
                                                           (20 - n, 14)), rtol=1e-6)


def test_real_robot_actions_start_one_step_earlier(tmp_path):
    path = write_episode(str(tmp_path / 'episode_0.hdf5'), sim=False)
    write_episode(str(tmp_path / 'episode_1.hdf5'), sim=False, seed=1)
    stats = dataset_stats.get_norm_stats(str(tmp_path), 2)
    dataset = data.EpisodicDataset([0], str(tmp_path), ['top'], stats)
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(20) >= 2)
    start = np.random.default_rng(seed).integers(20)
    _, _, action, is_pad = dataset[(0, seed)]
    with h5py.File(path, 'r') as root:
        expected = (root['/action'][start - 1:] - stats['action_mean']) / stats['action_std']
    np.testing.assert_allclose(action[:21 - start], expected, rtol=1e-6)
    assert is_pad.sum() == start - 1


def test_sampling_depends_only_on_seed_and_epoch(tiny_dataset):
    first, _ = batches(tiny_dataset)
    again, _ = batches(tiny_dataset, num_workers=1, preload='off')
    assert_same_batches(first, again)
    epoch0, epoch1 = first[:3], first[3:]
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(epoch0, epoch1))


def test_sampler_skip_and_ranks():
    full = list(data.EpisodeSampler(7, seed=3))
    sampler = data.EpisodeSampler(7, seed=3)
    sampler.set_epoch(0, skip=4)
    assert list(sampler) == full[4:]
    ranks = [list(data.EpisodeSampler(7, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert {i for i, _ in ranks[0] + ranks[1]} == set(range(7))


def test_compressed_layout_gives_identical_batches(tiny_dataset, tmp_path):
    compressed = copy_dataset(tiny_dataset, tmp_path / 'gzip', 'gzip')
    with h5py.File(hdf5.episode_path(compressed, 0), 'r') as root:
        assert root['/observations/images/top'].compression == 'gzip'
    for preload in ('on', 'off'):
        assert_same_batches(batches(tiny_dataset, preload=preload)[0], batches(compressed, preload=preload)[0])


def test_jpeg_layout_reads(tiny_dataset, tmp_path):
    import cv2
    jpeg_dir = copy_dataset(tiny_dataset, tmp_path / 'jpeg', 'jpeg')
    stats = dataset_stats.get_norm_stats(jpeg_dir, 5)
    for preload in (False, True):
        dataset = data.EpisodicDataset([2], jpeg_dir, ['top'], stats, preload=preload)
        seed = 7
        start = np.random.default_rng(seed).integers(20)
        image = dataset[(0, seed)][0]
        with h5py.File(hdf5.episode_path(tiny_dataset, 2), 'r') as root:
            original = root['/observations/images/top'][start]
        expected = cv2.imdecode(cv2.imencode('.jpg', original, [int(cv2.IMWRITE_JPEG_QUALITY),
                                                                hdf5.JPEG_QUALITY])[1], cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(image[0], expected)


def test_variable_length_episodes(tmp_path):
    lengths = [12, 20, 16, 25, 9]
    for i, n in enumerate(lengths):
        write_episode(str(tmp_path / f'episode_{i}.hdf5'), episode_len=n, seed=i)
    stats = dataset_stats.get_norm_stats(str(tmp_path), 5)
    np.random.seed(1)
    train_loader, val_loader, _, _ = data.load_data(str(tmp_path), 5, ['top'], 2, 2)
    for loader in (train_loader, val_loader):
        loader.sampler.set_epoch(0)
        for image, qpos, action, is_pad in loader:
            assert action.shape[1:] == (25, 14) and is_pad.shape[1] == 25
    dataset = data.EpisodicDataset(range(5), str(tmp_path), ['top'], stats)
    for index, n in enumerate(lengths):
        for seed in range(5):
            start = np.random.default_rng(seed).integers(n)
            assert start < n
            assert (~dataset[(index, seed)][3]).sum() == n - start


def test_norm_stats_match_hand_computation(tmp_path):
    for i, n in enumerate([10, 14, 12]):
        write_episode(str(tmp_path / f'episode_{i}.hdf5'), episode_len=n, state_dim=6, seed=i)
    with h5py.File(tmp_path / 'episode_0.hdf5', 'a') as root:  # a constant joint: std clipped at 1e-2
        root['/action'][:, 2] = 0.5
    stats = dataset_stats.get_norm_stats(str(tmp_path), 3)
    qpos, action = [], []
    for i in range(3):
        with h5py.File(tmp_path / f'episode_{i}.hdf5', 'r') as root:
            qpos.append(root['/observations/qpos'][()].astype(np.float64))
            action.append(root['/action'][()].astype(np.float64))
    last_qpos = qpos[-1]
    qpos, action = np.concatenate(qpos), np.concatenate(action)
    np.testing.assert_allclose(stats['qpos_mean'], qpos.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats['qpos_std'], np.maximum(qpos.std(0, ddof=1), 1e-2), rtol=1e-5)
    np.testing.assert_allclose(stats['action_mean'], action.mean(0), rtol=1e-5, atol=1e-6)
    expected_std = np.maximum(action.std(0, ddof=1), 1e-2)
    np.testing.assert_allclose(stats['action_std'], expected_std, rtol=1e-5)
    assert stats['action_std'][2] > 0.01 or expected_std[2] == 0.01
    np.testing.assert_allclose(stats['action_min'], action.min(0) - dataset_stats.MINMAX_EPS, rtol=1e-6)
    np.testing.assert_allclose(stats['action_max'], action.max(0) + dataset_stats.MINMAX_EPS, rtol=1e-6)
    np.testing.assert_array_equal(stats['example_qpos'], last_qpos.astype(np.float32))
    assert all(stats[k].dtype == np.float32 for k in ('qpos_mean', 'qpos_std', 'action_mean', 'action_std'))


def test_std_clipped_for_constant_dimension(tmp_path):
    for i in range(2):
        write_episode(str(tmp_path / f'episode_{i}.hdf5'), seed=i)
        with h5py.File(tmp_path / f'episode_{i}.hdf5', 'a') as root:
            root['/action'][:, 5] = 1.0
    stats = dataset_stats.get_norm_stats(str(tmp_path), 2)
    assert stats['action_std'][5] == pytest.approx(1e-2)


def test_large_stds_are_not_clipped(tmp_path):
    """Joints in degrees or millimetres: stds far above 10 stay as they are, as in the original."""
    rng = np.random.default_rng(0)
    for i in range(3):
        write_episode(str(tmp_path / f'episode_{i}.hdf5'), seed=i)
        with h5py.File(tmp_path / f'episode_{i}.hdf5', 'a') as root:
            root['/action'][:, 0] = rng.normal(0, 50, size=20)
            root['/observations/qpos'][:, 1] = rng.normal(90, 50, size=20)
    stats = dataset_stats.get_norm_stats(str(tmp_path), 3)
    assert 35 < stats['action_std'][0] < 65 and 35 < stats['qpos_std'][1] < 65
    dataset = data.EpisodicDataset([0], str(tmp_path), ['top'], stats)
    assert np.abs(dataset.actions[0][:, 0]).max() < 4  # standardised, not divided by 10


def test_diffusion_targets_scaled_to_unit_range(tiny_dataset):
    stats = dataset_stats.get_norm_stats(tiny_dataset, 5)
    dataset = data.EpisodicDataset(range(5), tiny_dataset, ['top'], stats, policy_class='Diffusion')
    for index in range(5):
        _, _, action, is_pad = dataset[(index, 0)]
        assert np.abs(action[~is_pad]).max() < 1
    normalizer = normalize.Normalizer(stats, 'min_max')
    raw = np.linspace(stats['action_min'], stats['action_max'], 5)
    scaled = normalizer.normalize_action(raw)
    np.testing.assert_allclose(scaled[[0, -1]], [[-1] * 14, [1] * 14], atol=1e-6)
    np.testing.assert_allclose(normalizer.unnormalize_action(scaled), raw, rtol=1e-5, atol=1e-5)


def test_normalizer_act_and_old_stats(tiny_dataset):
    stats = dataset_stats.get_norm_stats(tiny_dataset, 5)
    old = {k: v for k, v in stats.items() if k not in ('action_min', 'action_max')}
    normalizer = normalize.Normalizer(old, 'mean_std')
    qpos = np.ones(14, dtype=np.float32)
    np.testing.assert_allclose(normalizer.normalize_qpos(qpos), (qpos - stats['qpos_mean']) / stats['qpos_std'])
    np.testing.assert_allclose(normalizer.unnormalize_action(np.zeros((3, 14))),
                               np.broadcast_to(stats['action_mean'], (3, 14)))
    with pytest.raises(KeyError, match='action_min'):
        normalize.Normalizer(old, 'min_max')


def test_normalizer_saves_the_original_stats_file(tiny_dataset, tmp_path):
    import pickle
    stats = dataset_stats.get_norm_stats(tiny_dataset, 5)
    path = str(tmp_path / 'dataset_stats.pkl')
    normalize.Normalizer(stats).save(path)
    with open(path, 'rb') as f:
        saved = pickle.load(f)  # a plain dict of numpy arrays, as the original's
    assert type(saved) is dict and set(saved) == set(stats)
    assert all(np.array_equal(saved[k], stats[k]) for k in stats)
    loaded = normalize.Normalizer.load(path, 'min_max')
    assert (loaded.state_dim, loaded.action_dim) == (14, 14)
    with pytest.raises(ValueError, match=r"dataset_stats\.pkl: 'qpos_mean' has shape \(14,\)"):
        loaded.check_sizes(10, 14, path)


def test_obs_horizon_repeats_first_frame(tiny_dataset):
    stats = dataset_stats.get_norm_stats(tiny_dataset, 5)
    dataset = data.EpisodicDataset([0], tiny_dataset, ['top'], stats, obs_horizon=3)
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(20) == 1)
    image, qpos, action, _ = dataset[(0, seed)]
    assert image.shape == (3, 1, 24, 32, 3) and qpos.shape == (3, 14)
    with h5py.File(hdf5.episode_path(tiny_dataset, 0), 'r') as root:
        frames = root['/observations/images/top'][()]
    for i, step in enumerate([0, 0, 1]):
        np.testing.assert_array_equal(image[i, 0], frames[step])
    with pytest.raises(ValueError, match='obs_horizon 21 exceeds the 20 steps'):
        data.EpisodicDataset([0], tiny_dataset, ['top'], stats, obs_horizon=21)


def test_image_size_resizes(tiny_dataset):
    out, _ = batches(tiny_dataset, epochs=1, image_size=(12, 16))
    assert out[0][0].shape == (2, 1, 12, 16, 3)


def test_image_to_tensor_layout():
    images = torch.randint(0, 256, (2, 1, 6, 8, 3), dtype=torch.uint8)
    tensor = inputs.image_to_tensor(images, 'cpu')
    assert tensor.shape == (2, 1, 3, 6, 8) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, images.permute(0, 1, 4, 2, 3).float() / 255.0)
    assert tensor[:, 0].is_contiguous(memory_format=torch.channels_last)


### bad inputs

def test_missing_dataset_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        data.load_data(str(tmp_path / 'nope'), 5, ['top'], 2, 2)


def test_missing_episode_file(tiny_dataset):
    with pytest.raises(FileNotFoundError, match=r'episode_5\.hdf5: episode file not found; .* holds 5'):
        data.load_data(tiny_dataset, 6, ['top'], 2, 2)


def test_corrupt_episode_file(tiny_dataset):
    with open(hdf5.episode_path(tiny_dataset, 2), 'wb') as f:
        f.write(b'not an hdf5 file')
    with pytest.raises(OSError, match=r'episode_2\.hdf5: cannot be read'):
        data.load_data(tiny_dataset, 5, ['top'], 2, 2)


def test_missing_camera_lists_those_present(tiny_dataset):
    with pytest.raises(KeyError, match=r"no camera 'left_wrist' .* it has: top"):
        data.load_data(tiny_dataset, 5, ['left_wrist'], 2, 2)


def test_mismatched_dims(tiny_dataset):
    write_episode(hdf5.episode_path(tiny_dataset, 3), state_dim=12)
    with pytest.raises(ValueError, match=r'episode_3\.hdf5: qpos has 12 dims'):
        data.load_data(tiny_dataset, 5, ['top'], 2, 2)
    with h5py.File(hdf5.episode_path(tiny_dataset, 1), 'a') as root:
        del root['/action']
        root.create_dataset('/action', data=np.zeros((19, 14), dtype=np.float32))
    with pytest.raises(ValueError, match=r'episode_1\.hdf5: /observations/qpos \(20, 14\) and /action \(19, 14\)'):
        dataset_stats.get_norm_stats(tiny_dataset, 2)


def test_mismatched_frame_sizes_suggest_image_size(tiny_dataset):
    write_episode(hdf5.episode_path(tiny_dataset, 4), image_hw=(30, 40), seed=4)
    with pytest.raises(ValueError, match='--image_size'):
        data.load_data(tiny_dataset, 5, ['top'], 2, 2)
    out, _ = batches(tiny_dataset, epochs=1, image_size=(24, 32))
    assert out[0][0].shape[2:4] == (24, 32)
