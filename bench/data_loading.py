"""Benchmark: the training data pipeline on HDF5 episodes and on the same episodes as a LeRobot dataset.

    python -m bench.data_loading [--episodes 10] [--episode_len 100] [--frame_size 480 640] [--steps 3]

Prints one JSON object. The data: synthetic episodes of one camera (smooth moving pictures, so the
video codec sees what it is made for) written in the original HDF5 layout, then converted to a
LeRobot v3.0 dataset (AV1, LeRobot's settings; the conversion time and the frames' PSNR are
reported). For each layout, with the frames preloaded (decoded once per episode) and without
(read per sample; for video, seeking to the keyframe before the frame): the loader's samples per
second alone (batches of 8, one worker as training uses without preloading), and over --steps
README-config ACT training steps (batch 8) the share of each step spent waiting for its batch.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from bench.common import machine_report, print_report, readme_act_config

### Benchmark settings
BATCH_SIZE = 8
STATE_DIM = 14


def write_hdf5(folder, episodes, episode_len, frame_hw):
    """Synthetic episodes: a ramp and a bright square moving over a gradient, random joint trajectories."""
    from formats.hdf5 import episode_path, write_episode
    rng = np.random.default_rng(0)
    h, w = frame_hw
    y, x = np.mgrid[0:h, 0:w]
    for i in range(episodes):
        frames = np.empty((episode_len, h, w, 3), np.uint8)
        for t in range(episode_len):
            frames[t, ..., 0] = (x * 255 // w + 3 * t + 17 * i) % 256
            frames[t, ..., 1] = y * 255 // h
            frames[t, ..., 2] = 60
            top, left = (h // 4 + 2 * t) % (h - h // 8), (w // 4 + 3 * t) % (w - w // 8)
            frames[t, top:top + h // 8, left:left + w // 8] = 255
        write_episode(episode_path(folder, i), rng.normal(size=(episode_len, STATE_DIM)),
                      rng.normal(size=(episode_len, STATE_DIM)), {'top': frames})


def loaders(folder, episodes, preload):
    from common.seeds import set_seed
    from training.data import load_data
    set_seed(1)
    return load_data(folder, episodes, ['top'], BATCH_SIZE, BATCH_SIZE, preload='on' if preload else 'off', seed=0)


def loader_rate(loader, batches):
    """Samples per second the loader delivers on its own (after one warm-up batch)."""
    loader.sampler.set_epoch(0)
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for epoch in range(1, 10 ** 6):
        for batch in iterator:
            count += len(batch[0])
            if count >= batches * BATCH_SIZE:
                return count / (time.perf_counter() - start)
        loader.sampler.set_epoch(epoch)
        iterator = iter(loader)


def waiting_share(loader, steps):
    """Over `steps` README-config ACT steps (after a warm-up step): seconds per step and the share
    spent waiting for the batch."""
    import torch

    from policies.inputs import image_to_tensor
    from policies.registry import make_policy
    torch.manual_seed(0)
    policy = make_policy('ACT', readme_act_config())
    optimizer = policy.configure_optimizers()
    policy.train()
    waits, totals, epoch = [], [], 0
    loader.sampler.set_epoch(epoch)
    iterator = iter(loader)
    for _ in range(steps + 1):
        start = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            epoch += 1
            loader.sampler.set_epoch(epoch)
            iterator = iter(loader)
            batch = next(iterator)
        waited = time.perf_counter() - start
        image, qpos, action, is_pad = batch
        loss = policy(qpos, image_to_tensor(image, 'cpu'), action, is_pad)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        waits.append(waited)
        totals.append(time.perf_counter() - start)
    return {'sec_per_step': round(float(np.mean(totals[1:])), 3),
            'waiting_share': round(float(np.sum(waits[1:]) / np.sum(totals[1:])), 4)}


def run(args):
    from convert_dataset import to_lerobot
    from formats.datasets import open_dataset
    report = {'settings': {k: args[k] for k in ('episodes', 'episode_len', 'frame_size', 'steps', 'loader_batches')},
              **machine_report()}
    with tempfile.TemporaryDirectory() as folder:
        hdf5, lerobot = os.path.join(folder, 'hdf5'), os.path.join(folder, 'lerobot')
        os.makedirs(hdf5)
        write_hdf5(hdf5, args['episodes'], args['episode_len'], args['frame_size'])
        start = time.perf_counter()
        to_lerobot(hdf5, lerobot)
        frames = args['episodes'] * args['episode_len']
        report['conversion'] = {'frames_per_sec': round(frames / (time.perf_counter() - start), 1),
                                'psnr_db': round(psnr(open_dataset(hdf5), open_dataset(lerobot)), 2),
                                'video_mb': round(folder_mb(os.path.join(lerobot, 'videos')), 2),
                                'hdf5_mb': round(folder_mb(hdf5), 1)}
        for layout, path in (('hdf5', hdf5), ('lerobot', lerobot)):
            for preload in (False, True):
                start = time.perf_counter()
                train_loader = loaders(path, args['episodes'], preload)[0]
                case = {'load_sec': round(time.perf_counter() - start, 2),
                        'loader_samples_per_sec': round(loader_rate(train_loader, args['loader_batches']), 1)}
                if not args['skip_train']:
                    case.update(waiting_share(train_loader, args['steps']))
                report[f"{layout}_{'preload' if preload else 'seek'}"] = case
                print(layout, preload, case, flush=True, file=sys.stderr)
    return report


def psnr(a, b):
    """PSNR (dB) of b's frames against a's over the first episode."""
    reference, decoded = a.episode_frames(0, 'top').astype(np.float64), b.episode_frames(0, 'top')
    return 10 * np.log10(255 ** 2 / np.mean((reference - decoded) ** 2))


def folder_mb(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files) / 2 ** 20


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--episode_len', type=int, default=100)
    parser.add_argument('--frame_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'))
    parser.add_argument('--steps', type=int, default=3, help='timed README-config training steps per case')
    parser.add_argument('--loader_batches', type=int, default=20, help='batches timed for the loader alone')
    parser.add_argument('--skip_train', action='store_true', help='time the loader alone')
    print_report(run(vars(parser.parse_args())))
