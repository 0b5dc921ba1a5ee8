"""Offline evaluation: a trained policy's action chunks against recorded demonstrations, no robot.

For every step t of every held-out episode, the policy sees the recorded observation (qpos and
frames of step t; with obs_horizon To the steps t-To+1..t) and predicts a chunk of Q actions; the
chunk is compared, in the robot's units, with the recorded actions it stands for (those the
training target holds: from step t, from t-1 for real-robot episodes) where the episode has them.
Reported per joint, overall and along the chunk (position k = 0..Q-1):
    l1   mean |predicted - recorded|
    l2   mean (predicted - recorded)^2
For a stochastic policy (Diffusion) also the diversity: the standard deviation over N samples of
the chunk for the same observation, averaged over steps and chunk positions, per joint and overall.
Writes offline_eval.json and offline_eval.png (error per joint, error along the chunk) to --ckpt_dir.
"""
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from common.files import atomic_path, atomic_write
from formats.images import resize_images
from policies.inputs import image_to_tensor
from tasks import joint_names

### Settings
OFFLINE_EVAL_FILE = 'offline_eval.json'
OFFLINE_EVAL_PLOT = 'offline_eval.png'
BATCH_SIZE = 32  # observations per policy query
DIFFUSION_SAMPLES = 10  # chunks drawn per observation for the diversity of a stochastic policy


class ErrorSums:
    """Running sums of chunk errors: per (chunk position, joint), and how many values each holds."""

    def __init__(self, chunk, action_dim):
        self.abs, self.sq = np.zeros((chunk, action_dim)), np.zeros((chunk, action_dim))
        self.count = np.zeros((chunk, 1))
        self.spread, self.spread_count = np.zeros(action_dim), 0

    def add(self, predicted, recorded, valid):
        """predicted, recorded (B, Q, A) in robot units; valid (B, Q) bool."""
        error = (predicted - recorded) * valid[..., None]
        self.abs += np.abs(error).sum(0)
        self.sq += (error ** 2).sum(0)
        self.count += valid.sum(0)[:, None]

    def add_samples(self, samples):
        """samples (N, B, Q, A): N chunks for each of B observations."""
        self.spread += samples.astype(np.float64).std(axis=0).mean(axis=(0, 1)) * samples.shape[1]
        self.spread_count += samples.shape[1]

    def report(self, names):
        count = np.maximum(self.count, 1)
        per_joint = {'l1': self.abs.sum(0) / self.count.sum(), 'l2': self.sq.sum(0) / self.count.sum()}
        report = {
            'actions_compared': int(self.count.sum()),
            'overall': {k: float(v.mean()) for k, v in per_joint.items()},
            'per_joint': {name: {k: float(v[j]) for k, v in per_joint.items()} for j, name in enumerate(names)},
            'along_chunk': {'l1': (self.abs / count).mean(1).tolist(), 'l2': (self.sq / count).mean(1).tolist()},
        }
        if self.spread_count:
            spread = self.spread / self.spread_count
            report['diversity'] = {'overall': float(spread.mean()),
                                   'per_joint': {name: float(spread[j]) for j, name in enumerate(names)}}
        return report


def check_episode(source, index, policy, normalizer):
    """Raise naming both when the episode's sizes or cameras are not the checkpoint's."""
    path = source.name(index)
    qpos, action, is_sim = source.low_dim(index)
    if qpos.shape[1] != normalizer.state_dim or action.shape[1] != normalizer.action_dim:
        raise ValueError(f'{path} has state size {qpos.shape[1]} and action size {action.shape[1]}, but the '
                         f'checkpoint has {normalizer.state_dim} and {normalizer.action_dim}')
    missing = [cam for cam in policy.camera_names if cam not in source.camera_names]
    if missing:
        raise ValueError(f"{path} has no camera {', '.join(missing)}; the checkpoint's cameras are "
                         f"{', '.join(policy.camera_names)}")
    source.check_frames(index, policy.camera_names, len(qpos))
    return qpos, action, is_sim


def evaluate_episode(source, index, episode, policy, normalizer, image_size, device, sums, samples, bar):
    """Add one episode's chunk errors (and sample spreads when samples > 0) to `sums`;
    episode: check_episode's (qpos, action, is_sim). Frames are read a batch at a time."""
    qpos, action, is_sim = episode
    T = len(qpos)
    norm_qpos = normalizer.normalize_qpos(qpos)  # (T, S)
    for start in range(0, T, BATCH_SIZE):
        steps = np.arange(start, min(start + BATCH_SIZE, T))  # (B,)
        q, image = observations(source, index, steps, norm_qpos, policy, image_size, device)
        draws = [normalizer.unnormalize_action(policy.action_chunk(q, image).cpu().numpy())
                 for _ in range(max(1, samples))]  # each (B, Q, A)
        recorded, valid = recorded_chunks(action, is_sim, steps, policy.chunk_size)
        sums.add(draws[0], recorded, valid)
        if samples > 1:
            sums.add_samples(np.stack(draws))
        bar.update(len(steps))


def observations(source, index, steps, norm_qpos, policy, image_size, device):
    """What the policy sees at `steps` (B,) of episode `index`: qpos (B[, To], S) normalised and
    images (B[, To], K, 3, H, W), the observations of steps t-To+1..t (the first repeated before 0)."""
    To = policy.obs_horizon
    history = np.maximum(steps[:, None] + np.arange(1 - To, 1)[None], 0)  # (B, To)
    frames = np.stack([resize_images(source.frames(index, cam, history.ravel()), image_size)
                       for cam in policy.camera_names], axis=1)  # (B To, K, H, W, 3)
    q = torch.from_numpy(norm_qpos[history]).to(device)  # (B, To, S)
    image = image_to_tensor(frames.reshape(*history.shape, *frames.shape[1:]), device)  # (B, To, K, 3, H, W)
    return (q[:, 0], image[:, 0]) if To == 1 else (q, image)


def recorded_chunks(action, is_sim, steps, chunk):
    """The recorded actions (B, chunk, A) the chunks predicted at `steps` (B,) stand for, and where the
    episode has them (B, chunk) bool."""
    T = len(action)
    # NOTE(faithful): real-robot targets start one step earlier, as the training samples' do.
    first = steps if is_sim else np.maximum(steps - 1, 0)  # (B,)
    targets = first[:, None] + np.arange(chunk)[None]  # (B, chunk)
    return action[np.minimum(targets, T - 1)], targets < T


def evaluate_offline(policy, normalizer, source, indices, image_size, device, samples=0, names=None):
    """The report (ErrorSums.report) of `policy` on episodes `indices` of `source` (formats.datasets.open_dataset),
    all checked first; names: the joints' (default constants.joint_names)."""
    if not len(indices):
        raise ValueError('no held-out episodes to evaluate on: pass --dataset_dir (and --num_episodes) '
                         'to evaluate on other recorded episodes')
    policy.eval()
    episodes = [check_episode(source, i, policy, normalizer) for i in indices]
    sums = ErrorSums(policy.chunk_size, normalizer.action_dim)
    with tqdm(total=sum(len(qpos) for qpos, _, _ in episodes), desc='offline evaluation', unit='step') as bar:
        for index, episode in zip(indices, episodes):
            evaluate_episode(source, index, episode, policy, normalizer, image_size, device, sums, samples, bar)
    report = sums.report(names or joint_names(normalizer.action_dim))
    report['episodes'] = [os.path.basename(source.name(i)) for i in indices]
    return report


def report_table(report):
    """The printed summary: overall, then one line per joint."""
    lines = [f"Offline evaluation over {report['actions_compared']} compared actions of "
             f"{len(report['episodes'])} episodes (robot units)",
             f"{'joint':<22}{'L1':>12}{'L2':>12}" + (f"{'diversity':>12}" if 'diversity' in report else '')]
    rows = [('overall', report['overall'], report.get('diversity', {}).get('overall'))]
    rows += [(name, errors, report.get('diversity', {}).get('per_joint', {}).get(name))
             for name, errors in report['per_joint'].items()]
    for name, errors, spread in rows:
        lines.append(f"{name:<22}{errors['l1']:>12.5f}{errors['l2']:>12.5f}"
                     + (f'{spread:>12.5f}' if spread is not None else ''))
    return '\n'.join(lines)


def write_report(report, ckpt_dir):
    """offline_eval.json and offline_eval.png in ckpt_dir -> their paths."""
    paths = [os.path.join(ckpt_dir, name) for name in (OFFLINE_EVAL_FILE, OFFLINE_EVAL_PLOT)]
    atomic_write(paths[0], lambda f: json.dump(report, f, indent=2), mode='w')
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    by_joint, along = fig.subplots(1, 2)
    names = list(report['per_joint'])
    by_joint.bar(range(len(names)), [report['per_joint'][n]['l1'] for n in names])
    by_joint.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    by_joint.set_title('L1 error per joint')
    along.plot(report['along_chunk']['l1'])
    along.set_xlabel('position in the chunk')
    along.set_title('L1 error along the chunk')
    fig.tight_layout()
    with atomic_path(paths[1]) as tmp:
        fig.savefig(tmp, format='png')
    return paths
