r"""Convert an ACT checkpoint between this project's folder and LeRobot's pretrained_model/ folder.

    python convert_checkpoint.py --to lerobot ckpt/sim_transfer_cube_scripted out/pretrained_model
    python convert_checkpoint.py --to act path/to/pretrained_model ckpt/from_lerobot [--stats_from DATASET]

--to lerobot reads a folder trained here (config.json, the policy file, dataset_stats.pkl) and writes
LeRobot's current layout (config.json, model.safetensors, the pre- and postprocessor files with the
statistics), the layout LeRobot's ACTPolicy.from_pretrained and its processors read; the statistics are
written so that LeRobot's arithmetic gives this project's actions. The decoder layers after the
first (never computed) and is_pad_head (never used for actions) are left out.
--to act reads a LeRobot ACT folder (either layout of its statistics) and writes what training here
writes: policy_best.ckpt (a plain state_dict), dataset_stats.pkl in the original's format and
config.json; the original's evaluation arithmetic then reproduces LeRobot's actions.
"""
import argparse
import os
import sys

import numpy as np
import torch

from checkpoint import (CONFIG_FILE, STATS_FILE, atomic_save, make_run_config, policy_file, read_config,
                        write_config)
from data import Normalizer, get_norm_stats
from episodes import count_episodes
from files import UnsafeFile, load_torch_file, prepare_folder
from lerobot_act import (MODEL_FILE, LeRobotFormatError, feature_listing, is_lerobot_folder, load_lerobot_weights,
                         read_lerobot_checkpoint, write_lerobot_checkpoint)
from policy import make_policy, resolve_policy_config

ACT_FILES = ('policy_best.ckpt', STATS_FILE, CONFIG_FILE)  # what --to act writes


def refuse_overwrite(dst, names):
    """ValueError when dst already holds one of the files a conversion would write."""
    present = [name for name in names if os.path.exists(os.path.join(dst, name))]
    if present:
        raise ValueError(f"{dst} already holds {', '.join(present)}: choose an empty destination folder")


def to_lerobot(src, dst, ckpt_name='policy_best.ckpt'):
    """This project's ACT folder src -> a LeRobot pretrained_model/ folder dst."""
    if is_lerobot_folder(src):
        raise ValueError(f'{src} is already a LeRobot checkpoint')
    config = read_config(src)
    if config is None:
        raise ValueError(f'{os.path.join(src, CONFIG_FILE)} not found: the conversion needs the run\'s settings, which '
                         f'training here writes there (a folder of the original code has none)')
    if config['policy_class'] != 'ACT':
        raise ValueError(f"{src} holds a {config['policy_class']} policy; only ACT converts to LeRobot's ACT")
    refuse_overwrite(dst, (CONFIG_FILE, MODEL_FILE))
    policy_config = resolve_policy_config('ACT', config['policy_config'])
    state_dict = load_torch_file(policy_file(src, ckpt_name), 'checkpoint')
    stats = Normalizer.load(os.path.join(src, STATS_FILE)).stats
    make_policy('ACT', policy_config, load_pretrained=False).deserialize(state_dict)  # it is this ACT's
    prepare_folder(dst, 'DST')
    dropped = write_lerobot_checkpoint(dst, policy_config, config['image_size'], state_dict, stats)
    print(f'Wrote LeRobot ACT checkpoint {dst} from {policy_file(src, ckpt_name)}; left out {len(dropped)} '
          f'tensors that never shape actions (decoder layers after the first, is_pad_head)')


def to_act(src, dst, stats_from=None):
    """A LeRobot ACT folder src -> this project's checkpoint folder dst."""
    if not is_lerobot_folder(src):
        raise ValueError(f'{src} is not a LeRobot checkpoint folder (a config.json with a "type" key)')
    refuse_overwrite(dst, ACT_FILES)
    checkpoint = read_lerobot_checkpoint(src, statistics=stats_from is None)
    stats = checkpoint['stats']
    if stats_from is not None:
        stats = get_norm_stats(stats_from, count_episodes(stats_from))
    policy_config = resolve_policy_config('ACT', checkpoint['policy_config'])
    with torch.random.fork_rng():
        torch.manual_seed(0)  # what LeRobot does not hold starts the same in every conversion
        policy = make_policy('ACT', policy_config, load_pretrained=False)
    filled = load_lerobot_weights(policy, checkpoint)  # strict: make_policy(config) loads it
    Normalizer(stats, source=stats_from or src).check_sizes(policy_config['state_dim'], policy_config['action_dim'],
                                                          stats_from or src)
    prepare_folder(dst, 'DST')
    atomic_save(policy.state_dict(), os.path.join(dst, 'policy_best.ckpt'))
    Normalizer({k: np.asarray(v) for k, v in stats.items()}).save(os.path.join(dst, STATS_FILE))
    write_config(dst, make_run_config('ACT', policy_config, None, checkpoint['image_size'], {'converted_from': src}))
    print(f'Wrote {", ".join(ACT_FILES)} to {dst} from LeRobot checkpoint {src}: '
          f'{feature_listing(checkpoint["features"])}')
    if filled:
        print(f'{len(filled)} tensors LeRobot does not hold were filled (is_pad_head with zeros'
              f'{"" if checkpoint["use_vae"] else ", the CVAE encoder freshly initialised"}); they never shape '
              f'actions')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--to', required=True, choices=('lerobot', 'act'), help='the format to write')
    parser.add_argument('src', help='the checkpoint folder to read')
    parser.add_argument('dst', help='the folder to write (created; files already there are not overwritten)')
    parser.add_argument('--ckpt', default='policy_best.ckpt', help='--to lerobot: the policy file in SRC')
    parser.add_argument('--stats_from', metavar='DATASET', help='--to act: compute the statistics from this '
                        'episodes folder (for a LeRobot folder without its normaliser files)')
    return parser


def main(args):
    if args['to'] == 'lerobot':
        to_lerobot(args['src'], args['dst'], args['ckpt'])
    else:
        to_act(args['src'], args['dst'], args['stats_from'])


if __name__ == '__main__':
    parser = build_parser()
    try:
        main(vars(parser.parse_args()))
    except (LeRobotFormatError, UnsafeFile) as err:
        sys.exit(f'{parser.prog}: error: {err}')
    except (ValueError, KeyError, FileNotFoundError) as err:
        sys.exit(f'{parser.prog}: error: {err.args[0] if err.args else err}')
