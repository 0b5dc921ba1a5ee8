r"""Convert an ACT or Diffusion checkpoint between this project's folder and LeRobot's pretrained_model/ folder.

    python convert_checkpoint.py --to lerobot ckpt/sim_transfer_cube_scripted out/pretrained_model
    python convert_checkpoint.py --to act path/to/pretrained_model ckpt/from_lerobot [--stats_from DATASET]

--to lerobot reads a folder trained here (config.json, the policy file, dataset_stats.pkl) and writes
LeRobot's current layout (config.json, model.safetensors, the pre- and postprocessor files with the
statistics), the layout LeRobot's from_pretrained and its processors read; the statistics are
written so that LeRobot's arithmetic gives this project's actions. ACT: the decoder layers after the
first (never computed) and is_pad_head (never used for actions) are left out; `device` is `cpu`
(LeRobot moves the policy where it runs), and --temporal_agg asks LeRobot to ensemble its chunks.
Diffusion: a policy trained with --diffusion_style lerobot (LeRobot's network) and the ddim or ddpm
sampler; its averaged (EMA) weights are written, the ones inference uses (LeRobot keeps one set).
--to act reads a LeRobot ACT or Diffusion folder (either layout of its statistics) and writes what
training here writes: policy_best.ckpt, dataset_stats.pkl in the original's format and config.json;
evaluation here then reproduces LeRobot's actions (Diffusion: for the same noise).
The conversions are checkpoints/convert.py.
"""
import argparse

from checkpoints.convert import to_act, to_lerobot
from checkpoints.folder import BEST_CKPT
from cli.errors import run_command
from common.folders import UnsafeFile
from formats.lerobot import LeRobotFormatError


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--to', required=True, choices=('lerobot', 'act'), help='the format to write')
    parser.add_argument('src', help='the checkpoint folder to read')
    parser.add_argument('dst', help='the folder to write (created; files already there are not overwritten)')
    parser.add_argument('--ckpt', default=BEST_CKPT, help='--to lerobot: the policy file in SRC')
    parser.add_argument('--temporal_agg', action='store_true', help='--to lerobot: LeRobot evaluates it with temporal '
                        'ensembling as --temporal_agg does here (temporal_ensemble_coeff 0.01, n_action_steps 1); '
                        'without it, temporal_ensemble_coeff is null and the whole chunk is played')
    parser.add_argument('--stats_from', metavar='DATASET', help='--to act: compute the statistics from this '
                        'episodes folder or LeRobot dataset (for a LeRobot folder without its normaliser files)')
    return parser


def main(args):
    if args['to'] == 'lerobot':
        to_lerobot(args['src'], args['dst'], args['ckpt'], args['temporal_agg'])
    else:
        to_act(args['src'], args['dst'], args['stats_from'])


if __name__ == '__main__':
    parser = build_parser()
    run_command(parser, main, vars(parser.parse_args()), plain=(LeRobotFormatError, UnsafeFile, ValueError, KeyError,
                                                              FileNotFoundError))
