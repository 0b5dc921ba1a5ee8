"""Generate scripted demonstrations in simulation and save them as HDF5 episodes.

For each episode: roll out the scripted end-effector policy in ee_sim_env (nothing rendered
unless --onscreen_render) and keep its joint trajectory, with the gripper joint positions replaced
by the normalised gripper commands; replay that trajectory as actions in the joint-space sim_env,
rendering only the recorded cameras, and write `episode_{i}.hdf5` atomically in the original layout
(formats/hdf5.py): attrs['sim'] True, /action, /observations/qpos and qvel (T, 14) float32,
/observations/images/<cam> (T, H, W, 3) uint8 one frame per chunk. --no_shadows renders without
shadows (a third of the CPU per frame with a software rasteriser; frames differ from the original's) and
marks the files attrs['shadows'] False (a LeRobot dataset: its cameras' info "shadows": false), which
training copies into config.json for evaluation.
Valid episodes already on disk are skipped, so an interrupted run can simply be started again.

--format lerobot records into a LeRobot dataset (formats/lerobot_writer.py) instead: the episodes are
staged as gzip HDF5 files in <dataset_dir>.recording (kept across an interruption, so a new run
resumes), then appended in order in one atomic write, after the episodes the dataset already has.
The recording itself is recording/sim.py.
"""
import argparse

from cli.errors import run_command
from constants import IMAGE_HW
from formats.datasets import DATASET_FORMATS
from formats.lerobot import LeRobotFormatError
from recording.sim import main


def build_parser():
    parser = argparse.ArgumentParser(description='Record scripted sim demonstrations as HDF5 episodes.')
    parser.add_argument('--task_name', action='store', type=str, required=True,
                        help='sim_transfer_cube (= sim_transfer_cube_scripted) or sim_insertion '
                        '(= sim_insertion_scripted)')
    parser.add_argument('--dataset_dir', action='store', type=str, default=None,
                        help='dataset saving dir (default: the task config dataset_dir)')
    parser.add_argument('--num_episodes', action='store', type=int, default=None,
                        help='num_episodes (default: the task config num_episodes)')
    parser.add_argument('--onscreen_render', action='store_true')
    parser.add_argument('--seed', action='store', type=int, default=0,
                        help='episode i is the same for a given seed, whatever the number of workers')
    parser.add_argument('--num_workers', action='store', type=int, default=1,
                        help='episodes recorded in parallel processes')
    parser.add_argument('--camera_names', action='store', type=str, nargs='+', default=None,
                        help='cameras to record (default: the task config camera_names)')
    parser.add_argument('--image_size', action='store', type=int, nargs=2, default=list(IMAGE_HW),
                        metavar=('H', 'W'), help='rendered frame size')
    parser.add_argument('--compress', action='store_true',
                        help='lossless gzip chunk compression of the images (read by any HDF5 reader)')
    parser.add_argument('--no_shadows', action='store_true',
                        help='render without shadows: a third of the CPU per frame, but the frames differ from '
                             "the original's wherever a shadow falls (evaluation of a policy trained on them "
                             'renders the same way)')
    parser.add_argument('--inject_noise', action='store_true',
                        help='add uniform noise to the scripted end-effector positions')
    parser.add_argument('--format', choices=DATASET_FORMATS, default='hdf5',
                        help='hdf5: episode_{i}.hdf5 files (the original layout); lerobot: a LeRobot dataset (v3.0) '
                             'at --dataset_dir, episodes appended after those it has, robot_type aloha')
    parser.add_argument('--task', help="--format lerobot: the episodes' task text (default: the task's instruction, "
                        "e.g. 'Transfer the cube from the right gripper to the left')")
    return parser


if __name__ == '__main__':
    parser = build_parser()
    # a full disk keeps the episodes recorded before
    run_command(parser, main, vars(parser.parse_args()), usage=(ValueError, FileExistsError, LeRobotFormatError))
