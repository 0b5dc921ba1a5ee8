"""Run the benchmark suite and print one JSON object {benchmark: its report}.

    python -m bench                          # every benchmark at suite settings (tens of minutes on 2 cores)
    python -m bench --only policy_latency train_step
    python -m bench --smoke                  # tiny sizes: checks that every benchmark runs (a minute or two)

Each benchmark runs in its own process; its progress goes to stderr. The suite settings are
shorter than those recorded in bench/RESULTS.md; run a script alone with its own flags for those.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = {  # benchmark: (suite flags, smoke flags)
    'policy_latency': (['--reps', '5', '--train_reps', '2'],
                       ['--reps', '1', '--train_reps', '1', '--image_size', '64', '96', '--skip_bf16', '--skip_cnnmlp']),
    'diffusion_latency': (['--reps', '5', '--train_reps', '2'],
                          ['--reps', '1', '--train_reps', '1', '--image_size', '64', '96', '--chunk_size', '8']),
    'train_step': (['--steps', '2', '--ref_steps', '1'],
                   ['--steps', '1', '--ref_steps', '1', '--cases', 'small_off', '--frame_size', '48', '64']),
    'eval_rollout': (['--image_size', '240', '320', '--episode_len', '100'],
                     ['--image_size', '24', '32', '--episode_len', '4', '--hidden_dim', '32', '--dim_feedforward', '64',
                      '--chunk_size', '5', '--enc_layers', '1', '--dec_layers', '1', '--nheads', '2', '--workers', '1']),
    'datagen': (['--episodes', '1', '--parallel_episodes', '2', '--success_episodes', '10'],
                ['--episodes', '0', '--parallel_episodes', '0', '--success_episodes', '1']),
    'render_cost': (['--timed_frames', '10'], ['--timed_frames', '1', '--shadow_sizes', '2048', '1024']),
    'real_robot_loop': (['--steps', '200'], ['--steps', '20']),
    'data_loading': (['--steps', '2'], ['--episodes', '3', '--episode_len', '20', '--frame_size', '48', '64',
                                        '--loader_batches', '2', '--skip_train']),
    'deploy_latency': ([], ['--configs', 'cpu_recipe', '--threads', '1', '--reps', '2', '--skip_memory',
                            '--skip_diffusion', '--calibration', '4']),
}


def run(name, flags):
    """The JSON report a benchmark prints on stdout (its last JSON value)."""
    done = subprocess.run([sys.executable, '-m', f'bench.{name}', *flags], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f'bench.{name} failed with exit status {done.returncode}')
    return json.loads(done.stdout[done.stdout.index('{'):])


def main(args):
    names = args['only'] or list(SUITE)
    report = {}
    for name in names:
        print(f'bench: {name}', file=sys.stderr, flush=True)
        report[name] = run(name, SUITE[name][1 if args['smoke'] else 0])
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=list(SUITE), help='benchmarks to run (default: all)')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, to check that the benchmarks run')
    main(vars(parser.parse_args()))
