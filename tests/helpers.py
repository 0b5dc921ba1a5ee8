"""What several test files share: paths, tiny sizes, and writers of tiny episodes and checkpoints."""
import contextlib
import os
import pickle
import subprocess
import sys

import numpy as np
import torch

from formats.hdf5 import write_episode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# how long a test lets a script run before it counts as hung: minutes, so a busy machine never fails a test
PROCESS_TIMEOUT_S = 600
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')
TASK = 'sim_transfer_cube_scripted'
TINY_IMAGE_HW = (24, 32)  # small frames keep the default test run fast
# A tiny ACT policy config (the original's keys): hidden 32, ff 64, 1 encoder / 2 decoder layers, chunk 5
TINY_ACT_CONFIG = {
    'lr': 1e-4, 'num_queries': 5, 'kl_weight': 10.0, 'hidden_dim': 32, 'dim_feedforward': 64,
    'lr_backbone': 1e-5, 'backbone': 'resnet18', 'enc_layers': 1, 'dec_layers': 2, 'nheads': 2,
    'camera_names': ['top'], 'state_dim': 14, 'action_dim': 14, 'pretrained_backbone': False,
}


def write_tiny_episode(path, episode_len=20, state_dim=14, camera_names=('top',), image_hw=TINY_IMAGE_HW,
                       sim=True, seed=0, compression=None):
    """One episode in the original layout with random content (real-robot ones with effort)."""
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, size=(episode_len, *image_hw, 3), dtype=np.uint8) for cam in camera_names}
    qpos, qvel = (rng.normal(size=(episode_len, state_dim)) for _ in range(2))
    effort = None if sim else rng.normal(size=(episode_len, state_dim))
    action = rng.normal(size=(episode_len, state_dim))
    write_episode(path, qpos, action, images, qvel=qvel, effort=effort, sim=sim, compression=compression)
    return path


def start_pose_stats(arm_pose, gripper, std, state_dim=14):
    """dataset_stats.pkl content that keeps an untrained policy's actions close to a start pose."""
    action_mean = np.array(list(arm_pose) + [gripper] + list(arm_pose) + [gripper], dtype=np.float32)[:state_dim]
    return {'qpos_mean': np.zeros(state_dim, np.float32), 'qpos_std': np.ones(state_dim, np.float32),
            'action_mean': action_mean, 'action_std': np.full(state_dim, std, np.float32),
            'action_min': action_mean - 2.5 * std, 'action_max': action_mean + 2.5 * std,
            'example_qpos': np.zeros((20, state_dim), np.float32)}


def write_tiny_checkpoint(ckpt_dir, policy_config, stats, policy_class='ACT'):
    """An untrained policy as policy_best.ckpt, with `stats` as dataset_stats.pkl."""
    from policies.registry import make_policy
    os.makedirs(ckpt_dir, exist_ok=True)
    torch.save(make_policy(policy_class, policy_config).serialize(), os.path.join(ckpt_dir, 'policy_best.ckpt'))
    with open(os.path.join(ckpt_dir, 'dataset_stats.pkl'), 'wb') as f:
        pickle.dump(stats, f)
    return ckpt_dir


def eval_config(ckpt_dir, policy_config, **overrides):
    """The config dict eval_bc reads, for a tiny sim evaluation: 2 rollouts of 10 steps."""
    config = {
        'num_epochs': 1, 'ckpt_dir': str(ckpt_dir), 'episode_len': 10, 'state_dim': 14, 'action_dim': 14,
        'lr': policy_config['lr'], 'policy_class': 'ACT', 'onscreen_render': False,
        'policy_config': policy_config, 'task_name': TASK, 'seed': 0, 'temporal_agg': False,
        'camera_names': policy_config['camera_names'], 'real_robot': False, 'device': 'cpu',
        'image_size': TINY_IMAGE_HW, 'num_rollouts': 2, 'eval_ckpt': 'policy_best.ckpt', 'save_video': True,
        'eval_workers': 1, 'robot_backend': 'builtin', 'robot_driver': 'auto', 'amp': 'off',
    }
    config.update(overrides)
    return config


def tiny_model_flags():
    """imitate_episodes.py flags of TINY_ACT_CONFIG's sizes, on the CPU, with no ImageNet weights."""
    argv = ['--device', 'cpu', '--no-pretrained_backbone']
    for flag, key in (('chunk_size', 'num_queries'), ('hidden_dim', 'hidden_dim'), ('enc_layers', 'enc_layers'),
                      ('dim_feedforward', 'dim_feedforward'), ('dec_layers', 'dec_layers'), ('nheads', 'nheads')):
        argv += [f'--{flag}', str(TINY_ACT_CONFIG[key])]
    return argv


def train_argv(dataset_dir, ckpt_dir):
    """The command line of imitate_episodes.py for a tiny ACT on 5 episodes of `dataset_dir`:
    2 epochs at batch 2 on the CPU, no ImageNet weights."""
    return ['--ckpt_dir', str(ckpt_dir), '--task_name', TASK, '--policy_class', 'ACT',
            '--dataset_dir', str(dataset_dir), '--num_episodes', '5', '--camera_names', 'top',
            '--batch_size', '2', '--num_epochs', '2', '--lr', '1e-4', *tiny_model_flags()]


def train_args(dataset_dir, ckpt_dir, **overrides):
    """train_argv's flags as main() receives them (build_parser's defaults), with `overrides`."""
    from imitate_episodes import build_parser
    args = vars(build_parser().parse_args(train_argv(dataset_dir, ckpt_dir)))
    args.update(overrides)
    return args


HOLD_LOCK = ('import sys, time\n'
             'from common.folders import FolderLock\n'
             'lock = FolderLock(sys.argv[1]).__enter__()\n'
             'print("held", flush=True)\n'
             'time.sleep(600)\n')


@contextlib.contextmanager
def lock_held_elsewhere(path):
    """Another living process holding common.folders.FolderLock on `path`; yields that process."""
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        yield holder
    finally:
        holder.kill()
        holder.wait()
