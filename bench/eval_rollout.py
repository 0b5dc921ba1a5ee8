"""Evaluation speed: control steps per second of sim rollouts, with and without temporal
ensembling, in 1 and 2 worker processes. Prints JSON.

The policy is an untrained ACT of the given size (speed does not depend on the weights); each
setting runs one rollout per worker, so `steps_per_s` is the throughput of the whole evaluation
including worker start-up, and `rollout_steps_per_s` the speed inside one rollout.

    python -m bench.eval_rollout                                   # README model size, 480x640
    python -m bench.eval_rollout --image_size 240 320 --hidden_dim 256 --dim_feedforward 1024
"""
import argparse
import os
import pickle
import tempfile
import time

import numpy as np
import torch

from bench.common import machine_report, print_report, stdout_to_stderr
from evaluation.rollout import rollout_results
from tasks import get_sim_task_config


def write_checkpoint(ckpt_dir, policy_config, state_dim):
    """An untrained policy and statistics that keep its actions near the start pose."""
    from policies.registry import make_policy
    torch.save(make_policy('ACT', policy_config).serialize(), os.path.join(ckpt_dir, 'policy_best.ckpt'))
    mean = np.zeros(state_dim, dtype=np.float32)
    std = np.full(state_dim, 0.01, dtype=np.float32)
    stats = {'qpos_mean': mean, 'qpos_std': np.ones(state_dim, dtype=np.float32), 'action_mean': mean,
             'action_std': std, 'action_min': mean - 1, 'action_max': mean + 1,
             'example_qpos': np.zeros((1, state_dim), dtype=np.float32)}
    with open(os.path.join(ckpt_dir, 'dataset_stats.pkl'), 'wb') as f:
        pickle.dump(stats, f)


def eval_config(args, ckpt_dir, temporal_agg, workers):
    camera_names = get_sim_task_config(args['task_name'])['camera_names']
    policy_config = {'lr': 1e-5, 'num_queries': args['chunk_size'], 'kl_weight': 10, 'hidden_dim': args['hidden_dim'],
                     'dim_feedforward': args['dim_feedforward'], 'lr_backbone': 1e-5, 'backbone': 'resnet18',
                     'enc_layers': args['enc_layers'], 'dec_layers': args['dec_layers'], 'nheads': args['nheads'],
                     'camera_names': camera_names, 'pretrained_backbone': False}
    return {'ckpt_dir': ckpt_dir, 'episode_len': args['episode_len'], 'state_dim': 14, 'action_dim': 14,
            'policy_class': 'ACT', 'onscreen_render': False, 'policy_config': policy_config,
            'task_name': args['task_name'], 'seed': 0, 'temporal_agg': temporal_agg, 'camera_names': camera_names,
            'real_robot': False, 'device': args['device'], 'image_size': tuple(args['image_size']),
            'num_rollouts': workers, 'save_video': args['video'], 'eval_workers': workers}


def measure(config):
    start = time.perf_counter()
    results = list(rollout_results(config, 'policy_best.ckpt'))
    wall = time.perf_counter() - start
    steps = config['episode_len'] * len(results)
    return {'temporal_agg': config['temporal_agg'], 'workers': config['eval_workers'], 'rollouts': len(results),
            'steps_per_s': round(steps / wall, 2), 'wall_s': round(wall, 1),
            'rollout_steps_per_s': round(float(np.mean([config['episode_len'] / r['wall_s'] for r in results])), 2)}


def main(args):
    with tempfile.TemporaryDirectory() as ckpt_dir, stdout_to_stderr():
        first = eval_config(args, ckpt_dir, False, 1)
        write_checkpoint(ckpt_dir, first['policy_config'], first['state_dim'])
        runs = [measure(eval_config(args, ckpt_dir, temporal_agg, workers))
                for temporal_agg in (False, True) for workers in args['workers']]
    settings = {k: args[k] for k in ('task_name', 'episode_len', 'image_size', 'hidden_dim', 'dim_feedforward',
                                     'chunk_size', 'enc_layers', 'dec_layers', 'nheads', 'device', 'video')}
    print_report({'benchmark': 'eval_rollout', 'settings': settings, **machine_report(), 'runs': runs})


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task_name', type=str, default='sim_transfer_cube_scripted')
    parser.add_argument('--episode_len', type=int, default=400, help='control steps per rollout')
    parser.add_argument('--image_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'))
    parser.add_argument('--hidden_dim', type=int, default=512)
    parser.add_argument('--dim_feedforward', type=int, default=3200)
    parser.add_argument('--chunk_size', type=int, default=100)
    parser.add_argument('--enc_layers', type=int, default=4)
    parser.add_argument('--dec_layers', type=int, default=7)
    parser.add_argument('--nheads', type=int, default=8)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='worker counts to measure')
    parser.add_argument('--device', type=str, default='cpu')
    parser.add_argument('--video', action='store_true', help='also encode the H.264 videos')
    main(vars(parser.parse_args()))
