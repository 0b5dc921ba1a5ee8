"""Checkpoints between this project's folder and LeRobot's pretrained_model/ folder (convert_checkpoint.py):
ACT both ways, Diffusion from LeRobot (checkpoints/lerobot.py reads either type)."""
import os

import numpy as np
import torch

from checkpoints.folder import BEST_CKPT, CONFIG_FILE, STATS_FILE, atomic_save, make_run_config, write_config
from checkpoints.lerobot import converter, load_lerobot_weights, read_lerobot_checkpoint
from checkpoints.lerobot_files import MODEL_FILE, feature_listing
from checkpoints.reader import open_checkpoint
from common.files import prepare_folder
from common.safe_load import load_torch_file
from formats.datasets import open_dataset
from formats.normalize import Normalizer
from formats.stats import get_norm_stats
from policies.registry import get_policy_class, lerobot_types, make_policy, resolve_policy_config

ACT_FILES = (BEST_CKPT, STATS_FILE, CONFIG_FILE)  # what --to act writes


def refuse_overwrite(dst, names):
    """ValueError when dst already holds one of the files a conversion would write."""
    present = [name for name in names if os.path.exists(os.path.join(dst, name))]
    if present:
        raise ValueError(f"{dst} already holds {', '.join(present)}: choose an empty destination folder")


def to_lerobot(src, dst, ckpt_name=BEST_CKPT, temporal_agg=False):
    """This project's ACT or lerobot-style Diffusion folder src -> a LeRobot pretrained_model/ folder dst;
    temporal_agg (ACT): LeRobot evaluates it with temporal ensembling (coefficient 0.01, n_action_steps 1)."""
    checkpoint = open_checkpoint(src)
    if checkpoint.kind == 'lerobot':
        raise ValueError(f'{src} is already a LeRobot checkpoint')
    if checkpoint.kind == 'original':
        raise ValueError(f'{os.path.join(src, CONFIG_FILE)} not found: the conversion needs the run\'s settings, which '
                         f'training here writes there (a folder of the original code has none)')
    config = checkpoint.config
    policy_class = config['policy_class']
    kind = get_policy_class(policy_class).lerobot_type
    if kind is None:
        raise ValueError(f"{src} holds a {policy_class} policy; {' and '.join(lerobot_types().values())} convert "
                         f"to LeRobot's")
    module = converter(kind)
    policy_config = resolve_policy_config(policy_class, config['policy_config'])
    module.check_exportable(policy_config)
    refuse_overwrite(dst, (CONFIG_FILE, MODEL_FILE))
    weights = checkpoint.weights_file(ckpt_name)
    state = load_torch_file(weights, 'checkpoint')
    stats = Normalizer.load(os.path.join(src, STATS_FILE), get_policy_class(policy_class).action_normalization).stats
    make_policy(policy_class, policy_config, load_pretrained=False).deserialize(state)  # it is this policy's
    prepare_folder(dst, 'DST')
    what = module.write_converted(dst, policy_config, config['image_size'], state, stats, temporal_agg)
    print(f'Wrote LeRobot {policy_class} checkpoint {dst} from {weights}{what}')


def to_act(src, dst, stats_from=None):
    """A LeRobot ACT or Diffusion folder src -> this project's checkpoint folder dst; stats_from: a dataset
    folder (episode files or LeRobot) whose statistics replace the checkpoint's."""
    if open_checkpoint(src).kind != 'lerobot':
        raise ValueError(f'{src} is not a LeRobot checkpoint folder (a config.json with a "type" key)')
    refuse_overwrite(dst, ACT_FILES)
    checkpoint = read_lerobot_checkpoint(src, statistics=stats_from is None)
    policy_class = checkpoint['policy_class']
    stats = checkpoint['stats'] if stats_from is None else get_norm_stats(open_dataset(stats_from))
    policy_config = resolve_policy_config(policy_class, checkpoint['policy_config'])
    with torch.random.fork_rng():
        torch.manual_seed(0)  # what LeRobot does not hold starts the same in every conversion
        policy = make_policy(policy_class, policy_config, load_pretrained=False)
    filled = load_lerobot_weights(policy, checkpoint)  # strict: make_policy(config) loads it
    normalizer = Normalizer(stats, get_policy_class(policy_class).action_normalization, source=stats_from or src)
    normalizer.check_sizes(policy_config['state_dim'], policy_config['action_dim'], stats_from or src)
    prepare_folder(dst, 'DST')
    atomic_save(policy.serialize(), os.path.join(dst, BEST_CKPT))
    Normalizer({k: np.asarray(v) for k, v in stats.items()}).save(os.path.join(dst, STATS_FILE))
    write_config(dst, make_run_config(policy_class, policy_config, None, checkpoint['image_size'],
                                      {'converted_from': src}))
    print(f'Wrote {", ".join(ACT_FILES)} to {dst} from LeRobot {policy_class} checkpoint {src}: '
          f'{feature_listing(checkpoint["features"])}')
    if filled:
        print(f'{len(filled)} tensors LeRobot does not hold were filled (is_pad_head with zeros'
              f'{"" if checkpoint.get("use_vae", True) else ", the CVAE encoder freshly initialised"}); they never '
              f'shape actions')
