"""training/metrics.py and training.log.Log: every field of metrics.jsonl on every step, a resumed run's file,
gradient clipping, TensorBoard event files and an offline wandb run."""
import glob
import json
import math
import os
import re

import pytest
import torch

import imitate_episodes
from tests.helpers import train_args
from tests.test_train import interrupt_and_resume
from training import loop
from training.metrics import METRICS_FILE, read_metrics

TRAIN_FIELDS = {'split', 'step', 'unit', 'loss', 'l1', 'kl', 'lr', 'lr_group_1', 'grad_norm', 'samples_per_s',
                'data_wait_s', 'step_s', 'peak_rss_mb'}


def test_every_step_has_every_field(two_epoch_run):
    args, _ = two_epoch_run
    records = read_metrics(os.path.join(args['ckpt_dir'], METRICS_FILE))
    steps = [r for r in records if r['split'] == 'train']
    assert [r['step'] for r in steps] == [1, 2, 3, 4] and [r['unit'] for r in steps] == [0, 0, 1, 1]
    for record in steps:
        assert set(record) == TRAIN_FIELDS
        assert all(math.isfinite(record[k]) and record[k] >= 0 for k in TRAIN_FIELDS - {'split'})
        assert record['loss'] == pytest.approx(record['l1'] + 10 * record['kl'])  # ACT: l1 + kl_weight * kl
        assert record['lr'] == 1e-4 and record['lr_group_1'] == 1e-5
        assert record['step_s'] >= record['data_wait_s'] and record['grad_norm'] > 0
    validations = [r for r in records if r['split'] == 'val']
    assert [(r['unit'], r['step']) for r in validations] == [(0, 0), (1, 2)]
    assert os.path.isfile(os.path.join(args['ckpt_dir'], 'train_metrics_seed_0.png'))


def test_a_resumed_run_writes_each_step_once(tiny_dataset, tmp_path, monkeypatch):
    interrupt_and_resume(tiny_dataset, tmp_path / 'split', monkeypatch, stop_step=3)
    records = read_metrics(str(tmp_path / 'split' / METRICS_FILE))
    assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2, 3, 4]
    assert [r['unit'] for r in records if r['split'] == 'val'] == [0, 1]


def test_clip_grad_norm_clips_and_the_norm_before_is_reported(tiny_dataset, tmp_path, monkeypatch):
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm):
        norm = real_clip(params, max_norm)
        clipped.append((float(norm), float(torch.nn.utils.get_total_norm([p.grad for p in params]))))
        return norm
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', clip)
    imitate_episodes.main(train_args(tiny_dataset, tmp_path, num_epochs=1, clip_grad_norm=0.01))
    steps = [r for r in read_metrics(str(tmp_path / METRICS_FILE)) if r['split'] == 'train']
    assert [r['grad_norm'] for r in steps] == [before for before, _ in clipped]
    assert all(before > 0.01 and after == pytest.approx(0.01, rel=1e-3) for before, after in clipped)


def test_tensorboard_event_files_hold_the_metrics(tiny_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    imitate_episodes.main(train_args(tiny_dataset, tmp_path, num_epochs=1, tensorboard=True))
    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    assert {'train/loss', 'train/grad_norm', 'train/samples_per_s', 'val/loss'} <= set(events.Tags()['scalars'])
    jsonl = [r['loss'] for r in read_metrics(str(tmp_path / METRICS_FILE)) if r['split'] == 'train']
    assert [e.value for e in events.Scalars('train/loss')] == pytest.approx(jsonl, rel=1e-6)


def wandb_logged(run_file, key):
    """The distinct values logged under `key` in an offline run's .wandb file (history and summary
    items: a key, field 2, then its JSON value, field 16)."""
    data = open(run_file, 'rb').read()
    name = key.encode()
    pattern = re.compile(re.escape(bytes([0x12, len(name)]) + name + b'\x82\x01') + rb'(.)', re.S)
    return sorted({json.loads(data[m.end():m.end() + m.group(1)[0]]) for m in pattern.finditer(data)})


def test_wandb_works_offline(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    imitate_episodes.main(train_args(tiny_dataset, tmp_path / 'ckpt', num_epochs=1, wandb=True))
    run_files = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    assert len(run_files) == 1
    jsonl = [r for r in read_metrics(str(tmp_path / 'ckpt' / METRICS_FILE)) if r['split'] == 'train']
    assert wandb_logged(run_files[0], 'train/grad_norm') == pytest.approx(sorted(r['grad_norm'] for r in jsonl))
    assert len(wandb_logged(run_files[0], 'val/loss')) == 1


def test_loss_curves_use_a_log_axis(two_epoch_run, tmp_path, monkeypatch):
    from matplotlib.axes import Axes
    scales = []
    monkeypatch.setattr(Axes, 'set_yscale', lambda self, value, **kw: scales.append(value))
    progress = loop.read_training_state(os.path.join(two_epoch_run[0]['ckpt_dir'], loop.TRAINING_STATE))['progress']
    loop.plot_history(progress['train_history'], progress['validation_history'], str(tmp_path), 0)
    assert scales == ['log', 'log', 'log']  # l1, kl, loss
