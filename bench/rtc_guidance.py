"""How far Real-Time Chunking's guidance moves a trained Diffusion policy's chunk toward the queue.

For recorded observations of step t: the chunk sampled at t, of which the actions for steps
t + s .. t + H - 1 are queued when the next query is made at t + s (s = H - q, q = --queue_threshold);
then the next chunk from the observation of t + s, unguided and guided (`--execution rtc`'s
Inpainting, delay --delay) with each ceiling beta. Prints JSON: per beta, the mean over observations
of the largest joint difference (normalised action units) between the new chunk and the queue at the
switch (position d) and over the held positions (< d). A denoiser whose clean chunk hardly depends
on its noisy input (a clean-chunk predictor of a task it is sure of) leaves the guidance little to
move: its vector-Jacobian product is small.

    python -m bench.rtc_guidance --ckpt_dir diffusion/ckpt --dataset_dir diffusion/sim_transfer_cube_scripted
"""
import argparse

import numpy as np
import torch

from bench.common import print_report, stdout_to_stderr
from bench.deploy_latency import eval_settings


def observation(episodes, normalizer, settings, index, t):
    """Recorded qpos (1, S) normalised and images (1, K, 3, H, W) in [0, 1] of one step."""
    from formats.images import resize_images
    from policies.inputs import image_to_tensor
    qpos = torch.from_numpy(normalizer.normalize_qpos(episodes.low_dim(index)[0][t:t + 1].astype(np.float32)))
    images = np.stack([resize_images(episodes.frames(index, cam, [t]), settings.image_size)
                       for cam in settings.camera_names], axis=1)  # (1, K, H, W, 3)
    return qpos, image_to_tensor(images, 'cpu')


def main(args):
    from evaluation.rollout import load_policy, load_stats
    from formats.datasets import open_dataset
    from policies.rtc import Inpainting
    torch.set_num_threads(args['threads'])
    settings = eval_settings(args['ckpt_dir'])
    with stdout_to_stderr():  # the loading messages; stdout carries the JSON
        policy, normalizer = load_policy(settings, args['ckpt']).eval(), load_stats(settings)
    episodes = open_dataset(args['dataset_dir'])
    horizon, delay = policy.chunk_size, args['delay']
    executed = horizon - args['queue_threshold']  # s, the actions played before the next query
    rng = np.random.default_rng(0)
    found = {str(beta): [] for beta in [None, *args['betas']]}
    for k in range(args['observations']):
        index = int(rng.integers(episodes.num_episodes))
        t = int(rng.integers(len(episodes.low_dim(index)[0]) - executed))
        torch.manual_seed(k)
        queue = list(policy.action_chunk(*observation(episodes, normalizer, settings, index, t))[0][executed:])
        queued = torch.stack(queue)  # (q, A)
        for beta in [None, *args['betas']]:
            torch.manual_seed(10_000 + k)  # the same initial noise for every beta
            inpainting = None if beta is None else Inpainting.of_queue(queue, delay, horizon, beta)
            chunk = policy.action_chunk(*observation(episodes, normalizer, settings, index, t + executed),
                                        inpainting=inpainting)[0]  # (H, A)
            found[str(beta)].append(((chunk[delay] - queued[delay]).abs().max().item(),
                                     (chunk[:delay] - queued[:delay]).abs().max(dim=1).values.mean().item()))
    report = {'ckpt_dir': args['ckpt_dir'], 'delay': delay, 'queue_threshold': args['queue_threshold'],
              'observations': args['observations']}
    for beta, pairs in found.items():
        switch, held = np.mean(pairs, axis=0)
        report['unguided' if beta == 'None' else f'beta_{beta}'] = {'switch': round(float(switch), 4),
                                                                     'held': round(float(held), 4)}
    print_report(report)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt_dir', required=True, help='a trained Diffusion run')
    parser.add_argument('--ckpt', default='policy_last.ckpt')
    parser.add_argument('--dataset_dir', required=True, help='its training episodes')
    parser.add_argument('--delay', type=int, default=10, help='d, the positions held to the queue')
    parser.add_argument('--queue_threshold', type=int, default=50, help='q, the actions queued at the query')
    parser.add_argument('--betas', type=float, nargs='+', default=[5.0, 20.0, 100.0], help='guidance ceilings')
    parser.add_argument('--observations', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1)
    return vars(parser.parse_args(argv))


if __name__ == '__main__':
    main(parse_args())
