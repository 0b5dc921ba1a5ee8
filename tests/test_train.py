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
TINY_ACT = {'num_queries': 5, 'hidden_dim': 32, 'dim_feedforward': 64, 'enc_layers': 1, 'dec_layers': 2,
            'nheads': 2}  # the sizes of conftest's tiny_act_config, for module-scoped fixtures


def make_args(dataset_dir, ckpt_dir, sizes=TINY_ACT, **overrides):
    """The flags of imitate_episodes.py as main() receives them: defaults plus a tiny ACT."""
    args = {
        'eval': False, 'onscreen_render': False, 'ckpt_dir': str(ckpt_dir), 'policy_class': 'ACT', 'task_name': TASK,
        'batch_size': 2, 'seed': 0, 'num_epochs': 2, 'lr': 1e-4, 'kl_weight': 10.0,
        'chunk_size': sizes['num_queries'], 'hidden_dim': sizes['hidden_dim'],
        'dim_feedforward': sizes['dim_feedforward'], 'temporal_agg': False,
        'dataset_dir': str(dataset_dir), 'num_episodes': 5, 'camera_names': ['top'], 'image_size': None,
        'num_workers': None, 'preload': 'auto',
        'enc_layers': sizes['enc_layers'], 'dec_layers': sizes['dec_layers'],
        'nheads': sizes['nheads'], 'latent_dim': 32, 'dropout': 0.1, 'pre_norm': False,
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


def test_help_documents_every_flag(tiny_dataset, tmp_path):
    out = subprocess.run([sys.executable, 'imitate_episodes.py', '--help'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for key in make_args(tiny_dataset, tmp_path):
        assert f'--{key}' in out.stdout, f'--{key} missing from --help'


@pytest.fixture(scope='module')
def two_epoch_run(tmp_path_factory):
    """One two-epoch run on 5 tiny episodes (batch 2: two steps per epoch), shared by the tests
    below: -> (args, printed output)."""
    import contextlib
    import io
    from conftest import write_episode
    root = tmp_path_factory.mktemp('two_epochs')
    os.makedirs(root / 'data')
    for i in range(5):
        write_episode(str(root / 'data' / f'episode_{i}.hdf5'), seed=i)
    args = make_args(root / 'data', root / 'ckpt')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        imitate_episodes.main(args)
    return args, printed.getvalue()


def test_two_epochs_write_every_expected_file(two_epoch_run, tiny_act_config):
    assert all(tiny_act_config[k] == v for k, v in TINY_ACT.items())
    args, out = two_epoch_run
    ckpt_dir = args['ckpt_dir']
    names = set(os.listdir(ckpt_dir))
    expected = {'dataset_stats.pkl', 'policy_best.ckpt', 'policy_last.ckpt', 'policy_epoch_0_seed_0.ckpt',
                'train_val_loss_seed_0.png', 'train_val_l1_seed_0.png', 'train_val_kl_seed_0.png',
                imitate_episodes.TRAINING_STATE}
    assert expected <= names
    assert not [n for n in names if '.tmp' in n]
    assert 'Epoch 1' in out and 'Val loss:' in out and 'Train loss:' in out
    with open(os.path.join(ckpt_dir, 'dataset_stats.pkl'), 'rb') as f:
        stats = pickle.load(f)
    assert stats['action_mean'].shape == (14,) and 'action_min' in stats
    # checkpoints are plain state dicts that load strictly into a fresh policy
    from policy import make_policy
    policy = make_policy('ACT', tiny_act_config)
    policy.deserialize(torch.load(os.path.join(ckpt_dir, 'policy_best.ckpt'), weights_only=True))
    train, val = losses(ckpt_dir)
    assert [u for u, _ in train] == [0, 1] and [u for u, _ in val] == [0, 1]
    assert training_state(ckpt_dir)['progress']['step'] == 4
    best_epoch = int(np.argmin([s['loss'] for _, s in val]))
    assert f'Best ckpt, val loss {val[best_epoch][1]["loss"]:.6f} @ epoch{best_epoch}' in out
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


def interrupt_and_resume(dataset_dir, ckpt_dir, monkeypatch, stop_step, **overrides):
    with monkeypatch.context() as m:
        _stop_at_step(m, stop_step)
        with pytest.raises(SystemExit) as stopped:
            imitate_episodes.main(make_args(dataset_dir, ckpt_dir, **overrides))
    assert stopped.value.code == 128 + signal.SIGINT
    assert training_state(ckpt_dir)['progress']['step'] == stop_step
    assert 'policy_last.ckpt' not in os.listdir(ckpt_dir)
    imitate_episodes.main(make_args(dataset_dir, ckpt_dir, resume=True, **overrides))


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
    imitate_episodes.main(make_args(tiny_dataset, tmp_path / 'full', **settings))
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
            imitate_episodes.main(make_args(tiny_dataset, tmp_path / 'ckpt', **settings))
    monkeypatch.setattr(resnet, 'download_imagenet_weights', lambda name: pytest.fail('tried to download'))
    monkeypatch.setattr(resnet, '_warned_random_init', False)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        imitate_episodes.main(make_args(tiny_dataset, tmp_path / 'ckpt', resume=True, **settings))
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
    assert proc.wait(timeout=120) == 128 + signal.SIGINT, out[-3000:]
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
    imitate_episodes.atomic_save({'w': torch.ones(3)}, path)

    def save_then_fail(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        imitate_episodes.atomic_save({'w': torch.zeros(3)}, path, save_then_fail)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['policy_last.ckpt']


@pytest.mark.filterwarnings('ignore:--amp bf16')
def test_grad_accum_and_amp_bf16_train(tiny_dataset, tmp_path):
    ckpt_dir = tmp_path / 'ckpt'
    imitate_episodes.main(make_args(tiny_dataset, ckpt_dir, num_epochs=1, grad_accum=3,
                                    amp='bf16', batch_size=1))
    progress = training_state(ckpt_dir)['progress']
    assert progress['step'] == 2  # 4 training episodes at batch 1: steps of 3 and of 1 batches
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
            imitate_episodes.to_channels_last(policy)
            out = imitate_episodes.forward_pass(batch, policy, 'cpu')
        else:  # the original's layout: float (B, K, 3, H, W) contiguous
            plain = image.permute(0, 1, 4, 2, 3).contiguous().float() / 255.0
            out = policy(qpos, plain, action, is_pad)
        losses_seen.append(out['loss'].item())
    assert losses_seen[1] == pytest.approx(losses_seen[0], rel=1e-5)


def test_bad_flags_are_named(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match='--grad_accum'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, grad_accum=0))
    with pytest.raises(ValueError, match='--amp fp16'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, amp='fp16'))
    with pytest.raises(KeyError, match='known sim tasks'):
        imitate_episodes.main(make_args(tiny_dataset, tmp_path, task_name='sim_nope'))


def test_unknown_task_is_a_usage_error_listing_the_tasks(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'imitate_episodes.py'), '--task_name', 'nope',
                             '--ckpt_dir', str(tmp_path), '--policy_class', 'ACT'], capture_output=True, text=True)
    assert result.returncode == 2
    assert 'sim_transfer_cube_scripted' in result.stderr and 'aloha_wear_shoe' in result.stderr


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


def test_lr_default_depends_on_the_policy(tmp_path):
    act = make_args(tmp_path, tmp_path, lr=None)
    assert imitate_episodes.make_policy_config(act, ['top'], 14, 14, (24, 32))['lr'] == imitate_episodes.ACT_DEFAULT_LR
    diffusion = make_args(tmp_path, tmp_path, lr=None, policy_class='Diffusion')
    policy_config = imitate_episodes.make_policy_config(diffusion, ['top'], 14, 14, (24, 32))
    assert policy_config['lr'] is None  # left to the Diffusion policy's own default
    assert imitate_episodes.make_policy_config(make_args(tmp_path, tmp_path, lr=3e-4), ['top'], 14, 14,
                                               (24, 32))['lr'] == 3e-4
