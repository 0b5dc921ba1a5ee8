"""Replay the actions of a recorded episode on the real robot (or the simulated one).

    python replay_episodes.py --dataset_dir data/aloha_wear_shoe --episode_idx 0 [--robot_driver sim]
"""
import os

import h5py
from tqdm import tqdm

import real_robot


def load_actions(dataset_path):
    """(T, action_dim) actions of an episode file, with clear errors for a missing file or key."""
    if not os.path.isfile(dataset_path):
        raise FileNotFoundError(f'--dataset_dir / --episode_idx: no episode at {dataset_path}')
    with h5py.File(dataset_path, 'r') as root:
        if 'action' not in root:
            raise KeyError(f"{dataset_path}: no '/action' dataset (keys: {sorted(root.keys())})")
        return root['/action'][()]


def main(args):
    dataset_path = os.path.join(args['dataset_dir'], f"episode_{args['episode_idx']}.hdf5")
    actions = load_actions(dataset_path)
    env = real_robot.make_real_env(init_node=True, driver=args.get('robot_driver', 'auto'))
    try:
        env.reset()
        for action in tqdm(actions, unit='step'):
            env.step(action)
        real_robot.open_grippers(env)
    finally:
        env.close()


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset_dir', required=True, help='folder of the episodes')
    parser.add_argument('--episode_idx', type=int, default=0, help='episode index')
    parser.add_argument('--robot_driver', choices=real_robot.real_env.DRIVERS, default='auto',
                        help='how to reach the arms (auto: interbotix when its ROS modules import)')
    main(vars(parser.parse_args()))
