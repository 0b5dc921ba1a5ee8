"""How far off the simulated SO-101's scripted grasp may come down and still pick and place the cube:
the script aimed `miss` m off across the jaws (the scene keeps the true pose, as a policy's error
would), over the first recording seeds, for each way of coming down (so101_sim.scripted.APPROACHES:
`fixed_jaw`, the cube against the fixed jaw where the grasp ends, as the demonstrations do, and
`middle`, the cube in the middle of the open jaws). No cameras are rendered. Prints JSON: per
approach and miss the successes of `episodes`.

    python -m bench.so101_grasp                    # 10 seeds, misses -2 cm .. +2 cm (about 3 min)
    python -m bench.so101_grasp --episodes 2 --misses -0.01 0.01
"""
import argparse
import json

import tasks
from recording.sim import episode_rng
from so101_sim.env import make_so101_env, sample_cube_pose
from so101_sim.scripted import APPROACHES, Kinematics, scripted_episode

TASK = 'sim_so101_pick_place'
MISSES = (-0.02, -0.015, -0.01, -0.005, 0.0, 0.005, 0.01, 0.015, 0.02)  # m; + towards the fixed jaw's side


def successes(env, kinematics, approach, miss, episodes, steps):
    """Episodes of the first `episodes` recording seeds that place the cube, the script aimed `miss` off."""
    done = 0
    for episode in range(episodes):
        rng = episode_rng(0, episode)  # as record_sim_episodes.py --seed 0 records it
        _, rewards = scripted_episode(env, kinematics, sample_cube_pose(rng), steps, rng=rng, miss=miss,
                                      approach=APPROACHES[approach])
        done += int(rewards.max() == env.task.max_reward)
    return done


def main(args):
    env, kinematics = make_so101_env(camera_names=[], shadows=False), Kinematics()
    steps = tasks.get_sim_task_config(TASK)['episode_len'] + 1  # as a recorded episode
    report = {'episodes': args['episodes'], 'successes': {}}
    for approach in args['approaches']:
        report['successes'][approach] = {f'{miss:+.3f}': successes(env, kinematics, approach, miss, args['episodes'],
                                                                    steps) for miss in args['misses']}
    print(json.dumps(report, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--episodes', type=int, default=10, help='recording seeds 0..N-1')
    parser.add_argument('--misses', type=float, nargs='+', default=list(MISSES), help='m off across the jaws')
    parser.add_argument('--approaches', nargs='+', choices=list(APPROACHES), default=list(APPROACHES))
    return vars(parser.parse_args(argv))


if __name__ == '__main__':
    main(parse_args())
