"""training/loop.py: resume reproduces an uninterrupted run exactly, Ctrl-C saves the state, atomic writes,
gradient accumulation and mixed precision, the learning-rate schedule, several processes (DDP)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import imitate_episodes
from checkpoints.folder import atomic_save
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TASK, train_args
from training import loop


def training_state(ckpt_dir):
    return torch.load(os.path.join(ckpt_dir, loop.TRAINING_STATE), weights_only=False)


def losses(ckpt_dir):
    """(train, validation) histories of a finished run: lists of (unit, {key: value})."""
    progress = training_state(ckpt_dir)['progress']
    return progress['train_history'], progress['validation_history']


def _stop_at_step(monkeypatch, step):
    """Make the policy send this process SIGINT after optimizer step `step`, as Ctrl-C would."""
    real_make_policy = loop.make_policy

    def make_policy(policy_class, policy_config, load_pretrained=True):
        policy = real_make_policy(policy_class, policy_config, load_pretrained)
        count = [0]

        def post_step():
            count[0] += 1
            if count[0] == step:
                os.kill(os.getpid(), signal.SIGINT)
        policy.post_step = post_step
        return policy
    monkeypatch.setattr(loop, 'make_policy', make_policy)


def interrupt_and_resume(dataset_dir, ckpt_dir, monkeypatch, stop_step, **overrides):
    with monkeypatch.context() as m:
        _stop_at_step(m, stop_step)
        with pytest.raises(SystemExit) as stopped:
            imitate_episodes.main(train_args(dataset_dir, ckpt_dir, **overrides))
    assert stopped.value.code == 128 + signal.SIGINT
    assert training_state(ckpt_dir)['progress']['step'] == stop_step
    assert 'policy_last.ckpt' not in os.listdir(ckpt_dir)
    imitate_episodes.main(train_args(dataset_dir, ckpt_dir, resume=True, **overrides))


def assert_same_runs(dir_a, dir_b):
    assert losses(dir_a) == losses(dir_b)
    for name in ('policy_last.ckpt', 'policy_best.ckpt'):
        a, b = (torch.load(os.path.join(d, name), weights_only=True) for d in (dir_a, dir_b))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_mid_epoch_matches_uninterrupted(two_epoch_run, tmp_path, monkeypatch):
    args, _ = two_epoch_run
    # step 3 is the first of epoch 1's two steps: the resumed run re-enters the epoch mid-way
    interrupt_and_resume(args['dataset_dir'], tmp_path / 'split', monkeypatch, 3)
    assert_same_runs(args['ckpt_dir'], tmp_path / 'split')


def test_resume_step_mode_matches_uninterrupted(tiny_dataset, tmp_path, monkeypatch):
    settings = {'num_steps': 3, 'validate_every': 2, 'lr_schedule': 'cosine', 'warmup_steps': 1, 'batch_size': 3}
    imitate_episodes.main(train_args(tiny_dataset, tmp_path / 'full', **settings))
    interrupt_and_resume(tiny_dataset, tmp_path / 'split', monkeypatch, 2, **settings)
    assert_same_runs(tmp_path / 'full', tmp_path / 'split')


def test_resume_does_not_fetch_the_imagenet_weights_it_replaces(tiny_dataset, tmp_path, monkeypatch):
    import warnings

    from detr import resnet

    def offline(name):
        raise OSError('network is unreachable')
    monkeypatch.setattr(resnet, '_hub_cache_file', lambda name: str(tmp_path / 'no_such_file.pth'))
    monkeypatch.setattr(resnet, 'download_imagenet_weights', offline)
    monkeypatch.setattr(resnet, '_warned_random_init', False)
    settings = {'num_steps': 2, 'pretrained_backbone': True}
    with monkeypatch.context() as m:
        _stop_at_step(m, 1)
        with pytest.warns(RuntimeWarning, match='random initialisation'), pytest.raises(SystemExit):
            imitate_episodes.main(train_args(tiny_dataset, tmp_path / 'ckpt', **settings))
    monkeypatch.setattr(resnet, 'download_imagenet_weights', lambda name: pytest.fail('tried to download'))
    monkeypatch.setattr(resnet, '_warned_random_init', False)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        imitate_episodes.main(train_args(tiny_dataset, tmp_path / 'ckpt', resume=True, **settings))
    assert training_state(tmp_path / 'ckpt')['progress']['step'] == 2


def test_ctrl_c_to_the_process_group_saves_state(tiny_dataset, tmp_path):
    """As a terminal's Ctrl-C: SIGINT to the trainer and its loader worker at once; the step under way
    still needs batches from the worker."""
    ckpt_dir = tmp_path / 'ckpt'
    cmd = [sys.executable, 'imitate_episodes.py', '--task_name', TASK, '--ckpt_dir', str(ckpt_dir),
           '--policy_class', 'ACT', '--dataset_dir', tiny_dataset, '--num_episodes', '5', '--batch_size', '1',
           '--num_epochs', '1000', '--chunk_size', '5', '--hidden_dim', '32', '--dim_feedforward', '64',
           '--enc_layers', '1', '--dec_layers', '2', '--nheads', '2', '--no-pretrained_backbone',
           '--device', 'cpu', '--preload', 'off', '--num_workers', '1', '--grad_accum', '2']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('Train loss'):  # the loader worker is running
            os.killpg(proc.pid, signal.SIGINT)
            break
    out = ''.join(lines) + proc.stdout.read()
    assert proc.wait(timeout=PROCESS_TIMEOUT_S) == 128 + signal.SIGINT, out[-3000:]
    assert 'Continue with the same command plus --resume' in out
    assert out.count('Stopping after this step') == 1  # the workers leave the signal to the trainer
    assert training_state(ckpt_dir)['progress']['step'] >= 2


def test_resume_refuses_other_settings(two_epoch_run, tmp_path):
    args, _ = two_epoch_run
    with pytest.raises(ValueError, match='seed: 0 then, 1 now'):
        imitate_episodes.main({**args, 'resume': True, 'seed': 1})
    with pytest.raises(FileNotFoundError, match='--resume'):
        imitate_episodes.main({**args, 'resume': True, 'ckpt_dir': str(tmp_path / 'empty')})


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    path = str(tmp_path / 'policy_last.ckpt')
    atomic_save({'w': torch.ones(3)}, path)

    def save_then_fail(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'w': torch.zeros(3)}, path, save_then_fail)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['policy_last.ckpt']


@pytest.mark.filterwarnings('ignore:--amp bf16')
def test_grad_accum_and_amp_bf16_train(tiny_dataset, tmp_path):
    ckpt_dir = tmp_path / 'ckpt'
    imitate_episodes.main(train_args(tiny_dataset, ckpt_dir, num_epochs=1, grad_accum=3, amp='bf16', batch_size=1))
    progress = training_state(ckpt_dir)['progress']
    assert progress['step'] == 2  # 4 training episodes at batch 1: steps of 3 and of 1 batches
    assert np.isfinite(progress['train_history'][0][1]['loss'])


def test_first_loss_matches_plain_reference(tiny_dataset, tmp_path, tiny_act_config):
    """With amp off, the optimised path (uint8 frames, channels-last) gives the loss of a plain float pass."""
    from policies.registry import make_policy
    from training.data import load_data
    np.random.seed(1)
    train_loader, _, _, _ = load_data(tiny_dataset, 5, ['top'], 4, 4)
    train_loader.sampler.set_epoch(0)
    batch = next(iter(train_loader))
    config = {**tiny_act_config, 'lr': 1e-4}
    losses_seen = []
    for channels_last in (False, True):
        loop.set_seed(0)
        policy = make_policy('ACT', config).eval()
        image, qpos, action, is_pad = batch
        if channels_last:
            loop.to_channels_last(policy)
            out = loop.forward_pass(batch, policy, 'cpu')
        else:  # the original's layout: float (B, K, 3, H, W) contiguous
            plain = image.permute(0, 1, 4, 2, 3).contiguous().float() / 255.0
            out = policy(qpos, plain, action, is_pad)
        losses_seen.append(out['loss'].item())
    assert losses_seen[1] == pytest.approx(losses_seen[0], rel=1e-5)


def test_lr_schedule():
    assert loop.lr_factor(0, 'constant', 0, 10) == 1.0
    assert loop.lr_factor(0, 'cosine', 4, 10) == pytest.approx(0.25)
    assert loop.lr_factor(4, 'cosine', 4, 10) == pytest.approx(1.0)
    assert loop.lr_factor(7, 'cosine', 4, 10) == pytest.approx(0.5)
    assert loop.lr_factor(10, 'cosine', 4, 10) == pytest.approx(0.0)


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
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count('Best ckpt, val loss') == 1  # rank 0 alone reports and writes
    names = os.listdir(ckpt_dir)
    assert {'policy_best.ckpt', 'policy_last.ckpt', 'dataset_stats.pkl', 'training_state.pt'} <= set(names)
    progress = training_state(ckpt_dir)['progress']
    assert progress['step'] == 4  # 4 train episodes shared by 2 ranks at batch 1: 2 steps per epoch
    assert len(training_state(ckpt_dir)['rng']) == 2
