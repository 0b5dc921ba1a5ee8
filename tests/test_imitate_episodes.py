"""imitate_episodes.py: the command line, the configuration, the files of a short training run,
config.json and `--eval` with no model flags."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import imitate_episodes
from checkpoints.folder import CONFIG_FILE, read_config
from cli import run_config
from constants import PROJECT_VERSION
from policies.act import ACT_DEFAULTS
from policies.diffusion import DEFAULTS as DIFFUSION_DEFAULTS
from policies.registry import make_policy
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TINY_ACT_CONFIG, TINY_IMAGE_HW, train_args, write_tiny_episode
from training.loop import TRAINING_STATE


def training_state(ckpt_dir):
    return torch.load(os.path.join(ckpt_dir, TRAINING_STATE), weights_only=False)


def test_help_documents_every_flag(tiny_dataset, tmp_path):
    out = subprocess.run([sys.executable, 'imitate_episodes.py', '--help'], cwd=ROOT, capture_output=True,
                         text=True, timeout=PROCESS_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    for key in train_args(tiny_dataset, tmp_path):
        assert f'--{key}' in out.stdout, f'--{key} missing from --help'


def test_two_epochs_write_every_expected_file(two_epoch_run, tiny_act_config):
    args, out = two_epoch_run
    ckpt_dir = args['ckpt_dir']
    names = set(os.listdir(ckpt_dir))
    expected = {'dataset_stats.pkl', 'policy_best.ckpt', 'policy_last.ckpt', 'policy_epoch_0_seed_0.ckpt',
                'train_val_loss_seed_0.png', 'train_val_l1_seed_0.png', 'train_val_kl_seed_0.png',
                TRAINING_STATE, CONFIG_FILE}
    assert expected <= names
    assert not [n for n in names if '.tmp' in n]
    assert 'Epoch 1' in out and 'Val loss:' in out and 'Train loss:' in out
    with open(os.path.join(ckpt_dir, 'dataset_stats.pkl'), 'rb') as f:
        stats = pickle.load(f)
    assert stats['action_mean'].shape == (14,) and 'action_min' in stats
    # checkpoints are plain state dicts that load strictly into a fresh policy
    policy = make_policy('ACT', tiny_act_config)
    policy.deserialize(torch.load(os.path.join(ckpt_dir, 'policy_best.ckpt'), weights_only=True))
    progress = training_state(ckpt_dir)['progress']
    train, val = progress['train_history'], progress['validation_history']
    assert [u for u, _ in train] == [0, 1] and [u for u, _ in val] == [0, 1]
    assert progress['step'] == 4
    best_epoch = int(np.argmin([s['loss'] for _, s in val]))
    assert f'Best ckpt, val loss {val[best_epoch][1]["loss"]:.6f} @ epoch{best_epoch}' in out
    assert f'policy_epoch_{best_epoch}_seed_0.ckpt' in names


def test_config_json_says_what_the_folder_holds(two_epoch_run):
    args, _ = two_epoch_run
    with open(os.path.join(args['ckpt_dir'], CONFIG_FILE)) as f:
        config = json.load(f)
    assert config['project_version'] == PROJECT_VERSION and config['policy_class'] == 'ACT'
    assert config['camera_names'] == ['top'] and config['image_size'] == list(TINY_IMAGE_HW)
    assert config['state_dim'] == config['action_dim'] == 14 and config['task_name'] == args['task_name']
    assert config['shadows'] is True  # the tiny episodes carry no shadows=False mark
    assert config['training']['batch_size'] == 2 and config['training']['num_episodes'] == 5
    policy_config = config['policy_config']
    for key in ('num_queries', 'hidden_dim', 'dim_feedforward', 'enc_layers', 'dec_layers', 'nheads'):
        assert policy_config[key] == TINY_ACT_CONFIG[key], key
    assert policy_config['latent_dim'] == ACT_DEFAULTS['latent_dim']  # complete: defaults written out
    make_policy('ACT', policy_config).deserialize(torch.load(os.path.join(args['ckpt_dir'], 'policy_best.ckpt')))


def eval_flags(ckpt_dir, *extra):
    """`--eval` of a tiny run with no model flags: 1 short rollout at the training image size."""
    args = vars(imitate_episodes.build_parser().parse_args(
        ['--eval', '--ckpt_dir', str(ckpt_dir), '--num_rollouts', '1', '--no_video', '--device', 'cpu', *extra]))
    return args


@pytest.fixture
def short_episodes(monkeypatch):
    from constants import SIM_TASK_CONFIGS
    monkeypatch.setitem(SIM_TASK_CONFIGS['sim_transfer_cube_scripted'], 'episode_len', 3)


def test_eval_needs_no_model_flags_with_config_json(two_epoch_run, short_episodes, capsys):
    args, _ = two_epoch_run
    imitate_episodes.main(eval_flags(args['ckpt_dir']))
    out = capsys.readouterr().out
    assert 'policy_best.ckpt: success_rate=' in out and 'overrides' not in out
    assert os.path.isfile(os.path.join(args['ckpt_dir'], 'result_policy_best.txt'))
    config = run_config.eval_config(eval_flags(args['ckpt_dir']), 'cpu')
    assert config['image_size'] == TINY_IMAGE_HW and config['policy_config']['hidden_dim'] == 32
    assert config['policy_config']['action_horizon'] is None  # ACT plays its whole chunk
    played = run_config.eval_config(eval_flags(args['ckpt_dir'], '--action_horizon', '3'), 'cpu')
    assert played['policy_config']['action_horizon'] == 3


def test_eval_renders_without_shadows_when_the_training_frames_were(two_epoch_run, tmp_path, short_episodes,
                                                                  capsys):
    import shutil

    from evaluation import rollout
    args, _ = two_epoch_run
    ckpt_dir = tmp_path / 'ckpt'
    shutil.copytree(args['ckpt_dir'], ckpt_dir)
    config = read_config(str(ckpt_dir))
    with open(ckpt_dir / CONFIG_FILE, 'w') as f:
        json.dump(dict(config, shadows=False), f)
    eval_config = run_config.eval_config(eval_flags(ckpt_dir), 'cpu')
    env, _ = rollout.make_env(rollout.EvalSettings.of(eval_config))
    assert not env.physics.model.light_castshadow.any()
    imitate_episodes.main(eval_flags(ckpt_dir))
    assert 'Rendering without shadows' in capsys.readouterr().out
    env, _ = rollout.make_env(rollout.EvalSettings.of(run_config.eval_config(eval_flags(args['ckpt_dir']),
                                                                                      'cpu')))
    assert env.physics.model.light_castshadow.any()  # the assets' light casts shadows by default


def test_training_on_episodes_rendered_unalike_stops_before_writing(tiny_dataset, tmp_path):
    import h5py
    with h5py.File(os.path.join(tiny_dataset, 'episode_3.hdf5'), 'r+') as root:
        root.attrs['shadows'] = False
    ckpt_dir = tmp_path / 'ckpt'
    with pytest.raises(ValueError, match='1 of 5 episodes were rendered without shadows .*episode_3.hdf5'):
        imitate_episodes.main(train_args(tiny_dataset, ckpt_dir))
    assert not os.path.exists(ckpt_dir / 'dataset_stats.pkl')


def test_eval_flags_given_win_over_config_json_and_say_so(two_epoch_run, short_episodes, capsys):
    args, _ = two_epoch_run
    flags = eval_flags(args['ckpt_dir'], '--chunk_size', '7', '--image_size', '12', '16', '--hidden_dim', '32')
    config = run_config.eval_config(flags, 'cpu')
    out = capsys.readouterr().out
    assert config['policy_config']['num_queries'] == 7 and config['image_size'] == (12, 16)
    assert 'chunk_size 7 overrides chunk_size = 5 from' in out and CONFIG_FILE in out
    assert 'image_size [12, 16] overrides image_size = [24, 32]' in out
    assert 'hidden_dim' not in out  # the same value as saved: nothing to say
    with pytest.raises(ValueError, match=r'policy_best\.ckpt does not match'):  # the checkpoint has chunk 5
        imitate_episodes.main(flags)


def test_eval_the_original_way_without_config_json(two_epoch_run, tmp_path, short_episodes):
    args, _ = two_epoch_run
    ckpt_dir = tmp_path / 'original'
    ckpt_dir.mkdir()
    for name in ('policy_best.ckpt', 'dataset_stats.pkl'):
        (ckpt_dir / name).write_bytes(open(os.path.join(args['ckpt_dir'], name), 'rb').read())
    flags = train_args(args['dataset_dir'], ckpt_dir, eval=True, num_rollouts=1, no_video=True,
                       image_size=list(TINY_IMAGE_HW))
    imitate_episodes.main(flags)
    assert (ckpt_dir / 'result_policy_best.txt').is_file()
    with pytest.raises(ValueError, match='--policy_class and --task_name required'):
        imitate_episodes.main(eval_flags(ckpt_dir))


def test_config_json_from_a_newer_version_is_refused(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({'project_version': '99.0.0', 'policy_class': 'ACT'}))
    with pytest.raises(ValueError, match=r'version 99\.0\.0 of this project, newer than this one'):
        read_config(str(tmp_path))
    (tmp_path / CONFIG_FILE).write_text('{not json')
    with pytest.raises(ValueError, match='config.json cannot be read as JSON'):
        read_config(str(tmp_path))
    result = subprocess.run([sys.executable, 'imitate_episodes.py', '--eval', '--ckpt_dir', str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert result.returncode == 2 and 'cannot be read as JSON' in result.stderr


DAMAGES = [
    ({'image_size': [-4, 32]}, r'config.json: image_size \[-4, 32\] is not two positive integers \[H, W\]'),
    ({'policy_config': 'ACT'}, r'config.json: policy_config is a str, not an object'),
    ({'camera_names': 'top'}, r"config.json: camera_names 'top' is not a list of camera names"),
    ({'state_dim': 0}, r'config.json: state_dim 0 is not a positive integer'),
]


def damaged_copy(two_epoch_run, tmp_path, change):
    damaged = tmp_path / 'damaged'
    shutil.copytree(two_epoch_run[0]['ckpt_dir'], damaged)
    config = json.loads((damaged / CONFIG_FILE).read_text())
    (damaged / CONFIG_FILE).write_text(json.dumps({**config, **change}))
    return damaged


@pytest.mark.parametrize('change, message', DAMAGES)
def test_a_damaged_config_json_is_named(two_epoch_run, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        read_config(str(damaged_copy(two_epoch_run, tmp_path, change)))


def test_a_damaged_config_json_is_a_usage_error_naming_it(two_epoch_run, tmp_path):
    change, message = DAMAGES[0]
    result = subprocess.run([sys.executable, 'imitate_episodes.py', '--eval', '--ckpt_dir',
                             str(damaged_copy(two_epoch_run, tmp_path, change))],
                            cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    error = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and error.startswith('imitate_episodes.py: error: ') and re.search(message, error)
    assert 'Traceback' not in result.stderr and '--image_size' not in error  # the file is named, not the flag


def test_a_chunk_longer_than_every_episode_is_refused_before_any_file(tmp_path):
    data = tmp_path / 'data'
    os.makedirs(data)
    for i in range(5):
        write_tiny_episode(str(data / f'episode_{i}.hdf5'), episode_len=4, seed=i)
    with pytest.raises(ValueError, match=r'--chunk_size 8 is longer than the longest episode \(4 steps\)'):
        imitate_episodes.main(train_args(str(data), str(tmp_path / 'ckpt'), chunk_size=8))
    assert os.listdir(tmp_path / 'ckpt') == []


def test_training_without_the_vae_records_it_and_has_no_kl(tiny_dataset, tmp_path):
    args = vars(imitate_episodes.build_parser().parse_args(['--no_vae']))
    assert args['use_vae'] is False
    ckpt = tmp_path / 'ckpt'
    imitate_episodes.main(train_args(tiny_dataset, str(ckpt), use_vae=False, num_epochs=1))
    assert json.loads((ckpt / CONFIG_FILE).read_text())['policy_config']['use_vae'] is False
    records = [json.loads(line) for line in (ckpt / 'metrics.jsonl').read_text().splitlines()]
    assert records and not any('kl' in key for record in records for key in record)


def test_bad_flags_are_named(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match='--grad_accum'):
        imitate_episodes.main(train_args(tiny_dataset, tmp_path, grad_accum=0))
    with pytest.raises(ValueError, match='--amp fp16'):
        imitate_episodes.main(train_args(tiny_dataset, tmp_path, amp='fp16'))
    with pytest.raises(KeyError, match='known sim tasks'):
        imitate_episodes.main(train_args(tiny_dataset, tmp_path, task_name='sim_nope'))
    with pytest.raises(ValueError, match='--policy_class required'):
        imitate_episodes.main(train_args(tiny_dataset, tmp_path, policy_class=None))


def test_unknown_task_is_a_usage_error_listing_the_tasks(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'imitate_episodes.py'), '--task_name', 'nope',
                             '--ckpt_dir', str(tmp_path), '--policy_class', 'ACT'], capture_output=True, text=True)
    assert result.returncode == 2
    assert 'sim_transfer_cube_scripted' in result.stderr and 'aloha_wear_shoe' in result.stderr


def test_lr_default_depends_on_the_policy(tmp_path):
    act = train_args(tmp_path, tmp_path, lr=None)
    assert run_config.make_policy_config(act, ['top'], 14, 14, (24, 32))['lr'] == ACT_DEFAULTS['lr'] == 1e-5
    diffusion = train_args(tmp_path, tmp_path, lr=None, policy_class='Diffusion')
    policy_config = run_config.make_policy_config(diffusion, ['top'], 14, 14, (24, 32))
    assert policy_config['lr'] == DIFFUSION_DEFAULTS['lr'] == 1e-4  # the Diffusion policy's own default
    assert run_config.make_policy_config(train_args(tmp_path, tmp_path, lr=3e-4), ['top'], 14, 14,
                                               (24, 32))['lr'] == 3e-4


def test_an_act_action_horizon_is_a_policy_setting_the_run_records(tmp_path):
    args = train_args(tmp_path / 'data', tmp_path / 'ckpt', action_horizon=3)
    policy_config = run_config.make_policy_config(args, ['top'], 14, 14, TINY_IMAGE_HW)
    assert policy_config['action_horizon'] == 3 and make_policy('ACT', policy_config).action_horizon == 3
    with pytest.raises(ValueError, match=r'--action_horizon must be between 1 and the chunk size 5'):
        run_config.make_policy_config(dict(args, action_horizon=9), ['top'], 14, 14, TINY_IMAGE_HW)
