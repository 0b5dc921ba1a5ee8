"""Replay the actions of a recorded episode on the real robot (or the simulated one).

    python replay_episodes.py --dataset_dir data/aloha_wear_shoe --episode_idx 0 [--robot_driver sim]
    python replay_episodes.py --dataset_dir data/so101_pick_place --task_name so101_pick_place

--dataset_dir holds episode_*.hdf5 files or a LeRobot dataset. The arms are ALOHA's, or those of
the SO task given with --task_name (REAL_TASK_CONFIGS in constants.py), at its rate.
"""
from tqdm import tqdm

import real_robot
from cli.errors import run_command
from formats.datasets import open_dataset
from formats.episode import check_finite
from real_robot.robots import robot_of
from real_robot.settings import ROBOT_DRIVERS


def make_env(args):
    """The follower arms of the task's robot the actions are replayed on (ALOHA's by default)."""
    task_config = real_robot.get_task_config(args['task_name']) if args.get('task_name') else {}
    return robot_of(task_config, args.get('task_name')).replay_env(task_config, args.get('robot_driver', 'auto'))


def main(args):
    episodes = open_dataset(args['dataset_dir'])
    where = episodes.name(args['episode_idx'])
    actions = check_finite(episodes.read_episode(args['episode_idx'], cameras=[]).action, where, 'action')  # (T, A)
    env = make_env(args)
    try:
        size = len(env.get_qpos())  # the arms' joints: one action value each
        if actions.shape[1] != size:
            raise ValueError(f'{where}: its actions have {actions.shape[1]} values, the arms take {size} (another '
                             f'robot\'s episode? give the --task_name it was recorded for); the arms did not move')
        env.reset()
        for action in tqdm(actions, unit='step'):
            env.step(action)
        real_robot.open_grippers(env)
    finally:
        env.close()


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset_dir', required=True, help='folder of the episodes (HDF5 or LeRobot)')
    parser.add_argument('--episode_idx', type=int, default=0, help='episode index')
    parser.add_argument('--task_name', help='an SO-100 / SO-101 task of REAL_TASK_CONFIGS: replay on its arms '
                        '(default: the ALOHA arms)')
    parser.add_argument('--robot_driver', choices=ROBOT_DRIVERS, default='auto',
                        help='how to reach the arms (auto: feetech for SO tasks, else interbotix when its ROS '
                             'modules import)')
    run_command(parser, main, vars(parser.parse_args()))
