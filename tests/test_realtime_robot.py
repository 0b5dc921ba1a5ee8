"""Asynchronous execution in real time: a policy that takes 200 ms per query beside a control loop
(a bare 50 Hz clock, the emulated ALOHA bus at 50 Hz, the emulated SO bus at 30 Hz) that never
waits for it and never runs dry, and a policy that stops answering leaving the arms to the
watchdog as a synchronous one does. The rate achieved and the deadlines missed are measured by
bench/real_robot_loop.py (timing belongs in benchmarks)."""
import threading
import time

import numpy as np
import pytest
import torch

from evaluation.execution import DelayedController, Execution
from policies.executor import ChunkExecutor, ThreadedPolicy
from real_robot import settings
from real_robot.bots import Clock
from tests.test_real_env import fast_safety, rig  # noqa: F401 (fixtures)
from tests.test_so_arms import env, station  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.usefixtures('patient_servos'), pytest.mark.serial]  # conftest.py, pytest.ini
QUERY_S = 0.2  # a README-size ACT through the fastest runtime on a 2-core CPU


class SlowPolicy:
    """Stands in for a torch policy: each query takes `seconds` (sleeping, as a computation that
    releases the GIL) and returns a chunk that holds `pose` (normalised units)."""

    def __init__(self, pose, num_queries=100, seconds=QUERY_S, answering=None):
        self.pose, self.chunk_size, self.seconds = torch.as_tensor(pose, dtype=torch.float32), num_queries, seconds
        self.action_horizon, self.obs_horizon = num_queries, 1
        self.answering = answering  # an Event a stalled policy waits for
        self.queries = 0

    def reset(self):
        pass

    def action_chunk(self, qpos, image):
        self.queries += 1
        if self.answering is not None and self.queries > 1:
            self.answering.wait()
        time.sleep(self.seconds)
        return self.pose.expand(1, self.chunk_size, len(self.pose)).clone()


def test_a_slow_query_beside_a_50_hz_loop_misses_no_deadline():
    clock = Clock(dt=0.02)
    executor = ChunkExecutor(chunk_size=50, threshold=50, strategy='ensemble')

    def query(observed_at, guide):  # the action meant for each step is its step number
        time.sleep(QUERY_S)
        return np.arange(observed_at, observed_at + 50.0)

    threaded = ThreadedPolicy(query, executor)
    try:
        actions = []
        for t in range(60):
            actions.append(threaded(t))  # the "observation" is the step number
            clock.tick()
    finally:
        threaded.close()
    assert executor.starved_steps == 0
    assert actions == pytest.approx(list(range(60)))  # every step its own action: late ones were dropped
    assert all(d >= 1 for d in threaded.delays[1:])  # about 10 at 50 Hz; fewer when a shared CPU slows the loop


def run_robot(env, policy, steps, stall_s=settings.POLICY_STALL_S):
    """The evaluation's controller driving env for `steps` -> (controller, the longest step after
    the first spent in the controller, seconds)."""
    controller = DelayedController(policy, Execution(strategy='ensemble', realtime=True), stall_s)
    ts = env.reset(fake=True)
    waits = []
    try:
        for _ in range(steps):
            qpos = torch.as_tensor(ts.observation['qpos'], dtype=torch.float32)[None]
            start = time.perf_counter()
            action = controller(qpos, torch.zeros(1, 1, 3, 4, 4))
            waits.append(time.perf_counter() - start)
            ts = env.step(action)
    finally:
        controller.close()
    return controller, max(waits[1:])


def test_aloha_on_the_emulated_bus_keeps_50_hz_with_a_200_ms_policy(rig):  # noqa: F811
    environment, _, _ = rig
    pose = environment.reset(fake=True).observation['qpos']
    controller, longest = run_robot(environment, SlowPolicy(pose), steps=50)
    result = controller.result()
    assert result['starved_steps'] == 0 and longest < QUERY_S / 2  # never waited for a query
    # the chunks arrived steps after they were asked for (how many depends on a shared CPU's speed)
    assert len(result['delays']) >= 4 and all(d >= 1 for d in result['delays'][1:])


def test_so_on_the_emulated_bus_keeps_30_hz_with_a_200_ms_policy(env):  # noqa: F811
    pose = env.reset(fake=True).observation['qpos']
    controller, longest = run_robot(env, SlowPolicy(pose), steps=30)
    result = controller.result()
    assert result['starved_steps'] == 0 and longest < QUERY_S / 2 and all(d >= 1 for d in result['delays'][1:])


def test_a_policy_that_stops_answering_leaves_the_arms_to_the_watchdog(rig, monkeypatch):  # noqa: F811
    monkeypatch.setattr(settings, 'POLICY_STALL_S', 0.1)
    environment, _, _ = rig
    pose = environment.reset(fake=True).observation['qpos']
    answering = threading.Event()
    threading.Timer(1.5, answering.set).start()  # it answers again after 1.5 s
    policy = SlowPolicy(pose, num_queries=10, seconds=0.0, answering=answering)
    controller, _ = run_robot(environment, policy, steps=20, stall_s=0.1)
    # the chunk of 10 ran out, the loop waited for the stalled query, and the watchdog held the arms
    assert environment.watchdog.stalls >= 1 and controller.result()['starved_steps'] >= 1


def test_a_real_robot_evaluation_with_realtime_runs_the_policy_in_a_thread(tmp_path, tiny_act_config):
    import json

    from evaluation.rollout import eval_bc
    from tests.helpers import eval_config, start_pose_stats, write_tiny_checkpoint
    policy_config = dict(tiny_act_config, camera_names=['cam_high'])
    write_tiny_checkpoint(tmp_path, policy_config, start_pose_stats([0, -0.96, 1.16, 0, -0.3, 0], 1.0, 0.02))
    config = eval_config(tmp_path, policy_config, task_name='aloha_wear_shoe', real_robot=True, robot_driver='sim',
                         episode_len=8, num_rollouts=1, save_video=False,
                         execution=Execution(strategy='replace', realtime=True))
    eval_bc(config, 'policy_best.ckpt')
    record = json.load(open(tmp_path / 'result_policy_best.json'))
    assert record['strategy'] == 'replace' and record['realtime'] and record['rollouts'][0]['delays'][0] == 0
