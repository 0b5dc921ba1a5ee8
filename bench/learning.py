"""Learning quality over seeds: a published recipe (demo.py) run from nothing once per seed, then the
success rates' mean and range, as the ACT paper reports each figure (3 seeds x 50 rollouts).

    python -m bench.learning --recipe cpu --seeds 0 1 2            # make recipe, three seeds
    python -m bench.learning --recipe diffusion --seeds 0 1 2 --out learning

Each seed runs `python demo.py --recipe R --out <out>/<R>_seed<s> --seed s`: its own episodes
recorded with the seed, its own training with the seed, and 50 rollouts with the original's
evaluation seed (the same poses for every seed). With --parallel 2 (the default) two seeds run side
by side with one thread and one worker each, the fastest use of two cores. An interrupted sweep is
resumed: a finished seed's figures are kept in <out>/<R>_sweep.json, a half-done one goes on where
demo.py stopped (its episodes, an interrupted training). Each seed's output goes to its demo.log.

Prints JSON: per seed the success rate, the rollouts reaching each reward stage, the average
return, the minutes of each step and the peak resident memory of its largest process; then the
mean, lowest and highest success rate.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import demo  # the recipes' definitions
from common.files import atomic_write
from evaluation.results import read_result_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KIB_PER_GIB = 1024 ** 2


def seed_folder(args, seed):
    return os.path.join(args['out'], f"{args['recipe']}_seed{seed}")


def sweep_path(args):
    return os.path.join(args['out'], f"{args['recipe']}_sweep.json")


def read_sweep(args):
    """The figures of the seeds finished so far -> {str(seed): figures}."""
    path = sweep_path(args)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def demo_command(args, seed):
    workers = '1' if args['parallel'] > 1 else '2'
    command = ['demo.py', '--recipe', args['recipe'], '--out', seed_folder(args, seed), '--seed', str(seed),
               '--workers', workers]
    if args['num_steps']:
        command += ['--num_steps', str(args['num_steps'])]
    return command


def start(args, seed):
    """Launch one seed's demo.py -> the process (its output in <folder>/demo.log)."""
    folder = seed_folder(args, seed)
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1') if args['parallel'] > 1 else None
    log = open(os.path.join(folder, 'demo.log'), 'a')
    print(f"learning: seed {seed}: python {' '.join(demo_command(args, seed))}", file=sys.stderr, flush=True)
    process = subprocess.Popen([sys.executable, *demo_command(args, seed)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def seed_figures(args, seed, peak_kib):
    """What one finished seed measured: its result file, demo.py's step times and the peak memory."""
    folder = seed_folder(args, seed)
    result = read_result_file(os.path.join(folder, 'ckpt', demo.RESULT_FILE))
    minutes = {step: round(s / 60, 2) for step, s in demo.read_timings(folder).items()}
    return {'seed': seed, 'command': 'python ' + ' '.join(demo_command(args, seed)),
            'success_rate': result['success_rate'], 'num_rollouts': result['num_rollouts'],
            'stages': result['stages'], 'average_return': result['average_return'],
            'minutes': {**minutes, 'total': round(sum(minutes.values()), 2)},
            'peak_rss_gib': round(peak_kib / KIB_PER_GIB, 2)}


def run_seeds(args, done):
    """Run the seeds not in `done`, `parallel` at a time; each finished seed is added to `done` and
    saved at once, so an interruption loses at most the seeds still running."""
    waiting = [seed for seed in args['seeds'] if str(seed) not in done]
    # pid: (seed, its Popen). The Popen is kept: one dropped while its process runs is reaped by the next
    # Popen's clean-up, and the wait below would miss it
    running = {}
    while waiting or running:
        while waiting and len(running) < args['parallel']:
            seed = waiting.pop(0)
            process = start(args, seed)
            running[process.pid] = seed, process
        pid, status, usage = os.wait4(-1, 0)  # ru_maxrss: the largest process of the seed's tree, KiB
        seed, _ = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f'learning: seed {seed} stopped (see {seed_folder(args, seed)}/demo.log); '
                             'run the same command again to go on')
        done[str(seed)] = seed_figures(args, seed, usage.ru_maxrss)
        atomic_write(sweep_path(args), lambda f: json.dump(done, f, indent=1), mode='w')
    return done


def summary(args, done):
    seeds = [done[str(seed)] for seed in args['seeds']]
    rates = [s['success_rate'] for s in seeds]
    return {'recipe': args['recipe'], 'seeds': seeds, 'success_mean': statistics.mean(rates),
            'success_min': min(rates), 'success_max': max(rates),
            'training_minutes_mean': statistics.mean(s['minutes'].get('training', 0.0) for s in seeds)}


def main(args):
    os.makedirs(args['out'], exist_ok=True)
    done = run_seeds(args, read_sweep(args))
    print(json.dumps(summary(args, done), indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--recipe', choices=sorted(set(demo.RECIPES) - {'demo'}), default='cpu')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--parallel', type=int, default=2,
                        help='seeds run side by side, one thread and one worker each when more than 1')
    parser.add_argument('--out', default='learning', help='folder of the seeds\' runs and the sweep file')
    parser.add_argument('--num_steps', type=int, help="training steps (default: the recipe's)")
    args = vars(parser.parse_args(argv))
    if args['parallel'] < 1:
        parser.error(f"--parallel must be at least 1, got {args['parallel']}")
    if len(set(args['seeds'])) != len(args['seeds']):
        parser.error(f"--seeds must differ, got {args['seeds']}")
    return args


if __name__ == '__main__':
    main(parse_args())
