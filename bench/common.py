"""What the benchmarks share: the README's ACT config, a report of the machine, alternating A/B
timing (a CPU shared with other work slows both sides alike, so ratios within a run hold), and
stdout kept for the JSON report. torch is imported only where used: render_cost.py runs with
nothing but mujoco and numpy too."""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time


def readme_act_config(**overrides):
    """The README recipe's ACT policy config (one 'top' camera; its sizes are ACT's defaults), with
    random initial weights: speed does not depend on them."""
    from policies.act import ACT_DEFAULTS
    return {**ACT_DEFAULTS, 'camera_names': ['top'], 'pretrained_backbone': False, **overrides}


def latency_parser(description, reps):
    """The flags the latency benchmarks share: repetitions, batch, image size, threads, skipping training.
    `threads` is applied by set_threads(args)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--reps', type=int, default=reps, help='timed queries per variant')
    parser.add_argument('--train_reps', type=int, default=3, help='timed training steps per variant')
    parser.add_argument('--batch_size', type=int, default=8, help='training step batch size')
    parser.add_argument('--image_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, help="torch CPU threads (default: torch's choice); 1 makes "
                        'CPU-time ratios robust to a shared CPU')
    parser.add_argument('--skip_train', action='store_true', help='skip the training steps')
    return parser


def set_threads(args):
    import torch
    if args['threads']:
        torch.set_num_threads(args['threads'])


def machine_report():
    """Versions, threads, CPU capability and load, to say where and how busy a run was."""
    report = {'machine': platform.machine(), 'cpu_count': os.cpu_count(), 'load_avg_start': os.getloadavg()[0]}
    with contextlib.suppress(ImportError):
        import torch
        report.update(torch=torch.__version__, threads=torch.get_num_threads(),
                      cpu_capability=torch.backends.cpu.get_cpu_capability())
    return report


def timed(fn, sync=None):
    """(wall ms, process CPU ms, output) of one call; sync() waits for an accelerator."""
    if sync:
        sync()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if sync:
        sync()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, out


def alternate(fns, reps, warmup=1, sync=None):
    """Run each of {name: fn} in turn `reps` times after `warmup` calls each.

    Returns ({name: {'wall_ms', 'cpu_ms'} medians}, {name: last output})."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: {'wall_ms': [], 'cpu_ms': []} for name in fns}
    outs = {}
    for _ in range(reps):
        for name, fn in fns.items():
            wall, cpu, outs[name] = timed(fn, sync)
            times[name]['wall_ms'].append(wall)
            times[name]['cpu_ms'].append(cpu)
    return {name: {k: round(statistics.median(v), 1) for k, v in t.items()} for name, t in times.items()}, outs


def speedups(medians, base, new):
    """{'speedup_wall', 'speedup_cpu'} of `new` over `base` from alternate()'s medians."""
    return {f'speedup_{k[:-3]}': round(medians[base][k] / medians[new][k], 2) for k in ('wall_ms', 'cpu_ms')}


@contextlib.contextmanager
def stdout_to_stderr():
    """Progress prints of this process and its workers go to stderr: stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_report(report):
    """The benchmark's one JSON object on stdout, with the load at the end of the run."""
    report['load_avg_end'] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))
