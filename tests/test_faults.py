"""What the project survives: bad input and faults a user meets, each ending in a clear message
and with nothing the user made lost. Read top to bottom as the list:

1. an error while data-loader workers run ends the process (no hang at exit)
2. a shared file cannot run code: dataset_stats.pkl, training_state.pt, checkpoints, backbone weights
3. a refused --resume writes nothing; --resume on other data is refused unless --resume_any_data
4. NaN in the data, the statistics or the flags is named at load; a non-finite loss stops training
5. workers die with their parent (kill -9): recording, evaluation and loader workers
6. temporaries left by a killed write are removed by the next run in that folder
7. a full disk (episodes, checkpoints, videos), bad flags, broken or foreign checkpoints, wrong
   frame counts, an unwritable folder and a truncated episode each end in a message naming the
   file or flag

Cases that end a process run in a subprocess with a timeout, so a hang fails the test in seconds.
"""
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import time
import types

import h5py
import numpy as np
import pytest
import torch

import imitate_episodes
from checkpoints.folder import atomic_save
from cli import run_config
from common.files import atomic_write, prepare_folder, remove_stale_temps, temp_path
from common.folders import UnsafeFile
from common.safe_load import load_torch_file
from evaluation import rollout
from formats.hdf5 import read_episode, write_episode
from formats.normalize import Normalizer
from tests.helpers import (PROCESS_TIMEOUT_S, ROOT, TINY_ACT_CONFIG, eval_config, start_pose_stats, train_args,
                           train_argv, write_tiny_checkpoint, write_tiny_episode)
from training import loop
from training.data import load_data

HANG_TIMEOUT_S = PROCESS_TIMEOUT_S  # a case that ends the process takes about 4 s idle, far more beside other work


def run_python(args, timeout=HANG_TIMEOUT_S, file_size_limit=None, **popen):
    """Run `python args...` in the repository root -> CompletedProcess; a hang fails the test."""
    def limit_file_size():  # writes past the limit fail with EFBIG, as writes on a full disk fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    env = {**os.environ, 'PYTHONPATH': ROOT}
    try:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=limit_file_size if file_size_limit else None, **popen)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f'the process hung for {timeout} s: {hung.stderr}')


def dataset(folder, count=5, seed=0, **episode):
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        write_tiny_episode(os.path.join(folder, f'episode_{i}.hdf5'), seed=seed + i, **episode)
    return str(folder)


def file_bytes(folder, names):
    return {name: open(os.path.join(folder, name), 'rb').read() for name in names}


def alive(pid):
    """True while `pid` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def wait_until_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


############################ 1. no hang ############################

def test_an_error_while_loader_workers_run_ends_the_process(tmp_path):
    driver = ('import sys, imitate_episodes\n'
              'from training import loop\n'
              'from tests.helpers import train_args\n'
              'def fail(*args, **kwargs):\n'
              '    raise RuntimeError("plotting failed")\n'
              'loop.plot_history = fail\n'
              'imitate_episodes.main(train_args(sys.argv[1], sys.argv[2], preload="off", num_workers=1))\n')
    done = run_python(['-c', driver, dataset(tmp_path / 'data'), str(tmp_path / 'ckpt')])
    assert done.returncode == 1 and 'RuntimeError: plotting failed' in done.stderr


############################ 2. no code from data files ############################

class Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def plant(path, marker, save):
    with open(path, 'wb') as f:
        save({'qpos_mean': Payload(marker)}, f)


def _load_stats_for_eval(ckpt_dir):
    rollout.load_stats(eval_config(ckpt_dir, TINY_ACT_CONFIG))


def _load_stats_for_dims(ckpt_dir):
    run_config.dims_from_stats(ckpt_dir, 'ACT')


@pytest.mark.parametrize('load', [_load_stats_for_eval, _load_stats_for_dims])
def test_a_malicious_dataset_stats_pkl_is_refused_unrun(tmp_path, load):
    marker = tmp_path / 'ran'
    plant(tmp_path / 'dataset_stats.pkl', marker, pickle.dump)
    with pytest.raises(UnsafeFile, match=r'dataset_stats.pkl refers to \S*open, .*refused unread'):
        load(str(tmp_path))
    assert not marker.exists()


def test_a_malicious_training_state_is_refused_unrun(tmp_path):
    data, ckpt = dataset(tmp_path / 'data'), tmp_path / 'ckpt'
    os.makedirs(ckpt)
    marker = tmp_path / 'ran'
    plant(ckpt / loop.TRAINING_STATE, marker, torch.save)
    with pytest.raises(UnsafeFile, match=r'training state .*training_state.pt .*refused unread'):
        imitate_episodes.main(train_args(data, ckpt, resume=True))
    assert not marker.exists() and os.listdir(ckpt) == [loop.TRAINING_STATE]


class SystemCall:
    """A pickle that would run a shell command: torch 2.13 words its refusal of it differently."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_a_checkpoint_that_would_run_a_command_is_refused_plainly(tmp_path):
    marker = tmp_path / 'ran'
    torch.save({'model.action_head.weight': SystemCall(marker)}, tmp_path / 'policy_best.ckpt')
    with pytest.raises(UnsafeFile) as refused:
        load_torch_file(str(tmp_path / 'policy_best.ckpt'))
    assert re.search(r'refers to \S*system, holds code or objects other than tensors and plain values, which this '
                     r'project does not load: it was refused unread', str(refused.value))
    assert 'weights_only' not in str(refused.value) and not marker.exists()


def test_a_malicious_checkpoint_or_backbone_file_is_refused_unrun(tmp_path):
    from detr.resnet import build_resnet_trunk, load_imagenet_weights
    from policies.registry import make_policy
    marker = tmp_path / 'ran'
    write_tiny_checkpoint(tmp_path, TINY_ACT_CONFIG, start_pose_stats([0] * 6, 0.5, 1.0))
    plant(tmp_path / 'policy_best.ckpt', marker, torch.save)
    with pytest.raises(UnsafeFile, match='refused unread'):
        rollout.load_policy(eval_config(tmp_path, TINY_ACT_CONFIG), 'policy_best.ckpt')
    with pytest.raises(UnsafeFile, match='refused unread'):
        make_policy('ACT', TINY_ACT_CONFIG).deserialize(str(tmp_path / 'policy_best.ckpt'))
    with pytest.raises(UnsafeFile, match='backbone weights .* refused unread'):
        load_imagenet_weights(build_resnet_trunk('resnet18'), 'resnet18', str(tmp_path / 'policy_best.ckpt'))
    assert not marker.exists()


def test_the_originals_statistics_and_our_training_state_still_load(tmp_path, two_epoch_run):
    stats = start_pose_stats([0] * 6, 0.5, 1.0)
    with open(tmp_path / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(stats, f, protocol=2)  # any protocol the original's Python wrote
    loaded = Normalizer.load(str(tmp_path / 'dataset_stats.pkl')).stats
    assert all(np.array_equal(loaded[k], stats[k]) for k in stats)
    state = loop.read_training_state(os.path.join(two_epoch_run[0]['ckpt_dir'], loop.TRAINING_STATE))
    assert state['progress']['unit'] == 2
    torch.load(os.path.join(two_epoch_run[0]['ckpt_dir'], loop.TRAINING_STATE), weights_only=True)


############################ 3. resume checks first, writes after ############################

@pytest.fixture
def one_epoch_run(tmp_path):
    data, ckpt = dataset(tmp_path / 'data'), tmp_path / 'ckpt'
    imitate_episodes.main(train_args(data, ckpt, num_epochs=1))
    return data, ckpt


def test_a_refused_resume_leaves_the_folder_as_it_was(tmp_path, one_epoch_run):
    data, ckpt = one_epoch_run
    kept = file_bytes(ckpt, sorted(os.listdir(ckpt)))
    with pytest.raises(ValueError, match=r'different settings: seed: 0 then, 1 now'):
        imitate_episodes.main(train_args(data, ckpt, num_epochs=2, seed=1, resume=True))
    other = dataset(tmp_path / 'other', seed=10)
    with pytest.raises(ValueError, match=r'the data differs .*qpos_mean differs by up to .*--resume_any_data'):
        imitate_episodes.main(train_args(other, ckpt, num_epochs=2, resume=True))
    assert file_bytes(ckpt, sorted(os.listdir(ckpt))) == kept


def test_resume_names_episodes_that_changed(tmp_path, one_epoch_run):
    data, ckpt = one_epoch_run
    write_tiny_episode(os.path.join(data, 'episode_3.hdf5'), episode_len=25, seed=3)
    with pytest.raises(ValueError, match=r'1 episodes changed size \(episode_3.hdf5 \d+ bytes then, \d+ now\)'):
        imitate_episodes.main(train_args(data, ckpt, num_epochs=2, resume=True))


def test_resume_any_data_goes_on_with_the_saved_statistics(tmp_path, one_epoch_run, capsys):
    data, ckpt = one_epoch_run
    stats_before = file_bytes(ckpt, ['dataset_stats.pkl'])
    other = dataset(tmp_path / 'other', seed=10)
    imitate_episodes.main(train_args(other, ckpt, num_epochs=2, resume=True, resume_any_data=True))
    assert '--resume_any_data: going on with changed data' in capsys.readouterr().out
    assert file_bytes(ckpt, ['dataset_stats.pkl']) == stats_before
    assert loop.read_training_state(str(ckpt / loop.TRAINING_STATE))['progress']['unit'] == 2
    imitate_episodes.main(train_args(other, ckpt, num_epochs=3, resume=True))  # the new data is now the run's


def test_resume_any_data_of_other_sizes_names_the_statistics(tmp_path, one_epoch_run):
    data, ckpt = one_epoch_run
    other = dataset(tmp_path / 'other', state_dim=10)
    with pytest.raises(ValueError, match=r"dataset_stats.pkl: 'qpos_mean' has shape \(14,\) but the policy expects "
                                         r"\(10,\)"):
        imitate_episodes.main(train_args(other, ckpt, num_epochs=2, resume=True, resume_any_data=True))


############################ 4. no silent NaN ############################

def test_nan_in_an_episode_is_named_at_load(tmp_path):
    data = dataset(tmp_path / 'data')
    with h5py.File(os.path.join(data, 'episode_2.hdf5'), 'r+') as root:
        qpos = root['/observations/qpos'][()]
        qpos[7, 3] = np.nan
        root['/observations/qpos'][...] = qpos
    with pytest.raises(ValueError, match=r'episode_2.hdf5: /observations/qpos holds nan at step 7, dim 3'):
        load_data(data, 5, ['top'], 2, 2)


def test_non_finite_statistics_are_refused(tmp_path):
    stats = start_pose_stats([0] * 6, 0.5, 1.0)
    stats['action_std'][4] = np.inf
    with open(tmp_path / 'dataset_stats.pkl', 'wb') as f:
        pickle.dump(stats, f)
    with pytest.raises(ValueError, match=r"dataset_stats.pkl: 'action_std' holds non-finite values"):
        Normalizer.load(str(tmp_path / 'dataset_stats.pkl'))


def test_a_non_finite_loss_stops_training_and_keeps_what_was_saved(tmp_path, monkeypatch):
    data, ckpt = dataset(tmp_path / 'data'), tmp_path / 'ckpt'
    real_make_policy = loop.make_policy

    def make_policy(policy_class, policy_config, load_pretrained=True):
        policy = real_make_policy(policy_class, policy_config, load_pretrained)
        forward, calls = policy.forward, [0]

        def nan_after_a_while(*args):
            calls[0] += 1
            losses = forward(*args)
            if calls[0] > 4 and policy.training:
                losses['kl'], losses['loss'] = losses['kl'] * np.nan, losses['loss'] * np.nan
            return losses
        policy.forward = nan_after_a_while
        return policy
    monkeypatch.setattr(loop, 'make_policy', make_policy)
    with pytest.raises(loop.NonFiniteLoss, match=r"training loss term 'kl' is nan at optimizer step 2 "
                                                  r"\(finite: l1 .*\); training stopped"):
        imitate_episodes.main(train_args(data, ckpt, num_epochs=3, save_every=1))
    saved = loop.read_training_state(str(ckpt / loop.TRAINING_STATE))
    assert saved['progress']['step'] == 2  # the state of epoch 0, written before the NaN
    assert all(torch.isfinite(v).all() for v in saved['model'].values())
    assert 'policy_last.ckpt' not in os.listdir(ckpt)


@pytest.mark.parametrize('flag, value, message', [
    ('--chunk_size', '0', '--chunk_size must be at least 1, got 0'),
    ('--lr', '-1', '--lr must be more than 0, got -1.0'),
    ('--kl_weight', 'nan', '--kl_weight must be a finite number, got nan'),
    ('--dropout', '1.5', r'--dropout must be in \[0, 1\), got 1.5'),
    ('--nheads', '3', '--hidden_dim 32 must be a multiple of --nheads 3'),
])
def test_bad_numeric_flags_are_named_before_loading_data(tmp_path, flag, value, message):
    args = vars(imitate_episodes.build_parser().parse_args(train_argv(tmp_path / 'absent', tmp_path) + [flag, value]))
    with pytest.raises(ValueError, match=message):
        imitate_episodes.main(args)


def test_a_bad_flag_is_a_usage_error_on_the_command_line(tmp_path):
    done = run_python(['imitate_episodes.py', *train_argv(tmp_path / 'absent', tmp_path), '--chunk_size', '0'])
    assert done.returncode == 2 and 'error: --chunk_size must be at least 1, got 0' in done.stderr


############################ 5. no orphans ############################

ORPHAN_DRIVER = '''
import multiprocessing, os, sys, time
from common.processes import die_with_parent

def work(parent_pid, ready):
    die_with_parent(parent_pid)
    open(ready, 'w').close()
    time.sleep(120)

if __name__ == '__main__':
    context = multiprocessing.get_context(sys.argv[1])
    workers = [context.Process(target=work, args=(os.getpid(), f'{sys.argv[2]}.{i}')) for i in range(2)]
    for w in workers:
        w.start()
    print(' '.join(str(w.pid) for w in workers), flush=True)
    time.sleep(120)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads process states from /proc')
@pytest.mark.parametrize('start_method', ['spawn', 'forkserver', 'fork'])
def test_workers_die_with_their_parent(tmp_path, start_method):
    (tmp_path / 'driver.py').write_text(ORPHAN_DRIVER)
    ready = str(tmp_path / 'ready')
    parent = subprocess.Popen([sys.executable, str(tmp_path / 'driver.py'), start_method, ready], cwd=ROOT,
                              env={**os.environ, 'PYTHONPATH': ROOT}, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not all(os.path.exists(f'{ready}.{i}') for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.1)
        parent.kill()  # kill -9: no cleanup code runs in the parent
        parent.wait()
        assert wait_until_gone(pids, 5) == []
    finally:
        parent.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_recording_evaluation_and_loader_workers_die_with_their_parent(monkeypatch, tmp_path):
    import recording.sim
    from common import processes
    from training import data
    armed = []
    for module in (processes, data):  # the worker pools of recording and evaluation start through processes
        monkeypatch.setattr(module, 'die_with_parent', armed.append)
    monkeypatch.setattr(recording.sim, 'EpisodeRecorder', lambda **kwargs: None)
    processes._start_worker(11, recording.sim._init_worker, {}, str(tmp_path), False)
    monkeypatch.setattr(rollout, 'Evaluator', lambda *args: None)
    monkeypatch.setattr(rollout, 'load_policy', lambda *args: None)
    monkeypatch.setattr(rollout, 'load_stats', lambda *args: None)
    processes._start_worker(12, rollout._init_worker, types.SimpleNamespace(runtime='torch'), 'policy_best.ckpt',
                            torch.get_num_threads())
    signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        loader = load_data(dataset(tmp_path / 'data'), 5, ['top'], 2, 2, num_workers=1)[0]
        loader.worker_init_fn(0)
    finally:
        for sig, handler in signals.items():
            signal.signal(sig, handler)
    assert armed == [11, 12, os.getpid()]


############################ 6. no leftovers ############################

def dead_pid():
    done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    return int(done.stdout)


def test_a_run_removes_the_temporaries_killed_writers_left(tmp_path, capsys):
    stale = tmp_path / f'.training_state.{dead_pid()}.tmp.pt'
    live = tmp_path / f'.policy_last.{os.getppid()}.tmp.ckpt'  # a running process's: still being written
    for path in (stale, live):
        path.write_bytes(b'partial')
    prepare_folder(str(tmp_path), '--ckpt_dir')
    assert sorted(os.listdir(tmp_path)) == [live.name]
    assert f'Removed {stale}' in capsys.readouterr().out


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'result.txt')
    atomic_write(path, lambda f: f.write('first'), mode='w')

    def fail_midway(f):
        f.write('partial')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail_midway, mode='w')
    assert open(path).read() == 'first' and os.listdir(tmp_path) == ['result.txt']
    temp = os.path.basename(temp_path(str(tmp_path / 'episode_4.hdf5')))
    assert temp == f'.episode_4.{os.getpid()}.tmp.hdf5' and remove_stale_temps(str(tmp_path)) == []


############################ 7. messages, not crashes ############################

def test_a_full_disk_while_recording_is_a_message_not_a_crash(tmp_path):
    write_tiny_episode(str(tmp_path / 'episode_0.hdf5'))
    kept = file_bytes(tmp_path, ['episode_0.hdf5'])
    driver = ('import sys\n'
              'from tests.helpers import write_tiny_episode\n'
              'from common.files import DiskFull\n'
              'try:\n'
              '    write_tiny_episode(sys.argv[1], episode_len=100, image_hw=(96, 128))\n'
              'except DiskFull as err:\n'
              '    sys.exit(err.strerror)\n')
    done = run_python(['-c', driver, str(tmp_path / 'episode_1.hdf5')], file_size_limit=1_000_000)
    assert done.returncode == 1, done.stderr  # not a segmentation fault in HDF5
    assert f'file too large: {tmp_path / "episode_1.hdf5"} (needed about 4 MB' in done.stderr
    assert os.listdir(tmp_path) == ['episode_0.hdf5'] and file_bytes(tmp_path, ['episode_0.hdf5']) == kept


def test_a_full_disk_while_training_is_a_message_and_a_clean_exit(tmp_path):
    data, ckpt = dataset(tmp_path / 'data'), tmp_path / 'ckpt'
    done = run_python(['imitate_episodes.py', *train_argv(data, ckpt), '--preload', 'off', '--num_workers', '1'],
                      file_size_limit=5_000_000)
    assert done.returncode == 1, done.stderr
    assert (f'imitate_episodes.py: error: file too large: {ckpt / "policy_epoch_0_seed_0.ckpt"} (needed about '
            in done.stderr) and 'Traceback' not in done.stderr
    assert sorted(os.listdir(ckpt)) == ['config.json', 'dataset_stats.pkl', 'metrics.jsonl']


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_a_full_disk_while_exporting_is_one_line_and_leaves_nothing(tmp_path, fmt):
    from tests.test_export import CAMERAS, tiny_run
    ckpt = tiny_run(tmp_path / 'ckpt', 'ACT', dict(TINY_ACT_CONFIG, camera_names=CAMERAS))
    out = tmp_path / 'export'
    done = run_python(['export_policy.py', '--ckpt_dir', ckpt, '--format', fmt, '--out', str(out)],
                      file_size_limit=1_000_000)
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr[-3000:]  # no crash in the exporter
    assert f'export_policy.py: error: file too large: {out}.partial/policy' in done.stderr
    assert sorted(os.listdir(tmp_path)) == ['ckpt']  # no export, no partial folder, no lock


def test_a_write_that_fails_for_space_names_the_file(tmp_path):
    driver = ('import sys, torch\n'
              'from checkpoints.folder import atomic_save\n'
              'atomic_save({"w": torch.zeros(500_000)}, sys.argv[1])\n')
    done = run_python(['-c', driver, str(tmp_path / 'policy_last.ckpt')], file_size_limit=1_000_000)
    assert 'files.DiskFull: [Errno 27] file too large: ' in done.stderr and 'needed about 2 MB' in done.stderr
    assert os.listdir(tmp_path) == []


def test_a_video_ffmpeg_could_not_finish_is_an_error_not_a_truncated_file(tmp_path):
    driver = ('import sys, numpy as np\n'
              'from common.media import VideoWriter\n'
              'video, rng = VideoWriter(sys.argv[1]), np.random.default_rng(0)\n'
              'for _ in range(50):  # noise: far more than the limit\n'
              '    video.append(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))\n'
              'video.close()\n')
    done = run_python(['-c', driver, str(tmp_path / 'video0.mp4')], file_size_limit=20_000)
    assert f'{tmp_path / "video0.mp4"} could not be written completely: ffmpeg wrote 0 of 50 frames' in done.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('content, message', [
    (b'', r'is empty \(0 bytes\)'),
    (os.urandom(256), 'cannot be read as a torch file: truncated or not a checkpoint'),
    (None, 'cannot be read as a torch file: truncated or not a checkpoint'),
])
def test_a_broken_checkpoint_is_named_without_unsafe_advice(tmp_path, content, message):
    write_tiny_checkpoint(tmp_path, TINY_ACT_CONFIG, start_pose_stats([0] * 6, 0.5, 1.0))
    path = tmp_path / 'policy_best.ckpt'
    if content is None:  # truncated
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        rollout.load_policy(eval_config(tmp_path, TINY_ACT_CONFIG), 'policy_best.ckpt')
    assert 'weights_only' not in str(err.value) and str(path) in str(err.value)


def test_a_checkpoint_of_another_policy_class_names_the_class(tmp_path):
    write_tiny_checkpoint(tmp_path, TINY_ACT_CONFIG, start_pose_stats([0] * 6, 0.5, 1.0))
    torch.save({'model.mlp.0.weight': torch.zeros(4, 4)}, tmp_path / 'policy_best.ckpt')
    message = 'holds a CNNMLP policy but the policy class is ACT: pass --policy_class CNNMLP'
    with pytest.raises(ValueError, match=message):
        rollout.load_policy(eval_config(tmp_path, TINY_ACT_CONFIG), 'policy_best.ckpt')


@pytest.mark.parametrize('frames', [19, 21])
def test_a_frame_count_other_than_the_step_count_is_named(tmp_path, frames):
    data = dataset(tmp_path / 'data')
    rng = np.random.default_rng(0)
    images = {'top': rng.integers(0, 256, size=(frames, 24, 32, 3), dtype=np.uint8)}
    write_episode(os.path.join(data, 'episode_1.hdf5'), np.zeros((20, 14)), np.zeros((20, 14)), images)
    message = rf"episode_1.hdf5: camera 'top' has {frames} frames but the episode has 20 steps"
    with pytest.raises(ValueError, match=message):
        load_data(data, 5, ['top'], 2, 2, preload='off')
    with pytest.raises(ValueError, match=message):
        read_episode(os.path.join(data, 'episode_1.hdf5'))


def test_an_unwritable_ckpt_dir_names_the_flag(tmp_path):
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(ValueError, match=r'--ckpt_dir .*a_file/ckpt is not a writable folder'):
        imitate_episodes.main(train_args(dataset(tmp_path / 'data'), tmp_path / 'a_file' / 'ckpt'))
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(tmp_path, 0o500)
        try:
            with pytest.raises(ValueError, match=r'--ckpt_dir .*new is not a writable folder: Permission denied'):
                prepare_folder(str(tmp_path / 'new'), '--ckpt_dir')
        finally:
            os.chmod(tmp_path, 0o700)


def test_visualizing_a_truncated_episode_names_it(tmp_path):
    path = write_tiny_episode(str(tmp_path / 'episode_0.hdf5'))
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    done = run_python(['visualize_episodes.py', '--dataset_dir', str(tmp_path)])
    assert done.returncode == 2
    assert f'error: {path}: cannot be read as an HDF5 episode file' in done.stderr


def test_saving_through_torch_save_keeps_the_previous_checkpoint_on_failure(tmp_path):
    path = str(tmp_path / 'policy_last.ckpt')
    atomic_save({'w': torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('cannot pickle')
    with pytest.raises(RuntimeError, match='cannot pickle'):
        atomic_save({'w': Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3)) and os.listdir(tmp_path) == [
        'policy_last.ckpt']
