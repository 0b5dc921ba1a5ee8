"""A look inside a Diffusion policy's sampling, for --eval_offline: at a few recorded observations,
the clean chunk the policy estimates at several denoising steps, and independent samples of the
chunk overlaid, each joint against the recorded actions (robot units). Written beside
offline_eval.png and shown in report.html.

    offline_denoising.png  rows: observations; columns: joints; lines: the estimate from the first
                           denoising step (light) to the final chunk (dark), the recorded actions black
    offline_diversity.png  the same panels with the --diversity_samples chunks overlaid
"""
import os

import numpy as np
import torch

from common.files import atomic_path
from evaluation.offline import observations, recorded_chunks
from tasks import joint_names

DENOISING_PLOT = 'offline_denoising.png'
DIVERSITY_PLOT = 'offline_diversity.png'
FIGURES = (DENOISING_PLOT, DIVERSITY_PLOT)
FRACTIONS = (0.25, 0.5, 0.75)  # the observations shown: at these fractions of the first held-out episode
SHOWN_STEPS = 4  # denoising steps drawn, spread from the first to the last
PANEL_INCHES = (1.7, 1.4)  # (width, height) of one joint's panel


def chunk_views(policy, normalizer, source, index, episode, image_size, device, samples, names=None, seed=0):
    """At the FRACTIONS of episode `index` (episode: offline.check_episode's (qpos, action, is_sim)) ->
    {'steps' (N,), 'recorded' (N, Q, A), 'valid' (N, Q), 'trace' [(timestep, (N, Q, A))] (SHOWN_STEPS of
    them, the last the final chunk's estimate), 'samples' (S, N, Q, A), 'names' (A,)}, actions in robot
    units; names: the joints' (default constants.joint_names)."""
    qpos, action, is_sim = episode
    steps = np.unique((np.asarray(FRACTIONS) * (len(qpos) - 1)).astype(int))  # (N,)
    q, image = observations(source, index, steps, normalizer.normalize_qpos(qpos), policy, image_size, device)
    torch.manual_seed(seed)
    trace = []
    policy.action_chunk(q, image, trace=trace)
    shown = np.unique(np.linspace(0, len(trace) - 1, SHOWN_STEPS).round().astype(int))
    draws = [policy.action_chunk(q, image) for _ in range(max(1, samples))]
    recorded, valid = recorded_chunks(action, is_sim, steps, policy.chunk_size)
    return {'steps': steps, 'recorded': recorded, 'valid': valid, 'names': names or joint_names(action.shape[1]),
            'trace': [(trace[i][0], normalizer.unnormalize_action(trace[i][1].float().cpu().numpy())) for i in shown],
            'samples': np.stack([normalizer.unnormalize_action(d.cpu().numpy()) for d in draws])}


def _panels(views, title):
    """(figure, axes (N, A)) with the recorded actions drawn."""
    from matplotlib.figure import Figure
    recorded, valid = views['recorded'], views['valid']
    n, _, joints = recorded.shape
    fig = Figure(figsize=(PANEL_INCHES[0] * joints, PANEL_INCHES[1] * n + 0.6))
    axes = np.asarray(fig.subplots(n, joints, squeeze=False))
    names = views['names']
    for row, step in enumerate(views['steps']):
        kept = valid[row]
        for j in range(joints):
            ax = axes[row, j]
            ax.plot(np.flatnonzero(kept), recorded[row, kept, j], color='black', linewidth=1.5)
            ax.tick_params(labelsize=5)
            if row == 0:
                ax.set_title(names[j], fontsize=7)
        axes[row, 0].set_ylabel(f'step {step}', fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig, axes


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=80)


def plot_denoising(views, path):
    trace = views['trace']
    fig, axes = _panels(views, 'The clean chunk estimated at denoising steps ' + ', '.join(f't={t}' for t, _ in trace)
                        + ' (light to dark) against the recorded actions (black)')
    for shade, (_, chunk) in zip(np.linspace(0.25, 1.0, len(trace)), trace):
        for (row, j), ax in np.ndenumerate(axes):
            ax.plot(chunk[row, :, j], color=(0.1, 0.3, 0.8, shade), linewidth=1)
    _save(fig, path)


def plot_diversity(views, path):
    samples = views['samples']
    fig, axes = _panels(views, f'{len(samples)} sampled chunks for the same observation against the recorded '
                               f'actions (black)')
    for chunk in samples:
        for (row, j), ax in np.ndenumerate(axes):
            ax.plot(chunk[row, :, j], color=(0.8, 0.3, 0.1, 0.4), linewidth=0.8)
    _save(fig, path)


def write_figures(views, out_dir):
    """offline_denoising.png and offline_diversity.png in out_dir -> their paths."""
    paths = [os.path.join(out_dir, name) for name in FIGURES]
    plot_denoising(views, paths[0])
    plot_diversity(views, paths[1])
    return paths
