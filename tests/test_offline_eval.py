"""evaluation/offline.py and --eval_offline: errors against a hand computation with a known policy,
the diversity of deterministic and stochastic policies, the run's held-out episodes, bad input."""
import json
import os

import numpy as np
import pytest
import torch

import imitate_episodes
from evaluation.offline import evaluate_offline
from formats.datasets import open_dataset
from formats.hdf5 import episode_path, read_episode
from formats.normalize import Normalizer
from formats.stats import get_norm_stats
from policies.registry import make_policy
from tests.helpers import TINY_IMAGE_HW, write_tiny_episode
from tests.test_diffusion_policy import tiny_config
from training.data import load_data, split_episodes


class QposEcho:
    """A known policy: every position k of the chunk is the normalised qpos plus k."""
    camera_names, chunk_size, obs_horizon = ['top'], 3, 1

    def eval(self):
        return self

    def action_chunk(self, qpos, image):
        assert image.shape[1:] == (1, 3, *TINY_IMAGE_HW)
        return qpos[:, None, :] + torch.arange(self.chunk_size, dtype=qpos.dtype)[None, :, None]


def hand_errors(episodes, normalizer, chunk):
    """Per (position, joint) lists of |error| and error^2 over every valid (step, position)."""
    abs_err, sq_err = [[[] for _ in range(14)] for _ in range(chunk)], [[[] for _ in range(14)] for _ in range(chunk)]
    for ep in episodes:
        T = len(ep.qpos)
        for t in range(T):
            first = t if ep.sim else max(t - 1, 0)
            for k in range(chunk):
                if first + k >= T:
                    continue
                predicted = normalizer.unnormalize_action(normalizer.normalize_qpos(ep.qpos[t]) + k)
                for j in range(14):
                    error = predicted[j] - ep.action[first + k, j]
                    abs_err[k][j].append(abs(error))
                    sq_err[k][j].append(error ** 2)
    return abs_err, sq_err


def test_errors_match_a_hand_computation(tmp_path):
    paths = [write_tiny_episode(str(tmp_path / 'episode_0.hdf5'), episode_len=7, seed=1),
             write_tiny_episode(str(tmp_path / 'episode_1.hdf5'), episode_len=5, seed=2, sim=False)]
    normalizer = Normalizer(get_norm_stats(str(tmp_path), 2))
    report = evaluate_offline(QposEcho(), normalizer, open_dataset(str(tmp_path)), [0, 1], TINY_IMAGE_HW, 'cpu')
    abs_err, sq_err = hand_errors([read_episode(p, cameras=[]) for p in paths], normalizer, 3)
    joint_l1 = [np.mean([e for k in range(3) for e in abs_err[k][j]]) for j in range(14)]
    assert report['actions_compared'] == sum(len(abs_err[k][0]) for k in range(3)) == (7 + 6 + 5) + (5 + 5 + 4)  # real: targets from t - 1
    assert [v['l1'] for v in report['per_joint'].values()] == pytest.approx(joint_l1)
    assert report['overall']['l2'] == pytest.approx(np.mean([e for k in sq_err for j in k for e in j]))
    assert report['along_chunk']['l1'] == pytest.approx([np.mean([np.mean(j) for j in abs_err[k]]) for k in range(3)])
    assert list(report['per_joint'])[:2] == ['left_waist', 'left_shoulder'] and 'diversity' not in report


def test_diversity_is_zero_for_act_and_positive_for_diffusion(tmp_path):
    write_tiny_episode(str(tmp_path / 'episode_0.hdf5'), episode_len=6)
    normalizer = Normalizer(get_norm_stats(str(tmp_path), 1), 'min_max')
    act = make_policy('ACT', {'camera_names': ['top'], 'state_dim': 14, 'action_dim': 14, 'num_queries': 4,
                              'hidden_dim': 16, 'dim_feedforward': 32, 'enc_layers': 1, 'dec_layers': 1, 'nheads': 2,
                              'kl_weight': 10, 'pretrained_backbone': False})
    data = open_dataset(str(tmp_path))
    assert evaluate_offline(act, normalizer, data, [0], TINY_IMAGE_HW, 'cpu', samples=3)['diversity']['overall'] < 1e-9
    for obs_horizon in (1, 2):  # 2: each query sees steps t-1 and t
        diffusion = make_policy('Diffusion', tiny_config(num_inference_steps=2, obs_horizon=obs_horizon))
        report = evaluate_offline(diffusion, normalizer, data, [0], TINY_IMAGE_HW, 'cpu', samples=3)
        assert report['diversity']['overall'] > 0 and all(v > 0 for v in report['diversity']['per_joint'].values())
        assert report['actions_compared'] == sum(6 - k for k in range(5))


def test_eval_offline_uses_the_runs_validation_episodes(two_epoch_run, capsys):
    args, _ = two_epoch_run
    np.random.seed(1)
    validation = load_data(args['dataset_dir'], 5, ['top'], 2, 2)[1].dataset.episode_ids
    assert sorted(split_episodes(5, np.random.RandomState(1).permutation)[1]) == sorted(validation)
    flags = vars(imitate_episodes.build_parser().parse_args(['--eval_offline', '--ckpt_dir', args['ckpt_dir']]))
    imitate_episodes.main(flags)
    report = json.load(open(os.path.join(args['ckpt_dir'], 'offline_eval.json')))
    assert report['episodes'] == [f'episode_{i}.hdf5' for i in sorted(validation)]
    assert report['actions_compared'] == sum(20 - k for k in range(5))  # one 20-step sim episode, chunk 5
    out = capsys.readouterr().out
    assert 'Offline evaluation over 90 compared actions of 1 episodes' in out and 'right_gripper' in out
    assert os.path.isfile(os.path.join(args['ckpt_dir'], 'offline_eval.png'))


def test_other_sizes_cameras_or_no_episodes_are_named(two_epoch_run, tmp_path):
    args, _ = two_epoch_run

    def offline(dataset_dir):
        flags = ['--eval_offline', '--ckpt_dir', args['ckpt_dir'], '--dataset_dir', str(dataset_dir)]
        imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(flags)))
    os.makedirs(tmp_path / 'small')
    write_tiny_episode(episode_path(str(tmp_path / 'small'), 0), state_dim=6)
    with pytest.raises(ValueError, match=r'episode_0.hdf5 has state size 6 and action size 6, but the checkpoint '
                                         r'has 14 and 14'):
        offline(tmp_path / 'small')
    os.makedirs(tmp_path / 'wrist')
    write_tiny_episode(episode_path(str(tmp_path / 'wrist'), 0), camera_names=('wrist',))
    with pytest.raises(ValueError, match="has no camera top; the checkpoint's cameras are top"):
        offline(tmp_path / 'wrist')
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match=r'--dataset_dir .*empty holds no episodes \(episode_\*.hdf5 files or a LeRobot dataset\)'):
        offline(tmp_path / 'empty')


def test_offline_results_go_beside_a_lerobot_folder(tmp_path):
    from types import SimpleNamespace

    from cli.commands import offline_out_dir
    folder = tmp_path / 'last' / 'pretrained_model'
    assert offline_out_dir(str(folder), SimpleNamespace(kind='lerobot')) == str(tmp_path / 'last')
    assert offline_out_dir(str(folder) + os.sep, SimpleNamespace(kind='lerobot')) == str(tmp_path / 'last')
    assert offline_out_dir('ckpt/cube', SimpleNamespace(kind='ours')) == 'ckpt/cube'


def test_a_lerobot_folder_without_a_task_is_a_usage_error(tmp_path):
    from checkpoints import lerobot_act
    from cli.flags import UsageError
    from cli.run_config import eval_config
    from tests.test_lerobot_act import lerobot_stats, tiny_act, write_lerobot_folder
    weights, _ = lerobot_act.to_lerobot_state_dict(tiny_act(seed=3).state_dict())
    folder = write_lerobot_folder(str(tmp_path / 'pretrained_model'), weights, lerobot_stats())
    flags = vars(imitate_episodes.build_parser().parse_args(['--eval_offline', '--ckpt_dir', folder]))
    message = r'--task_name required: .*pretrained_model \(a LeRobot checkpoint\) names no task'
    with pytest.raises(UsageError, match=message):
        eval_config(flags, 'cpu')
