"""The episode file format: one `episode_{i}.hdf5` per demonstration, in the original ACT layout.

    attrs['sim']                   True for simulated episodes, False for real-robot ones
    attrs['shadows']               False for simulated episodes rendered without shadows (absent: with)
    /action                        (T, A) float32
    /observations/qpos             (T, S) float32
    /observations/qvel             (T, S) float32, optional
    /observations/effort           (T, S) float32, optional (real robot)
    /observations/images/<camera>  (T, H, W, 3) uint8, one frame per chunk, optionally gzip or lzf
The JPEG layout of the act-plus-plus fork: attrs['compress'] = True, each camera a (T, N) uint8
dataset whose row t holds frame t as a JPEG zero-padded to the longest, and /compress_len
(num_cameras, T) float32 holding the encoded lengths. docs/formats.md describes both in full.

`HDF5Episodes` offers these files through the interface of formats/episode.py. Episodes are
written atomically (common/files.py): an interrupted or failed write leaves no truncated file, and
a full disk ends in a clear error rather than a crash in HDF5. This module does not import torch,
so the viewer and the replay script stay light.
"""
import glob
import os

import h5py
import numpy as np

from common.files import atomic_file
from formats.episode import Episode

### Format settings
HDF5_CACHE_BYTES = 2 * 1024 ** 2  # HDF5 chunk cache of a written file, as the original
GZIP_LEVEL = 1  # lossless and fast; every HDF5 build reads it
COMPRESSIONS = ('gzip', 'lzf', 'jpeg')  # besides None (uncompressed, the original's)
JPEG_QUALITY = 50  # act-plus-plus's encoding quality
LOW_DIM_KEYS = ('qpos', 'qvel', 'effort')  # the /observations datasets besides the images


def episode_path(dataset_dir, index):
    return os.path.join(dataset_dir, f'episode_{index}.hdf5')


def count_episodes(dataset_dir):
    """How many episode files dataset_dir holds from episode_0 on, without a gap."""
    count = 0
    while os.path.isfile(episode_path(dataset_dir, count)):
        count += 1
    return count


def missing_episodes(dataset_dir, num_episodes):
    """Indices among 0..num_episodes-1 whose episode file dataset_dir lacks."""
    return [i for i in range(num_episodes) if not os.path.isfile(episode_path(dataset_dir, i))]


############################ Reading ############################

def open_episode(path):
    """Open an episode file read-only, or raise an error naming the file and the problem."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or '.'
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'dataset directory {folder} does not exist '
                                    f'(pass --dataset_dir or set ACT_DATA_DIR)')
        found = glob.glob(os.path.join(glob.escape(folder), 'episode_*.hdf5'))
        raise FileNotFoundError(f'{path}: episode file not found; {folder} holds {len(found)} episode files')
    try:
        return h5py.File(path, 'r')
    except OSError as err:
        raise EpisodeFileError(f'{path}: cannot be read as an HDF5 episode file ({err})') from None


def _get(root, key, path):
    if key not in root:
        raise KeyError(f"{path}: missing dataset '{key}'")
    return root[key]


class EpisodeFileError(OSError, ValueError):
    """An episode file that cannot be read: truncated, damaged, or holding something else than numbers."""


def _read_array(root, key, path):
    data = _get(root, key, path)
    if data.dtype.kind not in 'biuf':
        raise EpisodeFileError(f"{path}: dataset '{key}' holds {data.dtype} values; numbers are expected")
    try:
        return np.asarray(data[()], dtype=np.float32)
    except OSError as err:
        raise EpisodeFileError(f"{path}: dataset '{key}' is corrupt ({err})") from None


def _camera_dataset(root, cam, path):
    images = _get(root, '/observations/images', path)
    if cam not in images:
        raise KeyError(f"{path}: no camera '{cam}' in /observations/images; it has: "
                       f"{', '.join(sorted(images)) or 'none'} (check --camera_names)")
    return images[cam]


def camera_names(root):
    """Names of the cameras an open episode holds (HDF5 order: sorted)."""
    return list(root['/observations/images']) if '/observations/images' in root else []


def is_jpeg_episode(root):
    """True for the act-plus-plus layout: each frame a JPEG in a zero-padded uint8 row."""
    return bool(root.attrs.get('compress', False))


def read_low_dim(path):
    """qpos (T, S), action (T, A) float32 and the `sim` flag of one episode, checked for consistency."""
    with open_episode(path) as root:
        if 'sim' not in root.attrs:
            raise KeyError(f"{path}: missing root attribute 'sim' (True for simulated episodes)")
        is_sim = bool(root.attrs['sim'])
        qpos = _read_array(root, '/observations/qpos', path)
        action = _read_array(root, '/action', path)
    if qpos.ndim != 2 or action.ndim != 2 or len(qpos) != len(action):
        raise ValueError(f'{path}: /observations/qpos {qpos.shape} and /action {action.shape} must both be '
                         f'(episode_len, dim) with the same episode_len')
    if len(qpos) == 0:
        raise ValueError(f'{path}: the episode has no steps')
    return qpos, action, is_sim


def rendered_with_shadows(path):
    """False when the episode's frames were rendered without shadows (attrs['shadows'])."""
    with open_episode(path) as root:
        return bool(root.attrs.get('shadows', True))


def decode_jpeg(row, where='frame'):
    """One JPEG, zero padding after it allowed: (N,) uint8 -> (H, W, 3) uint8, channels as encoded."""
    import cv2
    frame = cv2.imdecode(np.asarray(row), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f'{where} is not a decodable JPEG')
    return frame


def encode_jpeg(frame):
    """(H, W, 3) uint8 -> (N,) uint8 JPEG bytes at JPEG_QUALITY, channels kept in their order."""
    import cv2
    ok, encoded = cv2.imencode('.jpg', frame, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise ValueError(f'a frame of shape {frame.shape} could not be JPEG-encoded')
    return encoded.ravel()


def read_frames(root, path, cam, steps):
    """Frames of one camera at the given steps -> (len(steps), H, W, 3) uint8."""
    dataset = _camera_dataset(root, cam, path)
    steps = np.asarray(steps)
    unique, inverse = np.unique(steps, return_inverse=True)  # h5py reads increasing indices only
    try:
        rows = dataset[unique] if len(unique) > 1 else dataset[int(unique[0])][None]
    except OSError as err:
        raise EpisodeFileError(f"{path}: camera '{cam}' frames are corrupt ({err})") from None
    if is_jpeg_episode(root):
        rows = np.stack([decode_jpeg(r, f"{path}: frame {s} of camera '{cam}'") for r, s in zip(rows, unique)])
    elif rows.ndim != 4 or rows.shape[-1] != 3:
        raise ValueError(f"{path}: camera '{cam}' holds {dataset.shape} {dataset.dtype}; expected "
                         f"(episode_len, H, W, 3) uint8 frames")
    return rows[inverse]  # (len(steps), H, W, 3)


def check_frame_counts(root, path, cameras, episode_len):
    """Raise naming the file, camera and both counts unless each camera has one frame per step."""
    for cam in cameras:
        count = len(_camera_dataset(root, cam, path))
        if count != episode_len:
            raise ValueError(f"{path}: camera '{cam}' has {count} frames but the episode has {episode_len} "
                             f"steps (/action, /observations/qpos): each step needs one frame")


def frame_shape(root, path, cam):
    """(H, W) of one camera's frames (decoding the first frame of JPEG episodes)."""
    if is_jpeg_episode(root):
        return read_frames(root, path, cam, [0]).shape[1:3]
    return tuple(_camera_dataset(root, cam, path).shape[1:3])


def read_episode(path, cameras=None):
    """The whole episode, frames decoded; `cameras` None reads every camera, [] none."""
    qpos, action, sim = read_low_dim(path)
    with open_episode(path) as root:
        optional = {key: _read_array(root, f'/observations/{key}', path)
                    for key in ('qvel', 'effort') if f'/observations/{key}' in root}
        cams = camera_names(root) if cameras is None else cameras
        check_frame_counts(root, path, cams, len(qpos))
        images = {cam: read_frames(root, path, cam, np.arange(len(qpos))) for cam in cams}
        shadows = bool(root.attrs.get('shadows', True))
    return Episode(qpos, action, images, sim=sim, shadows=shadows, **optional)


def layout_problem(path, expected):
    """None if `path` holds {key: (shape, dtype)} as expected, else what differs.

    Raises OSError when the file cannot be read as HDF5 (e.g. truncated by an older tool)."""
    with h5py.File(path, 'r') as root:
        for key, (shape, dtype) in expected.items():
            if key not in root:
                return f'{key} is missing'
            if root[key].shape != shape or root[key].dtype != dtype:
                return f'{key} is {root[key].shape} {root[key].dtype}, expected {shape} {np.dtype(dtype)}'
    return None


############################ Datasets ############################

class HDF5Episodes:
    """The episode files of a folder, opened once per process (never once per sample).

    The interface training reads (LeRobotEpisodes offers the same): num_episodes, camera_names,
    name(i), low_dim(i), check_frames(i, cameras, length), frame_shape(i, camera),
    frames(i, camera, steps), episode_frames(i, camera), read_episode(i, cameras), fingerprint(count),
    shadows(count), and array_names (what messages call qpos and action).
    """
    array_names = {'qpos': '/observations/qpos', 'action': '/action'}

    def __init__(self, dataset_dir):
        self.dataset_dir = dataset_dir
        self._files, self._pid = {}, None
        self._low_dim = {}  # index -> (qpos, action, sim): statistics and both splits read each episode once

    @property
    def num_episodes(self):
        return count_episodes(self.dataset_dir)

    @property
    def camera_names(self):
        with open_episode(self.name(0)) as root:
            return camera_names(root)

    def name(self, index):
        return episode_path(self.dataset_dir, index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_files'], state['_pid'] = {}, None  # open HDF5 files do not cross processes
        return state

    def _file(self, index):
        if self._pid != os.getpid():  # first use in this process (e.g. a fresh DataLoader worker)
            self._files, self._pid = {}, os.getpid()
        if index not in self._files:
            self._files[index] = open_episode(self.name(index))
        return self._files[index]

    def low_dim(self, index):
        if index not in self._low_dim:
            self._low_dim[index] = read_low_dim(self.name(index))
        return self._low_dim[index]

    def check_frames(self, index, cameras, length):
        check_frame_counts(self._file(index), self.name(index), cameras, length)

    def frame_shape(self, index, cam):
        return frame_shape(self._file(index), self.name(index), cam)

    def frames(self, index, cam, steps):
        return read_frames(self._file(index), self.name(index), cam, steps)

    def episode_frames(self, index, cam):
        root = self._file(index)
        return read_frames(root, self.name(index), cam, np.arange(len(_camera_dataset(root, cam, self.name(index)))))

    def read_episode(self, index, cameras=None):
        return read_episode(self.name(index), cameras)

    def fingerprint(self, count):
        """{file name: size} of episodes 0..count-1."""
        paths = [self.name(i) for i in range(count)]
        return {os.path.basename(p): os.path.getsize(p) for p in paths}

    def shadows(self, count):
        """False when episodes 0..count-1 were rendered without shadows; ValueError when only some were."""
        marks = [rendered_with_shadows(self.name(i)) for i in range(count)]
        if len(set(marks)) > 1:
            without = [os.path.basename(self.name(i)) for i, mark in enumerate(marks) if not mark]
            raise ValueError(f'{self.dataset_dir}: {len(without)} of {count} episodes were rendered without shadows '
                             f'({", ".join(without[:3])}{" ..." if len(without) > 3 else ""}) and the others with '
                             f'them: train on episodes rendered alike')
        return all(marks)


############################ Writing ############################

def write_episode(path, qpos, action, images, qvel=None, effort=None, sim=True, compression=None, shadows=True):
    """Write one episode atomically in the original layout.

    qpos, qvel, effort (T, S) and action (T, A) are stored as float32; images {camera: (T, H, W, 3)
    uint8}. compression None (the original's), 'gzip' or 'lzf' (lossless, any HDF5 reader), or
    'jpeg' (the act-plus-plus layout, lossy). shadows=False marks frames rendered without shadows."""
    if compression is not None and compression not in COMPRESSIONS:
        raise ValueError(f"compression must be None or one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    with atomic_file(path) as f, h5py.File(f, 'w', rdcc_nbytes=HDF5_CACHE_BYTES) as root:
        root.attrs['sim'] = bool(sim)
        if not shadows:
            root.attrs['shadows'] = False
        obs = root.create_group('observations')
        group = obs.create_group('images')
        if compression == 'jpeg':
            _write_jpeg_images(root, group, images, len(action))
        else:
            options = {'compression_opts': GZIP_LEVEL} if compression == 'gzip' else {}
            for cam, frames in images.items():
                group.create_dataset(cam, data=frames, dtype=np.uint8, chunks=(1, *frames.shape[1:]),
                                     compression=compression, **options)
        for key, values in zip(LOW_DIM_KEYS, (qpos, qvel, effort)):
            if values is not None:
                obs.create_dataset(key, data=np.asarray(values, dtype=np.float32))
        root.create_dataset('action', data=np.asarray(action, dtype=np.float32))


def store_episode(path, episode, compression=None):
    """Write an Episode with write_episode."""
    write_episode(path, episode.qpos, episode.action, episode.images, qvel=episode.qvel, effort=episode.effort,
                  sim=episode.sim, compression=compression, shadows=episode.shadows)


def _write_jpeg_images(root, group, images, episode_len):
    """act-plus-plus: attrs['compress'], zero-padded JPEG rows per camera, /compress_len (cams, T)."""
    root.attrs['compress'] = True
    encoded = {cam: [encode_jpeg(frame) for frame in frames] for cam, frames in images.items()}
    width = max((len(data) for rows in encoded.values() for data in rows), default=1)
    lengths = np.zeros((len(encoded), episode_len), np.float32)  # (cams, T)
    for i, (cam, rows) in enumerate(encoded.items()):
        padded = np.zeros((len(rows), width), np.uint8)  # (T, N)
        for row, data in zip(padded, rows):
            row[:len(data)] = data
        lengths[i] = [len(data) for data in rows]
        group.create_dataset(cam, data=padded, chunks=(1, width))
    root.create_dataset('compress_len', data=lengths)
