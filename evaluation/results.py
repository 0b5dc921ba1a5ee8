"""What an evaluation reports: the original's per-rollout lines, summary and result file
(`result_<ckpt>.txt`, read back by the benchmarks), and the JSON beside it with the stages, the
execution and the motion figures."""
import json
import os

import numpy as np

from checkpoints.folder import SAVE_FORMATS
from common.files import atomic_write


def summary_text(highest_rewards, episode_returns, max_reward):
    """The original's summary: success rate, average return and the `Reward >= r` table."""
    num_rollouts = len(highest_rewards)
    highest_rewards = np.array(highest_rewards)
    success_rate = np.mean(highest_rewards == max_reward)
    avg_return = np.mean(episode_returns)
    text = f'\nSuccess rate: {success_rate}\nAverage return: {avg_return}\n\n'
    for r in range(max_reward + 1):
        count = (highest_rewards >= r).sum()
        rate = count / num_rollouts
        text += f'Reward >= {r}: {count}/{num_rollouts} = {rate * 100}%\n'
    return text


def result_file_name(ckpt_name):
    """'policy_best.ckpt' (or .safetensors) -> 'result_policy_best.txt'."""
    base = os.path.basename(ckpt_name)
    stem, ext = os.path.splitext(base)
    return f"result_{stem if ext in SAVE_FORMATS.values() else base}.txt"


def write_result_file(path, summary, episode_returns, highest_rewards):
    """The original's result file: the summary, then the returns and highest rewards as lists."""
    text = f'{summary}{list(episode_returns)!r}\n\n{list(highest_rewards)!r}'
    atomic_write(path, lambda f: f.write(text), mode='w')


def read_result_file(path):
    """A result file -> {'success_rate', 'average_return', 'num_rollouts', 'stages': {r: rollouts reaching r}}."""
    with open(path) as f:
        summary = f.read().split('\n[', 1)[0]  # the returns and highest rewards lists follow the summary
    found = {'stages': {}}
    for line in summary.splitlines():
        key, _, value = line.partition(': ')
        if key == 'Success rate':
            found['success_rate'] = float(value)
        elif key == 'Average return':
            found['average_return'] = float(value)
        elif key.startswith('Reward >= '):
            count, num_rollouts = value.split(' = ')[0].split('/')
            found['stages'][int(key.removeprefix('Reward >= '))] = int(count)
            found['num_rollouts'] = int(num_rollouts)
    if 'success_rate' not in found or not found['stages']:
        raise ValueError(f'{path}: not a result file (expected "Success rate: ..." and "Reward >= r: n/N" lines)')
    return found


def write_result_json(path, results, max_reward, execution):
    """Beside the result file: success, stages and returns, with the execution and motion figures."""
    highest = np.array([r['highest_reward'] for r in results])
    record = {'num_rollouts': len(results), 'success_rate': float(np.mean(highest == max_reward)),
              'average_return': float(np.mean([r['episode_return'] for r in results])),
              'stages': {str(r): int((highest >= r).sum()) for r in range(max_reward + 1)}, **execution,
              'rollouts': [{'rollout_id': r['rollout_id'], 'highest_reward': r['highest_reward'],
                            'episode_return': r['episode_return'], **r['motion'],
                            **{k: v for k, v in r['executed'].items() if k != 'switch_steps'}} for r in results]}
    atomic_write(path, lambda f: json.dump(record, f, indent=1), mode='w')


def _python_number(x):
    return x.item() if isinstance(x, np.generic) else x


def episode_outcome(rewards):
    """Per-step rewards -> (episode return, highest reward) as plain Python numbers."""
    rewards = np.array(rewards)
    # NOTE(faithful): steps without a reward (None) are left out of the return, as in the original.
    rewards = rewards[rewards != None]  # noqa: E711 (element-wise comparison)
    if len(rewards) == 0:
        return 0, 0
    return _python_number(np.sum(rewards)), _python_number(np.max(rewards))


def rollout_line(rollout_id, episode_return, highest_reward, max_reward, failure=None):
    """The original's lines of a rollout; with `failure`, why it ended early."""
    ended = f' (ended at {failure})' if failure else ''
    return (f'Rollout {rollout_id}\nepisode_return={episode_return}, episode_highest_reward={highest_reward}, '
            f'env_max_reward={max_reward}, Success: {highest_reward == max_reward}{ended}')
