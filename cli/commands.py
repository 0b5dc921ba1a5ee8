"""The three commands of imitate_episodes.py: train, evaluate by rollouts (--eval) and evaluate
against recorded episodes (--eval_offline), each from the dict of its flags."""
import os

import numpy as np
import torch

from checkpoints.folder import BEST_CKPT, STATS_FILE, TRAINING_STATE, make_run_config, save_policy, write_config
from checkpoints.reader import read_pretrained
from cli.data_check import check_task_data, data_settings
from cli.flags import UsageError, flag_problem
from cli.run_config import (check_args, check_required, evaluating, flags_eval_config, make_config, make_policy_config,
                            pick_device, with_default_folder, with_saved_config)
from common.files import prepare_folder
from common.seeds import set_seed
from constants import IMAGE_HW
from evaluation.denoising import chunk_views, write_figures
from evaluation.offline import DIFFUSION_SAMPLES, check_episode, evaluate_offline, report_table, write_report
from evaluation.rollout import eval_bc, load_policy, load_stats
from formats.datasets import open_dataset
from formats.normalize import Normalizer
from formats.stats import dataset_record, get_norm_stats
from policies.registry import get_policy_class
from tasks import get_task_config, task_joint_names
from training.data import load_data, split_episodes, training_image_hw
from training.loop import TrainingInterrupted, check_resume, train_bc
from training.settings import TrainSettings
from training.start import distributed_env, init_image_normalization, init_statistics, resume_state

SPLIT_SEED = 1  # NOTE(faithful): the original seeds numpy with 1 before drawing the train/val split


def main(args):
    """Train, or evaluate with args['eval'] or args['eval_offline']; args is the dict of the flags."""
    args = with_default_folder(args)
    problem = flag_problem(args)
    if problem:
        raise UsageError(problem)
    if not evaluating(args):
        check_required(args)
    set_seed(SPLIT_SEED)
    rank, world_size, local_rank = distributed_env()
    device = pick_device(args['device'], local_rank)
    if args.get('eval_offline'):
        offline_main(args, device)
    elif args['eval']:
        eval_main(args, device)
    else:
        train_command(args, device, rank, world_size)


def eval_main(args, device):
    """--eval: the rollouts of the checkpoint (evaluation/rollout.py)."""
    config = flags_eval_config(args, device)
    ckpt_name = config['eval_ckpt']
    success_rate, avg_return = eval_bc(config, ckpt_name, save_episode=config['save_video'])
    print(f'{ckpt_name}: {success_rate=} {avg_return=}')
    print()


def offline_main(args, device):
    """--eval_offline: the checkpoint's action chunks against recorded episodes (evaluation/offline.py):
    the run's validation episodes (config.json), or those of --dataset_dir."""
    config = flags_eval_config(args, device)
    checkpoint = config['checkpoint']
    source, indices = offline_episodes(args, checkpoint)
    policy = load_policy(config, config['eval_ckpt'])
    normalizer = load_stats(config)
    samples = args['diversity_samples']
    if samples is None:
        samples = DIFFUSION_SAMPLES if policy.samples else 0
    names = task_joint_names(config['task_name'], normalizer.action_dim)
    report = evaluate_offline(policy, normalizer, source, indices, config['image_size'] or IMAGE_HW, device, samples,
                              names)
    report.update(checkpoint=config['eval_ckpt'], dataset_dir=source.dataset_dir)
    print(report_table(report))
    out_dir = offline_out_dir(config['ckpt_dir'], checkpoint)
    saved = write_report(report, out_dir)
    if policy.samples:  # a look inside the denoising, at the first held-out episode
        episode = check_episode(source, indices[0], policy, normalizer)
        views = chunk_views(policy, normalizer, source, indices[0], episode, config['image_size'] or IMAGE_HW,
                            device, samples, names)
        saved += write_figures(views, out_dir)
    print('Saved ' + ', '.join(saved))


def offline_out_dir(ckpt_dir, checkpoint):
    """Where --eval_offline writes: the checkpoint folder, or beside a LeRobot pretrained_model/
    folder (its parent), which holds LeRobot's files only."""
    if checkpoint.kind == 'lerobot':
        return os.path.dirname(os.path.abspath(ckpt_dir))
    return ckpt_dir


def offline_episodes(args, checkpoint):
    """(opened dataset, episode indices) of --eval_offline: --dataset_dir's (--num_episodes, else all),
    else the validation episodes of the run that the checkpoint's config.json records."""
    if args['dataset_dir']:
        source = open_dataset(args['dataset_dir'])
        count = args['num_episodes'] or source.num_episodes
        if count == 0:
            raise ValueError(f"--dataset_dir {args['dataset_dir']} holds no episodes (episode_*.hdf5 files or a "
                             f"LeRobot dataset)")
        return source, list(range(count))
    training = (checkpoint.config or {}).get('training') or {}
    if 'dataset_dir' not in training or 'num_episodes' not in training:
        raise ValueError(f"--eval_offline: {args['ckpt_dir']} has no config.json recording the training data; "
                         f"pass --dataset_dir (and --num_episodes) to evaluate on recorded episodes")
    validation = split_episodes(training['num_episodes'], np.random.RandomState(SPLIT_SEED).permutation)[1]
    return open_dataset(training['dataset_dir']), sorted(validation.tolist())


def train_command(args, device, rank, world_size):
    """Training, in a process group under torchrun; an interruption ends with the --resume hint."""
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


def train_main(args, task_config, device, rank, world_size):
    """Check the folder, the data and a --resume; only then write dataset_stats.pkl and
    config.json, train, and write policy_best.ckpt. The dataset is opened once, here."""
    init = pretrained_start(args)
    if init is not None:
        args = with_saved_config(args, init, f"--init_from {args['init_from']}", run_flags=())
    source, num_episodes, camera_names = data_settings(args, task_config)
    check_task_data(args, task_config, source, num_episodes, camera_names, rank, world_size)
    shadows = source.shadows(num_episodes)  # a folder mixing renders stops here
    if rank == 0:
        prepare_folder(args['ckpt_dir'], '--ckpt_dir')
    data_stats = get_norm_stats(source, num_episodes)
    record = dataset_record(source, num_episodes, data_stats)
    state, stats = (resume_state(args['ckpt_dir'], record, data_stats, args['resume_any_data']) if args['resume']
                    else (None, data_stats))
    if init is not None and args['keep_init_stats']:
        stats = init_statistics(init, data_stats)
    image_hw = training_image_hw(source, camera_names, args['image_size'])
    policy_config = make_policy_config(args, camera_names, len(stats['qpos_mean']), len(stats['action_mean']), image_hw,
                                       base=init and init['policy_config'])
    obs_horizon, action_lead = get_policy_class(args['policy_class']).sample_window(policy_config)
    train_dataloader, val_dataloader, stats, _ = load_data(
        source, num_episodes, camera_names, args['batch_size'], args['batch_size'],
        policy_class=args['policy_class'], obs_horizon=obs_horizon, action_lead=action_lead,
        image_size=args['image_size'],
        num_workers=args['num_workers'], preload=args['preload'], seed=args['seed'], device=device,
        rank=rank, world_size=world_size, norm_stats=stats)
    check_chunk_fits(policy_config['num_queries'], train_dataloader.dataset.pad_len)
    if init is not None:
        policy_config.update(init_image_normalization(init, camera_names))
    config = make_config(args, task_config, policy_config, device)
    config.update(rank=rank, world_size=world_size, dataset_record=record)
    if state is not None:
        check_resume(state, config, os.path.join(args['ckpt_dir'], TRAINING_STATE))
    if rank == 0:
        training = {**args, 'dataset_dir': source.dataset_dir, 'num_episodes': num_episodes}
        write_run_files(args['ckpt_dir'], stats, state is None, make_run_config(
            args['policy_class'], policy_config, args['task_name'], image_hw,
            {k: training[k] for k in TrainSettings.names('record')}, shadows=shadows))
    best_epoch, min_val_loss, best_state_dict = train_bc(train_dataloader, val_dataloader, config, state, init)
    if rank == 0:
        save_policy(best_state_dict, args['ckpt_dir'], os.path.splitext(BEST_CKPT)[0], config['save_format'])
        unit = 'step' if config['num_steps'] else 'epoch'
        print(f'Best ckpt, val loss {min_val_loss:.6f} @ {unit}{best_epoch}')


def check_chunk_fits(chunk_size, longest):
    """Refuse, before any file is written, a chunk longer than the longest episode (no sample holds one)."""
    if chunk_size > longest:
        raise ValueError(f'--chunk_size {chunk_size} is longer than the longest episode ({longest} steps): every '
                         f'sample needs a chunk of recorded actions; train with --chunk_size {longest} or less')


def write_run_files(ckpt_dir, stats, new_run, run_config):
    """dataset_stats.pkl (a resumed run keeps the one its checkpoints were trained with) and config.json."""
    stats_path = os.path.join(ckpt_dir, STATS_FILE)
    if new_run or not os.path.isfile(stats_path):
        Normalizer(stats).save(stats_path)
    write_config(ckpt_dir, run_config)


def pretrained_start(args):
    """--init_from's checkpoint (checkpoints.reader.read_pretrained), or None: none given, or --resume
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

