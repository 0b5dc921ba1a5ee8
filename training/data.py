"""The training data pipeline: episode files -> normalised samples -> batches, and the statistics.

As the original: episodes `episode_{i}.hdf5` are split 80/20 into train and validation (the split is
drawn from numpy's global random state, which the caller seeds with 1); one sample per episode per
epoch, each at a random start step, with the action sequence from that step padded to the episode
length and flagged by `is_pad`; qpos and actions normalised by the mean and std over all steps of
all episodes (`Normalizer`, saved as the original's `dataset_stats.pkl`).

What differs: files are opened once per process (never once per sample) and episodes are preloaded
into memory when they fit; images stay uint8 (K, H, W, 3) until they reach the device
(`image_to_tensor`); episodes may differ in length; compressed HDF5 and the JPEG layout are read as
well (formats/); the random start step of a sample is derived from (seed, epoch) by
`EpisodeSampler`, so a resumed run draws exactly the samples an uninterrupted one would.
"""
import functools
import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.processes import die_with_parent
from formats.datasets import open_dataset
from formats.images import resize_images
from formats.normalize import Normalizer
from formats.stats import get_norm_stats

### Data settings (the original's values)
TRAIN_RATIO = 0.8  # share of the episodes used for training; the rest validate
PRELOAD_MEMORY_SHARE = 0.5  # preload='auto' preloads frames taking less than this share of free memory


def action_normalization(policy_class):
    """How the policy `policy_class` wants its actions scaled ('mean_std' or 'min_max')."""
    from policies.registry import get_policy_class
    return get_policy_class(policy_class).action_normalization


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
    the episode starts. action_lead > 0 starts the actions that many steps earlier (LeRobot's
    Diffusion), the first action repeated and marked padded before the episode starts.
    """

    def __init__(self, episode_ids, dataset, camera_names, norm_stats, policy_class='ACT',
                 obs_horizon=1, image_size=None, preload=False, pad_len=None, action_lead=0):
        """dataset: an opened dataset (formats.datasets.open_dataset) or its folder, as the original's."""
        super().__init__()
        self.episode_ids = list(episode_ids)
        self.source = opened(dataset)
        self.dataset_dir = self.source.dataset_dir
        self.camera_names = list(camera_names)
        self.norm_stats = norm_stats
        self.normalizer = Normalizer(norm_stats, action_normalization(policy_class))
        self.obs_horizon = obs_horizon
        self.action_lead = action_lead  # actions start this many steps before the sampled one
        self.image_size = None if image_size is None else tuple(image_size)
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
        self.hw = training_image_hw(self.source, self.camera_names, self.image_size, self.episode_ids[0])
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
        steps = first - self.action_lead + np.arange(self.pad_len)  # (L,) the actions' steps
        after, before = steps >= episode_len, steps < 0
        # past the end: pad_value; before the start (action_lead): the first action, as LeRobot copies it
        action = np.where(after[:, None], self.pad_value, self.actions[index][np.clip(steps, 0, episode_len - 1)])
        is_pad = after | before  # (L,)
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


def opened(dataset):
    """An opened dataset: `dataset` itself, or the dataset in the folder `dataset` names."""
    if isinstance(dataset, (str, os.PathLike)):
        if not os.path.isdir(dataset):
            raise FileNotFoundError(f'dataset directory {dataset} does not exist (pass --dataset_dir or set '
                                    f'ACT_DATA_DIR)')
        return open_dataset(dataset)
    return dataset


def training_image_hw(source, camera_names, image_size=None, episode=0):
    """(H, W) of the images training sees: image_size when given, else the frames' own (every episode's
    and camera's, which EpisodicDataset checks)."""
    return tuple(image_size or source.frame_shape(episode, camera_names[0]))


def load_data(dataset, num_episodes, camera_names, batch_size_train, batch_size_val, policy_class='ACT',
              obs_horizon=1, image_size=None, num_workers=None, preload='auto', seed=0, device='cpu',
              rank=0, world_size=1, norm_stats=None, action_lead=0):
    """-> (train_dataloader, val_dataloader, norm_stats, is_sim). dataset: an opened dataset or its folder.

    The split is drawn from numpy's global random state (the original seeds it with 1 first).
    norm_stats None computes the statistics over the data (get_norm_stats); given (sizes already
    checked against the data), they are used as they are.
    num_workers None picks 0 when the frames are preloaded and 1 otherwise. Each loader's
    `.sampler` is an EpisodeSampler: call `set_epoch` before each pass.
    """
    source = opened(dataset)
    print(f'\nData from: {source.dataset_dir}\n')
    train_indices, val_indices = split_episodes(num_episodes)
    if norm_stats is None:
        norm_stats = get_norm_stats(source, num_episodes)
    datasets = [EpisodicDataset(ids, source, camera_names, norm_stats, policy_class, obs_horizon, image_size,
                                action_lead=action_lead) for ids in (train_indices, val_indices)]
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
