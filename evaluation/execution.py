"""How a rollout's actions are executed, and what its motion measures.

Synchronous execution (the default, the original's) stops the world while the policy thinks:
`ChunkedController` in rollout.py. With `--inference_delay D` or `--realtime` the rollout runs the
asynchronous executor (policies/executor.py) in simulated time: the chunk requested at step t is
usable from step t + D, or from t + ceil(measured inference seconds x control rate); the
simulator's own physics and rendering time is not counted, as a robot's cameras and motors run
beside its computer.

Every rollout's commanded joints give its motion figures: the largest change from one step to the
next, the largest at the steps where a new chunk took over, and the jerk, the mean squared third
difference of the commanded joints per step (robot units).
"""
import collections
import dataclasses
import math

import numpy as np

from policies.chunker import ObservationHistory
from policies.executor import ChunkExecutor, DelayedPolicy, ThreadedPolicy, default_threshold
from policies.inputs import history_inputs
from policies.rtc import MAX_GUIDANCE_WEIGHT, Inpainting


@dataclasses.dataclass(frozen=True)
class Execution:
    """The executor's settings: strategy, queue threshold (None: the strategy's default), the
    delay: `delay_steps` D, or `realtime` (the measured inference time at `control_hz`), and for
    `rtc` the guidance weight's ceiling."""
    strategy: str = 'ensemble'
    threshold: int = None
    delay_steps: int = None
    realtime: bool = False
    control_hz: float = 50.0
    max_guidance_weight: float = MAX_GUIDANCE_WEIGHT

    def delay(self, seconds):
        """Measured inference seconds -> the steps before its chunk is usable."""
        if self.realtime:
            return max(1, math.ceil(seconds * self.control_hz))
        return self.delay_steps

    def describe(self):
        delay = 'the measured inference time (--realtime)' if self.realtime else f'{self.delay_steps} steps'
        strategy = f'rtc (guidance weight at most {self.max_guidance_weight:g})' if self.strategy == 'rtc' else \
            self.strategy
        return f'asynchronous execution: {strategy}, a chunk usable {delay} after its observation'


class DelayedController:
    """A torch policy behind the asynchronous executor: one normalised action per step (A,) numpy.
    In simulation (DelayedPolicy) the delay is simulated; on a robot (`stall_s` given: ThreadedPolicy)
    the query runs in a thread beside the control loop, which waits for it only after `stall_s`
    seconds with nothing left to play. result(): the delays met (steps), the starved steps, the steps
    where a chunk took over."""

    def __init__(self, policy, execution, stall_s=None):
        threshold = execution.threshold
        if threshold is None:
            threshold = default_threshold(execution.strategy, policy.chunk_size)
        executor = ChunkExecutor(policy.chunk_size, threshold, execution.strategy)
        self.policy = policy
        self.max_guidance_weight = execution.max_guidance_weight
        self.history = ObservationHistory(policy.obs_horizon)
        if stall_s is None:
            self.delayed = DelayedPolicy(self._query, executor, execution.delay)
        else:
            self.delayed = ThreadedPolicy(self._query, executor, stall_s)

    def reset(self):
        self.history.clear()
        self.delayed.reset()
        self.policy.reset()

    def close(self):
        self.delayed.close()

    def _query(self, history, guide):
        """guide: None, or (the queued actions [(A,), ...], the delay expected) for rtc -> (K, A)."""
        if guide is None:
            return self.policy.action_chunk(*history_inputs(history))[0]
        queued, delay = guide
        inpainting = Inpainting.of_queue(queued, delay, self.policy.chunk_size, self.max_guidance_weight)
        return self.policy.action_chunk(*history_inputs(history), inpainting=inpainting)[0]

    def __call__(self, qpos, image):
        """qpos (1, S), image (1, K, 3, H, W) of this step -> normalised action (A,) numpy."""
        return self.delayed(self.history.observe((qpos, image))).cpu().numpy()

    def result(self):
        executor = self.delayed.executor
        return {'delays': list(self.delayed.delays), 'starved_steps': executor.starved_steps,
                'switch_steps': list(executor.switch_steps), 'dropped_actions': executor.dropped}


def motion_metrics(actions, switch_steps):
    """actions (T, A) commanded in robot units; switch_steps: steps whose action came from a chunk
    that had just arrived -> the largest per-step change, the largest at a switch, and the jerk."""
    actions = np.asarray(actions, dtype=np.float64)
    steps = np.abs(np.diff(actions, axis=0)).max(axis=1) if len(actions) > 1 else np.zeros(0)  # (T - 1,)
    switches = [steps[s - 1] for s in switch_steps if 0 < s <= len(steps)]
    jerk = float(np.mean(np.diff(actions, n=3, axis=0) ** 2)) if len(actions) > 3 else 0.0
    return {'max_step_change': float(steps.max()) if len(steps) else 0.0,
            'max_switch_jump': float(max(switches)) if switches else 0.0, 'jerk': jerk}


def chunked_switch_steps(episode_len, action_horizon, temporal_agg):
    """The steps where synchronous execution starts a new chunk (every step with ensembling)."""
    every = 1 if temporal_agg else action_horizon
    return list(range(every, episode_len, every))


def demonstration_step_change(actions_per_episode):
    """The largest per-step change of any joint over the demonstrations' actions [(T, A), ...]."""
    return max(float(np.abs(np.diff(np.asarray(a, dtype=np.float64), axis=0)).max()) for a in actions_per_episode)


def execution_summary(results, execution):
    """The evaluation's execution and motion figures over its rollouts (result dicts of rollout.py)."""
    motions = [r['motion'] for r in results]
    summary = {'execution': 'synchronous (the original\'s)' if execution is None else execution.describe(),
               'max_step_change': max(m['max_step_change'] for m in motions),
               'max_switch_jump': max(m['max_switch_jump'] for m in motions),
               'mean_jerk': float(np.mean([m['jerk'] for m in motions]))}
    if execution is not None:
        executed = [r['executed'] for r in results]
        delays = collections.Counter(d for e in executed for d in e['delays'][1:])  # the first chunk is awaited
        summary.update(strategy=execution.strategy, delay_steps=execution.delay_steps, realtime=execution.realtime,
                       delay_distribution={str(d): n for d, n in sorted(delays.items())},
                       starved_steps=sum(e['starved_steps'] for e in executed),
                       dropped_actions=sum(e['dropped_actions'] for e in executed))
    return summary


def summary_lines(summary, num_steps):
    """The printed lines of execution_summary's figures; num_steps: the control steps of all rollouts."""
    lines = [f"Execution: {summary['execution']}",
             f"Largest joint change in one step: {summary['max_step_change']:.4f}, at a chunk switch: "
             f"{summary['max_switch_jump']:.4f}; jerk (mean squared third difference): {summary['mean_jerk']:.3g}"]
    if 'delay_distribution' in summary:
        delays = ', '.join(f'{d} steps x {n}' for d, n in summary['delay_distribution'].items()) or 'none'
        lines.append(f"Delays met: {delays}; starved steps (the last action held): {summary['starved_steps']} of "
                     f"{num_steps}; actions dropped as late: {summary['dropped_actions']}")
    return '\n'.join(lines)
