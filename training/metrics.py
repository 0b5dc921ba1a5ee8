"""Training metrics: what each optimizer step is measured by, and where the measurements go.

A record per optimizer step (split 'train'): the step, the unit (epoch, or step with --num_steps),
the total loss and each loss term (means over the step's micro-batches), the learning rate of each
parameter group (`lr`, then `lr_group_1`, ...), the gradient norm before clipping, samples per
second, the time spent waiting for data and the whole step time, and the peak memory (process RSS;
CUDA memory on a GPU). A record per validation (split 'val') holds the validation losses. Records go
to `metrics.jsonl` in --ckpt_dir (one JSON object per line), to the `train_metrics_seed_{s}.png`
curves, to TensorBoard event files under `tensorboard/` with --tensorboard, and to wandb (training.log.Log). The loss curves of the history are plot_history's.
"""
import json
import os
import resource
import sys

from tqdm import tqdm

from checkpoints.folder import atomic_save
from common.files import FULL_ERRNOS, atomic_path, atomic_write, disk_full_error

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
# What train_metrics_seed_{s}.png plots against the step: (title, record keys)
METRIC_PANELS = (('gradient norm (before clipping)', ('grad_norm',)), ('learning rate', ('lr',)),
                 ('samples / s', ('samples_per_s',)), ('seconds', ('step_s', 'data_wait_s')),
                 ('peak memory (MB)', ('peak_rss_mb', 'peak_cuda_mb')))


def peak_memory_mb(device):
    """{'peak_rss_mb': the process's peak resident memory, 'peak_cuda_mb' on a CUDA device}."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {'peak_rss_mb': rss * (1 if sys.platform == 'darwin' else 1024) / 2 ** 20}
    if str(device).startswith('cuda'):
        import torch
        peak['peak_cuda_mb'] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return peak


def read_metrics(path):
    """The records of a metrics.jsonl; a line torn by a killed run is skipped."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class MetricsFile:
    """metrics.jsonl, appended a line at a time. A resumed run keeps the records its training
    state covers (steps up to `step`, validations of `val_units`) and drops later ones, which the
    resumed run measures again."""

    def __init__(self, ckpt_dir, step=None, val_units=()):
        self.path = os.path.join(ckpt_dir, METRICS_FILE)
        self.records = []
        if step is not None:
            self.records = [r for r in read_metrics(self.path) if
                            (r['split'] == 'train' and r['step'] <= step) or
                            (r['split'] == 'val' and r['unit'] in set(val_units))]
        atomic_write(self.path, lambda f: f.write(''.join(json.dumps(r) + '\n' for r in self.records)), mode='w')
        self.file = open(self.path, 'a')

    def write(self, record):
        self.records.append(record)
        try:
            self.file.write(json.dumps(record) + '\n')
            self.file.flush()
        except OSError as err:
            if err.errno in FULL_ERRNOS:
                raise disk_full_error(err, self.path) from None
            raise

    def close(self):
        self.file.close()


class TensorBoardLog:
    """Each record's numbers as TensorBoard scalars '{split}/{key}' at its step."""

    def __init__(self, ckpt_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError('--tensorboard needs the tensorboard package: pip install -r requirements.txt') from None
        self.writer = SummaryWriter(log_dir=os.path.join(ckpt_dir, TENSORBOARD_DIR))

    def write(self, record):
        for key, value in record.items():
            if key not in ('split', 'step') and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['split']}/{key}", value, record['step'])

    def close(self):
        self.writer.close()


def plot_metrics(records, ckpt_dir, seed):
    """train_metrics_seed_{seed}.png: one panel per METRIC_PANELS entry against the step."""
    from matplotlib.figure import Figure
    train = [r for r in records if r['split'] == 'train']
    if not train:
        return
    fig = Figure(figsize=(6, 2.2 * len(METRIC_PANELS)))
    for ax, (title, keys) in zip(fig.subplots(len(METRIC_PANELS), 1, sharex=True), METRIC_PANELS):
        for key in keys:
            points = [(r['step'], r[key]) for r in train if key in r]
            if points:
                ax.plot(*zip(*points), label=key)
        ax.set_title(title)
        ax.legend(loc='upper right')
    fig.axes[-1].set_xlabel('optimizer step')
    fig.tight_layout()
    with atomic_path(os.path.join(ckpt_dir, f'train_metrics_seed_{seed}.png')) as tmp:
        fig.savefig(tmp, format='png')


def plot_history(train_history, validation_history, ckpt_dir, seed, unit='epoch'):
    """One PNG per loss key: train_val_{key}_seed_{seed}.png. Histories are lists of (unit index, {key: value})."""
    from matplotlib.figure import Figure
    if not train_history:
        return
    for key in train_history[0][1]:
        fig = Figure()
        ax = fig.subplots()
        for label, history in (('train', train_history), ('validation', validation_history)):
            ax.plot([u for u, _ in history], [summary[key] for _, summary in history], label=label)
        ax.set_xlabel(unit)
        if all(summary[key] > 0 for history in (train_history, validation_history) for _, summary in history):
            ax.set_yscale('log')  # losses fall over orders of magnitude
        ax.legend()
        ax.set_title(key)
        fig.tight_layout()
        path = os.path.join(ckpt_dir, f'train_val_{key}_seed_{seed}.png')
        atomic_save(fig, path, lambda f, file: f.savefig(file, format='png'))
    tqdm.write(f'Saved plots to {ckpt_dir}')
