"""Deployment latency: one policy query through each runtime, from raw qpos and uint8 images to raw
actions, at the README config and at the first CPU recipe's config (120x160, 4 encoder layers; the
recipe now uses 96x128 and 2), with 1 and 2 threads. Prints JSON.

Runtimes, timed alternately in one run (a CPU shared with other work slows all alike): the
original computation (detr/reference.py on a copy of the weights, as evaluation ran it), eager fp32
(the policy as evaluation/rollout.py runs it), TorchScript, onnxruntime fp32, static int8 (calibrated)
and dynamic int8 (export_policy.py through policy_runtime.PolicyRunner), and OpenVINO on the fp32 and
the static int8 ONNX files (PolicyRunner's engine 'openvino'; it runs the QDQ graph's int8 kernels).
Per runtime: p50 / p99 milliseconds, queries per second, the largest action difference to eager fp32
over held-out observations, and (separately, one process per runtime) the peak resident memory of
loading it and answering queries. Diffusion (10 denoising steps by default, with DDIM and with
DPM-Solver++) is timed eager and through onnxruntime and OpenVINO beside the ACT query. Weights are
random unless --ckpt_dir names a trained CPU-recipe run (then its observations come from
--dataset_dir episodes).

    python -m bench.deploy_latency
    python -m bench.deploy_latency --configs cpu_recipe --ckpt_dir ckpt/cube_cpu --dataset_dir data/cube_120
"""
import argparse
import copy
import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import torch

from bench.common import machine_report, print_report, readme_act_config, stdout_to_stderr
from checkpoints.folder import make_run_config, write_config
from deploy.samplers import SAMPLERS
from detr.reference import original_forward, randomise_batch_norm
from policies.act import ACTPolicy
from policies.registry import make_policy

CONFIGS = {  # name: (ACT policy_config overrides, image (H, W))
    'readme': ({}, (480, 640)),
    'cpu_recipe': ({'num_queries': 50, 'hidden_dim': 256, 'dim_feedforward': 1024, 'enc_layers': 4, 'dec_layers': 1,
                    'nheads': 8}, (120, 160)),
}
STATE_DIM = 14
HELD_OUT = 8  # observations the action differences are measured over
TASK = 'sim_transfer_cube_scripted'


def random_stats(state_dim, rng):
    stats = {'qpos_mean': rng.normal(0, 0.5, state_dim), 'qpos_std': rng.uniform(0.2, 1, state_dim),
             'action_mean': rng.normal(0, 0.5, state_dim), 'action_std': rng.uniform(0.2, 1, state_dim)}
    stats = {k: v.astype(np.float32) for k, v in stats.items()}
    stats.update(action_min=stats['action_mean'] - 2, action_max=stats['action_mean'] + 2,
                 example_qpos=np.zeros((5, state_dim), np.float32))
    return stats


def random_run(folder, policy_class, policy_config, image_hw):
    """A training folder with random weights (batch norms too) and random statistics."""
    torch.manual_seed(0)
    policy = make_policy(policy_class, policy_config, load_pretrained=False)
    randomise_batch_norm(policy)
    os.makedirs(folder, exist_ok=True)
    torch.save(policy.serialize(), os.path.join(folder, 'policy_best.ckpt'))
    with open(os.path.join(folder, 'dataset_stats.pkl'), 'wb') as f:
        pickle.dump(random_stats(STATE_DIM, np.random.default_rng(0)), f)
    write_config(folder, make_run_config(policy_class, policy.cfg, TASK, image_hw))
    return folder


def eval_settings(ckpt_dir):
    from checkpoints.folder import read_config
    from evaluation.settings import EvalSettings
    saved = read_config(ckpt_dir)
    return EvalSettings(ckpt_dir=ckpt_dir, task_name=saved['task_name'], policy_class=saved['policy_class'],
                        policy_config=saved['policy_config'], camera_names=saved['camera_names'], episode_len=1,
                        real_robot=False, image_size=tuple(saved['image_size']))


def observations(camera_names, image_size, dataset_dir, count, rng):
    """count held-out (qpos (S,) float32, images (K, H, W, 3) uint8): from episodes, or random."""
    if dataset_dir is None:
        height, width = image_size
        return [(rng.normal(size=STATE_DIM).astype(np.float32),
                 rng.integers(0, 256, (len(camera_names), height, width, 3), dtype=np.uint8))
                for _ in range(count)]
    from formats.datasets import open_dataset
    from formats.images import resize_images
    data = open_dataset(dataset_dir)
    last = data.num_episodes - 1  # training held the first episodes out for validation at random: take the last
    episode = data.read_episode(last, cameras=camera_names)
    steps = np.linspace(0, len(episode.qpos) - 1, count).astype(int)
    return [(episode.qpos[t].astype(np.float32),
             resize_images(np.stack([episode.images[cam][t] for cam in camera_names]), image_size))
            for t in steps]


def eager_fns(settings, threads):
    """{'eager_fp32', and for ACT 'original'}: raw (qpos (S,), images (K, H, W, 3)) -> raw chunk (chunk, A)."""
    from deploy.export import images_to_unit
    from evaluation.rollout import load_policy, load_stats
    policy, normalizer = load_policy(settings, 'policy_best.ckpt').eval(), load_stats(settings)

    def run(forward):
        def query(qpos, images):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                q = torch.from_numpy(normalizer.normalize_qpos(qpos))[None]
                image = images_to_unit(torch.from_numpy(images))[None]  # (1, K, 3, H, W)
                return normalizer.unnormalize_action(forward(q, image)[0].numpy())
        return query
    fns = {'eager_fp32': run(lambda q, im: policy.action_chunk(q, im))}
    if isinstance(policy, ACTPolicy):  # the original's forward pass exists for ACT only
        reference = copy.deepcopy(policy)
        for joiner in reference.model.backbones:
            joiner[0].body.to(memory_format=torch.contiguous_format)
        fns['original'] = run(lambda q, im: original_forward(reference.model, q, reference.normalize(im))[0])
    return fns


def runner_fn(folder, threads, engine='onnxruntime'):
    from deploy.runtime import PolicyRunner
    runner = PolicyRunner(folder, threads=threads, engine=engine)
    batch = (None,) * (2 if runner.sampled else 1)  # a sampled policy's observations: an obs_horizon axis of 1
    return lambda qpos, images: runner.query(qpos[batch], images[batch])[0]


def timings(fns, obs, reps):
    """{name: p50_ms, p99_ms, qps} with the runtimes alternating, and each one's outputs over obs."""
    from bench.common import timed
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn(*obs[0])  # warm-up
    for i in range(reps):
        for name, fn in fns.items():
            samples[name].append(timed(lambda: fn(*obs[i % len(obs)]))[0])
    out = {}
    for name, ms in samples.items():
        out[name] = {'p50_ms': round(float(np.percentile(ms, 50)), 1), 'p99_ms': round(float(np.percentile(ms, 99)), 1),
                     'qps': round(1000 / float(np.mean(ms)), 2)}
    return out


def differences(fns, obs, reference='eager_fp32'):
    outputs = {name: np.stack([fn(*o) for o in obs]) for name, fn in fns.items()}
    return {name: float(np.abs(out - outputs[reference]).max()) for name, out in outputs.items()}


PEAK_RSS_SCRIPT = '''
import sys
import numpy as np
kind, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind in ('original', 'eager_fp32'):
    from bench.deploy_latency import eager_fns, eval_settings
    settings = eval_settings(folder)
    fn, cameras, (height, width) = eager_fns(settings, threads)[kind], settings.camera_names, settings.image_size
else:  # the runtime alone, as on a robot: no torch
    from deploy.runtime import PolicyRunner
    runner = PolicyRunner(folder, threads=threads, engine='openvino' if kind.startswith('openvino') else 'onnxruntime')
    fn, cameras, (height, width) = (lambda q, im: runner.query(q[None], im[None])), runner.camera_names, \
        runner.image_size
rng = np.random.default_rng(0)
for _ in range(3):
    fn(rng.normal(size=14).astype(np.float32), rng.integers(0, 256, (len(cameras), height, width, 3), dtype=np.uint8))
print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])
'''


def peak_rss_mb(kind, folder, threads):
    """Peak resident memory (MiB, VmHWM) of a fresh process that loads `kind` and answers 3 queries."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, '-c', PEAK_RSS_SCRIPT, kind, folder, str(threads)],
                          capture_output=True, text=True, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f'peak memory of {kind} failed: {done.stderr[-2000:]}')
    return round(int(done.stdout.strip().splitlines()[-1]) / 1024, 1)


def bench_config(name, ckpt_dir, dataset_dir, work, args):
    from deploy.export import export
    settings = eval_settings(ckpt_dir)
    calibration = observations(settings.camera_names, settings.image_size, dataset_dir, args['calibration'],
                               np.random.default_rng(3))
    folders = {}
    for variant, flags in (('onnxruntime_fp32', ('onnx', None)), ('onnxruntime_int8', ('onnx', 'int8')),
                           ('onnxruntime_int8_dynamic', ('onnx', 'int8-dynamic')),
                           ('torchscript', ('torchscript', None))):
        folders[variant] = os.path.join(work, f'{name}_{variant}')
        export(settings, 'policy_best.ckpt', flags[0], folders[variant], quantize=flags[1], overwrite=True,
               calibration=calibration if flags[1] == 'int8' else None)
    obs = observations(settings.camera_names, settings.image_size, dataset_dir, HELD_OUT, np.random.default_rng(1))
    result = {'image_size': list(settings.image_size), 'chunk_size': settings.policy_config['num_queries'],
              'trained_checkpoint': dataset_dir is not None}
    for threads in args['threads']:
        fns = eager_fns(settings, threads)
        fns.update({variant: runner_fn(folder, threads) for variant, folder in folders.items()})
        fns['openvino_fp32'] = runner_fn(folders['onnxruntime_fp32'], threads, 'openvino')
        fns['openvino_int8'] = runner_fn(folders['onnxruntime_int8'], threads, 'openvino')  # the QDQ graph
        times = timings(fns, obs, args['reps'])
        for variant, diff in differences(fns, obs).items():
            times[variant]['max_abs_diff_vs_eager_fp32'] = diff
        if not args['skip_memory']:
            for variant in ('original', 'eager_fp32'):
                times[variant]['peak_rss_mb'] = peak_rss_mb(variant, ckpt_dir, threads)
            for variant, folder in folders.items():
                times[variant]['peak_rss_mb'] = peak_rss_mb(variant, folder, threads)
            for precision in ('fp32', 'int8'):
                times[f'openvino_{precision}']['peak_rss_mb'] = peak_rss_mb(
                    f'openvino_{precision}', folders[f'onnxruntime_{precision}'], threads)
        base = times['original']['p50_ms']
        for variant in times:
            times[variant]['speedup_vs_original'] = round(base / times[variant]['p50_ms'], 2)
        result[f'threads_{threads}'] = times
    return result


def diffusion_export(work, sampler, steps):
    """A random README-size Diffusion run sampling with `sampler`, and its ONNX export -> (settings, folder)."""
    from deploy.export import export
    config = {'camera_names': ['top'], 'num_queries': 100, 'state_dim': STATE_DIM, 'action_dim': STATE_DIM,
              'num_inference_steps': steps, 'scheduler': sampler, 'pretrained_backbone': False, 'lr': 1e-4}
    settings = eval_settings(random_run(os.path.join(work, f'diffusion_{sampler}'), 'Diffusion', config, (480, 640)))
    folder = os.path.join(work, f'diffusion_{sampler}_onnx')
    export(settings, 'policy_best.ckpt', 'onnx', folder, overwrite=True)
    return settings, folder


def bench_diffusion(work, args):
    """A Diffusion query (README image size, chunk 100, DDIM or DPM-Solver++ steps) eager and through
    onnxruntime and OpenVINO, beside ACT."""
    from deploy.export import export
    steps = args['diffusion_steps']
    exports = {sampler: diffusion_export(work, sampler, steps) for sampler in args['samplers']}
    settings = exports[args['samplers'][0]][0]
    act_dir = random_run(os.path.join(work, 'act_readme'), 'ACT', readme_act_config(), (480, 640))
    threads = max(args['threads'])
    obs = observations(settings.camera_names, settings.image_size, None, 2, np.random.default_rng(2))
    act_folder = os.path.join(work, 'readme_onnxruntime_fp32')
    if not os.path.isdir(act_folder):
        export(eval_settings(act_dir), 'policy_best.ckpt', 'onnx', act_folder)
    fns = {'act_eager': eager_fns(eval_settings(act_dir), threads)['eager_fp32'],
           'act_onnxruntime': runner_fn(act_folder, threads)}
    for sampler, (sampler_settings, folder) in exports.items():
        fns.update({f'diffusion_{sampler}_eager': eager_fns(sampler_settings, threads)['eager_fp32'],
                    f'diffusion_{sampler}_onnxruntime': runner_fn(folder, threads),
                    f'diffusion_{sampler}_openvino': runner_fn(folder, threads, 'openvino')})
    times = timings(fns, obs, max(3, args['reps'] // 4))
    ratios = {f'ratio_diffusion_{sampler}_to_act_{runtime}': round(
        times[f'diffusion_{sampler}_{runtime}']['p50_ms'] / times[f'act_{runtime}']['p50_ms'], 2)
        for sampler in exports for runtime in ('eager', 'onnxruntime')}
    return {'denoising_steps': steps, 'threads': threads, **times, **ratios}


def main(args):
    report = {'configs': {}, **machine_report()}
    with tempfile.TemporaryDirectory() as work, stdout_to_stderr():
        for name in args['configs']:
            overrides, image_hw = CONFIGS[name]
            if args['ckpt_dir'] and name == 'cpu_recipe':
                ckpt_dir, dataset_dir = args['ckpt_dir'], args['dataset_dir']
            else:
                ckpt_dir = random_run(os.path.join(work, name), 'ACT', readme_act_config(**overrides), image_hw)
                dataset_dir = None
            report['configs'][name] = bench_config(name, ckpt_dir, dataset_dir, work, args)
        if not args['skip_diffusion']:
            report['diffusion'] = bench_diffusion(work, args)
    print_report(report)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='*', choices=list(CONFIGS), default=list(CONFIGS),
                        help='ACT configs to measure (none: the Diffusion query only)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='CPU threads of every runtime')
    parser.add_argument('--reps', type=int, default=20, help='timed queries per runtime and thread count')
    parser.add_argument('--diffusion_steps', type=int, default=10, help='denoising steps of the Diffusion query')
    parser.add_argument('--samplers', nargs='+', choices=SAMPLERS, default=list(SAMPLERS),
                        help='Diffusion samplers to time, each with --diffusion_steps steps')
    parser.add_argument('--ckpt_dir', help='a trained CPU-recipe run to measure instead of random weights')
    parser.add_argument('--dataset_dir', help='with --ckpt_dir: episodes whose last one gives the observations')
    parser.add_argument('--calibration', type=int, default=32, help='observations the static int8 export calibrates '
                        'on (from --dataset_dir, else random: the speed is the same, the action difference is not)')
    parser.add_argument('--skip_memory', action='store_true', help='skip the peak-memory processes')
    parser.add_argument('--skip_diffusion', action='store_true', help='skip the Diffusion query')
    main(vars(parser.parse_args()))
