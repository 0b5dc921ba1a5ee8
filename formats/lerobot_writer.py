"""Writing LeRobot v3.0 datasets: a new one, or episodes appended to one, atomically."""
import contextlib
import glob
import json
import os

import numpy as np

from common.files import atomic_write, space_checked
from common.folders import FolderLock, drop_staging, make_staging, publish_staging
from formats.lerobot import (ACTION, ARRAY_FEATURES, CHUNKS_SIZE, CODEBASE_VERSION, CRF, DATA_FILE_MB,
                             DATA_PATH, DEFAULT_FPS, DEFAULT_TASK, EPISODES_PATH, GOP, IMAGE_PREFIX, INDEX_FEATURES,
                             INFO_PATH, PIX_FMT, SHADOWS_COLUMN, SIM_COLUMN, SIM_MARK, STATS_PATH,
                             SVTAV1_PRESET, TASKS_PATH, VIDEO_FILE_MB, VIDEO_PATH, LeRobotEpisodes, LeRobotFormatError,
                             _pq, column_array, is_lerobot_dataset, origin_marks, read_table)
from formats.lerobot_journal import COMMIT_FILE, PENDING_DIR, move_in
from formats.lerobot_stats import aggregate_stats, feature_stats, image_stats, stats_from_row, stats_to_json
from formats.lerobot_video import VideoFile, available_vcodec, encoder_options
from tasks import joint_names


def next_file(chunk_index, file_index, chunks_size=CHUNKS_SIZE):
    """The file after (chunk, file): a new chunk folder after chunks_size files."""
    return (chunk_index + 1, 0) if file_index == chunks_size - 1 else (chunk_index, file_index + 1)


POSITION_SUFFIX = '.pos'  # LeRobot's joint names of positions: shoulder_pan.pos, ...
QUANTITY_SUFFIXES = {'qvel': '.vel', 'effort': '.effort'}  # what the other arrays' names end with instead


def array_feature(dim, names=None, key='qpos'):
    """An array feature of `dim` values named `names` (default constants.joint_names); for velocity or
    effort, names that end in '.pos' say '.vel' or '.effort' instead."""
    names = list(names or joint_names(dim))
    if key in QUANTITY_SUFFIXES:
        names = [n[:-len(POSITION_SUFFIX)] + QUANTITY_SUFFIXES[key] if n.endswith(POSITION_SUFFIX) else n
                 for n in names]
    return {'dtype': 'float32', 'shape': [dim], 'names': names}


def video_feature(height, width, fps, vcodec):
    """A camera's info.json feature, its info keys as LeRobot writes them: the stream's, then the encoder's
    settings (formats.lerobot_video.encoder_options: a codec without crf or preset has null), then
    is_depth_map."""
    import av
    options = encoder_options(vcodec)
    return {'dtype': 'video', 'shape': [height, width, 3], 'names': ['height', 'width', 'channels'],
            'info': {'video.height': height, 'video.width': width,
                     'video.codec': av.codec.Codec(vcodec, 'w').canonical_name, 'video.pix_fmt': PIX_FMT,
                     'video.fps': fps, 'video.channels': 3, 'has_audio': False, 'video.g': GOP,
                     'video.crf': CRF if 'crf' in options else None,
                     'video.preset': SVTAV1_PRESET if 'preset' in options else None, 'video.fast_decode': 0,
                     'video.video_backend': 'pyav', 'video.extra_options': {}, 'is_depth_map': False}}


def episode_features(episode, fps, vcodec, names=None):
    """The info.json features of a dataset holding episodes like `episode` (names: of the state and
    action values, default constants.joint_names), as LeRobot writes them, so its merge takes them:
    the episodes' origin is in the episode rows (SIM_COLUMN, SHADOWS_COLUMN)."""
    features = {ARRAY_FEATURES[key]: array_feature(values.shape[1], names, key)
                for key in ARRAY_FEATURES if (values := getattr(episode, key)) is not None}
    for cam, frames in episode.images.items():
        features[IMAGE_PREFIX + cam] = video_feature(frames.shape[1], frames.shape[2], fps, vcodec)
    features.update({key: {'dtype': dtype, 'shape': [1], 'names': None} for key, dtype in INDEX_FEATURES.items()})
    return features


class LeRobotWriter:
    """Write episodes into a LeRobot v3.0 dataset at `root`: a new one, or appended to an existing
    v3.0 dataset (its fps and features must match). Use as a context manager: nothing is visible
    until it closes without error. A new dataset is built in `<root>.partial` and renamed; appended
    files are built in `<root>/.pending`, marked committed once complete, then moved in, info.json
    last: an append interrupted before the mark leaves the dataset as it was, one interrupted after
    it is completed by the next reader or writer (formats.lerobot_journal). One
    writer at a time: `<root>.lock` names the process writing (common.folders.FolderLock).
    names: of the state and action values in a new dataset (default constants.joint_names).
    """

    def __init__(self, root, fps=None, task=DEFAULT_TASK, robot_type=None, vcodec=None,
                 data_file_mb=DATA_FILE_MB, video_file_mb=VIDEO_FILE_MB, names=None):
        self.root, self.task, self.robot_type, self.names = root.rstrip(os.sep), task, robot_type, names
        self.data_file_mb, self.video_file_mb = data_file_mb, video_file_mb
        self.vcodec = available_vcodec(vcodec)
        self.lock = FolderLock(self.root).__enter__()  # one writer at a time; released by close() or abort()
        try:
            self._open(fps)
        except BaseException:
            self.lock.__exit__()
            raise
        self.new_rows, self.data, self.videos = [], None, {}
        self.total_frames = self.info['total_frames'] if self.info else 0

    def _open(self, fps):
        """A new dataset is built in <root>.partial; an append's files in <root>/.pending (PENDING_DIR)."""
        self.existing = LeRobotEpisodes(self.root) if is_lerobot_dataset(self.root) else None
        if self.existing is None:
            if os.path.isdir(self.root) and os.listdir(self.root):
                raise LeRobotFormatError(f'{self.root}: exists and is not a LeRobot dataset (no {INFO_PATH}); '
                                         f'choose a new folder')
            self.fps, self.info, self.rows, self.tasks = fps or DEFAULT_FPS, None, [], []
            self.work = make_staging(self.root + '.partial', f'the LeRobot dataset {self.root}')
        else:
            self._open_existing(fps)
            self.work = make_staging(os.path.join(self.root, PENDING_DIR), f'the episodes appended to {self.root}')

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
        row = {'episode_index': index, 'tasks': [task], 'length': length, SIM_COLUMN: bool(episode.sim),
               SHADOWS_COLUMN: bool(episode.shadows)}
        task_index = self.tasks.index(task)
        with space_checked(self.work):  # PyAV's and pyarrow's own writes on a full disk: DiskFull
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
        self._update_origin(episode)
        cams = sorted(k for k, f in features.items() if f['dtype'] == 'video')
        if sorted(IMAGE_PREFIX + cam for cam in episode.images) != cams:
            raise LeRobotFormatError(f"{where}: the dataset's cameras are {cams}, the episode's "
                                     f"{sorted(episode.images)}")
        for cam, frames in episode.images.items():
            shape = features[IMAGE_PREFIX + cam]['shape']
            if list(frames.shape[1:]) != shape or frames.dtype != np.uint8 or len(frames) != len(episode.action):
                raise LeRobotFormatError(f"{where}: camera '{cam}' needs {len(episode.action)} uint8 frames of "
                                         f"{shape}, the episode has {frames.shape} {frames.dtype}")

    def _update_origin(self, episode):
        """Keep the dataset's origin true for one more episode: an earlier version's sim mark in info.json
        goes when simulated and real-robot episodes mix (each row keeps its own); simulated frames
        rendered another way than the dataset's are refused."""
        sim, shadows = origin_marks(self.info)
        if sim is not None and sim != bool(episode.sim):
            del self.info['features'][ACTION]['info'][SIM_MARK]
        if shadows is None:
            rendered = {row[SHADOWS_COLUMN] for row in self.rows + self.new_rows
                        if row.get(SIM_COLUMN) and row.get(SHADOWS_COLUMN) is not None}
            shadows = rendered.pop() if len(rendered) == 1 else None
        if episode.sim and shadows is not None and shadows != bool(episode.shadows):
            raise LeRobotFormatError(f"{os.path.join(self.root, INFO_PATH)}: the dataset's frames were rendered "
                                     f"{'with' if shadows else 'without'} shadows, this episode's "
                                     f"{'with' if episode.shadows else 'without'}")

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
        # the values as stored: float32 arrays and timestamps, int64 indices
        stats = {ARRAY_FEATURES[key]: feature_stats(values.astype(np.float32)) for key in ARRAY_FEATURES
                 if (values := getattr(episode, key)) is not None}
        stats.update({IMAGE_PREFIX + cam: image_stats(frames) for cam, frames in episode.images.items()})
        indices = {'timestamp': (np.arange(length) / self.fps).astype(np.float32), 'frame_index': np.arange(length),
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
        """Finish the files and make the episodes part of the dataset; on any failure, abort()."""
        try:
            with space_checked(self.work):
                self._close()
        except BaseException:
            self.abort()
            raise
        self.lock.__exit__()

    def _close(self):
        if self.data is not None:
            self.data.close()
        for video in self.videos.values():
            video.close()
        if not self.new_rows:
            drop_staging(self.work)
            return
        self._write_metadata()
        if self.existing is None:
            publish_staging(self.work, self.root)  # a folder that appeared there meanwhile stays
        else:  # the journal: committed, the append completes even if this process dies while moving
            atomic_write(os.path.join(self.work, COMMIT_FILE), lambda f: f.write('complete'), 'w')
            move_in(self.work, self.root, INFO_PATH)

    def abort(self):
        """Drop what this writer wrote, the dataset as it was; an append already committed completes."""
        with contextlib.suppress(Exception):
            if self.data is not None:
                self.data.close()
            for video in self.videos.values():
                video.close()
        try:
            if os.path.isfile(os.path.join(self.work, COMMIT_FILE)):
                move_in(self.work, self.root, INFO_PATH)
            else:
                drop_staging(self.work)
        finally:
            self.lock.__exit__()

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
