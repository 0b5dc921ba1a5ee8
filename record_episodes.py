"""Record one teleoperated episode on the real robot: ALOHA (two leader and two follower arms, 50 Hz)
or an SO-100 / SO-101 task (leader and follower arms of its REAL_TASK_CONFIGS entry, at the task's fps, 30 Hz).

The followers copy the leaders while the cameras record; the episode is written in the
original real-robot HDF5 layout (attrs sim=False, qpos/qvel/effort/action, one image dataset per
camera) under a temporary name and renamed into place when complete; with --format lerobot it is
appended to a LeRobot dataset (formats/lerobot_writer.py), atomically too. The recording itself is
recording/robot.py.

    python record_episodes.py --task_name aloha_wear_shoe [--episode_idx 3] [--robot_driver dynamixel]
    python record_episodes.py --task_name aloha_wear_shoe --format lerobot --dataset_dir data/wear_shoe_lerobot
    python record_episodes.py --task_name so101_pick_place --format lerobot --task "Put the cube in the bowl"
    python record_episodes.py --task_name so101_pick_place --teleop_only      # nothing recorded
"""
import argparse

from cli.errors import run_command
from formats.datasets import DATASET_FORMATS
from real_robot.settings import ROBOT_DRIVERS
from recording.robot import main



def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task_name', required=True, help='real-robot task (REAL_TASK_CONFIGS in constants.py)')
    parser.add_argument('--dataset_dir', help="folder of the episodes (default: the task's dataset_dir)")
    parser.add_argument('--episode_idx', type=int, help='episode index (default: the first free one)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing episode_{idx}.hdf5')
    parser.add_argument('--format', choices=DATASET_FORMATS, default='hdf5',
                        help='hdf5: episode_{idx}.hdf5 files (the original layout); lerobot: append to the LeRobot '
                             'dataset (v3.0) at --dataset_dir, created when absent')
    parser.add_argument('--task', help='--format lerobot: the task description (default: --task_name)')
    parser.add_argument('--teleop_only', action='store_true', help='teleoperate without recording: the followers '
                        'copy the leaders at the task\'s rate until Ctrl-C, then the safe stop (the first thing to '
                        'run after calibrating new arms)')
    parser.add_argument('--num_steps', type=int, help='--teleop_only: stop after this many steps (default: at Ctrl-C)')
    parser.add_argument('--robot_driver', choices=ROBOT_DRIVERS, default='auto',
                        help='how to reach the arms (auto: feetech for SO tasks, else interbotix when its ROS '
                             'modules import; sim: a simulated SO-101 follower copying a real leader)')
    return parser


if __name__ == '__main__':
    parser = build_parser()
    # a full disk keeps the episodes recorded before; a fault of the robot (RobotFault) ends with its traceback
    run_command(parser, main, vars(parser.parse_args()), usage=(ValueError, KeyError, FileExistsError))
