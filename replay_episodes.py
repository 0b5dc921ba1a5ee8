"""Replay the actions of a recorded episode on the real robot (or the simulated one).

    python replay_episodes.py --dataset_dir data/aloha_wear_shoe --episode_idx 0 [--robot_driver sim]
"""
from tqdm import tqdm

import real_robot
from episodes import episode_path, read_episode


def main(args):
    actions = read_episode(episode_path(args['dataset_dir'], args['episode_idx']), cameras=[]).action
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
