"""Replay the actions of a recorded episode on the real robot (or the simulated one).

    python replay_episodes.py --dataset_dir data/aloha_wear_shoe --episode_idx 0 [--robot_driver sim]

--dataset_dir holds episode_*.hdf5 files or a LeRobot dataset.
"""
from tqdm import tqdm

import real_robot
from episodes import open_dataset


def main(args):
    actions = open_dataset(args['dataset_dir']).read_episode(args['episode_idx'], cameras=[]).action
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
    parser.add_argument('--dataset_dir', required=True, help='folder of the episodes (HDF5 or LeRobot)')
    parser.add_argument('--episode_idx', type=int, default=0, help='episode index')
    parser.add_argument('--robot_driver', choices=real_robot.real_env.DRIVERS, default='auto',
                        help='how to reach the arms (auto: interbotix when its ROS modules import)')
    main(vars(parser.parse_args()))
