"""The data a training start reads, checked before anything is written: a LeRobot dataset's
episodes and cameras, or the task's episode files (missing ones named with the command that
makes them, or recorded first with --record_missing)."""
import math
import os

import torch

from formats.datasets import open_dataset
from formats.hdf5 import episode_path, missing_episodes
from formats.lerobot import LeRobotEpisodes
from recording.sim import expected_minutes
from recording.sim import main as record_scripted
from recording.sim import recording_command
from scripted_policy import SCRIPTED_POLICIES


def data_settings(args, task_config):
    """(opened dataset, num_episodes, camera_names) training reads: the flags, else for a LeRobot
    dataset all its episodes and cameras (checked and printed), else the task config's."""
    source = open_dataset(args['dataset_dir'] or task_config['dataset_dir'])
    if not isinstance(source, LeRobotEpisodes):
        return (source, args['num_episodes'] or task_config['num_episodes'],
                args['camera_names'] or task_config['camera_names'])
    num_episodes = args['num_episodes'] or source.num_episodes
    camera_names = args['camera_names'] or source.camera_names
    print(source.check_training_data(num_episodes, camera_names))
    return source, num_episodes, camera_names


class MissingData(ValueError):
    """The task's episodes are not on disk: the message says how to make them."""


def check_task_data(args, task_config, source, num_episodes, camera_names, rank=0, world_size=1):
    """Stop with MissingData when the episode folder `source` (opened) lacks episodes
    0..num_episodes-1, or with --record_missing record a scripted task's missing episodes (rank 0)
    and go on. A LeRobot dataset was checked by data_settings."""
    dataset_dir = source.dataset_dir
    if isinstance(source, LeRobotEpisodes):
        return
    missing = missing_episodes(source.dataset_dir, num_episodes)
    if not missing:
        return
    task_name = args['task_name']
    scripted = task_name in SCRIPTED_POLICIES
    if not (args.get('record_missing') and scripted):
        raise MissingData(missing_data_message(args['task_name'], task_config['episode_len'], dataset_dir,
                                               num_episodes, missing, scripted))
    if rank == 0:
        print(f'--record_missing: recording {len(missing)} episodes of {task_name} into {dataset_dir}')
        record_scripted({'task_name': task_name, 'dataset_dir': dataset_dir, 'num_episodes': num_episodes,
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
        minutes = expected_minutes(len(missing), episode_len)
        return (f'{what}. Record them first (about {math.ceil(minutes)} min at 480x640 on a 2-core CPU; '
                f'episodes already there are kept):\n  '
                f'{recording_command(task_name, dataset_dir, num_episodes)}\n'
                f'or add --record_missing to this command to record them and then train')
    if task_name[:4] == 'sim_':
        return (f'{what}. These are human demonstrations, which the project cannot make: put the '
                f"original's episode_*.hdf5 files for {task_name} there, or pass --dataset_dir")
    return (f'{what}. Record them on the robot, one per index: python record_episodes.py --task_name '
            f'{task_name} --episode_idx {missing[0]}')
