"""The training loop: `train_bc(train_dataloader, val_dataloader, config)`, as the original's.

Each unit (an epoch, or an optimizer step with num_steps) validates first (every validate_every
units), then trains; the lowest validation loss picks the best checkpoint. Files go to
config['ckpt_dir'] (checkpoints/folder.py lists them), each written atomically. Added to the original:
`training_state.pt` (everything --resume needs, so a resumed run reproduces the uninterrupted one's
losses exactly), Ctrl-C / SIGTERM saving that state before exiting, mixed precision, gradient
accumulation, learning-rate schedules, step-based training and several processes under torchrun
(only rank 0 writes files).
"""
import contextlib
import inspect
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field, fields

import torch
from tqdm import tqdm

from checkpoints.folder import TRAINING_STATE, atomic_save, save_policy
from common.seeds import rng_states, set_rng_states, set_seed
from policies.base import autocast
from policies.inputs import image_to_tensor
from policies.registry import make_policy
from training.log import Log, compute_dict_mean
from training.metrics import peak_memory_mb, plot_history
from training.resume import check_resume, read_training_state, run_settings
from training.settings import TrainSettings

### Training settings
# Settings train_bc falls back to when a config (like the original's) lacks them.
TRAIN_DEFAULTS = {**TrainSettings.defaults(), 'device': 'cpu', 'batch_size': None, 'rank': 0, 'dataset_record': None}
# Settings a resumed run must share with the run that wrote the training state.
class NonFiniteLoss(Exception):
    """Raised when a loss term is NaN or infinite; nothing is saved over the good checkpoints."""


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C or SIGTERM once the training state is saved."""

    def __init__(self, signum, state_path):
        super().__init__(f'stopped by signal {signum}; training state saved to {state_path}')
        self.signum, self.state_path = signum, state_path


@dataclass
class Progress:
    """Where a run stands. Saved in training_state.pt as a plain dict (as_dict)."""
    unit: int = 0  # units (epochs, or steps with num_steps) finished
    val_done: bool = False  # the current unit has been validated
    partial: list = field(default_factory=list)  # loss dicts of the current unit's batches
    unit_steps: int = 0  # optimizer steps taken in the current unit
    loader_epoch: int = 0  # pass over the training episodes the loader is in
    batches_done: int = 0  # batches taken from that pass
    step: int = 0  # optimizer steps taken in all
    train_history: list = field(default_factory=list)  # [(unit, {loss key: mean})]
    validation_history: list = field(default_factory=list)  # [(unit, {loss key: mean})]
    best: tuple = None  # (unit, validation loss, CPU state dict) of the lowest validation loss

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


################################ Small helpers ################################

def detach_dict(d):
    return {k: v.detach() for k, v in d.items()}


def cpu_copy(obj):
    """Deep copy of a (nested) checkpoint object with every tensor cloned to the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        copy = type(obj)((k, cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):  # state_dict versions, part of the checkpoint format
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def lr_factor(step, schedule, warmup_steps, total_steps):
    """Multiplier of the base learning rates at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == 'cosine':
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def forward_pass(data, policy, device):
    """A batch (image uint8 (B, [To,] K, H, W, 3), qpos, action, is_pad) -> the policy's loss dict."""
    image, qpos, action, is_pad = data
    image = image_to_tensor(image, device)  # (B, [To,] K, 3, H, W) float in [0, 1]
    return policy(qpos.to(device, non_blocking=True), image, action.to(device, non_blocking=True),
                  is_pad.to(device, non_blocking=True))


def fused_adam(optimizer, device):
    """The policy's Adam/AdamW rebuilt with the fused implementation on CPU and CUDA: the same
    update rule and settings, several times faster than the default loop over tensors."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or device.split(':')[0] not in ('cpu', 'cuda'):
        return optimizer
    accepted = inspect.signature(type(optimizer)).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{**group, 'fused': True, 'foreach': None} for group in optimizer.param_groups]
    return type(optimizer)(groups, **{**defaults, 'fused': True, 'foreach': None})


def to_channels_last(module):
    """Store convolution weights channels-last: with channels-last images (image_to_tensor) the
    convolutions run markedly faster on CPU and on GPU tensor cores."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.to(memory_format=torch.channels_last)


class StopSignal:
    """Turns the first Ctrl-C / SIGTERM into a request to stop after the current optimizer step;
    a second one stops at once."""

    def __init__(self):
        self.signum, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write('\nStopping after this step; saving the training state (press Ctrl-C again to stop at once)')


def check_finite_losses(losses, step, stage):
    """Raise NonFiniteLoss naming the step and the first non-finite term of {term: float}."""
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if not bad:
        return
    term = next((k for k in bad if k != 'loss'), 'loss')
    finite = ', '.join(f'{k} {v:.4g}' for k, v in losses.items() if math.isfinite(v))
    raise NonFiniteLoss(f'{stage} loss term {term!r} is {losses[term]} at optimizer step {step}'
                        + (f' (finite: {finite}; check the loss weights such as --kl_weight)' if finite else '')
                        + '; training stopped, the checkpoints and training state written before are kept')


def close_loader(loader):
    """Stop a DataLoader's worker processes now (they ignore SIGTERM, see data.make_loader), so an
    error cannot leave the interpreter waiting on them at exit."""
    iterator = getattr(loader, '_iterator', None)
    if iterator is None or not hasattr(iterator, '_shutdown_workers'):
        return
    iterator._shutdown_workers()
    for worker in getattr(iterator, '_workers', []):
        if worker.is_alive():
            worker.kill()
            worker.join()
    loader._iterator = None


################################ The trainer ################################

class Trainer:
    """The training loop of train_bc. Progress is counted in units: epochs, or optimizer steps
    with num_steps. Each unit validates first (every validate_every units), then trains."""

    def __init__(self, train_dataloader, val_dataloader, config, state=None, init=None):
        self.config, self.device = config, config['device']
        self.train_loader, self.val_loader = train_dataloader, val_dataloader
        self.rank, self.world_size = config['rank'], config['world_size']
        self.step_mode = config['num_steps'] is not None
        self.num_units = config['num_steps'] if self.step_mode else config['num_epochs']
        self.unit_name = 'step' if self.step_mode else 'epoch'
        self.grad_accum = config['grad_accum']
        sampler = train_dataloader.sampler
        self.batches_per_epoch = -(-sampler.per_rank() // train_dataloader.batch_size)
        self.steps_per_epoch = -(-self.batches_per_epoch // self.grad_accum)
        self.state_path = os.path.join(config['ckpt_dir'], TRAINING_STATE)
        self._build_model(None if config['resume'] else init)
        self.progress = Progress()
        self._batches, self.data_wait = None, 0.0
        if config['resume']:
            self.load_state(state if state is not None else read_training_state(self.state_path))

    def _build_model(self, init):
        config = self.config
        set_seed(config['seed'])
        # a resumed run's training state (or --init_from's weights) replaces the initial ones, ImageNet's included
        self.policy = make_policy(config['policy_class'], config['policy_config'],
                                  load_pretrained=not (config['resume'] or init))
        if init is not None:
            self.policy.load_matching(init['state_dict'], init['source'])
        if config['freeze_backbone']:
            self.policy.freeze_backbone()
        self.policy.set_gradient_checkpointing(config['gradient_checkpointing'])
        self.policy.to(self.device)
        to_channels_last(self.policy)
        self.optimizer = fused_adam(self.policy.configure_optimizers(), self.device)
        total = self.num_units if self.step_mode else self.num_units * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config['lr_schedule'], config['warmup_steps'], total))
        self.scaler = torch.amp.GradScaler('cuda', enabled=config['amp'] == 'fp16')
        self.model = self.policy
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            device_ids = [torch.device(self.device).index] if self.device.startswith('cuda') else None
            # unused parameters: the original ACT computes is_pad_head and decoder layers that get no gradient
            self.model = DistributedDataParallel(self.policy, device_ids=device_ids, broadcast_buffers=False,
                                                 find_unused_parameters=True)

    ### training state
    def save_state(self):
        """Write the full training state (rank 0; every rank contributes its RNG states)."""
        rngs = [rng_states()]
        if self.world_size > 1:
            rngs = [None] * self.world_size
            torch.distributed.all_gather_object(rngs, rng_states())
        if self.rank != 0:
            return
        state = {'model': self.policy.serialize(), 'optimizer': self.optimizer.state_dict(),
                 'scheduler': self.scheduler.state_dict(), 'scaler': self.scaler.state_dict(),
                 'progress': self.progress.as_dict(), 'rng': rngs, 'run': run_settings(self.config, self.step_mode),
                 'data': self.config['dataset_record']}
        atomic_save(state, self.state_path)

    def load_state(self, state):
        check_resume(state, self.config, self.state_path)
        self.policy.deserialize(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.scaler.load_state_dict(state['scaler'])
        self.progress = Progress(**state['progress'])
        set_rng_states(state['rng'][self.rank])
        if self.rank == 0:
            print(f"Resumed from {self.state_path} at {self.unit_name} {self.progress.unit}")

    ### data
    def next_batch(self):
        """The next training batch; passes over the episodes follow one another (loader epochs).
        The time spent waiting for it adds to self.data_wait."""
        start = time.perf_counter()
        try:
            return self._fetch_batch()
        finally:
            self.data_wait += time.perf_counter() - start

    def _fetch_batch(self):
        p = self.progress
        while True:
            if self._batches is None:
                self.train_loader.sampler.set_epoch(p.loader_epoch, p.batches_done * self.train_loader.batch_size)
                self._batches = iter(self.train_loader)
            batch = next(self._batches, None)
            if batch is not None:
                p.batches_done += 1
                return batch
            p.loader_epoch, p.batches_done, self._batches = p.loader_epoch + 1, 0, None

    def group_size(self):
        """Micro-batches in the next optimizer step: an epoch's last step takes what is left."""
        if self.step_mode:
            return self.grad_accum
        return min(self.grad_accum, self.batches_per_epoch - self.progress.batches_done)

    ### one optimizer step
    def train_step(self):
        """One optimizer step over group_size() micro-batches -> its metrics record (metrics.py)."""
        start, self.data_wait = time.perf_counter(), 0.0
        n, samples, step_losses = self.group_size(), 0, []
        for i in range(n):
            sync = self.model.no_sync() if self.world_size > 1 and i < n - 1 else contextlib.nullcontext()
            batch = self.next_batch()
            samples += len(batch[0])
            with sync, autocast(self.device.split(':')[0], self.config['amp']):
                forward_dict = forward_pass(batch, self.model, self.device)
            losses = {k: v.item() for k, v in detach_dict(forward_dict).items()}
            check_finite_losses(losses, self.progress.step, 'training')  # before the weights take it in
            self.scaler.scale(forward_dict['loss'] / n).backward()
            step_losses.append(losses)
        self.progress.partial.extend(step_losses)
        grad_norm = self.unscaled_grad_norm()
        lrs = self.scheduler.get_last_lr()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.policy.post_step()
        self.progress.step += 1
        self.progress.unit_steps += 1
        step_s = time.perf_counter() - start
        return {'split': 'train', 'step': self.progress.step, 'unit': self.progress.unit,
                **compute_dict_mean(step_losses), 'lr': lrs[0],
                **{f'lr_group_{i}': lr for i, lr in enumerate(lrs[1:], 1)},
                'grad_norm': grad_norm, 'samples_per_s': samples * self.world_size / step_s,
                'data_wait_s': self.data_wait, 'step_s': step_s, **peak_memory_mb(self.device)}

    def unscaled_grad_norm(self):
        """The norm of all gradients before clipping; clipped to --clip_grad_norm when given
        (NOTE(faithful): off by default, the original does not clip)."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if self.config['clip_grad_norm'] is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, self.config['clip_grad_norm']))
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))

    ### validation
    def validate(self):
        p = self.progress
        self.policy.eval()
        self.val_loader.sampler.set_epoch(p.unit)
        with torch.inference_mode(), autocast(self.device.split(':')[0], self.config['amp']):
            dicts = [{k: v.item() for k, v in forward_pass(data, self.policy, self.device).items()}
                     for data in self.val_loader]
        summary = self.mean_over_ranks(compute_dict_mean(dicts))
        check_finite_losses(summary, p.step, 'validation')
        self.policy.train()
        p.validation_history.append((p.unit, summary))
        p.val_done = True
        if p.best is None or summary['loss'] < p.best[1]:
            p.best = (p.unit, summary['loss'], cpu_copy(self.policy.serialize()))
        return summary

    def mean_over_ranks(self, summary):
        if self.world_size == 1:
            return summary
        values = torch.tensor([summary[k] for k in summary], dtype=torch.float64)
        torch.distributed.all_reduce(values)
        return {k: v / self.world_size for k, v in zip(summary, values.tolist())}

    def stop_requested(self, stop):
        flag = torch.tensor([stop.signum or 0])
        if self.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag)

    ### the loop
    def run(self, log):
        p = self.progress
        self.policy.train()
        with StopSignal() as stop:
            while p.unit < self.num_units:
                if not p.val_done and p.unit % self.config['validate_every'] == 0:
                    log.validation(p.unit, self.validate())
                while not self.unit_done():
                    log.step(self.train_step())
                    signum = self.stop_requested(stop)
                    if signum:
                        self.save_state()
                        raise TrainingInterrupted(signum, self.state_path)
                self.finish_unit(log)

    def unit_done(self):
        p = self.progress
        return p.unit_steps == 1 if self.step_mode else p.batches_done == self.batches_per_epoch

    def finish_unit(self, log):
        p = self.progress
        u = p.unit
        summary = compute_dict_mean(p.partial)
        p.train_history.append((u, summary))
        p.unit, p.val_done, p.partial, p.unit_steps = u + 1, False, [], 0
        if not self.step_mode:  # the next epoch is the next pass over the episodes
            p.loader_epoch, p.batches_done, self._batches = p.loader_epoch + 1, 0, None
        log.train(u, summary)
        if u % self.config['save_every'] == 0:
            self.save_checkpoint(f'policy_{self.unit_name}_{u}_seed_{self.config["seed"]}',
                                 self.policy.serialize())
            if self.rank == 0:
                plot_history(p.train_history, p.validation_history, self.config['ckpt_dir'],
                             self.config['seed'], self.unit_name)
                log.plot()
            self.save_state()

    def save_checkpoint(self, stem, obj):
        if self.rank == 0:
            save_policy(obj, self.config['ckpt_dir'], stem, self.config['save_format'])

    def finish(self):
        """The original's end-of-training files; returns (best unit, min val loss, best state dict)."""
        p, seed = self.progress, self.config['seed']
        self.save_checkpoint('policy_last', self.policy.serialize())
        best_unit, min_val_loss, best_state_dict = p.best
        self.save_checkpoint(f'policy_{self.unit_name}_{best_unit}_seed_{seed}', best_state_dict)
        self.save_state()
        if self.rank == 0:
            print(f'Training finished:\nSeed {seed}, val loss {min_val_loss:.6f} at {self.unit_name} {best_unit}')
            plot_history(p.train_history, p.validation_history, self.config['ckpt_dir'], seed, self.unit_name)
        return best_unit, min_val_loss, best_state_dict


def train_bc(train_dataloader, val_dataloader, config, state=None, init=None):
    """Train config['policy_class'] -> (best epoch, its validation loss, its state dict).
    With config['resume'], `state` is the training state already read (else it is read here).
    init: checkpoints.reader.read_pretrained's dict, whose fitting weights a new run starts from.
    The loaders' worker processes are stopped when training ends, however it ends."""
    config = {**TRAIN_DEFAULTS, **config}
    try:
        trainer = Trainer(train_dataloader, val_dataloader, config, state, init)
        log = Log(config, trainer)
        try:
            trainer.run(log)
        finally:
            log.close()
        result = trainer.finish()
        log.plot()
        return result
    finally:
        for loader in (train_dataloader, val_dataloader):
            close_loader(loader)
