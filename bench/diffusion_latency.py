"""Diffusion policy latency beside ACT's: one inference query (10 DDIM steps by default) and one
training step at batch 8, one camera at 480x640.

ACT (README config) and Diffusion queries alternate in the same run, so a CPU shared with other
work slows both alike; the ratio is the figure to read. Prints one JSON object; medians in ms.

    .venv/bin/python bench/diffusion_latency.py
    .venv/bin/python bench/diffusion_latency.py --chunk_size 16 --skip_train --threads 1
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diffusion_policy import DiffusionPolicy  # noqa: E402

### The README's ACT config (sim tasks, one camera), the reference for the query latency
ACT_CONFIG = {
    'lr': 1e-5, 'kl_weight': 10, 'hidden_dim': 512, 'dim_feedforward': 3200, 'lr_backbone': 1e-5,
    'backbone': 'resnet18', 'enc_layers': 4, 'dec_layers': 7, 'nheads': 8, 'pretrained_backbone': False,
}
STATE_DIM = 14


def timed_ms(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def alternate(fns, reps):
    """Run each fn once to warm up, then all in turn `reps` times; median ms per fn."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed_ms(fn))
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def inputs(batch, chunk, image_hw):
    qpos = torch.randn(batch, STATE_DIM)
    image = torch.rand(batch, 1, 3, *image_hw)
    actions = torch.rand(batch, chunk, STATE_DIM) * 2 - 1
    is_pad = torch.zeros(batch, chunk, dtype=torch.bool)
    return qpos, image, actions, is_pad


def train_step_fn(policy):
    """One optimizer step as the training loop runs it: forward, backward, AdamW, EMA update."""
    optimizer = policy.configure_optimizers()

    def step(qpos, image, actions, is_pad):
        loss = policy(qpos, image, actions, is_pad)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(policy, 'post_step'):
            policy.post_step()
    return step


def make_act(chunk):
    try:
        from policy import ACTPolicy
    except ImportError as err:
        print(f'ACT not available ({err}); timing Diffusion alone', file=sys.stderr)
        return None
    return ACTPolicy(dict(ACT_CONFIG, num_queries=chunk, camera_names=['top'])).eval()


def main(args):
    if args['threads']:
        torch.set_num_threads(args['threads'])
    torch.manual_seed(0)
    chunk, image_hw = args['chunk_size'], tuple(args['image_size'])
    diffusion = DiffusionPolicy({'camera_names': ['top'], 'num_queries': chunk, 'state_dim': STATE_DIM,
                                 'action_dim': STATE_DIM, 'scheduler': args['scheduler'],
                                 'num_inference_steps': args['num_inference_steps']}).eval()
    act = make_act(chunk)
    report = {'config': f'1 camera {image_hw[0]}x{image_hw[1]}, qpos 14, chunk {chunk}, Diffusion '
                        f'{args["scheduler"]} {args["num_inference_steps"]} steps, down_dims 256/512/1024; '
                        f'ACT README config',
              'torch': torch.__version__, 'threads': torch.get_num_threads(),
              'cpu_capability': torch.backends.cpu.get_cpu_capability(), 'machine': platform.machine(),
              'load_avg_start': os.getloadavg()[0]}
    qpos, image, _, _ = inputs(1, chunk, image_hw)
    fns = {'diffusion': lambda: diffusion(qpos, image)}
    if act is not None:
        fns['act'] = lambda: act(qpos, image)
    with torch.inference_mode():
        query = alternate(fns, args['reps'])
    report['query_ms'] = query
    if act is not None:
        report['query_ratio_diffusion_to_act'] = round(query['diffusion'] / query['act'], 2)
    if not args['skip_train']:
        batch = inputs(args['batch_size'], chunk, image_hw)
        steps = {'diffusion': train_step_fn(diffusion.train())}
        if act is not None and not args['skip_act_train']:
            steps['act'] = train_step_fn(act.train())
        report['train_step_ms'] = alternate({k: (lambda s=s: s(*batch)) for k, s in steps.items()},
                                            args['train_reps'])
        report['train_batch_size'] = args['batch_size']
    report['load_avg_end'] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=10, help='timed queries per policy')
    parser.add_argument('--train_reps', type=int, default=3, help='timed training steps per policy')
    parser.add_argument('--batch_size', type=int, default=8, help='training step batch size')
    parser.add_argument('--chunk_size', type=int, default=100, help='prediction horizon (ACT num_queries)')
    parser.add_argument('--num_inference_steps', type=int, default=10, help='Diffusion denoising steps')
    parser.add_argument('--scheduler', choices=('ddim', 'ddpm'), default='ddim')
    parser.add_argument('--image_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--skip_train', action='store_true', help='skip the training steps')
    parser.add_argument('--skip_act_train', action='store_true', help="skip ACT's training step")
    main(vars(parser.parse_args()))
