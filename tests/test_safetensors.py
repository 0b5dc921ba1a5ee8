"""--save_format safetensors: policy weights written without pickle, read back by every loader."""
import json
import os

import pytest
import torch

import imitate_episodes
from common.safe_load import load_torch_file, save_safetensors
from constants import SIM_TASK_CONFIGS
from policies.registry import make_policy
from tests.helpers import TASK, train_args
from tests.test_diffusion_policy import tiny_config
from training.loop import TRAINING_STATE


def is_safetensors(path):
    """A safetensors file: an 8-byte little-endian header length, then a JSON header (no pickle)."""
    with open(path, 'rb') as f:
        length = int.from_bytes(f.read(8), 'little')
        return json.loads(f.read(length)) is not None


def test_training_writes_safetensors_that_evaluation_reads(tiny_dataset, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / 'ckpt'
    imitate_episodes.main(train_args(tiny_dataset, ckpt, save_format='safetensors'))
    names = sorted(os.listdir(ckpt))
    policy_files = [n for n in names if n.startswith('policy_')]
    assert {'policy_best.safetensors', 'policy_epoch_0_seed_0.safetensors', 'policy_last.safetensors'} <= set(
        policy_files) and all(n.endswith('.safetensors') for n in policy_files)
    assert all(is_safetensors(ckpt / n) for n in names if n.endswith('.safetensors'))
    assert json.load(open(ckpt / 'config.json'))['training']['save_format'] == 'safetensors'
    last = load_torch_file(str(ckpt / 'policy_last.safetensors'))
    trained = load_torch_file(str(ckpt / TRAINING_STATE))['model']
    assert last.keys() == trained.keys() and all(torch.equal(last[k], trained[k]) for k in last)

    monkeypatch.setitem(SIM_TASK_CONFIGS[TASK], 'episode_len', 3)
    flags = ['--eval', '--ckpt_dir', str(ckpt), '--num_rollouts', '1', '--no_video', '--device', 'cpu']
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(flags)))  # --eval_ckpt policy_best.ckpt
    assert f"Loaded: {ckpt / 'policy_best.safetensors'}" in capsys.readouterr().out
    assert (ckpt / 'result_policy_best.txt').is_file()


def test_a_diffusion_checkpoint_round_trips(tmp_path):
    policy = make_policy('Diffusion', tiny_config())
    policy.ema.optimization_step = 7
    save_safetensors(policy.serialize(), str(tmp_path / 'policy_last.safetensors'))
    loaded = load_torch_file(str(tmp_path / 'policy_last.safetensors'))
    assert set(loaded) == {'nets', 'ema', 'ema_step'} and loaded['ema_step'] == 7
    other = make_policy('Diffusion', tiny_config()).deserialize(str(tmp_path / 'policy_last.safetensors'))
    ours, theirs = policy.serialize(), other.serialize()
    for entry in ('nets', 'ema'):
        assert all(torch.equal(ours[entry][k], theirs[entry][k]) for k in ours[entry])
    assert theirs['ema_step'] == 7


def test_a_broken_safetensors_file_is_named(tmp_path):
    path = tmp_path / 'policy_best.safetensors'
    save_safetensors({'w': torch.ones(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r'policy_best.safetensors cannot be read .*truncated or not a checkpoint'):
        load_torch_file(str(path))
