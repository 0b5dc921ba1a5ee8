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
episodes.HDF5Episodes; `LeRobotWriter` creates a dataset or appends to one, atomically.
"""
import contextlib
import glob
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

from constants import DT, joint_names
from episodes import Episode
from files import atomic_write

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
DEFAULT_FPS = round(1 / DT)
DEFAULT_TASK = 'demonstration'
SIM_COLUMN = 'sim'


class LeRobotFormatError(ValueError):
    """A LeRobot dataset or checkpoint this project cannot read or extend as it is; the message names
    the file and says why."""


def is_lerobot_dataset(path):
    return os.path.isfile(os.path.join(path, INFO_PATH))


def _pq():
    import pyarrow.parquet as pq
    return pq


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise LeRobotFormatError(f'{path}: missing') from None
    except OSError as err:
        raise LeRobotFormatError(f'{path}: cannot be read ({err.strerror})') from None
    except ValueError as err:
        raise LeRobotFormatError(f'{path}: not valid JSON ({err})') from None


def read_info(root):
    """meta/info.json, checked: a supported codebase_version and the keys reading needs."""
    path = os.path.join(root, INFO_PATH)
    info = read_json(path)
    version = info.get('codebase_version')
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotFormatError(f'{path}: codebase_version {version!r} is not supported; this project reads '
                                 f'{", ".join(SUPPORTED_VERSIONS)}')
    missing = [k for k in ('fps', 'features', 'total_episodes', 'data_path') if k not in info]
    if missing:
        raise LeRobotFormatError(f'{path}: missing {", ".join(missing)}')
    return info


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
    sim: bool = True
    tasks: tuple = ()


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
                data_file = info['data_path'].format(chunk_index=row['data/chunk_index'],
                                                     file_index=row['data/file_index'])
                videos = {key: (info['video_path'].format(video_key=key, chunk_index=row[f'videos/{key}/chunk_index'],
                                                          file_index=row[f'videos/{key}/file_index']),
                                float(row[f'videos/{key}/from_timestamp'])) for key in video_keys}
                entries.append(EpisodeEntry(int(row['episode_index']), int(row['length']), data_file, videos,
                                            bool(row.get(SIM_COLUMN, True)), tuple(row.get('tasks') or ())))
            except KeyError as err:
                raise LeRobotFormatError(f'{path}: episode rows lack the column {err.args[0]}') from None
    return entries


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
                videos = {key: (info['video_path'].format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
                          for key in video_keys}
                entries.append(EpisodeEntry(index, int(row['length']),
                                            info['data_path'].format(episode_chunk=chunk, episode_index=index),
                                            videos, bool(row.get(SIM_COLUMN, True)), tuple(row.get('tasks') or ())))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise LeRobotFormatError(f'{path}: line {number} is not an episode record ({err})') from None
    return entries


class LeRobotEpisodes:
    """The episodes of a LeRobot dataset, read as episodes.HDF5Episodes reads episode files.

    Low-dimensional arrays come from the parquet tables (each data file read once); frames are
    decoded from the videos, seeking to the keyframe before the first wanted frame.
    """
    array_names = ARRAY_FEATURES

    def __init__(self, root):
        self.root = root
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
        self.camera_names = [k[len(IMAGE_PREFIX):] for k in self.video_keys if k.startswith(IMAGE_PREFIX)]
        self._arrays, self._containers, self._pid = {}, {}, None
        self._checked_videos = set()

    def _check_entries(self):
        indices = [e.index for e in self.entries]
        total = self.info['total_episodes']
        if indices != list(range(len(indices))) or len(indices) != total:
            raise LeRobotFormatError(f'{self.root}: the episode metadata lists episodes {_ranges(indices)} but '
                                     f'{INFO_PATH} says total_episodes {total}; they must be 0..{total - 1}')

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
        if length and off.max() > TIMESTAMP_TOLERANCE_S + 1e-6 * expected[-1]:
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
            return int(video['video.height']), int(video['video.width'])
        names = feature.get('names') or ['height', 'width', 'channels']
        shape = dict(zip(names, feature['shape']))
        return int(shape.get('height', feature['shape'][0])), int(shape.get('width', feature['shape'][1]))

    def check_frames(self, index, cameras, length):
        """Raise naming the video unless each camera's video exists at the dataset's fps and holds the
        episode's frames."""
        entry = self.entry(index)
        for cam in cameras:
            relative, start = entry.videos[self.video_key(cam)]
            duration = self._check_video(relative)
            end = start + (length - 1) / self.fps
            if end > duration + TIMESTAMP_TOLERANCE_S:
                path = os.path.join(self.root, relative)
                raise LeRobotFormatError(f'{path}: the video is shorter than its table: it ends at {duration:.3f} s '
                                         f'but episode {index} ({length} frames from {start:.3f} s) needs a frame at '
                                         f'{end:.3f} s')

    def _check_video(self, relative):
        """Time of the video's last frame (s), after checking it exists and runs at the dataset's fps."""
        path = os.path.join(self.root, relative)
        container = self._container(relative)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        if relative not in self._checked_videos:
            if rate is None or abs(float(rate) - self.fps) > 1e-3:
                raise LeRobotFormatError(f'{path}: the video runs at {float(rate or 0):.3g} fps but {INFO_PATH} and '
                                         f'the table say {self.fps} fps')
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
        return Episode(qpos, action, images, qvel=arrays.get('qvel'), effort=arrays.get('effort'), sim=sim)

    def shadows(self, count):
        """True: a LeRobot dataset does not record how simulated frames were rendered."""
        return True

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
    frame within TIMESTAMP_TOLERANCE_S of it, never a neighbour."""
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


################################ Statistics ################################

def feature_stats(values, count=None):
    """LeRobot's statistics of (N, D) values over N: min, max, mean, std (population), count and
    the QUANTILES (the mean in their place below 2 samples)."""
    values = np.asarray(values, dtype=np.float64)
    stats = {'min': values.min(axis=0), 'max': values.max(axis=0), 'mean': values.mean(axis=0),
             'std': values.std(axis=0), 'count': np.array([len(values) if count is None else count])}
    for q in QUANTILES:
        stats[quantile_key(q)] = np.quantile(values, q, axis=0) if len(values) > 1 else stats['mean'].copy()
    return stats


def quantile_key(q):
    return f'q{round(q * 100):02d}'


def sample_steps(length):
    """The frames LeRobot samples from an episode of `length` for image statistics."""
    low, high, power = STATS_SAMPLES
    count = max(min(low, length), min(int(length ** power), high))
    return np.round(np.linspace(0, length - 1, count)).astype(int)


def image_stats(frames):
    """Per-channel statistics of sampled frames (T, H, W, 3) uint8, in [0, 1], each (3, 1, 1)."""
    sampled = frames[sample_steps(len(frames))]
    target, threshold = STATS_IMAGE_SIDE
    h, w = sampled.shape[1:3]
    if max(h, w) >= threshold:
        step = int(max(h, w) / target)
        sampled = sampled[:, ::step, ::step]
    stats = feature_stats(sampled.reshape(-1, 3), count=len(sampled))
    return {k: v if k == 'count' else (v / 255.0).reshape(3, 1, 1) for k, v in stats.items()}


def aggregate_stats(per_episode):
    """Dataset statistics from per-episode ones, as LeRobot aggregates them: count-weighted mean and
    pooled variance, min of minima, max of maxima, and for each quantile the envelope (the least of
    the lower quantiles, the greatest of the upper)."""
    out = {}
    for feature in per_episode[0]:
        stats = [s[feature] for s in per_episode]
        counts = np.array([s['count'][0] for s in stats], dtype=np.float64)
        means = np.stack([s['mean'] for s in stats])
        weights = counts.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (means * weights).sum(axis=0) / counts.sum()
        spread = np.stack([s['std'] for s in stats]) ** 2 + (means - mean) ** 2
        variance = (spread * weights).sum(axis=0) / counts.sum()
        merged = {'min': np.min([s['min'] for s in stats], axis=0), 'max': np.max([s['max'] for s in stats], axis=0),
                  'mean': mean, 'std': np.sqrt(variance), 'count': np.array([int(counts.sum())])}
        for q in QUANTILES:
            values = np.stack([s[quantile_key(q)] for s in stats])
            merged[quantile_key(q)] = values.min(axis=0) if q <= 0.5 else values.max(axis=0)
        out[feature] = merged
    return out


def stats_to_json(stats):
    return {feature: {k: np.asarray(v).tolist() for k, v in values.items()} for feature, values in stats.items()}


def stats_from_row(row):
    """Per-episode statistics from an episode metadata row's stats/<feature>/<stat> columns."""
    stats = {}
    for column, value in row.items():
        if column.startswith('stats/') and value is not None:
            feature, stat = column[len('stats/'):].rsplit('/', 1)
            stats.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.int64 if stat == 'count' else np.float64)
    return stats


################################ Writing ################################

def available_vcodec(vcodec=None):
    """The encoder to use: `vcodec` if PyAV has it (else an error listing the choice), by default
    LeRobot's AV1 encoder, or H.264 where it is missing."""
    import av
    wanted = [vcodec] if vcodec else [VIDEO_CODEC, FALLBACK_VCODEC]
    for name in wanted:
        try:
            return av.codec.Codec(name, 'w').name
        except (av.error.FFmpegError, ValueError):
            continue
    raise LeRobotFormatError(f'--vcodec {vcodec}: PyAV has no such encoder here (try {VIDEO_CODEC} or '
                             f'{FALLBACK_VCODEC})')


def encoder_options(vcodec):
    options = {'g': str(GOP)}
    if vcodec in ('libsvtav1', 'libx264', 'h264', 'hevc', 'libx265', 'libaom-av1'):
        options['crf'] = str(CRF)
    if vcodec == 'libsvtav1':
        options['preset'] = str(SVTAV1_PRESET)
    return options


def encode_video(path, frames, fps, vcodec):
    """frames (T, H, W, 3) uint8 -> an mp4 at `path` (LeRobot's encoder settings), timestamps t / fps."""
    import av
    os.environ.setdefault('SVT_LOG', '1')  # the AV1 encoder prints its configuration otherwise
    with av.open(path, 'w') as container:
        stream = container.add_stream(vcodec, rate=fps, options=encoder_options(vcodec))
        stream.pix_fmt, stream.height, stream.width = PIX_FMT, frames.shape[1], frames.shape[2]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')))
        container.mux(stream.encode())


class VideoFile:
    """One mp4 holding episodes one after the other, as LeRobot concatenates them: each episode is
    encoded alone (starting on a keyframe) and its packets copied in, shifted to follow the
    previous episode's; `count` frames so far, `bytes` their encoded size."""

    def __init__(self, path, fps, vcodec):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.fps, self.vcodec = path, fps, vcodec
        self.count, self.bytes, self.container, self.stream = 0, 0, None, None

    def write(self, frames):
        import av
        part = os.path.join(os.path.dirname(self.path), f'.episode.{os.getpid()}.mp4')
        encode_video(part, frames, self.fps, self.vcodec)
        try:
            with av.open(part) as source:
                stream = source.streams.video[0]
                if self.container is None:
                    self.container = av.open(self.path, 'w')
                    self.stream = self.container.add_stream_from_template(stream, opaque=True)
                    self.stream.time_base = stream.time_base
                offset = round(self.count / self.fps / stream.time_base)
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = self.stream
                    self.bytes += packet.size
                    self.container.mux(packet)
        finally:
            os.remove(part)
        self.count += len(frames)

    def close(self):
        if self.container is not None:
            self.container.close()


def next_file(chunk_index, file_index, chunks_size=CHUNKS_SIZE):
    """The file after (chunk, file): a new chunk folder after chunks_size files."""
    return (chunk_index + 1, 0) if file_index == chunks_size - 1 else (chunk_index, file_index + 1)


def array_feature(dim, names=None):
    return {'dtype': 'float32', 'shape': [dim], 'names': list(names or joint_names(dim))}


def video_feature(height, width, fps, vcodec):
    import av
    return {'dtype': 'video', 'shape': [height, width, 3], 'names': ['height', 'width', 'channels'],
            'info': {'video.height': height, 'video.width': width,
                     'video.codec': av.codec.Codec(vcodec, 'w').canonical_name, 'video.pix_fmt': PIX_FMT,
                     'video.is_depth_map': False, 'video.fps': fps, 'video.channels': 3, 'video.g': GOP,
                     'video.crf': CRF, 'has_audio': False}}


def episode_features(episode, fps, vcodec, names=None):
    """The info.json features of a dataset holding episodes like `episode` (names: of the state and
    action values, default constants.joint_names)."""
    features = {ARRAY_FEATURES[key]: array_feature(values.shape[1], names)
                for key in ARRAY_FEATURES if (values := getattr(episode, key)) is not None}
    for cam, frames in episode.images.items():
        features[IMAGE_PREFIX + cam] = video_feature(frames.shape[1], frames.shape[2], fps, vcodec)
    features.update({key: {'dtype': dtype, 'shape': [1], 'names': None} for key, dtype in INDEX_FEATURES.items()})
    return features


class LeRobotWriter:
    """Write episodes into a LeRobot v3.0 dataset at `root`: a new one, or appended to an existing
    v3.0 dataset (its fps and features must match). Use as a context manager: nothing is visible
    until it closes without error. A new dataset is built in `<root>.partial` and renamed; appended
    files are built in `<root>/.pending` and moved in, then the metadata is rewritten, info.json
    last, so an interrupted write leaves the dataset as it was (its leftovers are cleared next time).
    names: of the state and action values in a new dataset (default constants.joint_names).
    """

    def __init__(self, root, fps=None, task=DEFAULT_TASK, robot_type=None, vcodec=None,
                 data_file_mb=DATA_FILE_MB, video_file_mb=VIDEO_FILE_MB, names=None):
        self.root, self.task, self.robot_type, self.names = root.rstrip(os.sep), task, robot_type, names
        self.data_file_mb, self.video_file_mb = data_file_mb, video_file_mb
        self.vcodec = available_vcodec(vcodec)
        self.existing = LeRobotEpisodes(self.root) if is_lerobot_dataset(self.root) else None
        if self.existing is None:
            if os.path.isdir(self.root) and os.listdir(self.root):
                raise LeRobotFormatError(f'{self.root}: exists and is not a LeRobot dataset (no {INFO_PATH}); '
                                         f'choose a new folder')
            self.work = self.root + '.partial'
            self.fps, self.info, self.rows, self.tasks = fps or DEFAULT_FPS, None, [], []
        else:
            self._open_existing(fps)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.new_rows, self.data, self.videos = [], None, {}
        self.total_frames = self.info['total_frames'] if self.info else 0

    def _open_existing(self, fps):
        info = self.existing.info
        if info['codebase_version'] != CODEBASE_VERSION:
            raise LeRobotFormatError(f"{os.path.join(self.root, INFO_PATH)}: codebase_version "
                                     f"{info['codebase_version']}; episodes are appended to {CODEBASE_VERSION} "
                                     f"datasets only (convert_dataset.py makes one)")
        if fps is not None and fps != info['fps']:
            raise LeRobotFormatError(f"{os.path.join(self.root, INFO_PATH)}: the dataset runs at fps {info['fps']}, "
                                     f"not {fps}")
        self.fps, self.info = info['fps'], info
        self.work = os.path.join(self.root, '.pending')
        self.rows = [row for path in self._episode_files() for row in read_table(path).to_pylist()]
        self.tasks = self._read_tasks()
        self._remove_unreferenced()
        last = self.rows[-1]
        self.data_file = next_file(last['data/chunk_index'], last['data/file_index'])
        self.video_files = {key: next_file(last[f'videos/{key}/chunk_index'], last[f'videos/{key}/file_index'])
                            for key in self.existing.video_keys}
        self.episodes_file = next_file(last['meta/episodes/chunk_index'], last['meta/episodes/file_index'])

    def _episode_files(self):
        folder = os.path.join(self.root, 'meta', 'episodes')
        return sorted(glob.glob(os.path.join(glob.escape(folder), '*', '*.parquet')))

    def _read_tasks(self):
        path = os.path.join(self.root, TASKS_PATH)
        table = read_table(path)
        tasks = column_array(table, 'task', path)
        return [tasks[i] for i in np.argsort(column_array(table, 'task_index', path))]

    def _remove_unreferenced(self):
        """Delete data, video and episode files an interrupted append left unreferenced."""
        referenced = {os.path.normpath(os.path.join(self.root, e.data_file)) for e in self.existing.entries}
        referenced |= {os.path.normpath(os.path.join(self.root, v)) for e in self.existing.entries
                       for v, _ in e.videos.values()}
        referenced |= {os.path.normpath(os.path.join(self.root, EPISODES_PATH.format(
            chunk_index=r['meta/episodes/chunk_index'], file_index=r['meta/episodes/file_index']))) for r in self.rows}
        for pattern in ('data/*/*.parquet', 'videos/*/*/*.mp4', 'meta/episodes/*/*.parquet'):
            for path in glob.glob(os.path.join(glob.escape(self.root), pattern)):
                if os.path.normpath(path) not in referenced:
                    os.remove(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if kind is None:
            self.close()
        else:
            self.abort()

    ############ Episodes

    def add(self, episode, task=None):
        """Append one episodes.Episode (its frames encoded now)."""
        task = task or self.task
        if self.info is None:
            self._start(episode)
        self._check(episode)
        if task not in self.tasks:
            self.tasks.append(task)
        index = self.info['total_episodes'] + len(self.new_rows)
        length = len(episode.action)
        row = {'episode_index': index, 'tasks': [task], 'length': length, SIM_COLUMN: bool(episode.sim)}
        task_index = self.tasks.index(task)
        row.update(self._write_data(episode, index, task_index))
        for cam, frames in episode.images.items():
            row.update(self._write_video(IMAGE_PREFIX + cam, frames))
        row['meta/episodes/chunk_index'], row['meta/episodes/file_index'] = self.episodes_file
        row.update({f'stats/{feature}/{stat}': np.asarray(value).tolist()
                    for feature, values in self._episode_stats(episode, index, task_index).items()
                    for stat, value in values.items()})
        self.new_rows.append(row)
        self.total_frames += length

    def _start(self, episode):
        features = episode_features(episode, self.fps, self.vcodec, self.names)
        self.info = {'codebase_version': CODEBASE_VERSION, 'robot_type': self.robot_type, 'total_episodes': 0,
                     'total_frames': 0, 'total_tasks': 0, 'chunks_size': CHUNKS_SIZE,
                     'data_files_size_in_mb': self.data_file_mb, 'video_files_size_in_mb': self.video_file_mb,
                     'fps': self.fps, 'splits': {}, 'data_path': DATA_PATH,
                     'video_path': VIDEO_PATH if episode.images else None, 'features': features}
        self.data_file, self.episodes_file = (0, 0), (0, 0)
        self.video_files = {IMAGE_PREFIX + cam: (0, 0) for cam in episode.images}

    def _check(self, episode):
        features, where = self.info['features'], os.path.join(self.root, INFO_PATH)
        for key, feature in ARRAY_FEATURES.items():
            values = getattr(episode, key)
            if (values is None) != (feature not in features):
                state = 'lacks' if values is None else 'has'
                raise LeRobotFormatError(f"{where}: the episode {state} {feature} ({key}) but the dataset "
                                         f"{'has' if values is None else 'has not'}")
            if values is not None and list(values.shape[1:]) != features[feature]['shape']:
                raise LeRobotFormatError(f"{where}: {feature} is {features[feature]['shape']} but the episode's "
                                         f"{key} is {list(values.shape[1:])}")
        cams = sorted(k for k, f in features.items() if f['dtype'] == 'video')
        if sorted(IMAGE_PREFIX + cam for cam in episode.images) != cams:
            raise LeRobotFormatError(f"{where}: the dataset's cameras are {cams}, the episode's "
                                     f"{sorted(episode.images)}")
        for cam, frames in episode.images.items():
            shape = features[IMAGE_PREFIX + cam]['shape']
            if list(frames.shape[1:]) != shape or frames.dtype != np.uint8 or len(frames) != len(episode.action):
                raise LeRobotFormatError(f"{where}: camera '{cam}' needs {len(episode.action)} uint8 frames of "
                                         f"{shape}, the episode has {frames.shape} {frames.dtype}")

    def _write_data(self, episode, index, task_index):
        import pyarrow as pa
        length = len(episode.action)
        columns = {}
        for key, feature in ARRAY_FEATURES.items():
            values = getattr(episode, key)
            if values is not None:
                flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
                columns[feature] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        columns['timestamp'] = pa.array((np.arange(length) / self.fps).astype(np.float32))
        columns['frame_index'] = pa.array(np.arange(length, dtype=np.int64))
        columns['episode_index'] = pa.array(np.full(length, index, dtype=np.int64))
        columns['index'] = pa.array(np.arange(self.total_frames, self.total_frames + length, dtype=np.int64))
        columns['task_index'] = pa.array(np.full(length, task_index, dtype=np.int64))
        table = pa.table(columns)
        if self.data is not None and os.path.getsize(self.data.where) >= self.data_file_mb * 2 ** 20:
            self.data.close()
            self.data, self.data_file = None, next_file(*self.data_file)
        if self.data is None:
            path = self._work_path(DATA_PATH.format(chunk_index=self.data_file[0], file_index=self.data_file[1]))
            self.data = _pq().ParquetWriter(path, table.schema, compression='snappy')
        self.data.write_table(table)
        return {'data/chunk_index': self.data_file[0], 'data/file_index': self.data_file[1],
                'dataset_from_index': self.total_frames, 'dataset_to_index': self.total_frames + length}

    def _write_video(self, key, frames):
        video = self.videos.get(key)
        if video is not None and video.bytes >= self.video_file_mb * 2 ** 20:
            video.close()
            video, self.video_files[key] = None, next_file(*self.video_files[key])
        if video is None:
            chunk, file = self.video_files[key]
            path = self._work_path(VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file))
            video = self.videos[key] = VideoFile(path, self.fps, self.vcodec)
        start = video.count
        video.write(frames)
        chunk, file = self.video_files[key]
        return {f'videos/{key}/chunk_index': chunk, f'videos/{key}/file_index': file,
                f'videos/{key}/from_timestamp': start / self.fps, f'videos/{key}/to_timestamp': video.count / self.fps}

    def _episode_stats(self, episode, index, task_index):
        length = len(episode.action)
        stats = {ARRAY_FEATURES[key]: feature_stats(values) for key in ARRAY_FEATURES
                 if (values := getattr(episode, key)) is not None}
        stats.update({IMAGE_PREFIX + cam: image_stats(frames) for cam, frames in episode.images.items()})
        indices = {'timestamp': np.arange(length) / self.fps, 'frame_index': np.arange(length),
                   'episode_index': np.full(length, index),
                   'index': np.arange(self.total_frames, self.total_frames + length),
                   'task_index': np.full(length, task_index)}
        stats.update({key: feature_stats(values.reshape(-1, 1)) for key, values in indices.items()})
        return stats

    def _work_path(self, relative):
        path = os.path.join(self.work, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    ############ Closing

    def close(self):
        """Finish the files and make the episodes part of the dataset."""
        if self.data is not None:
            self.data.close()
        for video in self.videos.values():
            video.close()
        if not self.new_rows:
            shutil.rmtree(self.work, ignore_errors=True)
            return
        self._write_metadata()
        if self.existing is None:
            os.replace(self.work, self.root)
        else:
            self._move_in()

    def abort(self):
        """Drop what this writer wrote; the dataset stays as it was."""
        with contextlib.suppress(Exception):
            if self.data is not None:
                self.data.close()
            for video in self.videos.values():
                video.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def _write_metadata(self):
        import pyarrow as pa
        rows = self.rows + self.new_rows
        chunk, file = self.episodes_file
        path = self._work_path(EPISODES_PATH.format(chunk_index=chunk, file_index=file))
        _pq().write_table(pa.Table.from_pylist(self.new_rows), path)
        write_tasks(self._work_path(TASKS_PATH), self.tasks)
        stats = aggregate_stats([stats_from_row(row) for row in rows])
        atomic_write(self._work_path(STATS_PATH), lambda f: json.dump(stats_to_json(stats), f, indent=4), 'w')
        total = len(rows)
        self.info.update(total_episodes=total, total_frames=self.total_frames, total_tasks=len(self.tasks),
                         splits={'train': f'0:{total}'})
        atomic_write(self._work_path(INFO_PATH), lambda f: json.dump(self.info, f, indent=4), 'w')

    def _move_in(self):
        """Move the new files into the dataset, info.json last."""
        moved = []
        for folder, _, names in os.walk(self.work):
            for name in names:
                relative = os.path.relpath(os.path.join(folder, name), self.work)
                if relative != INFO_PATH:
                    moved.append(relative)
        for relative in sorted(moved) + [INFO_PATH]:
            target = os.path.join(self.root, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(self.work, relative), target)
        shutil.rmtree(self.work, ignore_errors=True)


def append_episodes(root, episodes, **settings):
    """Append episodes.Episode objects to the LeRobot dataset at root (created when absent; settings:
    LeRobotWriter's) in one atomic write; returns the dataset's episode count."""
    with LeRobotWriter(root, **settings) as writer:
        for episode in episodes:
            writer.add(episode)
    return writer.info['total_episodes']


def count_lerobot_episodes(root):
    """Episodes of the LeRobot dataset at root; 0 where there is none yet."""
    return LeRobotEpisodes(root).num_episodes if is_lerobot_dataset(root) else 0


def write_tasks(path, tasks):
    """meta/tasks.parquet: column task_index, indexed by task (pandas metadata, which LeRobot reads back)."""
    import pyarrow as pa
    table = pa.table({'task_index': pa.array(np.arange(len(tasks), dtype=np.int64)),
                      'task': pa.array(list(tasks), pa.string())})
    pandas_meta = {'index_columns': ['task'], 'column_indexes': [{'name': None, 'field_name': None,
                                                                  'pandas_type': 'unicode', 'numpy_type': 'object',
                                                                  'metadata': {'encoding': 'UTF-8'}}],
                   'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                                'numpy_type': 'int64', 'metadata': None},
                               {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
                                'numpy_type': 'object', 'metadata': None}],
                   'creator': {'library': 'pyarrow', 'version': pa.__version__}, 'pandas_version': '2.2.3'}
    table = table.replace_schema_metadata({b'pandas': json.dumps(pandas_meta).encode()})
    _pq().write_table(table, path)
