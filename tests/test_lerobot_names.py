"""LeRobot's command-line names on imitate_episodes.py: each becomes our flag, said once; a LeRobot
setting without a counterpart is named."""
import os
import subprocess
import sys

import pytest

from cli.flags import UsageError
from cli.lerobot_names import translate_lerobot_flags
from imitate_episodes import build_parser
from tests.helpers import ROOT


def test_a_lerobot_act_command_means_ours(tmp_path):
    argv, said = translate_lerobot_flags([
        '--policy.type', 'act', f'--dataset.root={tmp_path}', '--batch_size=8', '--steps', '50000',
        '--policy.chunk_size=100', '--policy.n_action_steps=100', '--policy.optimizer_lr=1e-5',
        '--policy.optimizer_weight_decay', '1e-4', '--save_freq=10000', '--wandb.enable=true', '--seed', '3',
        '--policy.use_vae=false', '--policy.temporal_ensemble_coeff=0.01', '--output_dir', str(tmp_path / 'out')])
    args = vars(build_parser().parse_args(argv))
    assert (args['policy_class'], args['dataset_dir'], args['batch_size'], args['num_steps']) == \
        ('ACT', str(tmp_path), 8, 50000)
    assert (args['chunk_size'], args['lr'], args['weight_decay'], args['save_every']) == (100, 1e-5, 1e-4, 10000)
    assert args['wandb'] and args['seed'] == 3 and args['use_vae'] is False and args['temporal_agg']
    assert args['ckpt_dir'] == str(tmp_path / 'out')
    assert '--policy.chunk_size=100 -> --chunk_size 100' in said and len(said) == 12  # one line per LeRobot name


def test_a_lerobot_diffusion_command_means_ours():
    argv, _ = translate_lerobot_flags(['--policy.type=diffusion', '--policy.horizon=16', '--policy.n_action_steps=8',
                                       '--policy.n_obs_steps=2', '--policy.num_inference_steps=100',
                                       '--policy.noise_scheduler_type', 'DDIM'])
    args = vars(build_parser().parse_args(argv))
    assert (args['policy_class'], args['chunk_size'], args['action_horizon'], args['obs_horizon'],
            args['num_inference_steps'], args['scheduler']) == ('Diffusion', 16, 8, 2, 100, 'ddim')


@pytest.mark.parametrize('argv, message', [
    (['--policy.push_to_hub=true'], r'--policy.push_to_hub: a LeRobot setting this project has no counterpart for'),
    (['--dataset.repo_id', 'me/no_such_dataset'], r'no local dataset at .*me/no_such_dataset \(nothing is downloaded'),
    (['--policy.type=pi0'], r'--policy.type pi0: this project trains act, diffusion'),
    (['--policy.temporal_ensemble_coeff=0.05'], r"the original's weight 0.01 only"),
    (['--wandb.enable=maybe'], r'--wandb.enable maybe: true or false expected'),
    (['--policy.noise_scheduler_type=EULER'], r"LeRobot's are DDPM and DDIM \(here also --scheduler dpmsolver\)"),
])
def test_lerobot_settings_without_a_counterpart_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        translate_lerobot_flags(argv)


def test_the_command_line_says_what_became_what(tiny_dataset, tmp_path):
    done = subprocess.run([sys.executable, 'imitate_episodes.py', '--policy.type=act', '--policy.push_to_hub', 'true',
                           '--task_name', 'sim_transfer_cube', f'--dataset.root={tiny_dataset}'],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 2 and 'error: --policy.push_to_hub: a LeRobot setting' in done.stderr


def test_an_act_plays_lerobots_n_action_steps():
    from cli.flags import flag_problem
    args = vars(build_parser().parse_args(translate_lerobot_flags(['--policy.type=act', '--policy.chunk_size=50',
                                                                   '--policy.n_action_steps=25'])[0]))
    assert flag_problem(args) is None and (args['chunk_size'], args['action_horizon']) == (50, 25)
