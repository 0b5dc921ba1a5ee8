"""Diffusion policy latency beside ACT's: one inference query (10 DDIM steps by default), the same
query guided by Real-Time Chunking (half the chunk queued, a delay of 10 steps), and one training
step at batch 8, one camera at 480x640.

ACT (README config) and Diffusion queries alternate in the same run, so a CPU shared with other
work slows both alike; the ratio is the figure to read. Prints one JSON object; medians in ms.

    python -m bench.diffusion_latency
    python -m bench.diffusion_latency --chunk_size 16 --skip_train --threads 1
"""
import torch

from bench.common import alternate, latency_parser, machine_report, print_report, readme_act_config, set_threads
from policies.act import ACTPolicy
from policies.diffusion import DiffusionPolicy
from policies.rtc import Inpainting

STATE_DIM = 14  # the sim tasks' qpos and action size
RTC_DELAY = 10  # steps held to the queue in the guided query


def wall_medians(fns, reps):
    """Median wall milliseconds of each of {name: fn}, alternated."""
    medians, _ = alternate(fns, reps)
    return {name: m['wall_ms'] for name, m in medians.items()}


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
        policy.post_step()
    return step


def main(args):
    set_threads(args)
    torch.manual_seed(0)
    chunk, image_hw = args['chunk_size'], tuple(args['image_size'])
    diffusion = DiffusionPolicy({'camera_names': ['top'], 'num_queries': chunk, 'state_dim': STATE_DIM,
                                 'action_dim': STATE_DIM, 'scheduler': args['scheduler'],
                                 'num_inference_steps': args['num_inference_steps']}).eval()
    act = ACTPolicy(readme_act_config(num_queries=chunk)).eval()
    report = {'config': f'1 camera {image_hw[0]}x{image_hw[1]}, qpos 14, chunk {chunk}, Diffusion '
                        f'{args["scheduler"]} {args["num_inference_steps"]} steps, down_dims 256/512/1024; '
                        f'ACT README config', **machine_report()}
    qpos, image, _, _ = inputs(1, chunk, image_hw)
    queued = list(torch.rand(chunk // 2, STATE_DIM) * 2 - 1)  # (A,) each
    inpainting = Inpainting.of_queue(queued, RTC_DELAY, chunk)
    query = wall_medians({'diffusion': lambda: diffusion(qpos, image), 'act': lambda: act(qpos, image),
                          'diffusion_rtc': lambda: diffusion.action_chunk(qpos, image, inpainting=inpainting)},
                         args['reps'])
    report['query_ms'] = query
    report['query_ratio_diffusion_to_act'] = round(query['diffusion'] / query['act'], 2)
    report['query_ratio_rtc_to_diffusion'] = round(query['diffusion_rtc'] / query['diffusion'], 2)
    if not args['skip_train']:
        batch = inputs(args['batch_size'], chunk, image_hw)
        steps = {'diffusion': train_step_fn(diffusion.train())}
        if not args['skip_act_train']:
            steps['act'] = train_step_fn(act.train())
        report['train_step_ms'] = wall_medians({k: (lambda s=s: s(*batch)) for k, s in steps.items()},
                                               args['train_reps'])
        report['train_batch_size'] = args['batch_size']
    print_report(report)


if __name__ == '__main__':
    parser = latency_parser(__doc__.split('\n')[0], reps=10)
    parser.add_argument('--chunk_size', type=int, default=100, help='prediction horizon (ACT num_queries)')
    parser.add_argument('--num_inference_steps', type=int, default=10, help='Diffusion denoising steps')
    parser.add_argument('--scheduler', choices=('ddim', 'ddpm'), default='ddim')
    parser.add_argument('--skip_act_train', action='store_true', help="skip ACT's training step")
    main(vars(parser.parse_args()))
