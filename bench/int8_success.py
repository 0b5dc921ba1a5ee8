"""int8 judged by success: a trained checkpoint exported in fp32 and in static int8
(`export_policy.py --quantize int8`), both evaluated over the same simulated rollouts (the
original's evaluation seed, the same object poses) through the same runtime, and the largest action
difference between the two exports over one recorded episode.

    python -m bench.int8_success --ckpt_dir recipe/ckpt --dataset_dir recipe/sim_transfer_cube_scripted

Each export is written once into <out>/export_<name>, and each evaluation runs
`imitate_episodes.py --eval --runtime R --export_dir <out>/export_<name>` (with --temporal_agg unless
--no_temporal_agg) in a folder of its own that links the checkpoint, as bench.realtime's cases do;
what an earlier run left is read back, so an interrupted run resumes. The recorded episode's every
step is queried through both exports: the difference is given in robot units for the whole chunk
and for the chunk's first action. Prints JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench.realtime import ROOT, case_report, evaluate
from deploy.engines import engine_names
from deploy.quantize import CALIBRATION_SAMPLES
from deploy.runtime import PolicyRunner
from formats.datasets import open_dataset
from formats.images import resize_images

EXPORTS = {'fp32': [], 'int8': ['--quantize', 'int8']}  # name: export_policy.py's extra flags
BATCH = 32  # recorded steps per query batch


def export_folder(args, name):
    """<out>/export_<name>, written by export_policy.py unless an earlier run left it."""
    folder = os.path.join(args['out'], f'export_{name}')
    os.makedirs(args['out'], exist_ok=True)
    if not os.path.isfile(os.path.join(folder, 'policy.json')):
        command = [sys.executable, 'export_policy.py', '--ckpt_dir', args['ckpt_dir'], '--ckpt', args['ckpt'],
                   '--format', 'onnx', '--out', folder, '--overwrite', *EXPORTS[name]]
        if name == 'int8':
            command += ['--calibration', str(args['calibration'])]
            command += ['--dataset_dir', args['dataset_dir']] if args['dataset_dir'] else []
        print(f'int8_success: {" ".join(command[1:])}', file=sys.stderr, flush=True)
        start = time.perf_counter()
        if subprocess.run(command, cwd=ROOT, stdout=sys.stderr).returncode != 0:  # stdout: the JSON alone
            raise SystemExit(f'int8_success: the {name} export failed')
        print(f'int8_success: {name} export: {time.perf_counter() - start:.0f} s', file=sys.stderr, flush=True)
    return folder


def episode_steps(episodes, index, camera_names, image_size):
    """Every step of recorded episode `index` in batches -> [(qpos (B, S), images (B, K, H, W, 3) uint8)]."""
    qpos = episodes.low_dim(index)[0].astype(np.float32)  # (T, S)
    for start in range(0, len(qpos), BATCH):
        steps = np.arange(start, min(start + BATCH, len(qpos)))  # (B,)
        images = np.stack([resize_images(episodes.frames(index, cam, steps), image_size) for cam in camera_names],
                          axis=1)  # (B, K, H, W, 3)
        yield qpos[steps], images


def recorded_difference(args, folders):
    """Max |int8 - fp32| of the raw actions over every step of one recorded episode."""
    fp32, int8 = (PolicyRunner(folders[name], engine=args['runtime']) for name in ('fp32', 'int8'))
    episodes = open_dataset(args['dataset_dir'])
    chunk = first = 0.0
    for qpos, images in episode_steps(episodes, args['episode'], fp32.camera_names, fp32.image_size):
        difference = np.abs(int8.query(qpos, images) - fp32.query(qpos, images))  # (B, chunk, A)
        chunk, first = max(chunk, float(difference.max())), max(first, float(difference[:, 0].max()))
    return {'episode': os.path.basename(episodes.name(args['episode'])), 'max_chunk_difference': chunk,
            'max_first_action_difference': first}


def main(args):
    folders = {name: os.path.abspath(export_folder(args, name)) for name in EXPORTS}
    agg = ['--temporal_agg'] if args['temporal_agg'] else []
    report = {'ckpt_dir': args['ckpt_dir'], 'checkpoint': args['ckpt'], 'runtime': args['runtime'],
              'calibration': args['calibration'], 'num_rollouts': args['num_rollouts'],
              'temporal_agg': args['temporal_agg']}
    if args['dataset_dir']:
        report['recorded'] = recorded_difference(args, folders)
    report['cases'] = {name: case_report(evaluate(args, f'{args["runtime"]}_{name}',
                                                  [*agg, '--runtime', args['runtime'], '--export_dir', folder],
                                                  bench='int8_success'))
                       for name, folder in folders.items()}
    rates = [case['success_rate'] for case in report['cases'].values()]
    report['success_difference_points'] = round(100 * (rates[1] - rates[0]), 1)  # int8 - fp32
    print(json.dumps(report, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt_dir', required=True, help='a trained run (config.json, dataset_stats.pkl)')
    parser.add_argument('--ckpt', default='policy_last.ckpt', help='the checkpoint in --ckpt_dir')
    parser.add_argument('--dataset_dir', help='its training episodes: the int8 calibration (default: those '
                        'config.json names) and the recorded episode compared')
    parser.add_argument('--episode', type=int, default=0, help='the recorded episode compared step by step')
    parser.add_argument('--calibration', type=int, default=CALIBRATION_SAMPLES, help="the int8 export's --calibration")
    parser.add_argument('--runtime', choices=engine_names(), default='onnxruntime',
                        help='the runtime of both evaluations')
    parser.add_argument('--no_temporal_agg', dest='temporal_agg', action='store_false',
                        help='evaluate chunk by chunk (default: with --temporal_agg, as the ACT recipes do)')
    parser.add_argument('--num_rollouts', type=int, default=50)
    parser.add_argument('--eval_workers', type=int, default=1, help='rollout processes, one thread each')
    parser.add_argument('--out', default='int8_success', help='folder of the exports and their evaluations')
    return vars(parser.parse_args(argv))


if __name__ == '__main__':
    main(parse_args())
