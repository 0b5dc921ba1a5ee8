"""The training data pipeline: episode files -> normalised samples -> batches, and the statistics.

As the original: episodes `episode_{i}.hdf5` are split 80/20 into train and validation (the split is
drawn from numpy's global random state, which the caller seeds with 1); one sample per episode per
epoch, each at a random start step, with the action sequence from that step padded to the episode
length and flagged by `is_pad`; qpos and actions normalised by the mean and std over all steps of
all episodes (`Normalizer`, saved as the original's `dataset_stats.pkl`).

What differs: files are opened once per process (never once per sample) and episodes are preloaded
into memory when they fit; images stay uint8 (K, H, W, 3) until they reach the device
(`image_to_tensor`); episodes may differ in length; compressed HDF5 and the JPEG layout are read as
well (episodes.py); the random start step of a sample is derived from (seed, epoch) by
`EpisodeSampler`, so a resumed run draws exactly the samples an uninterrupted one would.
"""
import functools
import os
import pickle

import numpy as np
import torch
from torch.utils.data import DataLoader

from episodes import open_dataset
from files import atomic_write, load_stats_pickle
from processes import die_with_parent

### Data settings (the original's values)
TRAIN_RATIO = 0.8  # share of the episodes used for training; the rest validate
STD_MIN = 1e-2  # NOTE(faithful): the original clips stds from below only, so a constant joint does not divide by 0
MINMAX_EPS = 1e-4  # widening of action_min / action_max so [-1, 1]-scaled targets stay inside
PRELOAD_MEMORY_SHARE = 0.5  # preload='auto' preloads frames taking less than this share of free memory
STATS_KEYS = ('qpos_mean', 'qpos_std', 'action_mean', 'action_std')  # what every dataset_stats.pkl holds
ACTION_NORMALIZATIONS = ('mean_std', 'min_max')


################################ Statistics ################################

def get_norm_stats(dataset_dir, num_episodes):
    """Normalisation statistics over all steps of episodes 0..num_episodes-1 (episode files or a
    LeRobot dataset: episodes.open_dataset).

    Returns action_mean, action_std, qpos_mean, qpos_std (each (D,) float32; stds clipped
    below at 1e-2), action_min, action_max ((A,), widened by MINMAX_EPS; used by Diffusion) and example_qpos.
    """
    source = open_dataset(dataset_dir)
    episodes = [source.low_dim(i) for i in range(num_episodes)]
    check_dims(source, episodes)
    for i, (qpos, action, _) in enumerate(episodes):
        check_finite(source.name(i), {source.array_names['qpos']: qpos, source.array_names['action']: action})
    all_qpos = torch.from_numpy(np.concatenate([qpos for qpos, _, _ in episodes]))  # (sum T, S)
    all_action = torch.from_numpy(np.concatenate([action for _, action, _ in episodes]))  # (sum T, A)
    stats = {}
    for name, data in (('action', all_action), ('qpos', all_qpos)):
        stats[f'{name}_mean'] = data.mean(dim=0).numpy()
        stats[f'{name}_std'] = torch.clip(data.std(dim=0), min=STD_MIN).numpy()
    stats['action_min'] = all_action.min(dim=0).values.numpy() - MINMAX_EPS
    stats['action_max'] = all_action.max(dim=0).values.numpy() + MINMAX_EPS
    # NOTE(faithful): the original stores the whole qpos trajectory of the last episode here.
    stats['example_qpos'] = episodes[-1][0]
    return stats


def check_dims(source, episodes):
    """Raise when episodes disagree on state or action size, naming the first that differs."""
    first_qpos_dim, first_action_dim = episodes[0][0].shape[1], episodes[0][1].shape[1]
    for i, (qpos, action, _) in enumerate(episodes):
        if qpos.shape[1] != first_qpos_dim or action.shape[1] != first_action_dim:
            raise ValueError(f'{source.name(i)}: qpos has {qpos.shape[1]} dims and action '
                             f'{action.shape[1]}, but {source.name(0)} has {first_qpos_dim} and {first_action_dim}')


def check_finite(path, arrays):
    """Raise naming the file, dataset and first (step, dim) of a NaN or infinite value in {name: (T, D)}."""
    for name, values in arrays.items():
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            step, dim = bad[0]
            raise ValueError(f'{path}: {name} holds {values[step, dim]} at step {step}, dim {dim} '
                             f'({len(bad)} non-finite values in all); training on it would give NaN losses')


def dataset_record(dataset_dir, num_episodes, stats):
    """What identifies the training data, saved with the training state: the size of each file the
    episodes lie in and the statistics over them (plain ints and lists)."""
    return {'files': open_dataset(dataset_dir).fingerprint(num_episodes),
            'stats': {k: np.asarray(stats[k]).tolist() for k in STATS_KEYS}}


def data_changes(then, now, tolerance=1e-5):
    """Sentences naming what differs between two dataset records; empty when the data is the same."""
    changes = []
    for title, names in (('episodes gone', sorted(set(then['files']) - set(now['files']))),
                         ('episodes added', sorted(set(now['files']) - set(then['files'])))):
        if names:
            changes.append(f'{title}: {", ".join(names[:5])}{" ..." if len(names) > 5 else ""}')
    resized = [f'{n} {then["files"][n]} bytes then, {now["files"][n]} now' for n in sorted(then['files'])
               if n in now['files'] and then['files'][n] != now['files'][n]]
    if resized:
        changes.append(f'{len(resized)} episodes changed size ({"; ".join(resized[:3])})')
    for key in STATS_KEYS:
        a, b = np.asarray(then['stats'][key]), np.asarray(now['stats'][key])
        if a.shape != b.shape:
            changes.append(f'{key} has shape {a.shape} then, {b.shape} now')
        elif not np.allclose(a, b, rtol=tolerance, atol=tolerance):
            changes.append(f'{key} differs by up to {np.abs(a - b).max():.3g}')
    return changes


class Normalizer:
    """The dataset statistics and the maps between robot units and what the policy sees.

    qpos is always standardised by mean and std. Actions are standardised the same way
    ('mean_std': ACT, CNNMLP) or scaled to [-1, 1] by the widened min and max ('min_max':
    Diffusion). Training, evaluation and the real robot all normalise through this class; `stats`
    is the original's dataset_stats.pkl dict, saved and loaded unchanged.
    """

    def __init__(self, stats, action_normalization='mean_std', source='dataset statistics'):
        if action_normalization not in ACTION_NORMALIZATIONS:
            raise ValueError(f'action_normalization must be one of {ACTION_NORMALIZATIONS}, '
                             f'got {action_normalization!r}')
        missing = [k for k in STATS_KEYS if k not in stats]
        if action_normalization == 'min_max':
            missing += [k for k in ('action_min', 'action_max') if k not in stats]
        if missing:
            hint = (' (written by an older version; the Diffusion policy needs them: train it again to write '
                    'new statistics)' if set(missing) <= {'action_min', 'action_max'} else '')
            raise KeyError(f'{source} has no {", ".join(missing)}{hint} (keys: {sorted(stats)})')
        for key in STATS_KEYS + ('action_min', 'action_max'):
            if key in stats and not np.isfinite(stats[key]).all():
                raise ValueError(f'{source}: {key!r} holds non-finite values {np.asarray(stats[key]).tolist()}; '
                                 f'the data it was computed from has NaN or infinite values')
        self.stats, self.action_normalization = stats, action_normalization

    @classmethod
    def load(cls, path, action_normalization='mean_std'):
        """The dataset_stats.pkl at `path`."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f'dataset statistics not found: {path}')
        return cls(load_stats_pickle(path), action_normalization, source=path)

    def save(self, path):
        """Write the statistics as the original's dataset_stats.pkl, atomically."""
        atomic_write(path, lambda f: pickle.dump(self.stats, f))

    @property
    def state_dim(self):
        return len(self.stats['qpos_mean'])

    @property
    def action_dim(self):
        return len(self.stats['action_mean'])

    def check_sizes(self, state_dim, action_dim, source):
        """Raise when the statistics do not fit a policy of these state and action sizes."""
        expected = {'qpos_mean': state_dim, 'qpos_std': state_dim, 'action_mean': action_dim, 'action_std': action_dim}
        for key, size in expected.items():
            if np.shape(self.stats[key]) != (size,):
                raise ValueError(f"{source}: '{key}' has shape {np.shape(self.stats[key])} but the policy expects "
                                 f"({size},) (state_dim={state_dim}, action_dim={action_dim}); the statistics and "
                                 f"the checkpoint come from different runs or the size flags differ from training")

    def normalize_qpos(self, qpos):
        """qpos (..., S) in robot units -> standardised float32."""
        return ((qpos - self.stats['qpos_mean']) / self.stats['qpos_std']).astype(np.float32)

    def normalize_action(self, action):
        """Actions (..., A) in robot units -> policy targets float32."""
        if self.action_normalization == 'min_max':
            low, high = self.stats['action_min'], self.stats['action_max']
            return ((action - low) / (high - low) * 2 - 1).astype(np.float32)
        return ((action - self.stats['action_mean']) / self.stats['action_std']).astype(np.float32)

    def unnormalize_action(self, action):
        """Policy outputs (..., A) -> actions in robot units."""
        if self.action_normalization == 'min_max':
            low, high = self.stats['action_min'], self.stats['action_max']
            return (action + 1) / 2 * (high - low) + low
        return action * self.stats['action_std'] + self.stats['action_mean']


def action_normalization(policy_class):
    """How the policy `policy_class` wants its actions scaled ('mean_std' or 'min_max')."""
    from policy import policy_type
    return policy_type(policy_class).action_normalization


################################ Images ################################

def resize_images(frames, size):
    """uint8 frames (..., H, W, 3) -> (..., h, w, 3) with size = (h, w); unchanged when already that size."""
    h, w = size
    if frames.shape[-3:-1] == (h, w):
        return frames
    import cv2
    flat = frames.reshape(-1, *frames.shape[-3:])  # (N, H, W, 3)
    shrink = h * w < flat.shape[1] * flat.shape[2]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (w, h), interpolation=interpolation) for f in flat])  # (N, h, w, 3)
    return out.reshape(*frames.shape[:-3], h, w, 3)


def image_to_tensor(images, device):
    """uint8 images (..., H, W, 3) (array or tensor) -> float32 (..., 3, H, W) in [0, 1] on `device`.

    Converted after the move so only uint8 crosses to the device; the result keeps channels-last
    strides, which convolutions run fastest on."""
    images = torch.as_tensor(images).to(device, non_blocking=True)
    return images.movedim(-1, -3).float().div_(255.0)


################################ Dataset ################################

def available_memory():
    """Bytes of memory available to new allocations (Linux MemAvailable, else free physical pages)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


class EpisodicDataset(torch.utils.data.Dataset):
    """One sample per episode at a random start step.

    A key is an index into episode_ids (start step from numpy's global random state, as in the
    original) or an (index, seed) pair from EpisodeSampler (start step from that seed). A sample is
        image   (K, H, W, 3) uint8, or (To, K, H, W, 3) when obs_horizon To > 1
        qpos    (S,) float32 normalised, or (To, S)
        action  (L, A) float32 normalised (Diffusion: scaled to [-1, 1]), L = pad_len
        is_pad  (L,) bool, True past the episode's end
    With To > 1 the observations are those of steps t-To+1..t, the first frame repeated before
    the episode starts.
    """

    def __init__(self, episode_ids, dataset_dir, camera_names, norm_stats, policy_class='ACT',
                 obs_horizon=1, image_size=None, preload=False, pad_len=None):
        super().__init__()
        self.episode_ids = list(episode_ids)
        self.dataset_dir = dataset_dir
        self.camera_names = list(camera_names)
        self.norm_stats = norm_stats
        self.normalizer = Normalizer(norm_stats, action_normalization(policy_class))
        self.obs_horizon = obs_horizon
        self.image_size = None if image_size is None else tuple(image_size)
        self.source = open_dataset(dataset_dir)
        self.names = [self.source.name(i) for i in self.episode_ids]
        self._load_low_dim()
        self.pad_len = pad_len or max(self.lengths)
        self.frames = None  # per episode {cam: (T, H, W, 3) uint8} once preloaded
        if preload:
            self.preload()

    def _load_low_dim(self):
        episodes = [self.source.low_dim(i) for i in self.episode_ids]
        self.lengths = [len(qpos) for qpos, _, _ in episodes]
        self.is_sim = episodes[0][2]
        self.qpos = [self.normalizer.normalize_qpos(q) for q, _, _ in episodes]
        self.actions = [self.normalizer.normalize_action(a) for _, a, _ in episodes]
        self.sims = [s for _, _, s in episodes]
        # NOTE(faithful): the original pads with zeros and normalises afterwards, so padded steps hold
        # the normalised value of a zero action (ignored by the losses through is_pad).
        self.pad_value = self.normalizer.normalize_action(np.zeros_like(episodes[0][1][0]))
        if self.obs_horizon > min(self.lengths):
            short = self.names[int(np.argmin(self.lengths))]
            raise ValueError(f'obs_horizon {self.obs_horizon} exceeds the {min(self.lengths)} steps of {short}')
        self.hw = self.image_size or self.source.frame_shape(self.episode_ids[0], self.camera_names[0])
        for index, length in enumerate(self.lengths):
            self._check_cameras(index, length)

    def _check_cameras(self, index, length):
        episode = self.episode_ids[index]
        self.source.check_frames(episode, self.camera_names, length)
        for cam in self.camera_names:
            hw = self.source.frame_shape(episode, cam)
            if self.image_size is None and tuple(hw) != tuple(self.hw):
                raise ValueError(f"{self.names[index]}: camera '{cam}' frames are {hw[0]}x{hw[1]} but "
                                 f"{self.names[0]} has {self.hw[0]}x{self.hw[1]}; pass --image_size H W to resize all")

    def _resized(self, frames):
        """(N, H, W, 3) uint8 frames at the training image size."""
        return frames if self.image_size is None else resize_images(frames, self.image_size)

    def preload(self):
        """Read (decode, resize) the frames of every episode into memory, each episode decoded once."""
        self.frames = [{cam: self._resized(self.source.episode_frames(episode, cam)) for cam in self.camera_names}
                       for episode in self.episode_ids]

    def frame_bytes(self):
        """Bytes the frames of all episodes take in memory (at the training image size)."""
        h, w = self.hw
        return sum(self.lengths) * len(self.camera_names) * h * w * 3

    def _images(self, index, steps):
        """Frames at `steps` (To,) -> (To, K, H, W, 3) uint8."""
        if self.frames is not None:
            per_cam = [self.frames[index][cam][steps] for cam in self.camera_names]
        else:
            episode = self.episode_ids[index]
            per_cam = [self._resized(self.source.frames(episode, cam, steps)) for cam in self.camera_names]
        return np.stack(per_cam, axis=1)

    def __len__(self):
        return len(self.episode_ids)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        episode_len = self.lengths[index]
        start_ts = np.random.choice(episode_len) if seed is None else np.random.default_rng(seed).integers(episode_len)
        steps = np.maximum(np.arange(start_ts - self.obs_horizon + 1, start_ts + 1), 0)  # (To,)
        image = self._images(index, steps)  # (To, K, H, W, 3)
        qpos = self.qpos[index][steps]  # (To, S)
        if self.sims[index]:
            first = start_ts
        else:
            # NOTE(faithful): real-robot actions start one step earlier, "to make timesteps more aligned".
            first = max(0, start_ts - 1)
        action = np.tile(self.pad_value, (self.pad_len, 1))  # (L, A)
        action_len = episode_len - first
        action[:action_len] = self.actions[index][first:]
        is_pad = np.arange(self.pad_len) >= action_len  # (L,)
        if self.obs_horizon == 1:
            image, qpos = image[0], qpos[0]
        return image, qpos, action, is_pad


class EpisodeSampler(torch.utils.data.Sampler):
    """Yields (index, seed) keys for EpisodicDataset: a shuffled pass over all episodes whose order
    and per-sample seeds depend only on (seed, stream, epoch), so a resumed run draws what the
    uninterrupted one would. Under DistributedDataParallel each rank takes every world_size-th key
    (the order padded by wrapping, as DistributedSampler does). `set_epoch(epoch, skip)` starts a
    pass, skipping its first `skip` keys of this rank."""

    def __init__(self, num_items, seed=0, stream=0, shuffle=True, rank=0, world_size=1):
        super().__init__()
        self.num_items, self.seed, self.stream, self.shuffle = num_items, seed, stream, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def per_rank(self):
        return -(-self.num_items // self.world_size)

    def __len__(self):
        return max(0, self.per_rank() - self.skip)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.stream, self.epoch])
        order = rng.permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
        total = self.per_rank() * self.world_size
        order = np.resize(order, total)  # wraps around to a multiple of world_size
        seeds = rng.integers(2 ** 63, size=total)
        mine = slice(self.rank, total, self.world_size)
        for index, seed in list(zip(order[mine], seeds[mine]))[self.skip:]:
            yield int(index), int(seed)


def split_episodes(num_episodes, permutation=np.random.permutation):
    """(train, validation) episode indices: the first TRAIN_RATIO of `permutation(num_episodes)`;
    by default drawn from numpy's global random state, as the original."""
    num_train = int(TRAIN_RATIO * num_episodes)
    if num_train < 1 or num_train == num_episodes:
        raise ValueError(f'num_episodes={num_episodes}: need at least 2 episodes for an 80/20 train/validation split')
    shuffled = permutation(num_episodes)
    return shuffled[:num_train], shuffled[num_train:]


def should_preload(datasets, preload):
    """preload 'auto' | 'on' | 'off' -> whether to hold all frames in memory."""
    if preload in ('on', 'off'):
        return preload == 'on'
    if preload != 'auto':
        raise ValueError(f"preload must be 'auto', 'on' or 'off', got {preload!r}")
    need = sum(d.frame_bytes() for d in datasets)
    return need < PRELOAD_MEMORY_SHARE * available_memory()


def load_data(dataset_dir, num_episodes, camera_names, batch_size_train, batch_size_val, policy_class='ACT',
              obs_horizon=1, image_size=None, num_workers=None, preload='auto', seed=0, device='cpu',
              rank=0, world_size=1, norm_stats=None):
    """-> (train_dataloader, val_dataloader, norm_stats, is_sim).

    The split is drawn from numpy's global random state (the original seeds it with 1 first).
    norm_stats None computes the statistics over the data (get_norm_stats); given (sizes already
    checked against the data), they are used as they are.
    num_workers None picks 0 when the frames are preloaded and 1 otherwise. Each loader's
    `.sampler` is an EpisodeSampler: call `set_epoch` before each pass.
    """
    print(f'\nData from: {dataset_dir}\n')
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f'dataset directory {dataset_dir} does not exist (pass --dataset_dir or set ACT_DATA_DIR)')
    train_indices, val_indices = split_episodes(num_episodes)
    if norm_stats is None:
        norm_stats = get_norm_stats(dataset_dir, num_episodes)
    datasets = [EpisodicDataset(ids, dataset_dir, camera_names, norm_stats, policy_class, obs_horizon, image_size)
                for ids in (train_indices, val_indices)]
    train_hw, val_hw = (tuple(d.hw) for d in datasets)
    if train_hw != val_hw:
        raise ValueError(f'{datasets[1].names[0]}: frames are {val_hw[0]}x{val_hw[1]} but {datasets[0].names[0]} has '
                         f'{train_hw[0]}x{train_hw[1]}; pass --image_size H W to resize all')
    preload_frames = should_preload(datasets, preload)
    pad_len = max(max(d.lengths) for d in datasets)  # one action length for train and validation
    for dataset in datasets:
        dataset.pad_len = pad_len
        if preload_frames:
            dataset.preload()
    if num_workers is None:
        num_workers = 0 if preload_frames else 1
    loaders = [make_loader(d, batch, num_workers, seed, stream, device, rank, world_size)
               for stream, (d, batch) in enumerate(zip(datasets, (batch_size_train, batch_size_val)))]
    return loaders[0], loaders[1], norm_stats, datasets[0].is_sim


def make_loader(dataset, batch_size, num_workers, seed, stream, device, rank, world_size):
    sampler = EpisodeSampler(len(dataset), seed, stream, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=str(device).startswith('cuda'),
                      worker_init_fn=functools.partial(_init_worker, os.getpid()),
                      generator=torch.Generator().manual_seed(seed))  # keeps the global torch RNG untouched


def _init_worker(parent_pid, worker_id):
    """Loader workers leave Ctrl-C and SIGTERM to the training process, which saves its state and
    needs its workers alive until then; they end with it, even when it is killed (train.close_loader
    stops them when training ends)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent_pid)
