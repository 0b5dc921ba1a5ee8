"""Success under inference delay: a trained checkpoint evaluated in simulation with the asynchronous
executor at several deterministic delays and each strategy, beside its synchronous evaluations.

    python -m bench.realtime --ckpt_dir recipe/ckpt --dataset_dir recipe/sim_transfer_cube_scripted
    python -m bench.realtime --ckpt_dir diffusion/ckpt --queue_threshold 50   # replace, ensemble and rtc
    python -m bench.realtime --ckpt_dir dp/ckpt --delays 0 5 10 --strategies replace --num_rollouts 20

The strategies are those the checkpoint's policy takes (rtc: Diffusion only) unless --strategies
names some; --queue_threshold N sets every asynchronous case's threshold (a Diffusion chunk of 100
queried at every step by ensemble's default would take hours on a CPU).

Each case runs `imitate_episodes.py --eval --inference_delay D --execution S`, or `--realtime` (the
delay this machine's inference takes, which other work sharing the CPU lengthens), with the
original's evaluation seed (the same poses for every case), in a folder of its own that links the checkpoint's
files, so the checkpoint folder's own results are left as they are; a case already evaluated is
read back, so an interrupted sweep resumes. Prints JSON: per case the success rate, the reward
stages, the largest joint change at a chunk switch and in one step, the jerk, the delays met and
the starved steps; with --dataset_dir, the demonstrations' largest per-step change beside them.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from checkpoints.folder import CONFIG_FILE, STATS_FILE, read_config
from evaluation.execution import demonstration_step_change
from evaluation.results import result_file_name
from formats.datasets import open_dataset
from policies.executor import GUIDED, STRATEGIES
from policies.registry import get_policy_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNCHRONOUS = {'sync_chunked': [], 'sync_temporal_agg': ['--temporal_agg']}  # the original's evaluations


def cases(args):
    """{name: the evaluation's extra flags}: the synchronous ones, each delay and strategy, then each
    strategy at this machine's own inference time (--realtime)."""
    found = dict(SYNCHRONOUS) if args['synchronous'] else {}
    threshold = [] if args['queue_threshold'] is None else ['--queue_threshold', str(args['queue_threshold'])]
    for delay in args['delays']:
        for strategy in args['strategies']:
            found[f'{strategy}_d{delay}'] = ['--inference_delay', str(delay), '--execution', strategy, *threshold]
    if args['realtime']:
        found.update({f'{strategy}_realtime': ['--realtime', '--execution', strategy, *threshold]
                      for strategy in args['strategies']})
    return found


def strategies_of(ckpt_dir):
    """The strategies a checkpoint's policy executes with: rtc guides a Diffusion policy only."""
    config = read_config(ckpt_dir)
    sampled = config is not None and get_policy_class(config['policy_class']).samples
    return [s for s in STRATEGIES if sampled or s not in GUIDED]


def case_folder(args, name):
    """<out>/<name>, linking the checkpoint's files (its weights, statistics and config.json)."""
    folder = os.path.join(args['out'], name)
    os.makedirs(folder, exist_ok=True)
    for file in (args['ckpt'], STATS_FILE, CONFIG_FILE):
        link = os.path.join(folder, file)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(args['ckpt_dir'], file)), link)
    return folder


def evaluate(args, name, flags, bench='realtime'):
    """One case's result_<ckpt>.json, evaluated now unless an earlier run left it (bench: who says so)."""
    folder = case_folder(args, name)
    path = os.path.join(folder, os.path.splitext(result_file_name(args['ckpt']))[0] + '.json')
    if not os.path.isfile(path):
        command = [sys.executable, 'imitate_episodes.py', '--eval', '--ckpt_dir', folder, '--eval_ckpt', args['ckpt'],
                   '--num_rollouts', str(args['num_rollouts']), '--eval_workers', str(args['eval_workers']),
                   '--no_video', *flags]
        print(f'{bench}: {name}: {" ".join(command[1:])}', file=sys.stderr, flush=True)
        start = time.perf_counter()
        with open(os.path.join(folder, 'eval.log'), 'w') as log:
            done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, OMP_NUM_THREADS='1'))
        if done.returncode != 0:
            raise SystemExit(f'{bench}: the {name} evaluation failed (see {folder}/eval.log)')
        print(f'{bench}: {name}: {time.perf_counter() - start:.0f} s', file=sys.stderr, flush=True)
    with open(path) as f:
        return json.load(f)


def case_report(record):
    keys = ('success_rate', 'stages', 'max_switch_jump', 'max_step_change', 'mean_jerk', 'delay_distribution',
            'starved_steps', 'dropped_actions')
    return {key: record[key] for key in keys if key in record}


def main(args):
    args['strategies'] = args['strategies'] or strategies_of(args['ckpt_dir'])
    report = {'ckpt_dir': args['ckpt_dir'], 'checkpoint': args['ckpt'], 'num_rollouts': args['num_rollouts'],
              'queue_threshold': args['queue_threshold']}
    if args['dataset_dir']:
        episodes = open_dataset(args['dataset_dir'])
        actions = [episodes.low_dim(i)[1] for i in range(episodes.num_episodes)]
        report['demonstrations_max_step_change'] = demonstration_step_change(actions)
    report['cases'] = {name: case_report(evaluate(args, name, flags)) for name, flags in cases(args).items()}
    print(json.dumps(report, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt_dir', required=True, help='a trained run (config.json, dataset_stats.pkl)')
    parser.add_argument('--ckpt', default='policy_last.ckpt', help='the checkpoint in --ckpt_dir')
    parser.add_argument('--dataset_dir', help='its training episodes, for the demonstrations\' largest step change')
    parser.add_argument('--delays', type=int, nargs='*', default=[0, 2, 5, 10, 20],
                        help='--inference_delay values (none: only the --realtime cases)')
    parser.add_argument('--strategies', nargs='+', choices=STRATEGIES,
                        help='default: every strategy the checkpoint\'s policy takes (rtc: Diffusion only)')
    parser.add_argument('--queue_threshold', type=int, metavar='N',
                        help='every asynchronous case\'s --queue_threshold (default: each strategy\'s own)')
    parser.add_argument('--no_synchronous', dest='synchronous', action='store_false',
                        help='skip the synchronous evaluations (chunk by chunk, and with --temporal_agg)')
    parser.add_argument('--no_realtime', dest='realtime', action='store_false',
                        help='skip the cases at the measured inference time (--realtime)')
    parser.add_argument('--num_rollouts', type=int, default=50)
    parser.add_argument('--eval_workers', type=int, default=2, help='rollout processes, one thread each')
    parser.add_argument('--out', default='realtime', help='folder of the cases\' evaluations')
    return vars(parser.parse_args(argv))


if __name__ == '__main__':
    main(parse_args())
