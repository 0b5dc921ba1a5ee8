"""Benchmark of scripted data generation; prints one JSON object.

Measures, at the full 480x640 'top' camera of sim_transfer_cube_scripted:
  - seconds per episode with 1 worker, and per episode of throughput with 2 workers
    (plus the projected time of the 50-episode set),
  - bytes per episode with and without --compress,
and, with cameras off (physics only), the scripted success count over the full 50-episode
transfer-cube and insertion sets. Load averages are reported to show whether the CPU was shared.

    python -m bench.datagen [--episodes 2] [--parallel_episodes 4] [--success_episodes 50]
"""
import argparse
import os
import resource
import shutil
import tempfile
import time

from bench.common import machine_report, print_report, stdout_to_stderr
from recording import sim as record_sim_episodes
from tasks import get_sim_task_config

TASK = 'sim_transfer_cube_scripted'
SUCCESS_TASKS = ('sim_transfer_cube_scripted', 'sim_insertion_scripted')


def cpu_seconds():
    """CPU time of this process and its finished children (recording workers), all threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_recording(work_dir, name, num_episodes, num_workers, compress):
    """Record into work_dir/name -> (wall seconds, CPU seconds, per-episode results, bytes per file)."""
    dataset_dir = os.path.join(work_dir, name)
    start, start_cpu = time.time(), cpu_seconds()
    with stdout_to_stderr():  # keep stdout for the JSON report
        results = record_sim_episodes.main({
            'task_name': TASK, 'dataset_dir': dataset_dir, 'num_episodes': num_episodes, 'seed': 0,
            'num_workers': num_workers, 'camera_names': None, 'image_size': [480, 640], 'compress': compress,
            'onscreen_render': False, 'inject_noise': False})
    wall, cpu = time.time() - start, cpu_seconds() - start_cpu
    sizes = [os.path.getsize(os.path.join(dataset_dir, f)) for f in sorted(os.listdir(dataset_dir))]
    shutil.rmtree(dataset_dir)
    return wall, cpu, results, sizes


def scripted_success(task_name, num_episodes):
    """(successes, seconds) of the scripted set with cameras off."""
    recorder = record_sim_episodes.EpisodeRecorder(task_name, camera_names=[], image_size=(480, 640),
                                                   episode_len=get_sim_task_config(task_name)['episode_len'])
    start = time.time()
    successes = sum(recorder.record(idx)['success'] for idx in range(num_episodes))
    return successes, time.time() - start


def main(args):
    report = machine_report()
    work_dir = tempfile.mkdtemp(prefix='datagen_bench_')
    try:
        if args['episodes']:
            wall, cpu, results, sizes = timed_recording(work_dir, 'plain', args['episodes'], 1, False)
            report['one_worker_s_per_episode'] = wall / len(results)
            report['one_worker_cpu_s_per_episode'] = cpu / len(results)
            report['one_worker_episode_s'] = [round(r['seconds'], 2) for r in results]
            report['bytes_per_episode'] = sizes[0]
            wall, cpu, results, sizes = timed_recording(work_dir, 'compressed', 1, 1, True)
            report['compressed_s_per_episode'] = wall
            report['compressed_cpu_s_per_episode'] = cpu
            report['compressed_bytes_per_episode'] = sizes[0]
        if args['parallel_episodes']:
            wall, cpu, results, _ = timed_recording(work_dir, 'parallel', args['parallel_episodes'], 2, False)
            report['two_workers_s_per_episode'] = wall / len(results)
            report['two_workers_cpu_s_per_episode'] = cpu / len(results)
            report['two_workers_50_episodes_projected_min'] = 50 * wall / len(results) / 60
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    for task_name in SUCCESS_TASKS if args['success_episodes'] else ():
        successes, seconds = scripted_success(task_name, args['success_episodes'])
        report[f'{task_name}_success'] = f"{successes} / {args['success_episodes']}"
        report[f'{task_name}_physics_only_s'] = seconds
    print_report(report)
    return report


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=2, help='full-size episodes timed with 1 worker')
    parser.add_argument('--parallel_episodes', type=int, default=4, help='full-size episodes with 2 workers')
    parser.add_argument('--success_episodes', type=int, default=50, help='physics-only episodes per task')
    main(vars(parser.parse_args()))
