r"""Train an ACT, CNNMLP or Diffusion policy on recorded episodes, or evaluate one with --eval.

    python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT
    python imitate_episodes.py --task_name sim_transfer_cube --policy_class ACT --eval --temporal_agg
    python imitate_episodes.py --eval_offline --ckpt_dir ckpt/sim_transfer_cube_scripted

The first trains the README recipe (the policy's defaults: for ACT --kl_weight 10 --chunk_size 100
--hidden_dim 512 --dim_feedforward 3200 --lr 1e-5, with --batch_size 8 --num_epochs 2000 --seed 0)
into ckpt/<task_name>; the second rolls out the policy it trained. The original's full command lines
keep their meaning. Training leaves the original's files in --ckpt_dir (dataset_stats.pkl,
policy_best.ckpt, policy_last.ckpt, policy_epoch_{e}_seed_{s}.ckpt, train_val_{key}_seed_{s}.png),
plus config.json, which lets --eval rebuild the policy with no model flags (flags given still win),
training_state.pt for --resume and metrics.jsonl (every step's metrics). --eval also writes
report.html; --eval_offline compares the policy's action chunks with recorded episodes
(offline_eval.json). Several processes: `torchrun --nproc_per_node N imitate_episodes.py ...`
(only rank 0 writes files). This script is the command line only: its flags are in cli/flags.py,
the commands in cli/commands.py, the loop in training/loop.py, evaluation in evaluation/rollout.py.
"""
import sys

from cli import flags
from cli.commands import main
from cli.data_check import MissingData
from cli.errors import run_command
from cli.flags import UsageError
from cli.lerobot_names import translate_lerobot_flags
from common.folders import UnsafeFile
from formats.lerobot import LeRobotFormatError
from training.loop import NonFiniteLoss


def build_parser():
    """The command line of this script (cli/flags.py), described by this docstring."""
    return flags.build_parser(__doc__)


def __getattr__(name):
    """The original defined eval_bc here; it lives in evaluation/rollout.py and is still importable from here."""
    if name == 'eval_bc':
        from evaluation.rollout import eval_bc
        return eval_bc
    raise AttributeError(f"module 'imitate_episodes' has no attribute '{name}'")


if __name__ == '__main__':
    parser = build_parser()
    try:
        argv, translated = translate_lerobot_flags(sys.argv[1:])
    except UsageError as err:
        parser.error(str(err))
    for line in translated:
        print(f'LeRobot flag {line}')
    run_command(parser, main, vars(parser.parse_args(argv)), usage=(UsageError,),
                plain=(NonFiniteLoss, UnsafeFile, MissingData, LeRobotFormatError))
