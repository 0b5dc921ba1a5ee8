"""Real-robot control loop on emulated hardware: achieved control frequency of env.step and the
time of one state read, for ALOHA and for an SO-101 arm. Prints JSON.

ALOHA: two servo-bus emulators on pseudo-terminals (real Protocol 2.0 packets through the Dynamixel
SDK) and four test-pattern cameras at 480x640, 30 fps, each with its grabber thread. SO-101 (key
'so101'): one Feetech bus emulator (STS3215 packets through feetech-servo-sdk) at the task rate of
30 Hz with two cameras; also the time of one goal write (a sync write). The emulators run in this
process, so the figures include their share of the CPU.

Then the same loop driven by a policy that takes --policy_seconds per query (a sleep, as a
computation that releases the GIL: 0.2 s is a README-size ACT through the fastest runtime on a
2-core CPU) behind the asynchronous executor (policies/executor.py, `ensemble`, a chunk of 100):
the achieved rate, the ticks that missed their deadline, the steps starved of an action and the
delays met, in steps.

With --readme_act, the ALOHA loop is also driven by a real computation: a README-size ACT (random
weights, statistics whose actions hold the start pose) exported to ONNX and run through
policy_runtime.PolicyRunner.realtime() on --engine (OpenVINO by default, the fastest here) with
--threads, its query in a thread beside the loop, the emulators and the four camera grabbers, all
sharing the CPU; once with one camera (`cam_high`, as the README config has one) and once with the task's four.

    python -m bench.real_robot_loop --steps 500
    python -m bench.real_robot_loop --steps 500 --readme_act --engine openvino --threads 2
"""
import argparse
import os
import tempfile
import time

import numpy as np

from bench.common import machine_report, print_report, stdout_to_stderr
from constants import CONTROL_HZ, REAL_TASK_CONFIGS
from real_robot import settings
from real_robot.cameras import Camera, GeneratedSource
from real_robot.dynamixel import DynamixelBot
from real_robot.emulator import ServoBusEmulator
from real_robot.real_env import RealEnv
from real_robot.tasks import CAMERA_NAMES
from tasks import control_hz


def main(args):
    settings.SERVO_REPLY_TIMEOUT_MS = args['reply_timeout_ms']
    emulators = [ServoBusEmulator(), ServoBusEmulator()]
    bots = [DynamixelBot(name, emu.port, settings.PUPPET_MODEL)
            for name, emu in zip(('puppet_left', 'puppet_right'), emulators)]
    cameras = {name: Camera(name, GeneratedSource(seed=i)) for i, name in enumerate(CAMERA_NAMES)}
    for camera in cameras.values():
        camera.wait_first_frame(settings.CAMERA_OPEN_TIMEOUT_S)
    with stdout_to_stderr():  # the environment's messages; stdout carries the JSON
        env = RealEnv(*bots, cameras)
        try:
            step_s, read_s = run_loop(env, args['steps'])
            missed = env.clock.missed
            slow = policy_loop(env, args['steps'], args['policy_seconds'])
            exported = {}
            if args['readme_act']:
                exported = {f'readme_act_{len(cams)}_cameras': export_loop(env, args, cams)
                            for cams in (list(CAMERA_NAMES[:1]), list(CAMERA_NAMES))}
        finally:
            close(env, emulators)
        so101 = so_arm_loop(args['steps'], args['policy_seconds'])
    print_report({**exported, 'steps': args['steps'], 'target_hz': float(CONTROL_HZ),
                  'achieved_hz': round(1 / np.mean(step_s), 2),
                  'step_p99_ms': round(np.percentile(step_s, 99) * 1e3, 2), 'missed_deadlines': missed,
                  'state_read_both_arms_ms': round(np.mean(read_s) * 1e3, 3), 'cameras': len(cameras),
                  'slow_policy': slow, 'so101': so101, **machine_report()})


def close(env, emulators):
    env.close()
    for emu in emulators:
        emu.close()


def policy_loop(env, steps, seconds, chunk_size=100):
    """env.step driven by a `seconds`-per-query policy that holds the start pose, behind the
    asynchronous executor -> the achieved rate, deadline misses, starved steps and delays."""
    from policies.executor import ChunkExecutor, ThreadedPolicy
    pose = env.reset(fake=True).observation['qpos']

    def query(history, guide):
        time.sleep(seconds)
        return np.repeat(pose[None], chunk_size, axis=0)

    executor = ChunkExecutor(chunk_size, threshold=chunk_size, strategy='ensemble')
    threaded = ThreadedPolicy(query, executor, stall_s=settings.POLICY_STALL_S)
    env.step(threaded(None))  # the first chunk is awaited
    missed = env.clock.missed
    start = time.perf_counter()
    try:
        for _ in range(steps):
            env.step(threaded(None))
    finally:
        threaded.close()
    return {'policy_seconds': seconds, 'achieved_hz': round(steps / (time.perf_counter() - start), 2),
            'missed_deadlines': env.clock.missed - missed, 'starved_steps': executor.starved_steps,
            'delays_steps': sorted(set(threaded.delays[1:]))}


def readme_act_export(folder, camera_names, pose):
    """A README-size ACT with random weights and statistics under which its actions hold `pose`
    (14,), exported to ONNX -> the export folder."""
    import pickle

    from bench.common import readme_act_config
    from bench.deploy_latency import eval_settings, random_run
    from deploy.export import export
    run = random_run(os.path.join(folder, 'run'), 'ACT', readme_act_config(camera_names=camera_names), (480, 640))
    with open(os.path.join(run, 'dataset_stats.pkl'), 'rb') as f:
        stats = pickle.load(f)
    stats.update(action_mean=pose.astype(np.float32), action_std=np.full_like(stats['action_std'], 1e-4))
    with open(os.path.join(run, 'dataset_stats.pkl'), 'wb') as f:
        pickle.dump(stats, f)
    out = os.path.join(folder, 'export')
    export(eval_settings(run), 'policy_best.ckpt', 'onnx', out, overwrite=True)
    return out


def export_loop(env, args, camera_names):
    """env.step driven by the README-size ACT export behind PolicyRunner.realtime() (ensemble, a
    chunk of 100) -> the query time, achieved rate, deadline misses, starved steps and delays."""
    from deploy.runtime import PolicyRunner
    pose = env.reset(fake=True).observation['qpos']
    with tempfile.TemporaryDirectory() as folder:
        runner = PolicyRunner(readme_act_export(folder, camera_names, pose), threads=args['threads'],
                              engine=args['engine'])
    query_s = []
    for observation in (env.reset(fake=True).observation,) * 3:
        start = time.perf_counter()
        runner.query(*[x[None] for x in observed(observation, camera_names)])
        query_s.append(time.perf_counter() - start)
    live = runner.realtime(strategy='ensemble', stall_s=settings.POLICY_STALL_S)
    live.reset()
    ts = env.step(live.act(*observed(env.reset(fake=True).observation, camera_names)))  # the first chunk is awaited
    missed, start = env.clock.missed, time.perf_counter()
    try:
        for _ in range(args['steps']):
            ts = env.step(live.act(*observed(ts.observation, camera_names)))
    finally:
        live.close()
    delays = live.threaded.delays[1:]
    return {'engine': args['engine'], 'threads': args['threads'], 'query_ms_alone': round(min(query_s) * 1e3, 1),
            'achieved_hz': round(args['steps'] / (time.perf_counter() - start), 2),
            'missed_deadlines': env.clock.missed - missed, 'starved_steps': live.executor.starved_steps,
            'delays_steps': {str(d): delays.count(d) for d in sorted(set(delays))}}


def observed(observation, camera_names):
    """An ALOHA observation -> (qpos (14,), images (K, 480, 640, 3) uint8) for PolicyRunner."""
    return observation['qpos'], np.stack([observation['images'][name] for name in camera_names])


def so_arm_loop(steps, policy_seconds, fps=control_hz(REAL_TASK_CONFIGS['so101_pick_place'])):
    """The same figures for one SO-101 follower arm on a Feetech bus emulator, and the goal-write time."""
    from real_robot.bots import Clock
    from real_robot.feetech import SOArm
    from real_robot.lerobot_calibration import save_calibration
    from real_robot.feetech_emulator import FeetechBusEmulator
    from real_robot.so_env import SOEnv
    calibration = {joint: {'id': servo_id, 'drive_mode': 0, 'homing_offset': 0, 'range_min': 1024, 'range_max': 3072}
                   for joint, servo_id in zip(settings.SO_JOINTS, settings.SO_SERVO_IDS)}
    emulator = FeetechBusEmulator()
    emulator.calibrate(calibration)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'so_follower.json')
        save_calibration(path, calibration)
        arm = SOArm('so_follower', emulator.port, path, clock=Clock(1 / fps))
    cameras = {name: Camera(name, GeneratedSource(seed=i)) for i, name in enumerate(('front', 'wrist'))}
    for camera in cameras.values():
        camera.wait_first_frame(settings.CAMERA_OPEN_TIMEOUT_S)
    env = SOEnv([arm], cameras)
    goal = env.get_qpos()
    write_s = []
    for _ in range(steps):
        start = time.perf_counter()
        arm.command_arm(goal)
        write_s.append(time.perf_counter() - start)
    try:
        step_s, read_s = run_loop(env, steps)
        missed = env.clock.missed
        slow = policy_loop(env, steps, policy_seconds)
    finally:
        close(env, [emulator])
    return {'target_hz': fps, 'achieved_hz': round(1 / np.mean(step_s), 2),
            'step_p99_ms': round(np.percentile(step_s, 99) * 1e3, 2), 'state_read_ms': round(np.mean(read_s) * 1e3, 3),
            'goal_write_ms': round(np.mean(write_s) * 1e3, 3), 'missed_deadlines': missed, 'cameras': len(cameras),
            'slow_policy': slow}


def run_loop(env, steps):
    """(seconds per env.step, seconds per state read) over `steps` each; env.clock.missed counts on."""
    action = env.reset(fake=True).observation['qpos']
    read_s = []
    for _ in range(steps):
        start = time.perf_counter()
        env.get_qpos()
        read_s.append(time.perf_counter() - start)
    step_s = []
    env.step(action)
    for _ in range(steps):
        start = time.perf_counter()
        env.step(action)
        step_s.append(time.perf_counter() - start)
    return step_s, read_s


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=500, help='control steps to time')
    parser.add_argument('--policy_seconds', type=float, default=0.2, help='seconds per query of the slow policy')
    parser.add_argument('--readme_act', action='store_true',
                        help='also drive the ALOHA loop with a README-size ACT export through PolicyRunner.realtime()')
    parser.add_argument('--engine', choices=('onnxruntime', 'openvino'), default='openvino',
                        help='--readme_act: the runtime of the export')
    parser.add_argument('--threads', type=int, default=2, help='--readme_act: the runtime\'s threads')
    parser.add_argument('--reply_timeout_ms', type=float, default=300.0,
                        help='status-reply timeout: the in-process emulator can be slow on a busy CPU')
    main(vars(parser.parse_args()))
