"""Convert demonstrations between the ALOHA HDF5 episodes and a LeRobot dataset.

    python convert_dataset.py --to lerobot data/sim_transfer_cube_scripted data/transfer_cube_lerobot
    python convert_dataset.py --to hdf5 data/transfer_cube_lerobot data/transfer_cube_hdf5
    python convert_dataset.py --to lerobot data/sim_so101_pick_place data/so101_lerobot --task_name sim_so101_pick_place

--to lerobot writes a LeRobot v3.0 dataset (formats/lerobot_writer.py) from episode_{i}.hdf5 files: every
array kept (qpos -> observation.state, action, qvel -> observation.velocity, effort ->
observation.effort), each camera as a video (LeRobot's AV1 settings, H.264 where the AV1 encoder is
missing, or --vcodec), per-episode and dataset statistics, info, tasks and episode metadata.
--to hdf5 writes episode_{i}.hdf5 files in the original layout from a LeRobot v3.0 or v2.1
dataset, episode i being LeRobot's episode_index i: arrays unchanged to the bit, frames as PyAV
decodes them. Either way the destination is built beside it (<DST>.partial) and renamed when
complete, so an interrupted conversion leaves no dataset that looks valid; an existing destination
is refused. The conversions are formats/convert.py.
"""
import argparse

from cli.errors import run_command
from constants import ALOHA_ROBOT_TYPE, ALOHA_STATE_DIM, CONTROL_HZ
from formats.convert import to_hdf5, to_lerobot
from formats.hdf5 import COMPRESSIONS
from formats.lerobot import DEFAULT_TASK, LeRobotFormatError
from tasks import lerobot_settings


def lerobot_flags(args):
    """--fps, --task and --robot_type, with --task_name's settings where they are left out, and the
    task's feature names (SO arms: shoulder_pan.pos, ...)."""
    task = lerobot_settings(args['task_name']) if args.get('task_name') else {}
    return {'fps': args['fps'] or task.get('fps'), 'task': args['task'] or task.get('task') or DEFAULT_TASK,
            'robot_type': args['robot_type'] or task.get('robot_type'), 'names': task.get('names')}


def main(args):
    if args['to'] == 'lerobot':
        count = to_lerobot(args['src'], args['dst'], vcodec=args['vcodec'], num_episodes=args['num_episodes'],
                           **lerobot_flags(args))
    else:
        count = to_hdf5(args['src'], args['dst'], args['num_episodes'], args['compress'])
    print(f"Wrote {count} episodes to {args['dst']}")


def build_parser():
    parser = argparse.ArgumentParser(description='Convert ALOHA HDF5 episodes to a LeRobot dataset (v3.0) or a '
                                     'LeRobot dataset (v3.0, v2.1) to HDF5 episodes.')
    parser.add_argument('--to', choices=('lerobot', 'hdf5'), required=True, help='the layout to write')
    parser.add_argument('src', help='episode_*.hdf5 folder (--to lerobot) or LeRobot dataset root (--to hdf5)')
    parser.add_argument('dst', help='new folder to write (refused if it exists and is not empty)')
    parser.add_argument('--num_episodes', type=int, default=None, help='convert episodes 0..N-1 (default: all)')
    parser.add_argument('--task_name', help='--to lerobot: the task the episodes were recorded for (a sim or '
                        "real-robot task): its rate, instruction, robot type and, for SO arms, LeRobot's feature "
                        'names (shoulder_pan.pos, ...), wherever the flags below are left out')
    parser.add_argument('--fps', type=int, default=None,
                        help=f"--to lerobot: frame rate (default: --task_name's, else {CONTROL_HZ})")
    parser.add_argument('--task', default=None, help="--to lerobot: the task description of every episode (default: "
                        f"--task_name's instruction, else '{DEFAULT_TASK}')")
    parser.add_argument('--robot_type', default=None,
                        help=f"--to lerobot: info.json robot_type (default: --task_name's, else {ALOHA_ROBOT_TYPE} "
                             f"for states of ALOHA's {ALOHA_STATE_DIM} joints)")
    parser.add_argument('--vcodec', default=None,
                        help="--to lerobot: PyAV video encoder (default: LeRobot's libsvtav1, else h264)")
    parser.add_argument('--compress', choices=COMPRESSIONS, default=None,
                        help='--to hdf5: image compression (default: none, as the original)')
    return parser


if __name__ == '__main__':
    parser = build_parser()
    cli_args = vars(parser.parse_args())
    if cli_args['num_episodes'] is not None and cli_args['num_episodes'] < 1:
        parser.error(f"--num_episodes must be 1 or more, got {cli_args['num_episodes']}")
    if cli_args['fps'] is not None and cli_args['fps'] < 1:
        parser.error(f"--fps must be 1 or more, got {cli_args['fps']}")
    run_command(parser, main, cli_args, plain=(ValueError, KeyError, FileNotFoundError, FileExistsError,
                                              LeRobotFormatError))
