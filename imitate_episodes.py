"""Train an ACT, CNNMLP or Diffusion policy on recorded episodes, or evaluate one with --eval.

    python imitate_episodes.py --task_name sim_transfer_cube_scripted --ckpt_dir ckpt/cube \
        --policy_class ACT --kl_weight 10 --chunk_size 100 --hidden_dim 512 --batch_size 8 \
        --dim_feedforward 3200 --num_epochs 2000 --lr 1e-5 --seed 0

trains exactly as the original did and leaves the same files in --ckpt_dir: dataset_stats.pkl,
policy_best.ckpt (lowest validation loss), policy_last.ckpt, policy_epoch_{e}_seed_{s}.ckpt every
100 epochs and train_val_{key}_seed_{s}.png. Each epoch validates first, then trains on one
sample per training episode. Added: training_state.pt (everything --resume needs), atomic
writes, Ctrl-C / SIGTERM saving the state before exiting, mixed precision, gradient
accumulation, learning-rate schedules, step-based training, and several processes under
`torchrun --nproc_per_node N imitate_episodes.py ...` (only rank 0 writes files).
"""
import argparse
import contextlib
import inspect
import math
import os
import pickle
import random
import signal
import threading
import warnings

import numpy as np
import torch
from tqdm import tqdm

from detr.resnet import weights_from_checkpoint
from policy import POLICY_DEFAULTS, make_policy
from utils import compute_dict_mean, detach_dict, image_to_tensor, load_data, set_seed

### Fixed settings
SPLIT_SEED = 1  # NOTE(faithful): the original seeds numpy with 1 before drawing the train/val split
TRAINING_STATE = 'training_state.pt'  # file of the full training state in --ckpt_dir
POLICY_CLASSES = ('ACT', 'CNNMLP', 'Diffusion')
EVAL_IMAGE_HW = (480, 640)  # image size evaluation renders when --image_size is not given
ACT_DEFAULT_LR = 1e-5  # ACT/CNNMLP learning rate when --lr is not given (the README recipe's value)


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C or SIGTERM once the training state is saved."""

    def __init__(self, signum, state_path):
        super().__init__(f'stopped by signal {signum}; training state saved to {state_path}')
        self.signum, self.state_path = signum, state_path


################################ Configuration ################################

def get_task_config(task_name):
    """Sim tasks come from constants.py, real-robot tasks from real_robot.TASK_CONFIGS."""
    if task_name[:4] == 'sim_':
        from constants import get_sim_task_config
        return get_sim_task_config(task_name)
    from real_robot import TASK_CONFIGS
    if task_name not in TASK_CONFIGS:
        from constants import SIM_TASK_CONFIGS
        raise KeyError(f"unknown task '{task_name}': sim tasks (constants.py) are "
                       f"{', '.join(sorted(SIM_TASK_CONFIGS))}; real-robot tasks (real_robot/tasks.py) are "
                       f"{', '.join(sorted(TASK_CONFIGS))}")
    return TASK_CONFIGS[task_name]


def task_name_arg(task_name):
    """argparse type of --task_name: a known task, else a usage error listing them."""
    try:
        get_task_config(task_name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from e
    return task_name


def pick_device(name, local_rank=0):
    """'auto' -> cuda (this process's GPU under torchrun), else mps, else cpu; other names pass through."""
    if name != 'auto':
        return name
    if torch.cuda.is_available():
        return f'cuda:{local_rank}'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def make_policy_config(args, camera_names, state_dim, action_dim, image_hw):
    """The policy's settings from the flags; None leaves a value to the policy's own default.
    image_hw (H, W) is the size of the images the policy sees (CNNMLP's MLP input depends on it)."""
    common = {'lr': args['lr'], 'camera_names': camera_names, 'state_dim': state_dim, 'action_dim': action_dim,
              'backbone': args['backbone'], 'lr_backbone': args['lr_backbone'],
              'backbone_weights': args['backbone_weights'], 'pretrained_backbone': args['pretrained_backbone'],
              'weight_decay': args['weight_decay']}
    if args['policy_class'] == 'Diffusion':
        return {**common, 'num_queries': args['chunk_size'], 'obs_horizon': args['obs_horizon'],
                'action_horizon': args['action_horizon'], 'num_inference_steps': args['num_inference_steps'],
                'scheduler': args['scheduler']}
    # ACT and CNNMLP: the original's values where a flag is left unset
    common['lr'] = ACT_DEFAULT_LR if args['lr'] is None else args['lr']
    common['pretrained_backbone'] = True if args['pretrained_backbone'] is None else args['pretrained_backbone']
    common['weight_decay'] = 1e-4 if args['weight_decay'] is None else args['weight_decay']
    common['per_camera_backbone'] = args['per_camera_backbone']
    if args['policy_class'] == 'CNNMLP':
        return {**common, 'num_queries': 1, 'image_size': image_hw}
    return {**common, 'num_queries': args['chunk_size'], 'kl_weight': args['kl_weight'],
            'hidden_dim': args['hidden_dim'], 'dim_feedforward': args['dim_feedforward'],
            'enc_layers': args['enc_layers'], 'dec_layers': args['dec_layers'], 'nheads': args['nheads'],
            'latent_dim': args['latent_dim'], 'dropout': args['dropout'], 'pre_norm': args['pre_norm']}


def make_config(args, task_config, state_dim, action_dim, device, image_hw=EVAL_IMAGE_HW):
    """The config dict train_bc and eval_bc read (the original's keys plus the new ones);
    image_hw: the data's frame size (training) when --image_size is not given."""
    camera_names = args['camera_names'] or task_config['camera_names']
    image_size = tuple(args['image_size']) if args['image_size'] else None
    policy_config = make_policy_config(args, camera_names, state_dim, action_dim, image_size or image_hw)
    return {
        'num_epochs': args['num_epochs'], 'ckpt_dir': args['ckpt_dir'], 'episode_len': task_config['episode_len'],
        'state_dim': state_dim, 'action_dim': action_dim, 'lr': policy_config['lr'], 'policy_class': args['policy_class'],
        'onscreen_render': args['onscreen_render'],
        'policy_config': policy_config,
        'task_name': args['task_name'], 'seed': args['seed'], 'temporal_agg': args['temporal_agg'],
        'camera_names': camera_names, 'real_robot': args['task_name'][:4] != 'sim_', 'device': device,
        'image_size': image_size,
        'num_rollouts': args['num_rollouts'], 'eval_ckpt': args['eval_ckpt'], 'save_video': not args['no_video'],
        'eval_workers': args['eval_workers'], 'robot_backend': args['robot_backend'],
        'robot_driver': args['robot_driver'], 'amp': args['amp'],
        'dataset_dir': args['dataset_dir'] or task_config['dataset_dir'],
        'num_episodes': args['num_episodes'] or task_config['num_episodes'],
        'batch_size': args['batch_size'], 'num_steps': args['num_steps'], 'grad_accum': args['grad_accum'],
        'lr_schedule': args['lr_schedule'], 'warmup_steps': args['warmup_steps'],
        'validate_every': args['validate_every'], 'save_every': args['save_every'], 'resume': args['resume'],
        'wandb': args['wandb'], 'num_workers': args['num_workers'], 'preload': args['preload'],
        'obs_horizon': args['obs_horizon'] if args['policy_class'] == 'Diffusion' else 1,
    }


def check_args(args, device):
    for flag in ('batch_size', 'grad_accum', 'validate_every', 'save_every', 'num_epochs'):
        if args[flag] < 1:
            raise ValueError(f'--{flag} must be at least 1, got {args[flag]}')
    if args['num_steps'] is not None and args['num_steps'] < 1:
        raise ValueError(f"--num_steps must be at least 1, got {args['num_steps']}")
    if args['policy_class'] not in POLICY_CLASSES:
        raise ValueError(f"--policy_class must be one of {', '.join(POLICY_CLASSES)}, got {args['policy_class']!r}")
    if args['amp'] == 'fp16' and not device.startswith('cuda'):
        raise ValueError(f'--amp fp16 needs a CUDA device (got {device}); use --amp bf16 on this device')
    if args['amp'] == 'bf16' and device == 'cpu' and not cpu_has_bf16():
        warnings.warn('--amp bf16: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so bf16 '
                      'runs emulated and much slower than --amp off')


def cpu_has_bf16():
    checks = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(check() for check in checks if check is not None)


def dims_from_stats(ckpt_dir):
    """(state_dim, action_dim) of a trained policy from its dataset_stats.pkl; the policy defaults
    without one (evaluation then stops with an error naming the missing file)."""
    path = os.path.join(ckpt_dir, 'dataset_stats.pkl')
    if not os.path.isfile(path):
        return POLICY_DEFAULTS['state_dim'], POLICY_DEFAULTS['action_dim']
    with open(path, 'rb') as f:
        stats = pickle.load(f)
    return len(stats['qpos_mean']), len(stats['action_mean'])


################################ Entry point ################################

def main(args):
    """Train, or evaluate with args['eval']; args is the dict of the command-line flags."""
    set_seed(SPLIT_SEED)
    task_config = get_task_config(args['task_name'])
    rank, world_size, local_rank = distributed_env()
    device = pick_device(args['device'], local_rank)
    check_args(args, device)

    if args['eval']:
        from evaluate import eval_bc
        config = make_config(args, task_config, *dims_from_stats(args['ckpt_dir']), device)
        ckpt_name = config['eval_ckpt']
        success_rate, avg_return = eval_bc(config, ckpt_name, save_episode=config['save_video'])
        print(f'{ckpt_name}: {success_rate=} {avg_return=}')
        print()
        return

    if world_size > 1:
        torch.distributed.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    try:
        train_main(args, task_config, device, rank, world_size)
    except TrainingInterrupted as stop:
        if rank == 0:
            print(f'\nInterrupted: {stop}. Continue with the same command plus --resume.')
        raise SystemExit(128 + stop.signum)
    finally:
        if world_size > 1:
            torch.distributed.destroy_process_group()


def train_main(args, task_config, device, rank, world_size):
    dataset_dir = args['dataset_dir'] or task_config['dataset_dir']
    num_episodes = args['num_episodes'] or task_config['num_episodes']
    camera_names = args['camera_names'] or task_config['camera_names']
    obs_horizon = args['obs_horizon'] if args['policy_class'] == 'Diffusion' else 1
    train_dataloader, val_dataloader, stats, _ = load_data(
        dataset_dir, num_episodes, camera_names, args['batch_size'], args['batch_size'],
        policy_class=args['policy_class'], obs_horizon=obs_horizon, image_size=args['image_size'],
        num_workers=args['num_workers'], preload=args['preload'], seed=args['seed'], device=device,
        rank=rank, world_size=world_size)
    config = make_config(args, task_config, len(stats['qpos_mean']), len(stats['action_mean']), device,
                         tuple(train_dataloader.dataset.hw))
    config.update(rank=rank, world_size=world_size)
    ckpt_dir = config['ckpt_dir']
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        atomic_save(stats, os.path.join(ckpt_dir, 'dataset_stats.pkl'), pickle.dump)

    best_epoch, min_val_loss, best_state_dict = train_bc(train_dataloader, val_dataloader, config)
    if rank == 0:
        atomic_save(best_state_dict, os.path.join(ckpt_dir, 'policy_best.ckpt'))
        unit = 'step' if config['num_steps'] else 'epoch'
        print(f'Best ckpt, val loss {min_val_loss:.6f} @ {unit}{best_epoch}')


def distributed_env():
    """(rank, world_size, local_rank) from the variables torchrun sets; (0, 1, 0) otherwise."""
    return (int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
            int(os.environ.get('LOCAL_RANK', 0)))


def __getattr__(name):
    """eval_bc lives in evaluate.py; the original defined it here, so it is still importable from here."""
    if name == 'eval_bc':
        from evaluate import eval_bc
        return eval_bc
    raise AttributeError(f"module 'imitate_episodes' has no attribute '{name}'")


################################ Files ################################

def atomic_save(obj, path, save=torch.save):
    """Write obj with save(obj, file) to a temporary file beside path, then rename it over path:
    an interrupted write leaves the previous file intact."""
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
        ax.legend()
        ax.set_title(key)
        fig.tight_layout()
        path = os.path.join(ckpt_dir, f'train_val_{key}_seed_{seed}.png')
        atomic_save(fig, path, lambda f, file: f.savefig(file, format='png'))
    tqdm.write(f'Saved plots to {ckpt_dir}')


################################ Training ################################

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


def autocast(device, amp):
    device_type = device.split(':')[0]
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def fused_adam(optimizer, device):
    """The policy's Adam/AdamW rebuilt with the fused implementation on CPU and CUDA: the same
    update rule and settings, several times faster than the default loop over tensors."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or device.split(':')[0] not in ('cpu', 'cuda'):
        return optimizer
    accepted = inspect.signature(type(optimizer)).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{**group, 'fused': True, 'foreach': None} for group in optimizer.param_groups]
    fused = type(optimizer)(groups, **{**defaults, 'fused': True, 'foreach': None})
    return fused


def to_channels_last(module):
    """Store convolution weights channels-last: with channels-last images (image_to_tensor) the
    convolutions run markedly faster on CPU and on GPU tensor cores."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.to(memory_format=torch.channels_last)


def rng_states():
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


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


# Settings a resumed run must share with the run that wrote the training state.
RESUME_KEYS = ('policy_class', 'policy_config', 'seed', 'batch_size', 'grad_accum', 'world_size')
INITIAL_WEIGHT_KEYS = ('backbone_weights', 'pretrained_backbone')  # replaced by the saved weights anyway


def run_settings(config, step_mode):
    settings = {k: config[k] for k in RESUME_KEYS}
    settings['policy_config'] = {k: v for k, v in config['policy_config'].items() if k not in INITIAL_WEIGHT_KEYS}
    settings['step_mode'] = step_mode
    return settings


class Trainer:
    """The training loop of train_bc. Progress is counted in units: epochs, or optimizer steps
    with --num_steps. Each unit validates first (every validate_every units), then trains."""

    def __init__(self, train_dataloader, val_dataloader, config):
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
        self._build_model()
        self.progress = {'unit': 0, 'val_done': False, 'partial': [], 'unit_steps': 0, 'loader_epoch': 0,
                         'batches_done': 0, 'step': 0, 'train_history': [], 'validation_history': [], 'best': None}
        self._batches = None
        if config['resume']:
            self.load_state()

    def _build_model(self):
        config = self.config
        set_seed(config['seed'])
        # a resumed run's training state replaces the initial weights, ImageNet ones included
        with weights_from_checkpoint() if config['resume'] else contextlib.nullcontext():
            self.policy = make_policy(config['policy_class'], config['policy_config'])
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
                 'progress': self.progress, 'rng': rngs, 'run': run_settings(self.config, self.step_mode)}
        atomic_save(state, self.state_path)

    def load_state(self):
        if not os.path.isfile(self.state_path):
            raise FileNotFoundError(f'--resume: no training state at {self.state_path}')
        state = torch.load(self.state_path, map_location='cpu', weights_only=False)
        now = run_settings(self.config, self.step_mode)
        differ = [k for k in now if state['run'].get(k) != now[k]]
        if differ:
            raise ValueError(f'--resume: {self.state_path} was written with different settings: ' + '; '.join(
                f'{k}: {state["run"].get(k)!r} then, {now[k]!r} now' for k in differ))
        self.policy.deserialize(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.scaler.load_state_dict(state['scaler'])
        self.progress = state['progress']
        set_rng_states(state['rng'][self.rank])
        if self.rank == 0:
            print(f"Resumed from {self.state_path} at {self.unit_name} {self.progress['unit']}")

    ### data
    def next_batch(self):
        """The next training batch; passes over the episodes follow one another (loader epochs)."""
        p = self.progress
        while True:
            if self._batches is None:
                self.train_loader.sampler.set_epoch(p['loader_epoch'], p['batches_done'] * self.train_loader.batch_size)
                self._batches = iter(self.train_loader)
            batch = next(self._batches, None)
            if batch is not None:
                p['batches_done'] += 1
                return batch
            p['loader_epoch'], p['batches_done'], self._batches = p['loader_epoch'] + 1, 0, None

    def group_size(self):
        """Micro-batches in the next optimizer step: an epoch's last step takes what is left."""
        if self.step_mode:
            return self.grad_accum
        return min(self.grad_accum, self.batches_per_epoch - self.progress['batches_done'])

    ### one optimizer step
    def train_step(self):
        n = self.group_size()
        for i in range(n):
            sync = self.model.no_sync() if self.world_size > 1 and i < n - 1 else contextlib.nullcontext()
            with sync, autocast(self.device, self.config['amp']):
                forward_dict = forward_pass(self.next_batch(), self.model, self.device)
            self.scaler.scale(forward_dict['loss'] / n).backward()
            self.progress['partial'].append({k: v.item() for k, v in detach_dict(forward_dict).items()})
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.scheduler.step()
        if hasattr(self.policy, 'post_step'):
            self.policy.post_step()
        self.progress['step'] += 1
        self.progress['unit_steps'] += 1

    ### validation
    def validate(self):
        p = self.progress
        self.policy.eval()
        self.val_loader.sampler.set_epoch(p['unit'])
        with torch.inference_mode(), autocast(self.device, self.config['amp']):
            dicts = [{k: v.item() for k, v in forward_pass(data, self.policy, self.device).items()}
                     for data in self.val_loader]
        summary = self.mean_over_ranks(compute_dict_mean(dicts))
        self.policy.train()
        p['validation_history'].append((p['unit'], summary))
        p['val_done'] = True
        if p['best'] is None or summary['loss'] < p['best'][1]:
            p['best'] = (p['unit'], summary['loss'], cpu_copy(self.policy.serialize()))
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
            while p['unit'] < self.num_units:
                u = p['unit']
                if not p['val_done'] and u % self.config['validate_every'] == 0:
                    log.validation(u, self.validate())
                while not self.unit_done():
                    self.train_step()
                    signum = self.stop_requested(stop)
                    if signum:
                        self.save_state()
                        raise TrainingInterrupted(signum, self.state_path)
                self.finish_unit(log)

    def unit_done(self):
        p = self.progress
        return p['unit_steps'] == 1 if self.step_mode else p['batches_done'] == self.batches_per_epoch

    def finish_unit(self, log):
        p = self.progress
        u = p['unit']
        summary = compute_dict_mean(p['partial'])
        p['train_history'].append((u, summary))
        p['unit'], p['val_done'], p['partial'], p['unit_steps'] = u + 1, False, [], 0
        if not self.step_mode:  # the next epoch is the next pass over the episodes
            p['loader_epoch'], p['batches_done'], self._batches = p['loader_epoch'] + 1, 0, None
        log.train(u, summary, self.scheduler.get_last_lr()[0])
        if u % self.config['save_every'] == 0:
            self.save_checkpoint(f'policy_{self.unit_name}_{u}_seed_{self.config["seed"]}.ckpt',
                                 self.policy.serialize())
            if self.rank == 0:
                plot_history(p['train_history'], p['validation_history'], self.config['ckpt_dir'],
                             self.config['seed'], self.unit_name)
            self.save_state()

    def save_checkpoint(self, name, obj):
        if self.rank == 0:
            atomic_save(obj, os.path.join(self.config['ckpt_dir'], name))

    def finish(self):
        """The original's end-of-training files; returns (best unit, min val loss, best state dict)."""
        p, seed = self.progress, self.config['seed']
        self.save_checkpoint('policy_last.ckpt', self.policy.serialize())
        best_unit, min_val_loss, best_state_dict = p['best']
        self.save_checkpoint(f'policy_{self.unit_name}_{best_unit}_seed_{seed}.ckpt', best_state_dict)
        self.save_state()
        if self.rank == 0:
            print(f'Training finished:\nSeed {seed}, val loss {min_val_loss:.6f} at {self.unit_name} {best_unit}')
            plot_history(p['train_history'], p['validation_history'], self.config['ckpt_dir'], seed, self.unit_name)
        return best_unit, min_val_loss, best_state_dict


class Log:
    """Console (the original's messages), tqdm bar and optional wandb, on rank 0 only."""

    def __init__(self, config, trainer):
        self.enabled = config['rank'] == 0
        self.trainer = trainer
        self.unit_name = trainer.unit_name
        self.print_every = config['validate_every'] if trainer.step_mode else 1
        self.bar = tqdm(total=trainer.num_units, initial=trainer.progress['unit'], desc=self.unit_name,
                        disable=not self.enabled)
        self.wandb = init_wandb(config) if config['wandb'] and self.enabled else None
        self.val_loss = None

    def validation(self, unit, summary):
        if not self.enabled:
            return
        tqdm.write(f'\n{self.unit_name.capitalize()} {unit}')
        tqdm.write(f"Val loss:   {summary['loss']:.5f}")
        tqdm.write(' '.join(f'{k}: {v:.3f}' for k, v in summary.items()))
        self.val_loss = summary['loss']
        if self.wandb:
            self.wandb.log({f'val/{k}': v for k, v in summary.items()}, step=self.trainer.progress['step'])

    def train(self, unit, summary, lr):
        if not self.enabled:
            return
        self.bar.update(1)
        postfix = {'loss': f"{summary['loss']:.4f}"}
        if self.val_loss is not None:
            postfix['val'] = f'{self.val_loss:.4f}'
        self.bar.set_postfix(postfix)
        if (unit + 1) % self.print_every == 0:
            recent = [s for u, s in self.trainer.progress['train_history'][-self.print_every:]]
            mean = compute_dict_mean(recent)
            tqdm.write(f"Train loss: {mean['loss']:.5f}")
            tqdm.write(' '.join(f'{k}: {v:.3f}' for k, v in mean.items()))
        if self.wandb:
            self.wandb.log({**{f'train/{k}': v for k, v in summary.items()}, 'lr': lr},
                           step=self.trainer.progress['step'])

    def close(self):
        self.bar.close()
        if self.wandb:
            self.wandb.finish()


def init_wandb(config):
    try:
        import wandb
    except ImportError:
        raise ImportError('--wandb needs the wandb package: pip install wandb') from None
    return wandb.init(project='act', name=os.path.basename(os.path.normpath(config['ckpt_dir'])),
                      config={k: v for k, v in config.items() if k != 'policy_config'} | config['policy_config'])


# Training settings train_bc falls back to when a config (like the original's) lacks them.
TRAIN_DEFAULTS = {'device': 'cpu', 'amp': 'off', 'num_steps': None, 'grad_accum': 1, 'lr_schedule': 'constant',
                  'warmup_steps': 0, 'validate_every': 1, 'save_every': 100, 'resume': False, 'wandb': False,
                  'batch_size': None, 'world_size': 1, 'rank': 0}


def train_bc(train_dataloader, val_dataloader, config):
    """Train config['policy_class'] -> (best epoch, its validation loss, its state dict)."""
    config = {**TRAIN_DEFAULTS, **config}
    trainer = Trainer(train_dataloader, val_dataloader, config)
    log = Log(config, trainer)
    try:
        trainer.run(log)
    finally:
        log.close()
    return trainer.finish()


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the original's flags
    parser.add_argument('--eval', action='store_true', help='evaluate the --eval_ckpt checkpoint instead of training')
    parser.add_argument('--onscreen_render', action='store_true', help='show the simulation while evaluating')
    parser.add_argument('--ckpt_dir', required=True, help='folder for checkpoints, statistics and plots')
    parser.add_argument('--policy_class', required=True, choices=POLICY_CLASSES, help='policy to train')
    parser.add_argument('--task_name', required=True, type=task_name_arg,
                        help='sim_* tasks from constants.py, others from real_robot.TASK_CONFIGS')
    parser.add_argument('--batch_size', type=int, default=8, help='batch size (per process under torchrun), training and validation')
    parser.add_argument('--seed', type=int, default=0, help='seed of the model initialisation and of the sampling')
    parser.add_argument('--num_epochs', type=int, default=2000,
                        help='epochs; an epoch takes one sample from each training episode')
    parser.add_argument('--lr', type=float, default=None,
                        help=f'learning rate (the backbone uses --lr_backbone); default {ACT_DEFAULT_LR} for ACT and '
                             'CNNMLP, 1e-4 for Diffusion')
    parser.add_argument('--kl_weight', type=float, default=10.0, help='ACT: weight of the KL term of the loss')
    parser.add_argument('--chunk_size', type=int, default=100,
                        help='actions predicted per query (ACT num_queries; Diffusion prediction horizon)')
    parser.add_argument('--hidden_dim', type=int, default=512, help='ACT: transformer width')
    parser.add_argument('--dim_feedforward', type=int, default=3200, help='ACT: transformer feed-forward width')
    parser.add_argument('--temporal_agg', action='store_true', help='evaluation: temporal ensembling of chunks')
    # data
    parser.add_argument('--dataset_dir', help="episodes folder (default: the task's, under ACT_DATA_DIR)")
    parser.add_argument('--num_episodes', type=int, help="episodes episode_0..N-1 to use (default: the task's)")
    parser.add_argument('--camera_names', nargs='+', help="cameras the policy sees (default: the task's)")
    parser.add_argument('--image_size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size the policy sees: training resizes frames to it, sim evaluation '
                             'renders at it (default: the data\'s size for training, 480 640 for evaluation)')
    parser.add_argument('--num_workers', type=int,
                        help='data loader processes (default: 0 when frames are preloaded, else 1)')
    parser.add_argument('--preload', choices=('auto', 'on', 'off'), default='auto',
                        help='hold all frames in memory (auto: when they take under half the free memory)')
    # model sizes
    parser.add_argument('--enc_layers', type=int, default=4, help='ACT: transformer encoder layers')
    parser.add_argument('--dec_layers', type=int, default=7, help='ACT: transformer decoder layers')
    parser.add_argument('--nheads', type=int, default=8, help='ACT: attention heads')
    parser.add_argument('--latent_dim', type=int, default=32, help='ACT: size of the CVAE latent')
    parser.add_argument('--dropout', type=float, default=0.1, help='ACT: transformer dropout')
    parser.add_argument('--pre_norm', action='store_true', help='ACT: layer norm before attention (pre-norm)')
    parser.add_argument('--backbone', default='resnet18', choices=('resnet18', 'resnet34', 'resnet50'),
                        help='image backbone')
    parser.add_argument('--per_camera_backbone', action='store_true', help='ACT/CNNMLP: one backbone per camera')
    parser.add_argument('--lr_backbone', type=float, default=1e-5, help='learning rate of the backbone')
    parser.add_argument('--weight_decay', type=float, help='AdamW weight decay (default: 1e-4; Diffusion 1e-6)')
    parser.add_argument('--backbone_weights', help='file of ImageNet backbone weights (default: torch hub cache)')
    parser.add_argument('--pretrained_backbone', action=argparse.BooleanOptionalAction,
                        help='start from ImageNet weights (default: yes for ACT/CNNMLP, no for Diffusion)')
    # Diffusion
    parser.add_argument('--num_inference_steps', type=int, default=10, help='Diffusion: denoising steps per query')
    parser.add_argument('--scheduler', choices=('ddim', 'ddpm'), default='ddim', help='Diffusion: noise scheduler')
    parser.add_argument('--obs_horizon', type=int, default=1, help='Diffusion: observation steps per query')
    parser.add_argument('--action_horizon', type=int,
                        help='Diffusion: actions executed per query (default: min(8, --chunk_size))')
    # training
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps')
    parser.add_argument('--amp', choices=('off', 'bf16', 'fp16'), default='off',
                        help='mixed precision (bf16 on recent CPUs and GPUs; fp16 on CUDA only)')
    parser.add_argument('--grad_accum', type=int, default=1, help='batches accumulated per optimizer step')
    parser.add_argument('--lr_schedule', choices=('constant', 'cosine'), default='constant',
                        help='learning-rate schedule over the optimizer steps')
    parser.add_argument('--warmup_steps', type=int, default=0, help='linear warm-up steps')
    parser.add_argument('--num_steps', type=int,
                        help='train for this many optimizer steps instead of --num_epochs; --validate_every '
                             'and --save_every then count steps')
    parser.add_argument('--validate_every', type=int, default=1, help='validate every N epochs (or steps)')
    parser.add_argument('--save_every', type=int, default=100,
                        help='write policy_epoch_{N}_seed_{seed}.ckpt, the plots and the training state every N epochs (or steps)')
    parser.add_argument('--resume', action='store_true', help=f'continue from {TRAINING_STATE} in --ckpt_dir')
    parser.add_argument('--wandb', action='store_true', help='log to Weights & Biases (needs the wandb package)')
    # evaluation
    parser.add_argument('--num_rollouts', type=int, default=50, help='evaluation rollouts')
    parser.add_argument('--eval_ckpt', default='policy_best.ckpt', help='checkpoint in --ckpt_dir to evaluate')
    parser.add_argument('--no_video', action='store_true', help='evaluation: do not write video{i}.mp4')
    parser.add_argument('--eval_workers', type=int, default=1, help='evaluation: parallel rollout processes')
    parser.add_argument('--robot_backend', choices=('builtin', 'aloha_scripts'), default='builtin',
                        help='real robot: our drivers or the aloha_scripts/ROS stack')
    parser.add_argument('--robot_driver', choices=('auto', 'interbotix', 'dynamixel', 'sim'), default='auto',
                        help='real robot, builtin backend: how to reach the arms')
    main(vars(parser.parse_args()))
