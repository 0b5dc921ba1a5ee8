"""imitate_episodes.py: command line, a short real training run, resume, atomic writes, DDP."""
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import imitate_episodes
from conftest import ROOT

TASK = 'sim_transfer_cube_scripted'


def make_args(tiny_dataset, ckpt_dir, tiny_act_config, **overrides):
    """The flags of imitate_episodes.py as main() receives them: defaults plus a tiny ACT."""
    args = {
        'eval': False, 'onscreen_render': False, 'ckpt_dir': str(ckpt_dir), 'policy_class': 'ACT', 'task_name': TASK,
        'batch_size': 2, 'seed': 0, 'num_epochs': 2, 'lr': 1e-4, 'kl_weight': 10.0,
        'chunk_size': tiny_act_config['num_queries'], 'hidden_dim': tiny_act_config['hidden_dim'],
        'dim_feedforward': tiny_act_config['dim_feedforward'], 'temporal_agg': False,
        'dataset_dir': tiny_dataset, 'num_episodes': 5, 'camera_names': ['top'], 'image_size': None,
        'num_workers': None, 'preload': 'auto',
        'enc_layers': tiny_act_config['enc_layers'], 'dec_layers': tiny_act_config['dec_layers'],
        'nheads': tiny_act_config['nheads'], 'latent_dim': 32, 'dropout': 0.1, 'pre_norm': False,
        'backbone': 'resnet18', 'per_camera_backbone': False, 'lr_backbone': 1e-5, 'weight_decay': None,
        'backbone_weights': None, 'pretrained_backbone': False,
        'num_inference_steps': 10, 'scheduler': 'ddim', 'obs_horizon': 1, 'action_horizon': None,
        'device': 'cpu', 'amp': 'off', 'grad_accum': 1, 'lr_schedule': 'constant', 'warmup_steps': 0,
        'num_steps': None, 'validate_every': 1, 'save_every': 100, 'resume': False, 'wandb': False,
        'num_rollouts': 50, 'eval_ckpt': 'policy_best.ckpt', 'no_video': False, 'eval_workers': 1,
        'robot_backend': 'builtin', 'robot_driver': 'auto',
    }
    args.update(overrides)
    return args


def training_state(ckpt_dir):
    return torch.load(os.path.join(ckpt_dir, imitate_episodes.TRAINING_STATE), weights_only=False)


def losses(ckpt_dir):
    """(train, validation) histories of a finished run: lists of (unit, {key: value})."""
    progress = training_state(ckpt_dir)['progress']
    return progress['train_history'], progress['validation_history']


def test_help_documents_every_flag(tiny_dataset, tmp_path, tiny_act_config):
    out = subprocess.run([sys.executable, 'imitate_episodes.py', '--help'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for key in make_args(tiny_dataset, tmp_path, tiny_act_config):
        assert f'--{key}' in out.stdout, f'--{key} missing from --help'


def test_two_epochs_write_every_expected_file(tiny_dataset, tmp_path, tiny_act_config, capsys):
    ckpt_dir = tmp_path / 'ckpt'
    imitate_episodes.main(make_args(tiny_dataset, ckpt_dir, tiny_act_config))
    names = set(os.listdir(ckpt_dir))
    expected = {'dataset_stats.pkl', 'policy_best.ckpt', 'policy_last.ckpt', 'policy_epoch_0_seed_0.ckpt',
                'train_val_loss_seed_0.png', 'train_val_l1_seed_0.png', 'train_val_kl_seed_0.png',
                imitate_episodes.TRAINING_STATE}
    assert expected <= names
    assert not [n for n in names if '.tmp' in n]
    out = capsys.readouterr().out
    assert 'Epoch 1' in out and 'Val loss:' in out and 'Train loss:' in out
    assert 'Best ckpt, val loss' in out
    with open(ckpt_dir / 'dataset_stats.pkl', 'rb') as f:
        stats = pickle.load(f)
    assert stats['action_mean'].shape == (14,) and 'action_min' in stats
    # checkpoints are plain state dicts that load strictly into a fresh policy
    from policy import make_policy
    policy = make_policy('ACT', {**tiny_act_config, 'lr': 1e-4})
    best = torch.load(ckpt_dir / 'policy_best.ckpt', weights_only=True)
    policy.deserialize(best)
    train, val = losses(ckpt_dir)
    assert [u for u, _ in train] == [0, 1] and [u for u, _ in val] == [0, 1]
    best_epoch = int(np.argmin([s['loss'] for _, s in val]))
    assert f'@ epoch{best_epoch}' in out
    assert f'policy_epoch_{best_epoch}_seed_0.ckpt' in names


def _stop_at_step(monkeypatch, step):
    """Make the policy send this process SIGINT after optimizer step `step`, as Ctrl-C would."""
    real_make_policy = imitate_episodes.make_policy

    def make_policy(policy_class, policy_config):
        policy = real_make_policy(policy_class, policy_config)
        count = [0]

        def post_step():
            count[0] += 1
            if count[0] == step:
                os.kill(os.getpid(), signal.SIGINT)
        policy.post_step = post_step
        return policy
    monkeypatch.setattr(imitate_episodes, 'make_policy', make_policy)


@pytest.mark.parametrize('overrides, stop_step', [
    ({'num_epochs': 3}, 4),  # 4 train episodes, batch 2: epoch 1 stops after its first step
    ({'num_steps': 5, 'validate_every': 2, 'lr_schedule': 'cosine', 'warmup_steps': 2, 'batch_size': 3}, 3),
])
def test_resume_after_interruption_matches_uninterrupted(tiny_dataset, tmp_path, tiny_act_config, monkeypatch,
                                                         overrides, stop_step):
    full_dir, split_dir = tmp_path / 'full', tmp_path / 'split'
    imitate_episodes.main(make_args(tiny_dataset, full_dir, tiny_act_config, **overrides))
    with monkeypatch.context() as m:
        _stop_at_step(m, stop_step)
        with pytest.raises(SystemExit) as stopped:
            imitate_episodes.main(make_args(tiny_dataset, split_dir, tiny_act_config, **overrides))
    assert stopped.value.code == 128 + signal.SIGINT
    assert training_state(split_dir)['progress']['step'] == stop_step
    assert 'policy_last.ckpt' not in os.listdir(split_dir)
    imitate_episodes.main(make_args(tiny_dataset, split_dir, tiny_act_config, resume=True, **overrides))
    assert losses(split_dir) == losses(full_dir)
    for name in ('policy_last.ckpt', 'policy_best.ckpt'):
        a, b = (torch.load(d / name, weights_only=True) for d in (full_dir, split_dir))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tiny_dataset, tmp_path, tiny_act_config):
    ckpt_dir = tmp_path / 'ckpt'
    imitate_episodes.main(make_args(tiny_dataset, ckpt_dir, tiny_act_config, num_epochs=1))
    with pytest.raises(ValueError, match='seed'):
        imitate_episodes.main(make_args(tiny_dataset, ckpt_dir, tiny_act_config, resume=True, seed=1))
    with pytest.raises(FileNotFoundError, match='--resume'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path / 'empty', tiny_act_config, resume=True))


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    path = str(tmp_path / 'policy_last.ckpt')
    imitate_episodes.atomic_save({'w': torch.ones(3)}, path)

    def save_then_fail(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        imitate_episodes.atomic_save({'w': torch.zeros(3)}, path, save_then_fail)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['policy_last.ckpt']


def test_grad_accum_and_amp_bf16_train(tiny_dataset, tmp_path, tiny_act_config):
    ckpt_dir = tmp_path / 'ckpt'
    imitate_episodes.main(make_args(tiny_dataset, ckpt_dir, tiny_act_config, num_epochs=1, grad_accum=2,
                                    amp='bf16', batch_size=1))
    progress = training_state(ckpt_dir)['progress']
    assert progress['step'] == 2  # 4 training episodes, batch 1, 2 batches per step
    assert np.isfinite(progress['train_history'][0][1]['loss'])


def test_first_loss_matches_plain_reference(tiny_dataset, tmp_path, tiny_act_config):
    """With amp off, the optimised path (uint8 frames, channels-last) gives the loss of a plain float pass."""
    from policy import make_policy
    from utils import load_data, set_seed
    np.random.seed(1)
    train_loader, _, _, _ = load_data(tiny_dataset, 5, ['top'], 4, 4)
    train_loader.sampler.set_epoch(0)
    batch = next(iter(train_loader))
    config = {**tiny_act_config, 'lr': 1e-4}
    losses_seen = []
    for channels_last in (False, True):
        set_seed(0)
        policy = make_policy('ACT', config).eval()
        image, qpos, action, is_pad = batch
        if channels_last:
            policy.to(memory_format=torch.channels_last)
            out = imitate_episodes.forward_pass(batch, policy, 'cpu')
        else:  # the original's layout: float (B, K, 3, H, W) contiguous
            plain = image.permute(0, 1, 4, 2, 3).contiguous().float() / 255.0
            out = policy(qpos, plain, action, is_pad)
        losses_seen.append(out['loss'].item())
    assert losses_seen[1] == pytest.approx(losses_seen[0], rel=1e-5)


def test_bad_flags_are_named(tiny_dataset, tmp_path, tiny_act_config):
    with pytest.raises(ValueError, match='--grad_accum'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, tiny_act_config, grad_accum=0))
    with pytest.raises(ValueError, match='--amp fp16'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, tiny_act_config, amp='fp16'))
    with pytest.raises(KeyError, match='known sim tasks'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, tiny_act_config, task_name='sim_nope'))


def test_lr_schedule():
    assert imitate_episodes.lr_factor(0, 'constant', 0, 10) == 1.0
    assert imitate_episodes.lr_factor(0, 'cosine', 4, 10) == pytest.approx(0.25)
    assert imitate_episodes.lr_factor(4, 'cosine', 4, 10) == pytest.approx(1.0)
    assert imitate_episodes.lr_factor(7, 'cosine', 4, 10) == pytest.approx(0.5)
    assert imitate_episodes.lr_factor(10, 'cosine', 4, 10) == pytest.approx(0.0)


@pytest.mark.slow
def test_two_process_gloo_ddp(tiny_dataset, tmp_path):
    ckpt_dir = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           'imitate_episodes.py', '--task_name', TASK, '--ckpt_dir', str(ckpt_dir), '--policy_class', 'ACT',
           '--dataset_dir', tiny_dataset, '--num_episodes', '5', '--camera_names', 'top', '--batch_size', '1',
           '--num_epochs', '2', '--lr', '1e-4', '--chunk_size', '5', '--hidden_dim', '32', '--dim_feedforward',
           '64', '--enc_layers', '1', '--dec_layers', '2', '--nheads', '2', '--no-pretrained_backbone',
           '--device', 'cpu']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count('Best ckpt, val loss') == 1  # rank 0 alone reports and writes
    names = os.listdir(ckpt_dir)
    assert {'policy_best.ckpt', 'policy_last.ckpt', 'dataset_stats.pkl', 'training_state.pt'} <= set(names)
    progress = training_state(ckpt_dir)['progress']
    assert progress['step'] == 4  # 4 train episodes shared by 2 ranks at batch 1: 2 steps per epoch
    assert len(training_state(ckpt_dir)['rng']) == 2
