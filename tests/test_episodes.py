"""formats/hdf5.py: the episode file format (original, compressed and JPEG layouts), reading errors,
(atomic writes: tests/test_faults.py)."""
import os

import h5py
import numpy as np
import pytest

from formats import hdf5
from tests.helpers import write_tiny_episode


def random_episode(seed=0, steps=6, state_dim=5, cameras=('top', 'wrist')):
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, size=(steps, 8, 12, 3), dtype=np.uint8) for cam in cameras}
    return rng.normal(size=(steps, state_dim)), rng.normal(size=(steps, state_dim)), images


@pytest.mark.parametrize('compression', [None, 'gzip', 'lzf'])
@pytest.mark.parametrize('sim', [True, False])
def test_lossless_round_trip(tmp_path, compression, sim):
    qpos, action, images = random_episode()
    effort = None if sim else qpos * 2
    path = str(tmp_path / 'episode_0.hdf5')
    hdf5.write_episode(path, qpos, action, images, qvel=qpos + 1, effort=effort, sim=sim, compression=compression)
    episode = hdf5.read_episode(path)
    assert episode.sim is sim
    np.testing.assert_array_equal(episode.qpos, qpos.astype(np.float32))
    np.testing.assert_array_equal(episode.action, action.astype(np.float32))
    np.testing.assert_array_equal(episode.qvel, (qpos + 1).astype(np.float32))
    assert (episode.effort is None) == sim
    for cam, frames in images.items():
        np.testing.assert_array_equal(episode.images[cam], frames)
    with h5py.File(path, 'r') as root:
        assert dict(root.attrs) == {'sim': sim}
        assert root['/observations/images/top'].chunks == (1, 8, 12, 3)
        assert root['/observations/images/top'].compression == compression
        assert root['/action'].chunks is None  # contiguous, as the original


def test_qvel_and_effort_are_optional(tmp_path):
    qpos, action, images = random_episode()
    path = str(tmp_path / 'episode_0.hdf5')
    hdf5.write_episode(path, qpos, action, images)
    episode = hdf5.read_episode(path, cameras=['wrist'])
    assert episode.qvel is None and episode.effort is None and list(episode.images) == ['wrist']


def write_act_plus_plus_episode(path, frames):
    """The JPEG layout as act-plus-plus's recorder writes it, by hand: compress attribute, JPEG rows
    zero-padded to the longest, /compress_len (cameras, T) float32."""
    import cv2
    encoded = [cv2.imencode('.jpg', f, [int(cv2.IMWRITE_JPEG_QUALITY), 50])[1].ravel() for f in frames]
    padded = np.zeros((len(frames), max(len(e) for e in encoded)), np.uint8)
    for row, data in zip(padded, encoded):
        row[:len(data)] = data
    with h5py.File(path, 'w') as root:
        root.attrs['sim'] = False
        root.attrs['compress'] = True
        root.create_dataset('observations/images/cam_high', data=padded, chunks=(1, padded.shape[1]))
        root.create_dataset('compress_len', data=np.array([[len(e) for e in encoded]], np.float32))
        for key in ('observations/qpos', 'observations/qvel', 'action'):
            root.create_dataset(key, data=np.zeros((len(frames), 14), np.float32))
    return padded


def test_jpeg_layout_is_act_plus_plus_and_reads_back(tmp_path):
    ramp = np.linspace(0, 255, 32)[None, :, None] * np.ones((24, 1, 3))  # smooth, JPEG-friendly
    frames = np.stack([np.roll(ramp, 4 * t, axis=1) for t in range(5)]).astype(np.uint8)  # (5, 24, 32, 3)
    ours, theirs = str(tmp_path / 'episode_0.hdf5'), str(tmp_path / 'episode_1.hdf5')
    hdf5.write_episode(ours, np.zeros((5, 14)), np.zeros((5, 14)), {'cam_high': frames}, qvel=np.zeros((5, 14)),
                           sim=False, compression='jpeg')
    reference_rows = write_act_plus_plus_episode(theirs, frames)
    with h5py.File(ours, 'r') as a, h5py.File(theirs, 'r') as b:
        assert dict(a.attrs) == dict(b.attrs) == {'sim': False, 'compress': True}
        np.testing.assert_array_equal(a['compress_len'][()], b['compress_len'][()])
        assert a['compress_len'].dtype == np.float32 and a['compress_len'].shape == (1, 5)
        np.testing.assert_array_equal(a['/observations/images/cam_high'][()], reference_rows)
    decoded = hdf5.read_episode(theirs).images['cam_high']
    assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames).mean() < 8
    np.testing.assert_array_equal(hdf5.read_episode(ours).images['cam_high'], decoded)


def test_reading_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset directory .* does not exist'):
        hdf5.read_low_dim(str(tmp_path / 'nope' / 'episode_0.hdf5'))
    write_tiny_episode(str(tmp_path / 'episode_0.hdf5'))
    with pytest.raises(FileNotFoundError, match=r'episode_3\.hdf5: episode file not found; .* holds 1 episode'):
        hdf5.read_episode(hdf5.episode_path(str(tmp_path), 3))
    (tmp_path / 'episode_1.hdf5').write_bytes(b'not hdf5')
    with pytest.raises(OSError, match=r'episode_1\.hdf5: cannot be read as an HDF5 episode file'):
        hdf5.read_episode(str(tmp_path / 'episode_1.hdf5'))
    with pytest.raises(KeyError, match=r"no camera 'wrist' .* it has: top"):
        hdf5.read_episode(str(tmp_path / 'episode_0.hdf5'), cameras=['wrist'])
    with pytest.raises(ValueError, match="compression must be None or one of gzip, lzf, jpeg, got 'zip'"):
        hdf5.write_episode(str(tmp_path / 'episode_2.hdf5'), *random_episode(), compression='zip')
    assert sorted(os.listdir(tmp_path)) == ['episode_0.hdf5', 'episode_1.hdf5']
