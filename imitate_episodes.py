r"""Train an ACT, CNNMLP or Diffusion policy on recorded episodes, or evaluate one with --eval.

    python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT
    python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT --eval --temporal_agg
    python imitate_episodes.py --eval_offline --ckpt_dir ckpt/sim_transfer_cube_scripted

The first trains the README recipe (the policy's defaults: for ACT --kl_weight 10 --chunk_size 100
--hidden_dim 512 --dim_feedforward 3200 --lr 1e-5, with --batch_size 8 --num_epochs 2000 --seed 0)
into ckpt/<task_name>; the second rolls out the policy it trained. The original's full command lines
keep their meaning. Training leaves the original's files in --ckpt_dir (dataset_stats.pkl,
policy_best.ckpt, policy_last.ckpt, policy_epoch_{e}_seed_{s}.ckpt, train_val_{key}_seed_{s}.png),
plus config.json, which lets --eval rebuild the policy with no model flags (flags given still win),
training_state.pt for --resume and metrics.jsonl (every step's metrics). --eval also writes
report.html; --eval_offline compares the policy's action chunks with recorded episodes
(offline_eval.json). Several processes: `torchrun --nproc_per_node N imitate_episodes.py ...`
(only rank 0 writes files). This file holds the command line and the configuration; the loop is
in train.py, evaluation in evaluate.py, the data pipeline in data.py.
"""
import argparse
import math
import os
import sys
import warnings

import numpy as np
import torch

from checkpoint import (CONFIG_FILE, SAVE_FORMATS, STATS_FILE, make_run_config, read_config, read_pretrained,
                        save_policy, write_config)
from constants import canonical_task_name, get_task_config, sim_task_names
from data import Normalizer, dataset_record, get_norm_stats, load_data, split_episodes
from episodes import episode_path, missing_episodes, open_dataset
from files import DiskFull, UnsafeFile, prepare_folder
from lerobot_dataset import IMAGE_PREFIX, LeRobotFormatError, LeRobotEpisodes, is_lerobot_dataset
from offline_eval import DIFFUSION_SAMPLES
from policy import POLICY_CLASSES, policy_type
from scripted_policy import SCRIPTED_POLICIES
from train import (TRAINING_STATE, NonFiniteLoss, TrainingInterrupted, check_resume, check_resume_data,
                   read_training_state, set_seed, train_bc)

### Fixed settings
CKPT_ROOT = 'ckpt'  # --ckpt_dir defaults to CKPT_ROOT/<task_name>, relative to the working folder
SPLIT_SEED = 1  # NOTE(faithful): the original seeds numpy with 1 before drawing the train/val split
EVAL_IMAGE_HW = (480, 640)  # image size evaluation renders when neither --image_size nor config.json gives one
# Flags that set a policy_config key (flag -> key); a flag left out takes the policy's default.
POLICY_FLAGS = {
    'chunk_size': 'num_queries', 'kl_weight': 'kl_weight', 'hidden_dim': 'hidden_dim',
    'dim_feedforward': 'dim_feedforward', 'enc_layers': 'enc_layers', 'dec_layers': 'dec_layers',
    'nheads': 'nheads', 'latent_dim': 'latent_dim', 'dropout': 'dropout', 'pre_norm': 'pre_norm',
    'backbone': 'backbone', 'per_camera_backbone': 'per_camera_backbone', 'lr': 'lr', 'lr_backbone': 'lr_backbone',
    'weight_decay': 'weight_decay', 'backbone_weights': 'backbone_weights',
    'pretrained_backbone': 'pretrained_backbone', 'num_inference_steps': 'num_inference_steps',
    'scheduler': 'scheduler', 'prediction_type': 'prediction_type', 'obs_horizon': 'obs_horizon',
    'action_horizon': 'action_horizon', 'down_dims': 'down_dims', 'augment_images': 'augment_images',
}
# Numeric flags -> (test, what it admits); a flag left out (None) is not checked.
_AT_LEAST_1 = (lambda v: v >= 1, 'at least 1')
_AT_LEAST_0 = (lambda v: v >= 0, '0 or more')
FLAG_RANGES = {
    **{flag: _AT_LEAST_1 for flag in (
        'batch_size', 'num_epochs', 'num_steps', 'grad_accum', 'validate_every', 'save_every', 'chunk_size',
        'hidden_dim', 'dim_feedforward', 'enc_layers', 'dec_layers', 'nheads', 'latent_dim', 'num_inference_steps',
        'obs_horizon', 'action_horizon', 'num_rollouts', 'eval_workers')},
    **{flag: _AT_LEAST_0 for flag in ('warmup_steps', 'num_workers', 'kl_weight', 'lr_backbone', 'weight_decay',
                                      'diversity_samples')},
    'lr': (lambda v: v > 0, 'more than 0'),
    'clip_grad_norm': (lambda v: v > 0, 'more than 0'),
    'dropout': (lambda v: 0 <= v < 1, 'in [0, 1)'),
}
RUN_FLAGS = ('policy_class', 'task_name', 'camera_names', 'image_size')  # also read back from config.json
TRAINING_RECORD = ('dataset_dir', 'num_episodes', 'batch_size', 'seed', 'num_epochs', 'num_steps', 'amp',
                   'grad_accum', 'lr_schedule', 'warmup_steps', 'validate_every', 'save_every',
                   'clip_grad_norm', 'save_format', 'init_from', 'keep_init_stats',
                   'freeze_backbone')  # into config.json


################################ Configuration ################################

def task_name_arg(task_name):
    """argparse type of --task_name: the task a known name means, else a usage error listing them."""
    try:
        get_task_config(task_name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from e
    return canonical_task_name(task_name)


def with_default_folder(args):
    """args with the task's long name and, when --ckpt_dir is left out, CKPT_ROOT/<task_name>
    (printed); a ValueError when neither --ckpt_dir nor --task_name is given."""
    args = dict(args)
    if args.get('task_name'):
        args['task_name'] = canonical_task_name(args['task_name'])
    if args.get('ckpt_dir'):
        return args
    if not args.get('task_name'):
        raise ValueError('--ckpt_dir or --task_name required (the checkpoint folder defaults to '
                         f'{CKPT_ROOT}/<task_name>)')
    args['ckpt_dir'] = os.path.join(CKPT_ROOT, args['task_name'])
    print(f'--ckpt_dir {args["ckpt_dir"]} (the default for --task_name {args["task_name"]})')
    return args


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
    """The complete policy config from the flags; flags left out (None) take the policy's defaults.
    image_hw (H, W) is the size of the images the policy sees (CNNMLP's MLP input depends on it)."""
    cls = policy_type(args['policy_class'])
    config = {key: args[flag] for flag, key in POLICY_FLAGS.items()
              if key in cls.defaults and args.get(flag) is not None}
    config.update({key: cls.defaults[key] for key in cls.required if key not in config and key in cls.defaults})
    config.update(camera_names=list(camera_names), state_dim=state_dim, action_dim=action_dim)
    if args['policy_class'] == 'CNNMLP':
        config.update(num_queries=1, image_size=tuple(image_hw))
    return cls.resolve_config(config)


def make_config(args, task_config, policy_config, device):
    """The config dict train_bc and eval_bc read (the original's keys plus the new ones)."""
    return {
        **{k: args[k] for k in ('num_epochs', 'ckpt_dir', 'policy_class', 'onscreen_render', 'task_name', 'seed',
                                'temporal_agg', 'num_rollouts', 'eval_ckpt', 'eval_workers', 'robot_backend',
                                'robot_driver', 'amp', 'batch_size', 'num_steps', 'grad_accum', 'lr_schedule',
                                'warmup_steps', 'validate_every', 'save_every', 'resume', 'wandb', 'tensorboard',
                                'clip_grad_norm', 'save_format', 'freeze_backbone', 'stats_from', 'runtime',
                                'export_dir')},
        'episode_len': task_config['episode_len'], 'policy_config': policy_config, 'lr': policy_config['lr'],
        'state_dim': policy_config['state_dim'], 'action_dim': policy_config['action_dim'],
        'camera_names': policy_config['camera_names'], 'real_robot': args['task_name'][:4] != 'sim_',
        'device': device, 'image_size': tuple(args['image_size']) if args['image_size'] else None,
        'save_video': not args['no_video'],
    }


def flag_problem(args):
    """A message naming the first numeric flag out of its range (FLAG_RANGES), or None."""
    for flag, (admitted, text) in FLAG_RANGES.items():
        value = args.get(flag)
        if value is None:
            continue
        if not math.isfinite(value):
            return f'--{flag} must be a finite number, got {value}'
        if not admitted(value):
            return f'--{flag} must be {text}, got {value}'
    if args.get('image_size') and min(args['image_size']) < 1:
        return f"--image_size must be two positive integers H W, got {' '.join(map(str, args['image_size']))}"
    if args.get('policy_class') == 'ACT':
        defaults = policy_type('ACT').defaults
        hidden_dim, nheads = (args.get(k) or defaults[k] for k in ('hidden_dim', 'nheads'))
        if hidden_dim % nheads:
            return f'--hidden_dim {hidden_dim} must be a multiple of --nheads {nheads} (attention heads split it)'
    return None


def check_args(args, device):
    problem = flag_problem(args)
    if problem:
        raise ValueError(problem)
    if args['policy_class'] not in POLICY_CLASSES:
        raise ValueError(f"--policy_class must be one of {', '.join(POLICY_CLASSES)}, got {args['policy_class']!r}")
    if args.get('keep_init_stats') and not args.get('init_from'):
        raise ValueError('--keep_init_stats takes the statistics of --init_from\'s checkpoint: give --init_from')
    if args['policy_class'] == 'Diffusion' and (args.get('init_from') or args.get('freeze_backbone')):
        raise ValueError('--init_from and --freeze_backbone are for ACT and CNNMLP')
    if args['amp'] == 'fp16' and not device.startswith('cuda'):
        raise ValueError(f'--amp fp16 needs a CUDA device (got {device}); use --amp bf16 on this device')
    if args['amp'] == 'bf16' and device == 'cpu' and not cpu_has_bf16():
        warnings.warn('--amp bf16: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so bf16 '
                      'runs emulated and much slower than --amp off')


def cpu_has_bf16():
    checks = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(check() for check in checks if check is not None)


def missing_flags(args):
    """A message naming required flags that are absent, or None. --eval and --eval_offline read
    them from config.json."""
    evaluating = args['eval'] or args.get('eval_offline')
    saved = read_config(args['ckpt_dir']) if evaluating else None
    missing = [f'--{flag}' for flag in ('policy_class', 'task_name') if args.get(flag) is None]
    if not missing or saved is not None:
        return None
    where = f' (or a config.json in --ckpt_dir {args["ckpt_dir"]}, which training writes)' if evaluating else ''
    return f'{" and ".join(missing)} required{where}'


def with_saved_config(args, saved, path, run_flags=RUN_FLAGS):
    """args with each of run_flags and each model flag left out taken from config.json; a printed
    note for each given flag that overrides a saved value."""
    values = {flag: saved.get(flag) for flag in run_flags}
    values.update({flag: saved['policy_config'][key] for flag, key in POLICY_FLAGS.items()
                   if key in saved['policy_config']})
    merged = dict(args)
    for flag, value in values.items():
        given = args.get(flag)
        if given is None:
            merged[flag] = value
        elif value is not None and _comparable(given) != _comparable(value):
            print(f'--{flag} {given} overrides {flag} = {value} from {path}')
    return merged


def _comparable(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def eval_config(args, device):
    """The evaluation config: from config.json when the folder has one (flags given still win),
    else from the flags and dataset_stats.pkl, as the original."""
    saved = read_config(args['ckpt_dir'])
    if saved is None:
        task_config = get_task_config(args['task_name'])
        state_dim, action_dim = dims_from_stats(args['ckpt_dir'], args['policy_class'])
        image_hw = args['image_size'] or EVAL_IMAGE_HW
        camera_names = args['camera_names'] or task_config['camera_names']
        policy_config = make_policy_config(args, camera_names, state_dim, action_dim, image_hw)
        return make_config(args, task_config, policy_config, device)
    args = with_saved_config(args, saved, os.path.join(args['ckpt_dir'], CONFIG_FILE))
    if args['task_name'] is None:
        raise ValueError(f"--task_name required: {args['ckpt_dir']} (a LeRobot checkpoint) names no task")
    flag_values = {key: args[flag] for flag, key in POLICY_FLAGS.items() if args[flag] is not None}
    policy_config = {**saved['policy_config'], **flag_values, 'camera_names': args['camera_names']}
    if args['policy_class'] == 'CNNMLP' and args['image_size']:
        policy_config['image_size'] = tuple(args['image_size'])
    config = make_config(args, get_task_config(args['task_name']), policy_config, device)
    config['shadows'] = saved.get('shadows', True)  # sim frames rendered as the training frames were
    return config


def dims_from_stats(ckpt_dir, policy_class):
    """(state_dim, action_dim) of a trained policy from its dataset_stats.pkl; the policy defaults
    without one (evaluation then stops with an error naming the missing file)."""
    path = os.path.join(ckpt_dir, STATS_FILE)
    if not os.path.isfile(path):
        defaults = policy_type(policy_class).defaults
        return defaults['state_dim'], defaults['action_dim']
    normalizer = Normalizer.load(path)
    return normalizer.state_dim, normalizer.action_dim


################################ Data ################################

def data_settings(args, task_config):
    """(dataset_dir, num_episodes, camera_names) training reads: the flags, else for a LeRobot
    dataset all its episodes and cameras (checked and printed), else the task config's."""
    dataset_dir = args['dataset_dir'] or task_config['dataset_dir']
    if not is_lerobot_dataset(dataset_dir):
        return (dataset_dir, args['num_episodes'] or task_config['num_episodes'],
                args['camera_names'] or task_config['camera_names'])
    source = LeRobotEpisodes(dataset_dir)
    num_episodes = args['num_episodes'] or source.num_episodes
    if num_episodes > source.num_episodes:
        raise ValueError(f'--num_episodes {num_episodes}: the LeRobot dataset {dataset_dir} holds '
                         f'{source.num_episodes} episodes')
    camera_names = args['camera_names'] or source.camera_names
    if not camera_names:
        raise ValueError(f'{dataset_dir}: the LeRobot dataset has no camera features ({IMAGE_PREFIX}<camera>); '
                         f'its features: {", ".join(source.features)}')
    for cam in camera_names:
        source.video_key(cam)
    for index in range(num_episodes):  # every table (low_dim requires state and action) and video, before any write
        source.check_frames(index, camera_names, len(source.low_dim(index)[0]))
    print(f'LeRobot dataset {dataset_dir} ({source.version}, {source.fps} fps): {num_episodes} of '
          f'{source.num_episodes} episodes; observation.state -> qpos, action -> action, '
          + ', '.join(f"{IMAGE_PREFIX}{cam} -> camera '{cam}'" for cam in camera_names))
    return dataset_dir, num_episodes, camera_names


################################ Missing data ################################

class MissingData(ValueError):
    """The task's episodes are not on disk: the message says how to make them."""


def check_task_data(args, task_config, dataset_dir, num_episodes, camera_names, rank=0, world_size=1):
    """Stop with MissingData when dataset_dir lacks episodes 0..num_episodes-1, or with
    --record_missing record a scripted task's missing episodes (rank 0) and go on. A LeRobot
    dataset was checked by data_settings."""
    if is_lerobot_dataset(dataset_dir):
        return
    missing = missing_episodes(dataset_dir, num_episodes)
    if not missing:
        return
    task_name = args['task_name']
    scripted = task_name in SCRIPTED_POLICIES
    if not (args.get('record_missing') and scripted):
        raise MissingData(missing_data_message(args['task_name'], task_config['episode_len'], dataset_dir,
                                               num_episodes, missing, scripted))
    if rank == 0:
        import record_sim_episodes
        print(f'--record_missing: recording {len(missing)} episodes of {task_name} into {dataset_dir}')
        record_sim_episodes.main({'task_name': task_name, 'dataset_dir': dataset_dir, 'num_episodes': num_episodes,
                                  'camera_names': camera_names, 'image_size': args.get('image_size')})
    if world_size > 1:
        torch.distributed.barrier()


def missing_data_message(task_name, episode_len, dataset_dir, num_episodes, missing, scripted):
    """What is missing and the command that makes it: record_sim_episodes.py for a scripted task,
    the robot's recording for a real task, the original's download for human sim demonstrations."""
    if len(missing) == num_episodes:
        what = f'{dataset_dir} holds none of the {num_episodes} episodes training reads'
    else:
        names = ', '.join(os.path.basename(episode_path(dataset_dir, i)) for i in missing[:3])
        what = (f'{dataset_dir} lacks {len(missing)} of the {num_episodes} episodes training reads '
                f'({names}{", ..." if len(missing) > 3 else ""})')
    what = f'no data for --task_name {task_name}: {what}'
    if scripted:
        import record_sim_episodes
        minutes = record_sim_episodes.expected_minutes(len(missing), episode_len)
        return (f'{what}. Record them first (about {math.ceil(minutes)} min at 480x640 on a 2-core CPU; '
                f'episodes already there are kept):\n  '
                f'{record_sim_episodes.recording_command(task_name, dataset_dir, num_episodes)}\n'
                f'or add --record_missing to this command to record them and then train')
    if task_name[:4] == 'sim_':
        return (f'{what}. These are human demonstrations, which the project cannot make: put the '
                f"original's episode_*.hdf5 files for {task_name} there, or pass --dataset_dir")
    return (f'{what}. Record them on the robot, one per index: python record_episodes.py --task_name '
            f'{task_name} --episode_idx {missing[0]}')


################################ Entry point ################################

def main(args):
    """Train, or evaluate with args['eval']; args is the dict of the command-line flags."""
    args = with_default_folder(args)
    problem = missing_flags(args)
    if problem:
        raise ValueError(problem)
    set_seed(SPLIT_SEED)
    rank, world_size, local_rank = distributed_env()
    device = pick_device(args['device'], local_rank)
    if args.get('eval_offline'):
        offline_main(args, device)
        return
    if args['eval']:
        from evaluate import eval_bc
        config = eval_config(args, device)
        check_args(config, device)
        ckpt_name = config['eval_ckpt']
        success_rate, avg_return = eval_bc(config, ckpt_name, save_episode=config['save_video'])
        print(f'{ckpt_name}: {success_rate=} {avg_return=}')
        print()
        return

    task_config = get_task_config(args['task_name'])
    check_args(args, device)
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


def offline_main(args, device):
    """--eval_offline: the checkpoint's action chunks against recorded episodes (offline_eval.py):
    the run's validation episodes (config.json), or those of --dataset_dir."""
    from evaluate import load_policy, load_stats
    from offline_eval import evaluate_offline, report_table, write_report
    config = eval_config(args, device)
    check_args(config, device)
    dataset_dir, indices = offline_episodes(args)
    policy = load_policy(config, config['eval_ckpt'])
    normalizer = load_stats(config)
    samples = args['diversity_samples']
    if samples is None:
        samples = DIFFUSION_SAMPLES if config['policy_class'] == 'Diffusion' else 0
    report = evaluate_offline(policy, normalizer, open_dataset(dataset_dir), indices,
                              config['image_size'] or EVAL_IMAGE_HW, device, samples)
    report.update(checkpoint=config['eval_ckpt'], dataset_dir=dataset_dir)
    print(report_table(report))
    print('Saved ' + ' and '.join(write_report(report, config['ckpt_dir'])))


def offline_episodes(args):
    """(dataset_dir, episode indices) of --eval_offline: --dataset_dir's (--num_episodes, else all),
    else the validation episodes of the run that config.json records."""
    if args['dataset_dir']:
        count = args['num_episodes'] or open_dataset(args['dataset_dir']).num_episodes
        if count == 0:
            raise ValueError(f"--dataset_dir {args['dataset_dir']} holds no episodes (episode_*.hdf5 files or a "
                             f"LeRobot dataset)")
        return args['dataset_dir'], list(range(count))
    saved = read_config(args['ckpt_dir'])
    training = (saved or {}).get('training') or {}
    if 'dataset_dir' not in training or 'num_episodes' not in training:
        raise ValueError(f"--eval_offline: {args['ckpt_dir']} has no config.json recording the training data; "
                         f"pass --dataset_dir (and --num_episodes) to evaluate on recorded episodes")
    validation = split_episodes(training['num_episodes'], np.random.RandomState(SPLIT_SEED).permutation)[1]
    return training['dataset_dir'], sorted(validation.tolist())


def train_main(args, task_config, device, rank, world_size):
    """Check the folder, the data and a --resume; only then write dataset_stats.pkl and
    config.json, train, and write policy_best.ckpt."""
    init = pretrained_start(args)
    if init is not None:
        args = with_saved_config(args, init, f"--init_from {args['init_from']}", run_flags=())
    dataset_dir, num_episodes, camera_names = data_settings(args, task_config)
    ckpt_dir = args['ckpt_dir']
    check_task_data(args, task_config, dataset_dir, num_episodes, camera_names, rank, world_size)
    shadows = open_dataset(dataset_dir).shadows(num_episodes)  # a folder mixing renders stops here
    if rank == 0:
        prepare_folder(ckpt_dir, '--ckpt_dir')
    data_stats = get_norm_stats(dataset_dir, num_episodes)
    record = dataset_record(dataset_dir, num_episodes, data_stats)
    state, stats = resume_state(args, record, data_stats)
    if init is not None and args['keep_init_stats']:
        stats = init_statistics(init, data_stats)
    train_dataloader, val_dataloader, stats, _ = load_data(
        dataset_dir, num_episodes, camera_names, args['batch_size'], args['batch_size'],
        policy_class=args['policy_class'], obs_horizon=data_obs_horizon(args), image_size=args['image_size'],
        num_workers=args['num_workers'], preload=args['preload'], seed=args['seed'], device=device,
        rank=rank, world_size=world_size, norm_stats=stats)
    image_hw = tuple(train_dataloader.dataset.hw)
    policy_config = make_policy_config(args, camera_names, len(stats['qpos_mean']), len(stats['action_mean']), image_hw)
    if init is not None:
        policy_config.update(init_image_normalization(init, camera_names))
    config = make_config(args, task_config, policy_config, device)
    config.update(rank=rank, world_size=world_size, dataset_record=record)
    if state is not None:
        check_resume(state, config, os.path.join(ckpt_dir, TRAINING_STATE))
    if rank == 0:
        stats_path = os.path.join(ckpt_dir, STATS_FILE)
        if state is None or not os.path.isfile(stats_path):
            Normalizer(stats).save(stats_path)
        training = {k: args[k] for k in TRAINING_RECORD} | {'dataset_dir': dataset_dir, 'num_episodes': num_episodes}
        write_config(ckpt_dir, make_run_config(args['policy_class'], policy_config, args['task_name'], image_hw,
                                               training, shadows=shadows))

    best_epoch, min_val_loss, best_state_dict = train_bc(train_dataloader, val_dataloader, config, state, init)
    if rank == 0:
        save_policy(best_state_dict, ckpt_dir, 'policy_best', config['save_format'])
        unit = 'step' if config['num_steps'] else 'epoch'
        print(f'Best ckpt, val loss {min_val_loss:.6f} @ {unit}{best_epoch}')


def pretrained_start(args):
    """--init_from's checkpoint (checkpoint.read_pretrained), or None: none given, or --resume
    (the training state holds the weights)."""
    if not args.get('init_from'):
        return None
    if args['resume']:
        print(f"--resume: the training state's weights are used; --init_from {args['init_from']} is not read")
        return None
    init = read_pretrained(args['init_from'])
    if init['policy_class'] != args['policy_class']:
        raise ValueError(f"--init_from {args['init_from']} holds a {init['policy_class']} policy, not the "
                         f"--policy_class {args['policy_class']} to train")
    return init


def init_image_normalization(init, camera_names):
    """The init checkpoint's image_mean and image_std (its trunk was trained on images standardised so):
    per camera when it had one triple per camera and the cameras are the same, else one triple
    (per-camera triples averaged, printed)."""
    config, out = init['policy_config'], {}
    for key in ('image_mean', 'image_std'):
        if key not in config:
            continue
        values = np.asarray(config[key], dtype=np.float64)
        if values.ndim == 2 and list(config['camera_names']) != list(camera_names):
            print(f"--init_from: its per-camera {key} averaged over its cameras {config['camera_names']} for "
                  f"{list(camera_names)}")
            values = values.mean(axis=0)
        out[key] = values.tolist()
    return out


def init_statistics(init, data_stats):
    """--keep_init_stats: the init checkpoint's statistics, which must fit the data's sizes."""
    if init['stats'] is None:
        raise ValueError(f"--keep_init_stats: --init_from {init['source']} has no statistics (no {STATS_FILE})")
    normalizer = Normalizer(init['stats'], source=f"--init_from {init['source']}")
    normalizer.check_sizes(len(data_stats['qpos_mean']), len(data_stats['action_mean']),
                           f"--init_from {init['source']} statistics")
    return {**data_stats, **init['stats']}


def resume_state(args, record, data_stats):
    """(training state, statistics to normalise with): (None, the data's) for a new run; with
    --resume the state read and checked against the data (data.dataset_record) and the folder's
    dataset_stats.pkl, which its checkpoints were trained with."""
    if not args['resume']:
        return None, data_stats
    path = os.path.join(args['ckpt_dir'], TRAINING_STATE)
    state = read_training_state(path)
    check_resume_data(state, record, path, args['resume_any_data'])
    stats_path = os.path.join(args['ckpt_dir'], STATS_FILE)
    if not os.path.isfile(stats_path):
        return state, data_stats
    normalizer = Normalizer.load(stats_path)
    normalizer.check_sizes(len(data_stats['qpos_mean']), len(data_stats['action_mean']), stats_path)
    return state, normalizer.stats


def data_obs_horizon(args):
    """Observation steps per sample: --obs_horizon for a policy that takes several, else 1."""
    defaults = policy_type(args['policy_class']).defaults
    if 'obs_horizon' not in defaults:
        return 1
    return defaults['obs_horizon'] if args['obs_horizon'] is None else args['obs_horizon']


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


################################ Command line ################################

def _policy_default(key, *policies):
    """'(default: X)' text of a policy_config key, for the policies named."""
    values = {name: policy_type(name).defaults[key] for name in policies}
    if len(set(map(str, values.values()))) == 1:
        return f'(default: {next(iter(values.values()))})'
    return '(default: ' + ', '.join(f'{v} for {name}' for name, v in values.items()) + ')'


def build_parser():
    """The command line of imitate_episodes.py: the original's flags first, then the new ones."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _original_flags(parser)
    _data_flags(parser)
    _model_flags(parser)
    _training_flags(parser)
    _evaluation_flags(parser)
    return parser


def _original_flags(parser):
    add = parser.add_argument
    add('--eval', action='store_true', help='evaluate the --eval_ckpt checkpoint instead of training')
    add('--onscreen_render', action='store_true', help='show the simulation while evaluating')
    add('--ckpt_dir', help=f'folder for checkpoints, statistics, config.json and plots (default: '
        f'{CKPT_ROOT}/<task_name>)')
    add('--policy_class', choices=POLICY_CLASSES, help='policy to train (--eval: read from config.json)')
    add('--task_name', type=task_name_arg, help=f'sim tasks from constants.py ({sim_task_names()}), '
        'others from real_robot.TASK_CONFIGS (--eval: read from config.json)')
    add('--batch_size', type=int, default=8, help='batch size (per process under torchrun), training and validation')
    add('--seed', type=int, default=0, help='seed of the model initialisation and of the sampling')
    add('--num_epochs', type=int, default=2000, help='epochs; an epoch takes one sample from each training episode')
    add('--lr', type=float,
        help='learning rate (the backbone uses --lr_backbone) ' + _policy_default('lr', 'ACT', 'Diffusion'))
    add('--kl_weight', type=float, help='ACT: weight of the KL term of the loss ' + _policy_default('kl_weight', 'ACT'))
    add('--chunk_size', type=int, help='actions predicted per query (ACT num_queries; Diffusion prediction '
        'horizon) ' + _policy_default('num_queries', 'ACT', 'Diffusion'))
    add('--hidden_dim', type=int, help='ACT: transformer width ' + _policy_default('hidden_dim', 'ACT'))
    add('--dim_feedforward', type=int, help='ACT: feed-forward width ' + _policy_default('dim_feedforward', 'ACT'))
    add('--temporal_agg', action='store_true', help='evaluation: temporal ensembling of chunks')


def _data_flags(parser):
    add = parser.add_argument
    add('--dataset_dir', help="episodes folder: episode_*.hdf5 files or a LeRobot dataset (v3.0, v2.1) "
                              "(default: the task's, under ACT_DATA_DIR)")
    add('--num_episodes', type=int, help="episodes 0..N-1 to use (default: the task's; a LeRobot dataset's: all)")
    add('--camera_names', nargs='+', help="cameras the policy sees (default: the task's; a LeRobot dataset's: "
                                          "all its observation.images.<camera>)")
    add('--image_size', type=int, nargs=2, metavar=('H', 'W'),
        help="image size the policy sees: training resizes frames to it, sim evaluation renders at it "
             "(default: the data's size for training, config.json's or 480 640 for evaluation)")
    add('--record_missing', action='store_true', help="training a scripted sim task: record the task's missing "
        'episodes first (at --image_size when given, else 480 640), then train')
    add('--num_workers', type=int, help='data loader processes (default: 0 when frames are preloaded, else 1)')
    add('--preload', choices=('auto', 'on', 'off'), default='auto',
        help='hold all frames in memory (auto: when they take under half the free memory)')


def _model_flags(parser):
    import diffusion_policy  # its settings' choices; diffusers stays unimported until a policy is built
    add = parser.add_argument
    for flag, text in (('enc_layers', 'transformer encoder layers'), ('dec_layers', 'transformer decoder layers'),
                       ('nheads', 'attention heads'), ('latent_dim', 'size of the CVAE latent')):
        add(f'--{flag}', type=int, help=f'ACT: {text} ' + _policy_default(flag, 'ACT'))
    add('--dropout', type=float, help='ACT: transformer dropout ' + _policy_default('dropout', 'ACT'))
    add('--pre_norm', action='store_true', default=None, help='ACT: layer norm before attention (pre-norm)')
    add('--backbone', choices=('resnet18', 'resnet34', 'resnet50'),
        help='image backbone ' + _policy_default('backbone', 'ACT', 'Diffusion'))
    add('--per_camera_backbone', action='store_true', default=None, help='ACT: one backbone per camera')
    add('--lr_backbone', type=float,
        help='ACT/CNNMLP: learning rate of the backbone ' + _policy_default('lr_backbone', 'ACT'))
    add('--weight_decay', type=float, help='AdamW weight decay ' + _policy_default('weight_decay', 'ACT', 'Diffusion'))
    add('--backbone_weights', help='file of ImageNet backbone weights (default: the torch hub cache)')
    add('--pretrained_backbone', action=argparse.BooleanOptionalAction,
        help='start from ImageNet weights ' + _policy_default('pretrained_backbone', 'ACT', 'Diffusion'))
    add('--num_inference_steps', type=int, help='Diffusion: denoising steps per query '
        + _policy_default('num_inference_steps', 'Diffusion'))
    add('--scheduler', choices=diffusion_policy.SCHEDULERS,
        help='Diffusion: noise scheduler ' + _policy_default('scheduler', 'Diffusion'))
    add('--prediction_type', choices=diffusion_policy.PREDICTION_TYPES,
        help="Diffusion: what the UNet predicts, the noise or the clean action chunk; a training setting "
        + _policy_default('prediction_type', 'Diffusion'))
    add('--obs_horizon', type=int,
        help='Diffusion: observation steps per query ' + _policy_default('obs_horizon', 'Diffusion'))
    add('--action_horizon', type=int, help='Diffusion: actions executed per query (default: min(8, --chunk_size))')
    add('--down_dims', type=int, nargs='+', metavar='C',
        help='Diffusion: channels of the UNet levels, finest first (a smaller UNet trains faster on a CPU) '
        + _policy_default('down_dims', 'Diffusion'))
    add('--augment_images', action=argparse.BooleanOptionalAction,
        help='Diffusion: random crop, rotation and colour jitter in training, the centre crop in evaluation '
        + _policy_default('augment_images', 'Diffusion'))


def _training_flags(parser):
    add = parser.add_argument
    add('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps')
    add('--amp', choices=('off', 'bf16', 'fp16'), default='off',
        help='mixed precision (bf16 on recent CPUs and GPUs; fp16 on CUDA only)')
    add('--grad_accum', type=int, default=1, help='batches accumulated per optimizer step')
    add('--lr_schedule', choices=('constant', 'cosine'), default='constant',
        help='learning-rate schedule over the optimizer steps')
    add('--warmup_steps', type=int, default=0, help='linear warm-up steps')
    add('--num_steps', type=int, help='train for this many optimizer steps instead of --num_epochs; '
        '--validate_every and --save_every then count steps')
    add('--validate_every', type=int, default=1, help='validate every N epochs (or steps)')
    add('--save_every', type=int, default=100,
        help='write policy_epoch_{N}_seed_{seed}.ckpt, the plots and the training state every N epochs (or steps)')
    add('--resume', action='store_true', help=f'continue from {TRAINING_STATE} in --ckpt_dir (refused when the '
        'settings or the data differ from those it was trained with)')
    add('--resume_any_data', action='store_true', help='with --resume: go on although the data (episode files, '
        'sizes, statistics) changed; normalisation keeps the dataset_stats.pkl in --ckpt_dir')
    add('--save_format', choices=tuple(SAVE_FORMATS), default='ckpt',
        help='policy_*.ckpt (torch.save of the state_dict, the original\'s) or policy_*.safetensors (no pickle)')
    add('--init_from', metavar='PATH', help='start from the weights of a checkpoint: a folder of this project (its '
        'policy_best), one of its policy files, or a LeRobot ACT pretrained_model/ folder; model flags left out '
        'take its settings, tensors that do not fit (another state or action size) start afresh and are listed; '
        'the optimizer and schedule start fresh')
    add('--keep_init_stats', action='store_true', help="with --init_from: normalise with its checkpoint's "
        "statistics instead of the new data's")
    add('--freeze_backbone', action='store_true', help='keep the image trunk fixed (ACT, CNNMLP)')
    add('--clip_grad_norm', type=float, help='clip the gradient norm to this (default: no clipping, as the original)')
    add('--wandb', action='store_true', help='log the metrics to Weights & Biases (WANDB_MODE=offline: no network)')
    add('--tensorboard', action='store_true', help='also write the metrics as TensorBoard event files in '
        '--ckpt_dir/tensorboard')


def _evaluation_flags(parser):
    add = parser.add_argument
    add('--num_rollouts', type=int, default=50, help='evaluation rollouts')
    add('--eval_ckpt', default='policy_best.ckpt', help='checkpoint in --ckpt_dir to evaluate')
    add('--eval_offline', action='store_true', help='compare the checkpoint\'s action chunks with recorded '
        'episodes instead of rolling out: the run\'s validation episodes, or --dataset_dir\'s; writes '
        'offline_eval.json and offline_eval.png')
    add('--diversity_samples', type=int, help='--eval_offline: chunks drawn per observation for the action '
        f'diversity (default: {DIFFUSION_SAMPLES} for Diffusion, none for the deterministic ACT and CNNMLP)')
    add('--stats_from', metavar='DATASET', help='evaluation: normalise with the statistics of this episodes folder '
        '(for a checkpoint that lacks its own, such as a LeRobot folder without normaliser files)')
    add('--no_video', action='store_true', help='evaluation: do not write video{i}.mp4')
    add('--eval_workers', type=int, default=1, help='evaluation: parallel rollout processes')
    add('--runtime', choices=('torch', 'onnxruntime', 'openvino'), default='torch', help='evaluation: run the '
        'policy in torch, or its ONNX export through policy_runtime.PolicyRunner on onnxruntime or OpenVINO '
        '(exported to --ckpt_dir/export_<checkpoint> when --export_dir is not given)')
    add('--export_dir', help='--runtime onnxruntime/openvino: the folder export_policy.py wrote (e.g. an int8 export)')
    add('--robot_backend', choices=('builtin', 'aloha_scripts'), default='builtin',
        help='real robot: our drivers or the aloha_scripts/ROS stack')
    add('--robot_driver', choices=('auto', 'interbotix', 'dynamixel', 'sim', 'feetech'), default='auto',
        help='real robot, builtin backend: how to reach the arms (feetech: SO-100/SO-101 tasks, which auto picks)')


if __name__ == '__main__':
    parser = build_parser()
    cli_args = vars(parser.parse_args())
    try:
        cli_args = with_default_folder(cli_args)
        problem = missing_flags(cli_args) or flag_problem(cli_args)
    except (KeyError, ValueError) as err:
        problem = str(err.args[0])
    if problem:
        parser.error(problem)
    try:
        main(cli_args)
    except (NonFiniteLoss, UnsafeFile, MissingData, LeRobotFormatError) as err:
        sys.exit(f'{parser.prog}: error: {err}')
    except DiskFull as err:
        sys.exit(f'{parser.prog}: error: {err.strerror}')
