"""What a training start settles before the loop runs: the statistics to normalise with (the data's,
a resumed run's or --init_from's), the image normalisation an --init_from trunk was trained with,
and the processes training together."""
import os

import numpy as np

from checkpoints.folder import STATS_FILE, TRAINING_STATE
from formats.normalize import Normalizer
from training.resume import check_resume_data, read_training_state


def init_image_normalization(init, camera_names):
    """The init checkpoint's image_mean and image_std (its trunk was trained on images standardised so):
    per camera when it had one triple per camera and the cameras are the same, else one triple
    (per-camera triples averaged, printed)."""
    config, out = init['policy_config'], {}
    for key in ('image_mean', 'image_std'):
        if key not in config:
            continue
        values = np.asarray(config[key], dtype=np.float64)
        if values.ndim == 2 and list(config['camera_names']) != list(camera_names):
            print(f"--init_from: its per-camera {key} averaged over its cameras {config['camera_names']} for "
                  f"{list(camera_names)}")
            values = values.mean(axis=0)
        out[key] = values.tolist()
    return out


def init_statistics(init, data_stats):
    """--keep_init_stats: the init checkpoint's statistics, which must fit the data's sizes."""
    if init['stats'] is None:
        raise ValueError(f"--keep_init_stats: --init_from {init['source']} has no statistics (no {STATS_FILE})")
    normalizer = Normalizer(init['stats'], source=f"--init_from {init['source']}")
    normalizer.check_sizes(len(data_stats['qpos_mean']), len(data_stats['action_mean']),
                           f"--init_from {init['source']} statistics")
    return {**data_stats, **init['stats']}


def resume_state(ckpt_dir, record, data_stats, any_data=False):
    """--resume: (the training state in ckpt_dir, checked against the data (formats.stats.dataset_record),
    the statistics to normalise with: the folder's dataset_stats.pkl, which its checkpoints were trained with)."""
    path = os.path.join(ckpt_dir, TRAINING_STATE)
    state = read_training_state(path)
    check_resume_data(state, record, path, any_data)
    stats_path = os.path.join(ckpt_dir, STATS_FILE)
    if not os.path.isfile(stats_path):
        return state, data_stats
    normalizer = Normalizer.load(stats_path)
    normalizer.check_sizes(len(data_stats['qpos_mean']), len(data_stats['action_mean']), stats_path)
    return state, normalizer.stats


def distributed_env():
    """(rank, world_size, local_rank) from the variables torchrun sets; (0, 1, 0) otherwise."""
    return (int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
            int(os.environ.get('LOCAL_RANK', 0)))
