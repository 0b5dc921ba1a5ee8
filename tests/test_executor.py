"""The asynchronous executor (policies/executor.py) and delayed rollouts: late actions dropped
exactly, starvation counted, the ensembling weights, synchronous chunking reproduced at delay 0, an
exact replay of a scripted episode succeeding at every delay, deterministic delayed rollouts run to
run and across workers, and the flags that cannot go together."""
import math

import numpy as np
import pytest
import torch

from cli.flags import UsageError
from evaluation.execution import Execution, chunked_switch_steps, motion_metrics
from evaluation.rollout import eval_bc, rollout_results
from policies.executor import ChunkExecutor, DelayedPolicy
from tests.helpers import eval_config


def step_replay(executor, chunk_size, width=1):
    """A query that knows the step it observed: chunk[i] is the action meant for step t + i, = t + i."""
    def query(history, guide):
        t = executor.t
        return np.arange(t, t + chunk_size, dtype=np.float64)[:, None].repeat(width, axis=1)
    return query


def play(delayed, steps):
    return [float(delayed(None)[0]) for _ in range(steps)]


@pytest.mark.parametrize('strategy', ['replace', 'ensemble'])
@pytest.mark.parametrize('delay', [0, 1, 3, 7])
def test_late_actions_are_dropped_exactly(strategy, delay):
    executor = ChunkExecutor(chunk_size=20, threshold=12, strategy=strategy)
    delayed = DelayedPolicy(step_replay(executor, 20), executor, lambda seconds: delay)
    actions = play(delayed, 40)
    assert actions == pytest.approx(list(range(40)), abs=1e-12)  # each step plays its own action, never a stale one
    assert executor.starved_steps == 0
    assert delayed.delays[0] == 0 and set(delayed.delays[1:]) == {delay}  # the first chunk is awaited
    delivered = len(delayed.delays) - (delayed.pending is not None)  # the last query may still be in flight
    assert executor.dropped == delay * (delivered - 1)


def test_a_dry_queue_holds_the_last_action_and_counts_the_starved_steps():
    executor = ChunkExecutor(chunk_size=4, threshold=0, strategy='replace')
    delayed = DelayedPolicy(step_replay(executor, 4), executor, lambda seconds: 3)
    actions = play(delayed, 12)
    # chunk 0 plays steps 0-3; the queue is empty at step 4, whose query arrives at step 7 (its first
    # three actions dropped): steps 4-6 hold step 3's action
    assert actions == [0, 1, 2, 3, 3, 3, 3, 7, 7, 7, 7, 11]
    assert executor.starved_steps == 6 and executor.switch_steps == [7, 11] and executor.dropped == 6


def test_realtime_delay_from_a_fake_clock():
    times = iter([0.0, 0.0, 1.0, 1.2, 2.0, 2.05])  # queries of 0, 0.2 and 0.05 s
    execution = Execution(realtime=True, control_hz=50.0)
    executor = ChunkExecutor(chunk_size=20, threshold=20, strategy='ensemble')
    delayed = DelayedPolicy(step_replay(executor, 20), executor, execution.delay)
    for _ in range(13):
        delayed(None, clock=lambda: next(times))
    assert delayed.delays == [0, 10, math.ceil(0.05 * 50)]


def test_ensembling_weighs_the_oldest_prediction_most():
    executor = ChunkExecutor(chunk_size=3, threshold=3, strategy='ensemble')
    executor.requested()
    executor.deliver(np.array([[1.0], [1.0], [1.0]]), 0)
    assert executor.next_action()[0] == 1.0
    executor.requested()
    executor.deliver(np.array([[5.0], [2.0], [2.0]]), 1)  # its action for step 1 is on time
    w = np.exp(-0.01 * np.arange(2))
    np.testing.assert_allclose(executor.next_action(), [np.average([1.0, 5.0], weights=w)])
    assert executor.switch_steps == [1]


def test_replace_at_delay_zero_is_synchronous_chunking():
    from tests.test_evaluate import RecordingPolicy, run_controller
    synchronous = run_controller(RecordingPolicy(num_queries=6, action_horizon=4), 20)
    policy = RecordingPolicy(num_queries=6, action_horizon=4)
    executor = ChunkExecutor(chunk_size=6, threshold=6 - 4, strategy='replace')
    delayed = DelayedPolicy(lambda history, guide: policy.action_chunk(*history[-1])[0], executor, lambda s: 0)
    observation = (torch.zeros(1, 3), torch.zeros(1, 1, 3, 2, 2))
    assert [delayed([observation])[0].item() for _ in range(20)] == [a.item() for a in synchronous]


@pytest.mark.parametrize('kwargs, message', [
    ({'strategy': 'bidding'}, r'--execution must be one of replace, ensemble, rtc'),
    ({'threshold': 11}, r'--queue_threshold must be between 0 and the chunk size 10; got 11'),
])
def test_bad_executor_settings_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChunkExecutor(**{'chunk_size': 10, 'threshold': 5, **kwargs})


def test_motion_metrics():
    actions = np.array([[0.0, 0], [0.1, 0], [0.2, 0.5], [0.3, 0.5], [0.4, 0.5]])
    metrics = motion_metrics(actions, switch_steps=[3])
    assert metrics['max_step_change'] == pytest.approx(0.5) and metrics['max_switch_jump'] == pytest.approx(0.1)
    third = np.diff(actions, n=3, axis=0)
    assert metrics['jerk'] == pytest.approx(float(np.mean(third ** 2)))
    assert chunked_switch_steps(10, 4, False) == [4, 8] and chunked_switch_steps(4, 4, True) == [1, 2, 3]


@pytest.mark.parametrize('delay', [0, 2, 10])
def test_an_exact_replay_succeeds_at_every_delay(delay):
    from recording.sim import EpisodeRecorder
    from sim_env import make_sim_env
    task, chunk_size = 'sim_transfer_cube_scripted', 20
    recorder = EpisodeRecorder(task, camera_names=[], image_size=(8, 8), episode_len=400)
    joint_traj, object_pose, scripted_rewards = recorder.demonstrator.rollout(np.random.default_rng(3))
    assert max(scripted_rewards) == recorder.env.task.max_reward
    padded = np.concatenate([joint_traj, joint_traj[-1:].repeat(chunk_size, axis=0)])
    executor = ChunkExecutor(chunk_size, threshold=chunk_size, strategy='ensemble')
    delayed = DelayedPolicy(lambda history, guide: padded[executor.t:executor.t + chunk_size], executor,
                            lambda s: delay)
    env = make_sim_env(task, camera_names=[])
    env.task.set_object_pose(object_pose)
    env.reset()
    rewards = [env.step(delayed(None)).reward for _ in range(len(joint_traj))]
    assert max(rewards) == env.task.max_reward and executor.starved_steps == 0


@pytest.fixture
def delayed_config(tmp_path, tiny_act_config):
    from tests.helpers import start_pose_stats, write_tiny_checkpoint
    write_tiny_checkpoint(tmp_path, tiny_act_config, start_pose_stats([0, -0.96, 1.16, 0, -0.3, 0], 1.0, 0.02))
    execution = Execution(strategy='replace', threshold=2, delay_steps=3)
    return eval_config(tmp_path, tiny_act_config, episode_len=8, save_video=False, execution=execution)


def test_delayed_rollouts_are_deterministic_and_worker_independent(delayed_config):
    first = list(rollout_results(delayed_config, 'policy_best.ckpt'))
    again = list(rollout_results(delayed_config, 'policy_best.ckpt'))
    parallel = list(rollout_results(dict(delayed_config, eval_workers=2), 'policy_best.ckpt'))
    for a, b, c in zip(first, again, parallel):
        assert a['rewards'] == b['rewards'] == c['rewards']
        assert a['executed'] == b['executed'] == c['executed']
        np.testing.assert_array_equal(a['final_qpos'], b['final_qpos'])
        np.testing.assert_allclose(a['final_qpos'], c['final_qpos'], atol=1e-5)
    assert first[0]['executed']['delays'][1:] and set(first[0]['executed']['delays'][1:]) == {3}


def test_a_delayed_evaluation_reports_its_execution(delayed_config, capsys):
    import json
    import os
    eval_bc(dict(delayed_config, num_rollouts=1), 'policy_best.ckpt')
    out = capsys.readouterr().out
    assert 'Execution: asynchronous execution: replace, a chunk usable 3 steps after its observation' in out
    assert 'Delays met: 3 steps x ' in out and 'starved steps (the last action held): ' in out
    record = json.load(open(os.path.join(delayed_config['ckpt_dir'], 'result_policy_best.json')))
    assert record['strategy'] == 'replace' and record['delay_steps'] == 3 and record['num_rollouts'] == 1
    assert set(record['rollouts'][0]) >= {'max_switch_jump', 'jerk', 'delays', 'starved_steps'}


@pytest.mark.parametrize('given, message', [
    ({'inference_delay': 2, 'realtime': True}, r'--inference_delay D and --realtime both set the delay'),
    ({'execution': 'replace'}, r'--execution set the asynchronous execution: give --inference_delay D or --realtime'),
    ({'inference_delay': 2, 'temporal_agg': True}, r'--temporal_agg is synchronous ensembling'),
    ({'inference_delay': 2, 'task_name': 'aloha_transfer'}, r'on a real robot the delay is real: use --realtime'),
    ({'realtime': True, 'runtime': 'onnxruntime'}, r'execute the torch policy asynchronously \(not --runtime'),
])
def test_execution_flags_that_cannot_go_together(given, message):
    from cli.run_config import execution_settings
    with pytest.raises(UsageError, match=message):
        execution_settings({'task_name': 'sim_transfer_cube_scripted', **given}, {})


def test_execution_flags_make_the_settings():
    from cli.flags import build_parser, flag_problem
    from cli.run_config import execution_settings
    args = vars(build_parser().parse_args(['--eval', '--task_name', 'sim_transfer_cube', '--inference_delay', '5',
                                           '--execution', 'replace', '--queue_threshold', '20']))
    assert execution_settings(args, {}) == Execution('replace', 20, 5, False, 50.0)
    assert execution_settings(dict(args, inference_delay=None, execution=None, queue_threshold=None), {}) is None
    assert flag_problem({'inference_delay': -1}) == '--inference_delay must be 0 or more, got -1'


def test_the_realtime_bench_cases_link_the_checkpoint_and_resume(tmp_path):
    import json
    import os

    from bench import realtime
    ckpt_dir = tmp_path / 'ckpt'
    ckpt_dir.mkdir()
    for name in ('policy_last.ckpt', 'dataset_stats.pkl', 'config.json'):
        (ckpt_dir / name).write_text(name)
    args = realtime.parse_args(['--ckpt_dir', str(ckpt_dir), '--delays', '0', '5', '--strategies', 'replace',
                                '--out', str(tmp_path / 'out')])
    assert realtime.cases(args) == {'sync_chunked': [], 'sync_temporal_agg': ['--temporal_agg'],
                                    'replace_d0': ['--inference_delay', '0', '--execution', 'replace'],
                                    'replace_d5': ['--inference_delay', '5', '--execution', 'replace'],
                                    'replace_realtime': ['--realtime', '--execution', 'replace']}
    folder = realtime.case_folder(args, 'replace_d5')
    assert open(os.path.join(folder, 'config.json')).read() == 'config.json'  # linked, the original untouched
    with open(os.path.join(folder, 'result_policy_last.json'), 'w') as f:
        json.dump({'success_rate': 0.5, 'stages': {'4': 1}, 'starved_steps': 0, 'extra': 1}, f)
    # evaluated before: read back, nothing run
    assert realtime.case_report(realtime.evaluate(args, 'replace_d5', [])) == {
        'success_rate': 0.5, 'stages': {'4': 1}, 'starved_steps': 0}
