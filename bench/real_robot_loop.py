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

    python -m bench.real_robot_loop --steps 500
"""
import argparse
import os
import tempfile
import time

import numpy as np

from bench.common import machine_report, print_report, stdout_to_stderr
from constants import DT
from real_robot import settings
from real_robot.cameras import Camera, GeneratedSource
from real_robot.dynamixel import DynamixelBot
from real_robot.emulator import ServoBusEmulator
from real_robot.real_env import RealEnv
from real_robot.tasks import CAMERA_NAMES


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
        finally:
            close(env, emulators)
        so101 = so_arm_loop(args['steps'], args['policy_seconds'])
    print_report({'steps': args['steps'], 'target_hz': round(1 / DT, 2), 'achieved_hz': round(1 / np.mean(step_s), 2),
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


def so_arm_loop(steps, policy_seconds, fps=settings.SO_FPS):
    """The same figures for one SO-101 follower arm on a Feetech bus emulator, and the goal-write time."""
    from real_robot.bots import Clock
    from real_robot.feetech import SOArm, save_calibration
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
    parser.add_argument('--reply_timeout_ms', type=float, default=300.0,
                        help='status-reply timeout: the in-process emulator can be slow on a busy CPU')
    main(vars(parser.parse_args()))
