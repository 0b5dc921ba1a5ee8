"""LeRobot datasets: parquet tables, mp4 videos and JSON metadata, read and written with pyarrow and PyAV.

A LeRobot dataset is a folder with meta/info.json. Read: codebase versions v3.0 (episodes packed
into data/chunk-CCC/file-FFF.parquet and videos/<key>/chunk-CCC/file-FFF.mp4, located by
meta/episodes/chunk-CCC/file-FFF.parquet) and v2.1/v2.0 (one data/chunk-CCC/episode_EEEEEE.parquet
and one videos/chunk-CCC/<key>/episode_EEEEEE.mp4 per episode, meta/episodes.jsonl). Written: v3.0,
as LeRobot writes it (its default video encoding, per-episode and dataset statistics with quantiles).

Features map to the episode layout as
    observation.state        <-> /observations/qpos   (T, S) float32
    action                   <-> /action              (T, A) float32
    observation.velocity     <-> /observations/qvel   (optional)
    observation.effort       <-> /observations/effort (optional)
    observation.images.<cam> <-> camera <cam>         (T, H, W, 3) uint8, stored as video
A frame is the video frame within TIMESTAMP_TOLERANCE_S of `from_timestamp + timestamp`, as
LeRobot finds it, decoded to RGB by PyAV. The episode metadata's extra `sim` column keeps the HDF5
episodes' flag; datasets without it count as recorded LeRobot's way, each action beside the
observation of its own step (the sim layout). `LeRobotEpisodes` offers training the interface of
formats/episode.py; `LeRobotWriter` (lerobot_writer.py) creates a dataset or appends to one, atomically.
"""
import glob
import json
import os
from dataclasses import dataclass

import numpy as np

from common.checks import check_values
from common.folders import inside_folder
from common.safe_load import load_json
from constants import CONTROL_HZ
from formats.episode import Episode
from formats.lerobot_journal import finish_pending_append

### Format settings
SUPPORTED_VERSIONS = ('v2.0', 'v2.1', 'v3.0')
CODEBASE_VERSION = 'v3.0'  # what LeRobotWriter writes
INFO_PATH = 'meta/info.json'
STATS_PATH = 'meta/stats.json'
TASKS_PATH = 'meta/tasks.parquet'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100  # a new data file starts past this size
VIDEO_FILE_MB = 200  # a new video file starts past this size
STATE, ACTION, IMAGE_PREFIX = 'observation.state', 'action', 'observation.images.'
ARRAY_FEATURES = {'qpos': STATE, 'action': ACTION, 'qvel': 'observation.velocity', 'effort': 'observation.effort'}
REQUIRED_ARRAYS = ('qpos', 'action')
INDEX_FEATURES = {'timestamp': 'float32', 'frame_index': 'int64', 'episode_index': 'int64', 'index': 'int64',
                  'task_index': 'int64'}
VIDEO_CODEC = 'libsvtav1'  # LeRobot's default encoding: AV1, yuv420p, a keyframe every 2 frames, crf 30
FALLBACK_VCODEC = 'h264'  # where the AV1 encoder is missing
PIX_FMT = 'yuv420p'
GOP = 2
CRF = 30
SVTAV1_PRESET = 12
TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobot's tolerance between a wanted time and the frame found
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STATS_SAMPLES = (100, 10_000, 0.75)  # images sampled per episode for statistics: min, max, power of length
STATS_IMAGE_SIDE = (150, 300)  # frames with a side of 300 or more are subsampled to about 150 for statistics
DEFAULT_FPS = CONTROL_HZ
DEFAULT_TASK = 'demonstration'
# Each episode's origin, in extra columns of the episode metadata, which LeRobot's merge keeps and
# ignores (its delete and split rebuild the rows without them): simulated or not, and whether its
# simulated frames were rendered with shadows.
SIM_COLUMN, SHADOWS_COLUMN = 'sim', 'shadows'
# Where datasets written by earlier versions marked it, read still: info.json's action feature's info
# 'sim' and a simulated camera's info 'shadows' (LeRobot's merge refuses features that differ so).
SIM_MARK, SHADOWS_MARK = 'sim', 'shadows'


MAX_FRAME_SIDE = 8192  # pixels: a larger side in info.json is a damaged file


class LeRobotFormatError(ValueError):
    """A LeRobot dataset or checkpoint this project cannot read or extend as it is; the message names
    the file and says why."""


def is_lerobot_dataset(path):
    return os.path.isfile(os.path.join(path, INFO_PATH))


def _pq():
    import pyarrow.parquet as pq
    return pq


def read_json(path, kind=None):
    """The JSON value of `path` (of type `kind` when given: dict or list); LeRobotFormatError naming the
    file when it is missing, unreadable, not JSON, nested too deep or of another type."""
    value = load_json(path, LeRobotFormatError)
    if kind is not None and not isinstance(value, kind):
        expected = {dict: 'an object ({...})', list: 'a list ([...])'}[kind]
        raise LeRobotFormatError(f'{path}: {expected} is expected, not {type(value).__name__}')
    return value


def read_info(root):
    """meta/info.json, checked: a supported codebase_version and the keys reading needs."""
    path = os.path.join(root, INFO_PATH)
    info = read_json(path, dict)
    version = info.get('codebase_version')
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotFormatError(f'{path}: codebase_version {version!r} is not supported; this project reads '
                                 f'{", ".join(SUPPORTED_VERSIONS)}')
    missing = [k for k in ('fps', 'features', 'total_episodes', 'data_path') if k not in info]
    if missing:
        raise LeRobotFormatError(f'{path}: missing {", ".join(missing)}')
    return check_values(info, path, info_problem, LeRobotFormatError)


def info_problem(info):
    """What is wrong with the values of an info.json, or None."""
    number = (int, float)
    if not isinstance(info['fps'], number) or isinstance(info['fps'], bool) or not info['fps'] > 0:
        return f"fps {info['fps']!r} is not a positive number"
    if type(info['total_episodes']) is not int or info['total_episodes'] < 0:  # a bool is no count
        return f"total_episodes {info['total_episodes']!r} is not a count"
    features = info['features']
    if not isinstance(features, dict) or not features:
        return 'features is not an object of features'
    for key, feature in features.items():
        if not isinstance(feature, dict) or not isinstance(feature.get('shape'), list):
            return f'feature {key} is not an object with a "shape" list'
    for key in ('data_path', 'video_path'):
        if not isinstance(info.get(key, ''), str):
            return f'{key} {info[key]!r} is not a path template'
    return None


def read_table(path, columns=None):
    """A parquet file as a pyarrow Table, or an error naming it."""
    import pyarrow as pa
    if not os.path.isfile(path):
        raise LeRobotFormatError(f'{path}: missing')
    try:
        return _pq().read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise LeRobotFormatError(f'{path}: cannot be read as parquet ({err})') from None


def column_array(table, name, path):
    """A (fixed-size) list column -> (N, D) array, a scalar column -> (N,) array."""
    import pyarrow as pa
    if name not in table.column_names:
        raise LeRobotFormatError(f"{path}: no column '{name}'; it has: {', '.join(table.column_names)}")
    column = table.column(name).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) \
            or pa.types.is_large_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False)
        if len(column) and len(values) % len(column):
            raise LeRobotFormatError(f"{path}: column '{name}' holds lists of different lengths")
        return values.reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


################################ Reading ################################

@dataclass
class EpisodeEntry:
    """Where one episode lies: its data file, and per video key (video file, from_timestamp)."""
    index: int
    length: int
    data_file: str  # relative to the dataset root
    videos: dict
    sim: bool = None  # the episode row's mark; None: the row has none
    tasks: tuple = ()
    shadows: bool = None  # the row's mark: False for simulated frames rendered without shadows


def _v3_entries(root, info, video_keys):
    folder = os.path.join(root, 'meta', 'episodes')
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), '*', '*.parquet')))
    if not paths:
        raise LeRobotFormatError(f'{folder}: no episode metadata (chunk-*/file-*.parquet)')
    entries = []
    for path in paths:
        table = read_table(path)
        rows = table.select([c for c in table.column_names if not c.startswith('stats/')]).to_pylist()
        for row in rows:
            try:
                data_file = _inside(root, info['data_path'].format(chunk_index=row['data/chunk_index'],
                                                                   file_index=row['data/file_index']), 'data_path')
                videos = {key: (_inside(root, info['video_path'].format(
                    video_key=key, chunk_index=row[f'videos/{key}/chunk_index'],
                    file_index=row[f'videos/{key}/file_index']), 'video_path'),
                                float(row[f'videos/{key}/from_timestamp'])) for key in video_keys}
                entries.append(EpisodeEntry(int(row['episode_index']), int(row['length']), data_file, videos,
                                            _mark(row.get(SIM_COLUMN)), tuple(row.get('tasks') or ()),
                                            _mark(row.get(SHADOWS_COLUMN))))
            except KeyError as err:
                raise LeRobotFormatError(f'{path}: episode rows lack the column {err.args[0]}') from None
    return entries


def _mark(value):
    return None if value is None else bool(value)


def origin_marks(info):
    """(sim, shadows) the features of an info.json written by an earlier version mark, each None where
    unmarked: whether the episodes are simulated (the action feature's info), and whether simulated
    frames were rendered with shadows (every camera's info, when they agree)."""
    features = info.get('features') or {}
    sim = _mark(((features.get(ACTION) or {}).get('info') or {}).get(SIM_MARK))
    shadows = {_mark((f.get('info') or {}).get(SHADOWS_MARK)) for f in features.values() if f.get('dtype') == 'video'}
    return sim, (shadows.pop() if len(shadows) == 1 else None)


def _inside(root, relative, key):
    return inside_folder(root, relative, os.path.join(root, INFO_PATH), key, LeRobotFormatError)


def _v2_entries(root, info, video_keys):
    path = os.path.join(root, 'meta', 'episodes.jsonl')
    if not os.path.isfile(path):
        raise LeRobotFormatError(f'{path}: missing')
    chunks_size = info.get('chunks_size', CHUNKS_SIZE)
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                index = int(row['episode_index'])
                chunk = index // chunks_size
                videos = {key: (_inside(root, info['video_path'].format(episode_chunk=chunk, video_key=key,
                                                                        episode_index=index), 'video_path'), 0.0)
                          for key in video_keys}
                entries.append(EpisodeEntry(index, int(row['length']), _inside(
                    root, info['data_path'].format(episode_chunk=chunk, episode_index=index), 'data_path'),
                                            videos, _mark(row.get(SIM_COLUMN)), tuple(row.get('tasks') or ())))
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:
                raise LeRobotFormatError(f'{path}: line {number} is not an episode record ({err})') from None
    return entries


class LeRobotEpisodes:
    """The episodes of a LeRobot dataset, read as formats.hdf5.HDF5Episodes reads episode files.

    Low-dimensional arrays come from the parquet tables (each data file read once); frames are
    decoded from the videos, seeking to the keyframe before the first wanted frame.
    """
    array_names = ARRAY_FEATURES

    def __init__(self, root):
        self.root = root
        finished = finish_pending_append(root, INFO_PATH)
        if finished:
            print(f'{root}: an interrupted append was {finished}')
        self.info = read_info(root)
        self.version = self.info['codebase_version']
        self.fps = self.info['fps']
        self.features = self.info['features']
        self.video_keys = [k for k, f in self.features.items() if f.get('dtype') == 'video']
        if self.video_keys and 'video_path' not in self.info:
            raise LeRobotFormatError(f'{os.path.join(root, INFO_PATH)}: video features but no video_path')
        images = [k for k, f in self.features.items() if f.get('dtype') == 'image']
        if images:
            raise LeRobotFormatError(f'{os.path.join(root, INFO_PATH)}: features {", ".join(images)} hold images '
                                     f'inside the tables; this project reads camera features stored as video')
        make_entries = _v3_entries if self.version == 'v3.0' else _v2_entries
        self.entries = sorted(make_entries(root, self.info, self.video_keys), key=lambda e: e.index)
        self._check_entries()
        self._resolve_origin()
        self.camera_names = [k[len(IMAGE_PREFIX):] for k in self.video_keys if k.startswith(IMAGE_PREFIX)]
        self._arrays, self._containers, self._pid = {}, {}, None
        self._checked_videos = set()

    def _check_entries(self):
        indices = [e.index for e in self.entries]
        total = self.info['total_episodes']
        if indices != list(range(len(indices))) or len(indices) != total:
            raise LeRobotFormatError(f'{self.root}: the episode metadata lists episodes {_ranges(indices)} but '
                                     f'{INFO_PATH} says total_episodes {total}; they must be 0..{total - 1}')

    def _resolve_origin(self):
        """Each episode's sim flag: its row's, else the dataset's mark, else simulated, said once (LeRobot's
        tools drop the rows' extra column; a dataset written elsewhere has neither)."""
        sim, _ = origin_marks(self.info)
        unmarked = [e for e in self.entries if e.sim is None]
        if unmarked and sim is None:
            print(f'{self.root}: whether the episodes are simulated or from a real robot is not recorded; they count '
                  f'as simulated (their actions are not shifted by the one step the original shifts a real '
                  f"robot's by)")
        for entry in unmarked:
            entry.sim = True if sim is None else sim

    @property
    def num_episodes(self):
        return len(self.entries)

    @property
    def dataset_dir(self):
        return self.root

    def name(self, index):
        return f'{self.root} episode {index}'

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_containers'], state['_pid'] = {}, None  # open videos do not cross processes
        return state

    def entry(self, index):
        if not 0 <= index < len(self.entries):
            raise LeRobotFormatError(f'{self.root}: no episode {index}; the dataset has {len(self.entries)} '
                                     f'(0..{len(self.entries) - 1})')
        return self.entries[index]

    def require(self, feature, need):
        """Raise naming `feature` and the dataset's features unless it has it."""
        if feature not in self.features:
            raise LeRobotFormatError(f"{os.path.join(self.root, INFO_PATH)}: no feature '{feature}' ({need}); "
                                     f"the dataset has: {', '.join(self.features)}")

    ############ Tables

    def arrays(self, index):
        """{'qpos', 'action', and 'qvel', 'effort' where present, 'timestamp'} of one episode."""
        if index not in self._arrays:
            self._read_data_file(self.entry(index).data_file)
        return self._arrays[index]

    def _read_data_file(self, relative):
        path = os.path.join(self.root, relative)
        for key in REQUIRED_ARRAYS:
            self.require(ARRAY_FEATURES[key], 'training reads it')
        present = {key: feature for key, feature in ARRAY_FEATURES.items() if feature in self.features}
        table = read_table(path, list(present.values()) + ['timestamp', 'frame_index', 'episode_index'])
        episode_index = column_array(table, 'episode_index', path)
        frame_index = column_array(table, 'frame_index', path)
        columns = {key: column_array(table, feature, path).astype(np.float32, copy=False)
                   for key, feature in present.items()}
        timestamps = column_array(table, 'timestamp', path).astype(np.float64)
        for index in np.unique(episode_index):
            rows = np.flatnonzero(episode_index == index)
            rows = rows[np.argsort(frame_index[rows], kind='stable')]
            if index >= len(self.entries) or self.entries[index].data_file != relative:
                continue
            self._arrays[int(index)] = self._episode_arrays(int(index), path, rows, frame_index, columns, timestamps)
        missing = [e.index for e in self.entries if e.data_file == relative and e.index not in self._arrays]
        if missing:
            raise LeRobotFormatError(f'{path}: no rows of episode {missing[0]}, which the episode metadata places here')

    def _episode_arrays(self, index, path, rows, frame_index, columns, timestamps):
        length = self.entries[index].length
        if not np.array_equal(frame_index[rows], np.arange(length)):
            raise LeRobotFormatError(f'{path}: episode {index} has frame_index {_ranges(frame_index[rows].tolist())} '
                                     f'but its metadata says {length} frames (0..{length - 1})')
        arrays = {key: np.ascontiguousarray(values[rows]) for key, values in columns.items()}
        arrays['timestamp'] = timestamps[rows]
        expected = np.arange(length) / self.fps
        off = np.abs(arrays['timestamp'] - expected)
        if length and not off.max() <= TIMESTAMP_TOLERANCE_S + 1e-6 * expected[-1]:  # NaN fails too
            step = int(np.argmax(off))
            table_fps = (length - 1) / arrays['timestamp'][-1] if length > 1 and arrays['timestamp'][-1] > 0 else None
            raise LeRobotFormatError(f"{path}: episode {index}'s timestamp at frame {step} is "
                                     f"{arrays['timestamp'][step]:.4f} s, not {expected[step]:.4f} s: the table runs "
                                     f"at {table_fps or 0:.3g} fps but {INFO_PATH} says fps {self.fps}")
        return arrays

    def low_dim(self, index):
        """(qpos (T, S), action (T, A) float32, sim flag) of one episode."""
        arrays = self.arrays(index)
        qpos, action = arrays['qpos'], arrays['action']
        if len(qpos) == 0:
            raise LeRobotFormatError(f'{self.name(index)}: the episode has no frames')
        return qpos, action, self.entries[index].sim

    def check_training_data(self, num_episodes, camera_names):
        """Check that training can read episodes 0..num_episodes-1 with these cameras (every table and
        video, before anything is written) -> the line that tells which feature feeds what."""
        if num_episodes > self.num_episodes:
            raise ValueError(f'--num_episodes {num_episodes}: the LeRobot dataset {self.root} holds '
                             f'{self.num_episodes} episodes')
        if not camera_names:
            raise ValueError(f'{self.root}: the LeRobot dataset has no camera features ({IMAGE_PREFIX}<camera>); '
                             f'its features: {", ".join(self.features)}')
        for cam in camera_names:
            self.video_key(cam)
        for index in range(num_episodes):  # low_dim requires state and action
            self.check_frames(index, camera_names, len(self.low_dim(index)[0]))
        return (f'LeRobot dataset {self.root} ({self.version}, {self.fps} fps): {num_episodes} of '
                f'{self.num_episodes} episodes; observation.state -> qpos, action -> action, '
                + ', '.join(f"{IMAGE_PREFIX}{cam} -> camera '{cam}'" for cam in camera_names))

    ############ Videos

    def video_key(self, cam):
        key = IMAGE_PREFIX + cam
        if key not in self.video_keys:
            self.require(key, f"camera '{cam}' (check --camera_names)")
            raise LeRobotFormatError(f"{os.path.join(self.root, INFO_PATH)}: feature '{key}' is not a video")
        return key

    def frame_shape(self, index, cam):
        """(H, W) of a camera's frames, from info.json."""
        feature = self.features[self.video_key(cam)]
        video = feature.get('info') or feature.get('video_info') or {}
        if 'video.height' in video and 'video.width' in video:
            hw = video['video.height'], video['video.width']
        else:
            names = feature.get('names') or ['height', 'width', 'channels']
            shape = dict(zip(names, feature['shape']))
            hw = shape.get('height', feature['shape'][0]), shape.get('width', feature['shape'][1])
        if not all(isinstance(side, int) and 0 < side <= MAX_FRAME_SIDE for side in hw):
            raise LeRobotFormatError(f'{os.path.join(self.root, INFO_PATH)}: {self.video_key(cam)} has frames of '
                                     f'{hw[0]}x{hw[1]}; sides of 1..{MAX_FRAME_SIDE} pixels are expected')
        return hw

    def check_frames(self, index, cameras, length):
        """Raise naming the video unless each camera's video exists at the dataset's fps and holds the
        episode's frames."""
        entry = self.entry(index)
        for cam in cameras:
            relative, start = entry.videos[self.video_key(cam)]
            duration = self._check_video(relative, cam)
            end = start + (length - 1) / self.fps
            if end > duration + TIMESTAMP_TOLERANCE_S:
                path = os.path.join(self.root, relative)
                raise LeRobotFormatError(f'{path}: the video is shorter than its table: it ends at {duration:.3f} s '
                                         f'but episode {index} ({length} frames from {start:.3f} s) needs a frame at '
                                         f'{end:.3f} s')

    def _check_video(self, relative, cam):
        """Time of the video's last frame (s), after checking it exists, runs at the dataset's fps and
        holds frames of the size info.json gives the camera (what training and config.json then take)."""
        path = os.path.join(self.root, relative)
        container = self._container(relative)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        if relative not in self._checked_videos:
            if rate is None or abs(float(rate) - self.fps) > 1e-3:
                raise LeRobotFormatError(f'{path}: the video runs at {float(rate or 0):.3g} fps but {INFO_PATH} and '
                                         f'the table say {self.fps} fps')
            decoded, stated = (stream.codec_context.height, stream.codec_context.width), self.frame_shape(0, cam)
            if decoded != stated:
                raise LeRobotFormatError(f'{path}: its frames are {decoded[0]}x{decoded[1]} but {INFO_PATH} gives '
                                         f'{self.video_key(cam)} {stated[0]}x{stated[1]}')
            self._checked_videos.add(relative)
        if stream.frames:
            return (stream.frames - 1) / float(rate)
        duration = stream.duration * stream.time_base if stream.duration else container.duration / 1e6
        return float(duration) - 1 / float(rate)

    def _container(self, relative):
        import av
        if self._pid != os.getpid():  # first use in this process (e.g. a DataLoader worker)
            self._containers, self._pid = {}, os.getpid()
        if relative not in self._containers:
            path = os.path.join(self.root, relative)
            if not os.path.isfile(path):
                raise LeRobotFormatError(f'{path}: video missing')
            try:
                container = av.open(path)
            except av.error.FFmpegError as err:
                raise LeRobotFormatError(f'{path}: cannot be read as a video ({err})') from None
            if not container.streams.video:
                raise LeRobotFormatError(f'{path}: holds no video stream')
            self._containers[relative] = container
        return self._containers[relative]

    def frames(self, index, cam, steps):
        """Frames of one camera at the given steps -> (len(steps), H, W, 3) uint8."""
        entry = self.entry(index)
        relative, start = entry.videos[self.video_key(cam)]
        steps = np.asarray(steps)
        unique, inverse = np.unique(steps, return_inverse=True)
        times = start + self.arrays(index)['timestamp'][unique]
        where = f"episode {index}, camera '{cam}'"
        decoded = decode_frames(self._container(relative), os.path.join(self.root, relative), times, where)
        return np.stack(decoded)[inverse]

    def episode_frames(self, index, cam):
        """Every frame of one camera's episode, decoded once -> (T, H, W, 3) uint8."""
        return self.frames(index, cam, np.arange(self.entry(index).length))

    def read_episode(self, index, cameras=None):
        """The whole episode as an episodes.Episode; `cameras` None reads every camera."""
        qpos, action, sim = self.low_dim(index)
        arrays = self.arrays(index)
        cams = self.camera_names if cameras is None else cameras
        self.check_frames(index, cams, len(qpos))
        images = {cam: self.episode_frames(index, cam) for cam in cams}
        return Episode(qpos, action, images, qvel=arrays.get('qvel'), effort=arrays.get('effort'), sim=sim,
                       shadows=self.shadows(self.num_episodes))

    def shadows(self, count):
        """False when the dataset marks its simulated frames rendered without shadows: the rows of its
        simulated episodes, or an earlier version's mark in info.json (else True)."""
        marked = origin_marks(self.info)[1]
        if marked is not None:
            return marked
        return not any(e.sim and e.shadows is False for e in self.entries[:count])

    def fingerprint(self, count):
        """{file: size} of the data and video files episodes 0..count-1 lie in."""
        files = set()
        for entry in self.entries[:count]:
            files.add(entry.data_file)
            files.update(relative for relative, _ in entry.videos.values())
        return {relative: os.path.getsize(os.path.join(self.root, relative)) for relative in sorted(files)
                if os.path.isfile(os.path.join(self.root, relative))}


def decode_frames(container, path, times, where):
    """The frames at `times` (increasing seconds) -> list of (H, W, 3) uint8: for each time the
    frame within TIMESTAMP_TOLERANCE_S of it, never a neighbour; a damaged video is named."""
    import av
    try:
        return _decode_frames(container, path, times, where)
    except av.error.FFmpegError as err:
        raise LeRobotFormatError(f'{path}: cannot be decoded ({where}): {err}; the video is damaged') from None


def _decode_frames(container, path, times, where):
    stream = container.streams.video[0]
    container.seek(max(0, int(times[0] / stream.time_base) - 1), backward=True, any_frame=False, stream=stream)
    frames, wanted, last = [], 0, None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = float(frame.pts * stream.time_base)
        last = t
        if times[wanted] < t - TIMESTAMP_TOLERANCE_S:
            raise LeRobotFormatError(f'{path}: no frame at {times[wanted]:.4f} s ({where}): the frames go from '
                                     f'{"the start" if not frames else "before"} to {t:.4f} s')
        while wanted < len(times) and abs(times[wanted] - t) <= TIMESTAMP_TOLERANCE_S:
            frames.append(frame.to_ndarray(format='rgb24'))
            wanted += 1
        if wanted == len(times):
            return frames
    end = 'holds no frames' if last is None else f'ends at {last:.4f} s'
    raise LeRobotFormatError(f'{path}: the video is shorter than its table: it {end} but {where} needs a frame at '
                             f'{times[wanted]:.4f} s')


def _ranges(values):
    values = list(values)
    if not values:
        return 'none'
    if values == list(range(values[0], values[0] + len(values))):
        return f'{values[0]}..{values[-1]}'
    return ', '.join(map(str, values[:8])) + (' ...' if len(values) > 8 else '')
