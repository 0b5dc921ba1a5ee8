"""Benchmark: ACT optimizer steps of the imitate_episodes.py training loop.

    python -m bench.train_step [--steps 3] [--cases readme_off readme_bf16 small_off small_bf16 ...]

Prints one JSON object: per case (model config x --amp) the seconds per optimizer step (batch 8,
data loading included, mean over --steps after one warm-up step), samples per second and peak
resident memory of the training process and of its loader worker. Cases with amp off also
train --ref_steps steps of an unoptimised reference (float images in the original's
channels-first layout, no channels-last weights) from the same seed on the same batches and
report the largest relative difference between its losses and the loop's, and the seconds per
step of that reference and of the original's computation (detr/reference.py, every decoder layer
computed) as same-run baselines: the CPU may be shared, so compare ratios within one run.

Data: 10 synthetic episodes in the original HDF5 layout (one 480x640 camera by default,
uncompressed, chunked per frame), written once to a temporary folder and read as the loop reads
real data that does not fit in memory (preload off, one loader worker). Each case runs in its own
process.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import machine_report, print_report

### Benchmark settings
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL_SEC_PER_STEP = 6.27  # the original at the README config, measured on an AVX512-BF16 2-core CPU
TASK = 'sim_transfer_cube_scripted'
NUM_EPISODES = 10  # 8 train episodes: one batch of 8 per epoch
EPISODE_LEN = 100  # steps per synthetic episode (>= the largest chunk size)
STATE_DIM = 14
BATCH_SIZE = 8
MODELS = {  # the README's ACT config and a small one at quarter-size images (flags of imitate_episodes.py)
    'readme': {'hidden_dim': 512, 'dim_feedforward': 3200, 'chunk_size': 100, 'image_size': None},
    'small': {'hidden_dim': 256, 'dim_feedforward': 1024, 'chunk_size': 50, 'image_size': (240, 320)},
}
CASES = ('readme_off', 'readme_bf16', 'small_off', 'small_bf16')
# gradient checkpointing (--gradient_checkpointing): the same steps with activations recomputed
CHECKPOINTED = ('readme_off_recompute', 'small_off_recompute')


def write_dataset(folder, frame_hw):
    """Synthetic episodes: random frames and joint trajectories in the original layout."""
    from formats.hdf5 import episode_path, write_episode
    rng = np.random.default_rng(0)
    for i in range(NUM_EPISODES):
        frames = rng.integers(0, 256, size=(EPISODE_LEN, *frame_hw, 3), dtype=np.uint8)
        qpos, qvel = (rng.normal(size=(EPISODE_LEN, STATE_DIM)) for _ in range(2))
        write_episode(episode_path(folder, i), qpos, rng.normal(size=(EPISODE_LEN, STATE_DIM)), {'top': frames},
                      qvel=qvel)


def make_config(model, amp, data_dir, ckpt_dir, num_steps, image_hw, recompute=False):
    """The training config imitate_episodes.py builds for the README or the small model's flags."""
    from cli.run_config import make_config as make_run_config
    from cli.run_config import make_policy_config
    from imitate_episodes import build_parser
    from tasks import get_task_config
    from training import loop
    sizes = MODELS[model]
    argv = ['--task_name', TASK, '--policy_class', 'ACT', '--ckpt_dir', ckpt_dir, '--dataset_dir', data_dir,
            '--num_episodes', str(NUM_EPISODES), '--batch_size', str(BATCH_SIZE), '--num_steps', str(num_steps),
            '--amp', amp, '--device', 'cpu', '--lr', '1e-5', '--no-pretrained_backbone',
            '--hidden_dim', str(sizes['hidden_dim']), '--dim_feedforward', str(sizes['dim_feedforward']),
            '--chunk_size', str(sizes['chunk_size'])] + (['--gradient_checkpointing'] if recompute else [])
    args = vars(build_parser().parse_args(argv))
    policy_config = make_policy_config(args, ['top'], STATE_DIM, STATE_DIM, image_hw)
    return {**loop.TRAIN_DEFAULTS, **make_run_config(args, get_task_config(TASK), policy_config, 'cpu')}


def loaders(data_dir, model):
    from common.seeds import set_seed
    from training.data import load_data
    set_seed(1)  # the training script's split seed
    return load_data(data_dir, NUM_EPISODES, ['top'], BATCH_SIZE, BATCH_SIZE, image_size=MODELS[model]['image_size'],
                     num_workers=1, preload='off', seed=0)


def reference_steps(train_loader, config, num_steps, original):
    """Steps of an unoptimised loop on the loop's batches -> (losses, seconds per step).

    Float (B, K, 3, H, W) contiguous images and default memory format; with original=True the
    original's computation (detr/reference.py: every decoder layer, sequence-first attention)."""
    import torch.nn.functional as F

    from common.seeds import set_seed
    from detr.reference import original_forward
    from policies.act import kl_divergence
    from policies.registry import make_policy
    set_seed(config['seed'])
    policy = make_policy('ACT', config['policy_config'])
    optimizer = policy.configure_optimizers()
    policy.train()
    losses, times = [], []
    for epoch in range(num_steps):  # one batch per epoch: the loop's step k is loader epoch k
        train_loader.sampler.set_epoch(epoch)
        image, qpos, action, is_pad = next(iter(train_loader))
        start = time.perf_counter()
        image = image.permute(0, 1, 4, 2, 3).contiguous().float() / 255.0
        if original:
            nq = policy.chunk_size
            action, is_pad = action[:, :nq], is_pad[:, :nq]
            a_hat, _, mu, logvar = original_forward(policy.model, qpos, policy.normalize(image), action, is_pad)
            l1 = (F.l1_loss(action, a_hat, reduction='none') * ~is_pad.unsqueeze(-1)).mean()
            loss = l1 + kl_divergence(mu, logvar) * policy.kl_weight
        else:
            loss = policy(qpos, image, action, is_pad)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        del loss
    return losses, float(np.mean(times))


def run_case(case, data_dir, steps, ref_steps):
    import torch

    from training import loop
    model, amp, *recompute = case.split('_')
    train_loader, val_loader, _, _ = loaders(data_dir, model)
    image_hw = tuple(train_loader.dataset.hw)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        config = make_config(model, amp, data_dir, ckpt_dir, steps + 1, image_hw, bool(recompute))
        trainer = loop.Trainer(train_loader, val_loader, config)
        trainer.policy.train()
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
        losses = [d['loss'] for d in trainer.progress.partial]
        del trainer
    sec = float(np.mean(times[1:]))
    result = {'sec_per_step': round(sec, 3), 'samples_per_sec': round(BATCH_SIZE / sec, 2),
              'first_step_sec': round(times[0], 3), 'losses': [round(x, 6) for x in losses],
              'peak_rss_gib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
              'torch_threads': torch.get_num_threads(), 'image_hw': list(image_hw),
              **{k: v for k, v in MODELS[model].items() if k != 'image_size'}}
    if amp == 'off' and ref_steps:
        ref, ref_sec = reference_steps(train_loader, config, ref_steps, original=False)
        result['reference_losses'] = [round(x, 6) for x in ref]
        result['max_rel_diff_vs_reference'] = float(max(abs(a - b) / abs(b) for a, b in zip(losses, ref)))
        result['reference_sec_per_step'] = round(ref_sec, 3)
        _, original_sec = reference_steps(train_loader, config, ref_steps, original=True)
        result['original_computation_sec_per_step'] = round(original_sec, 3)
    result['peak_rss_worker_gib'] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, 2)
    return result


def main(args):
    if args['case']:
        print(json.dumps(run_case(args['case'], args['data'], args['steps'], args['ref_steps'])))
        return
    report = {**machine_report(), 'batch_size': BATCH_SIZE, 'frame_hw': args['frame_size'],
              'original_sec_per_step_readme': ORIGINAL_SEC_PER_STEP, 'cases': {}}
    cases = args['cases']
    if cases is None:  # bf16 only where the CPU computes it natively; emulated it is many times slower
        from cli.run_config import cpu_has_bf16
        cases = [c for c in CASES if cpu_has_bf16() or not c.endswith('bf16')]
        if len(cases) < len(CASES):
            report['skipped'] = 'bf16 cases: no native bfloat16 on this CPU (ask for them with --cases)'
    with tempfile.TemporaryDirectory() as data_dir:
        write_dataset(data_dir, args['frame_size'])
        for case in cases:
            cmd = [sys.executable, '-m', 'bench.train_step', '--case', case, '--data', data_dir,
                   '--steps', str(args['steps']), '--ref_steps', str(args['ref_steps'])]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                raise RuntimeError(f'case {case} failed:\n{out.stderr[-3000:]}')
            report['cases'][case] = json.loads(out.stdout.strip().splitlines()[-1])
            print(case, json.dumps(report['cases'][case]), file=sys.stderr, flush=True)  # progress
    cases = report['cases']
    if 'readme_off' in cases and 'readme_bf16' in cases:
        report['readme_bf16_speedup_vs_amp_off'] = round(cases['readme_off']['sec_per_step'] /
                                                        cases['readme_bf16']['sec_per_step'], 2)
    for case in ('readme_off', 'readme_bf16'):
        if case in cases:
            report[f'{case}_speedup_vs_original_figure'] = round(ORIGINAL_SEC_PER_STEP / cases[case]['sec_per_step'], 2)
    if 'original_computation_sec_per_step' in cases.get('readme_off', {}):
        report['readme_off_speedup_vs_original_computation_same_run'] = round(
            cases['readme_off']['original_computation_sec_per_step'] / cases['readme_off']['sec_per_step'], 2)
    print_report(report)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=3, help='timed optimizer steps per case (after one warm-up)')
    parser.add_argument('--ref_steps', type=int, default=2, help='reference steps compared with amp off (0: skip)')
    parser.add_argument('--cases', nargs='+', choices=CASES + CHECKPOINTED,
                        help='cases to run (default: those without gradient checkpointing; bf16 ones only on CPUs '
                             'with native bfloat16); *_recompute: with --gradient_checkpointing')
    parser.add_argument('--frame_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'),
                        help='recorded frame size of the synthetic episodes')
    parser.add_argument('--case', help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument('--data', help=argparse.SUPPRESS)
    main(vars(parser.parse_args()))
