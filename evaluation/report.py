"""report.html: an evaluation to look at, written to --ckpt_dir after --eval.

One page, self-contained apart from the rollout videos beside it (it reads offline): what was
evaluated (task, checkpoint and its training, date, how the actions were executed), the summary
(success rate, average return, the `Reward >= r` stages as a bar chart with what each stage means),
the motion figures, one playable video per rollout with its outcome, the training curves and the
figures of an --eval_offline found in the folder (embedded PNGs) and the run's config.json. The
numbers are those of result_{checkpoint}.txt.
"""
import base64
import datetime
import glob
import html
import json
import os
import re

import numpy as np

from common.files import atomic_write
from evaluation.denoising import FIGURES as DENOISING_FIGURES
from evaluation.offline import OFFLINE_EVAL_PLOT
from tasks import get_task_config

REPORT_FILE = 'report.html'
BAR_WIDTH, BAR_HEIGHT, BAR_GAP = 48, 160, 16  # pixels of the reward-stage chart
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.numbers span { font-size: 1.3em; font-weight: 600; margin-right: 2em; }
.rollouts { display: flex; flex-wrap: wrap; gap: 1em; }
.rollout { border: 1px solid #ccc; padding: 0.5em; }
.rollout video { display: block; max-width: 340px; }
.success { color: #176b2c; } .failure { color: #a11; }
.curves img { max-width: 520px; margin: 0.3em; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def reward_stages(highest_rewards, max_reward):
    """[(r, count, rate)] for r = 0..max_reward: rollouts whose highest reward reached r."""
    highest = np.array(highest_rewards)
    return [(r, int((highest >= r).sum()), float((highest >= r).mean())) for r in range(max_reward + 1)]


def stage_chart(stages):
    """An inline SVG bar chart of the reward stages."""
    width = len(stages) * (BAR_WIDTH + BAR_GAP) + BAR_GAP
    bars = []
    for i, (r, count, rate) in enumerate(stages):
        x, h = BAR_GAP + i * (BAR_WIDTH + BAR_GAP), rate * BAR_HEIGHT
        bars.append(f'<rect x="{x}" y="{20 + BAR_HEIGHT - h:.1f}" width="{BAR_WIDTH}" height="{h:.1f}" fill="#4a7fb5"/>'
                    f'<text x="{x + BAR_WIDTH / 2}" y="{14 + BAR_HEIGHT - h:.1f}" text-anchor="middle" '
                    f'font-size="12">{rate * 100:.0f}%</text>'
                    f'<text x="{x + BAR_WIDTH / 2}" y="{BAR_HEIGHT + 38}" text-anchor="middle" '
                    f'font-size="12">&#8805; {r}</text>')
    return (f'<svg width="{width}" height="{BAR_HEIGHT + 48}" role="img" aria-label="rollouts reaching each '
            f'reward">{"".join(bars)}</svg>')


def _rollout_html(result, max_reward, ckpt_dir):
    success = result['highest_reward'] == max_reward
    outcome = (f'<span class="{"success" if success else "failure"}">{"success" if success else "failure"}</span>, '
               f'highest reward {result["highest_reward"]} of {max_reward}, return {result["episode_return"]}')
    if result.get('failure'):
        outcome += f'; ended at {html.escape(result["failure"])}'
    video = ''
    if result.get('video_path'):
        name = html.escape(os.path.relpath(result['video_path'], ckpt_dir))
        video = f'<video controls preload="metadata" src="{name}"></video>'
    return f'<div class="rollout"><b>Rollout {result["rollout_id"]}</b>{video}<div>{outcome}</div></div>'


def _embedded(paths):
    images = []
    for path in paths:
        with open(path, 'rb') as f:
            data = base64.b64encode(f.read()).decode('ascii')
        name = html.escape(os.path.basename(path))
        images.append(f'<img alt="{name}" title="{name}" src="data:image/png;base64,{data}">')
    return ''.join(images)


def _curves_html(ckpt_dir):
    paths = sorted(glob.glob(os.path.join(glob.escape(ckpt_dir), '*_seed_*.png')))
    return _embedded(paths) or '<p>No training curves in this folder.</p>'


def _offline_html(ckpt_dir):
    """--eval_offline's figures in the folder (the errors; a Diffusion policy's denoising and samples)."""
    paths = [os.path.join(ckpt_dir, name) for name in (OFFLINE_EVAL_PLOT, *DENOISING_FIGURES)]
    return _embedded([p for p in paths if os.path.isfile(p)]) or \
        '<p>No offline evaluation in this folder (imitate_episodes.py --eval_offline writes one).</p>'


def checkpoint_training(ckpt_name, run_config):
    """What training the checkpoint holds, in words, from its name and config.json's training settings."""
    training = (run_config or {}).get('training') or {}
    length = (f"{training['num_steps']:,} steps" if training.get('num_steps')
              else f"{training['num_epochs']:,} epochs" if training.get('num_epochs') else None)
    step = re.match(r'policy_(step|epoch)_(\d+)', os.path.basename(ckpt_name))
    if step:
        return f'{step.group(1)} {int(step.group(2)):,}' + (f' of {length}' if length else '')
    if os.path.basename(ckpt_name).startswith('policy_last'):
        return f'the end of training ({length})' if length else 'the end of training'
    if os.path.basename(ckpt_name).startswith('policy_best'):
        return 'the lowest validation loss' + (f' of a {length} run' if length else '')
    return length or 'not recorded'


def _stage_meanings(task_name):
    try:
        return get_task_config(task_name).get('reward_stages') or ()
    except (KeyError, TypeError):
        return ()


def _about_html(ckpt_name, run_config, task_name, execution):
    rows = [('Task', task_name or (run_config or {}).get('task_name') or 'not recorded'),
            ('Checkpoint', f'{ckpt_name}: {checkpoint_training(ckpt_name, run_config)}'),
            ('Evaluated', datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')),
            ('Execution', (execution or {}).get('execution', 'synchronous'))]
    if execution and 'max_switch_jump' in execution:
        rows.append(('Motion', f"largest joint change in one step {execution['max_step_change']:.4f}, at a chunk "
                               f"switch {execution['max_switch_jump']:.4f}; jerk {execution['mean_jerk']:.3g}"))
    if execution and 'delay_distribution' in execution:
        delays = ', '.join(f'{d} steps x {n}' for d, n in execution['delay_distribution'].items()) or 'none'
        rows.append(('Delays met', f"{delays}; starved steps {execution['starved_steps']}"))
    return ''.join(f'<tr><th>{name}</th><td>{html.escape(str(value))}</td></tr>' for name, value in rows)


def report_html(ckpt_dir, ckpt_name, results, max_reward, run_config, task_name=None, execution=None):
    """The page for rollout `results` (evaluate's dicts) of checkpoint `ckpt_name`; execution: the
    execution and motion figures (evaluation/execution.py's execution_summary)."""
    highest = [r['highest_reward'] for r in results]
    success_rate = float(np.mean(np.array(highest) == max_reward))
    avg_return = float(np.mean([r['episode_return'] for r in results]))
    stages = reward_stages(highest, max_reward)
    meanings = ('none reached', *_stage_meanings(task_name or (run_config or {}).get('task_name')))
    stage_rows = ''.join(f'<tr><td>Reward &#8805; {r}</td><td>{count}/{len(results)}</td><td>{rate * 100}%</td>'
                         f'<td>{html.escape(meanings[r]) if r < len(meanings) else ""}</td></tr>'
                         for r, count, rate in stages)
    config_text = html.escape(json.dumps(run_config, indent=2)) if run_config else 'no config.json in this folder'
    title = html.escape(f'{os.path.basename(os.path.normpath(ckpt_dir))}: {ckpt_name}')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<table id="about">{_about_html(ckpt_name, run_config, task_name, execution)}</table>
<div class="numbers">Success rate <span id="success-rate">{success_rate}</span>
Average return <span id="average-return">{avg_return}</span>
Rollouts <span id="num-rollouts">{len(results)}</span></div>
<h2>Reward stages</h2>
{stage_chart(stages)}
<table id="reward-stages">{stage_rows}</table>
<h2>Rollouts</h2>
<div class="rollouts">{''.join(_rollout_html(r, max_reward, ckpt_dir) for r in results)}</div>
<h2>Training curves</h2>
<div class="curves">{_curves_html(ckpt_dir)}</div>
<h2>Offline evaluation</h2>
<div class="offline">{_offline_html(ckpt_dir)}</div>
<h2>Configuration</h2>
<pre id="config">{config_text}</pre>
</body></html>
"""


def write_report(ckpt_dir, ckpt_name, results, max_reward, run_config, task_name=None, execution=None):
    """Write report.html to ckpt_dir -> its path."""
    path = os.path.join(ckpt_dir, REPORT_FILE)
    page = report_html(ckpt_dir, ckpt_name, results, max_reward, run_config, task_name, execution)
    atomic_write(path, lambda f: f.write(page), mode='w')
    return path
