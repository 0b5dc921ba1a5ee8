"""ACT/CNNMLP latency: one inference query and one training forward+backward, optimised vs original.

The baseline is the original computation (detr/reference.py: sequence-first tensors, reference
attention, every decoder layer, contiguous NCHW trunk) on a copy of the same weights, timed in the
same run, alternating with the optimised policy, so a CPU shared with other work slows both alike.
Prints one JSON object: medians of wall-clock and process CPU milliseconds (with --threads 1 the
CPU-time ratio hardly depends on other work sharing the CPU).

    python -m bench.policy_latency                 # README config, CPU (+ CUDA if present)
    python -m bench.policy_latency --skip_train --reps 5
"""
import copy

import torch
import torch.nn.functional as F

from bench.common import (alternate, latency_parser, machine_report, print_report, readme_act_config, set_threads,
                          speedups)
from detr.reference import original_forward, original_trunk, randomise_batch_norm
from policies.act import ACTPolicy, CNNMLPPolicy, kl_divergence

CNNMLP_CONFIG = {'lr': 1e-5, 'lr_backbone': 1e-5, 'backbone': 'resnet18', 'num_queries': 1,
                 'camera_names': ['top'], 'pretrained_backbone': False}


def syncer(device):
    """What alternate() calls to wait for the device (None on the CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else None


def unoptimised_copy(policy):
    """A copy of the policy whose trunks hold plain contiguous (NCHW) weights, as the original."""
    ref = copy.deepcopy(policy)
    for joiner in ref.model.backbones:
        joiner[0].body.to(memory_format=torch.contiguous_format)
    return ref


def reference_cnnmlp(model, qpos, image):
    bs = qpos.shape[0]
    flat = [model.backbone_down_projs[i](original_trunk(model.backbones[i][0].body, image[:, i])).reshape(bs, -1)
            for i in range(len(model.camera_names))]
    return model.mlp(torch.cat(flat + [qpos], dim=1))


def act_inputs(cfg, batch, image_hw, device):
    n_cams = len(cfg['camera_names'])
    qpos = torch.randn(batch, 14, device=device)
    image = torch.rand(batch, n_cams, 3, *image_hw, device=device)
    actions = torch.randn(batch, cfg['num_queries'], 14, device=device)
    is_pad = torch.zeros(batch, cfg['num_queries'], dtype=torch.bool, device=device)
    is_pad[:, -10:] = True
    return qpos, image, actions, is_pad


def bench_act_query(policy, ref, device, image_hw, reps, with_bf16):
    qpos, image, _, _ = act_inputs(policy.cfg, 1, image_hw, device)

    def original():
        with torch.inference_mode():  # the original evaluation loop ran in inference mode too
            return original_forward(ref.model, qpos, ref.normalize(image))[0]

    fns = {'original': original, 'optimised_fp32': lambda: policy(qpos, image)}
    medians, outs = alternate(fns, reps, sync=syncer(device))
    result = dict(medians, **speedups(medians, 'original', 'optimised_fp32'),
                  max_abs_diff_fp32=(outs['optimised_fp32'] - outs['original']).abs().max().item(),
                  max_abs_action=outs['original'].abs().max().item())
    if with_bf16:
        policy.cfg['amp'] = 'bf16'
        bf16, outs_bf16 = alternate({'optimised_bf16': lambda: policy(qpos, image)}, max(2, reps // 3),
                                     sync=syncer(device))
        policy.cfg['amp'] = 'off'
        result.update(bf16, speedup_bf16_wall=round(medians['original']['wall_ms'] / bf16['optimised_bf16']['wall_ms'], 2),
                      max_abs_diff_bf16=(outs_bf16['optimised_bf16'] - outs['original']).abs().max().item())
    return result


def bench_act_train(policy, ref, device, image_hw, batch, reps):
    qpos, image, actions, is_pad = act_inputs(policy.cfg, batch, image_hw, device)
    policy.train()
    ref.train()

    def original():
        a_hat, _, mu, logvar = original_forward(ref.model, qpos, ref.normalize(image), actions, is_pad)
        l1 = (F.l1_loss(actions, a_hat, reduction='none') * ~is_pad.unsqueeze(-1)).mean()
        loss = l1 + kl_divergence(mu, logvar) * ref.kl_weight
        loss.backward()
        ref.zero_grad(set_to_none=True)

    def optimised():
        policy(qpos, image, actions, is_pad)['loss'].backward()
        policy.zero_grad(set_to_none=True)

    medians, _ = alternate({'original': original, 'optimised': optimised}, reps, sync=syncer(device))
    policy.eval()
    ref.eval()
    return dict(medians, batch_size=batch, **speedups(medians, 'original', 'optimised'))


def bench_cnnmlp_query(device, image_hw, reps):
    policy = CNNMLPPolicy(dict(CNNMLP_CONFIG, image_size=image_hw)).to(device).eval()
    randomise_batch_norm(policy)
    ref = unoptimised_copy(policy)
    qpos, image, _, _ = act_inputs(CNNMLP_CONFIG, 1, image_hw, device)

    def original():
        with torch.inference_mode():
            return reference_cnnmlp(ref.model, qpos, ref.normalize(image))

    medians, outs = alternate({'original': original, 'optimised': lambda: policy(qpos, image)}, reps,
                               sync=syncer(device))
    return dict(medians, **speedups(medians, 'original', 'optimised'),
                max_abs_diff=(outs['optimised'] - outs['original']).abs().max().item())


def run_device(device, args):
    torch.manual_seed(0)
    policy = ACTPolicy(readme_act_config()).to(device).eval()
    randomise_batch_norm(policy)
    ref = unoptimised_copy(policy)
    result = {'act_query': bench_act_query(policy, ref, device, args['image_size'], args['reps'],
                                           with_bf16=not args['skip_bf16'])}
    if not args['skip_cnnmlp']:
        result['cnnmlp_query'] = bench_cnnmlp_query(device, tuple(args['image_size']), args['reps'])
    if not args['skip_train']:
        result['act_train_step'] = bench_act_train(policy, ref, device, args['image_size'], args['batch_size'],
                                                   args['train_reps'])
    return result


def main(args):
    set_threads(args)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    report = {'config': 'README ACT: 1 camera, qpos 14, chunk 100, hidden 512, ff 3200, 4 enc / 7 dec layers, 8 heads',
              'image_size': list(args['image_size']), **machine_report()}
    for name in devices:
        report[name] = run_device(torch.device(name), args)
    print_report(report)


if __name__ == '__main__':
    parser = latency_parser(__doc__.split('\n')[0], reps=15)
    parser.add_argument('--skip_bf16', action='store_true', help='skip the bf16 autocast query')
    parser.add_argument('--skip_cnnmlp', action='store_true', help='skip the CNNMLP query')
    main(vars(parser.parse_args()))
