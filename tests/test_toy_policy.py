"""A policy added from one file: registered here, it trains, evaluates in simulation, exports to ONNX
and runs in PolicyRunner through the project's own commands, with no other file touched."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import export_policy
import imitate_episodes
from constants import SIM_TASK_CONFIGS
from policies import registry
from policies.base import Policy
from policies.settings import MORE_THAN_0, ModelSetting
from tests.helpers import TASK

pytestmark = pytest.mark.usefixtures('one_thread')


class ToyPolicy(Policy):
    """Each camera's mean colour and the state, through one linear layer, to a chunk of actions."""
    policy_class = 'Toy'
    defaults = {'num_queries': 4, 'lr': 1e-3, 'weight_decay': 0.0, 'amp': 'off', 'action_horizon': None,
                'gain': 1.0}
    settings = (ModelSetting('toy_gain', 'gain', 'Toy: scale of the chunk', float, range=MORE_THAN_0,
                             lerobot=('--policy.toy_gain',)),)

    def __init__(self, policy_config, load_pretrained=True):
        super().__init__(self.resolve_config(policy_config))
        features = 3 * len(self.camera_names) + self.state_dim
        self.head = nn.Linear(features, self.chunk_size * self.action_dim)
        self.action_horizon = self.cfg['action_horizon'] or self.chunk_size

    def predict(self, qpos, image):
        """qpos (B, S), image (B, K, 3, H, W) standardised -> (B, num_queries, A)."""
        colours = image.mean(dim=(-2, -1)).flatten(1)  # (B, 3 K)
        chunk = self.head(torch.cat([colours, qpos], dim=1)).view(-1, self.chunk_size, self.action_dim)
        return self.cfg['gain'] * chunk

    def action_chunk(self, qpos, image):
        return self.infer(self.predict, qpos, self.normalize(image))

    def loss(self, qpos, image, actions, is_pad=None):
        chunk = self.predict(qpos, self.normalize(image))  # (B, T, A)
        l1 = F.l1_loss(chunk, actions[:, :self.chunk_size], reduction='none')
        keep = ~is_pad[:, :self.chunk_size, None] if is_pad is not None else torch.ones_like(l1, dtype=torch.bool)
        l1 = (l1 * keep).sum() / keep.expand_as(l1).sum().clamp(min=1)
        return {'l1': l1, 'loss': l1}

    def optimizer_groups(self):
        return [{'params': list(self.parameters())}]

    def serialize(self):
        return self.state_dict()

    def deserialize(self, obj):
        self.load_strict(self, obj, 'checkpoint')
        return self


@pytest.fixture
def toy(monkeypatch):
    """'Toy' registered for this test only."""
    monkeypatch.setattr(registry, '_POLICIES', dict(registry._POLICIES))
    registry.register_policy('Toy', ToyPolicy, checkpoint_key='head.weight')
    monkeypatch.setitem(SIM_TASK_CONFIGS['sim_transfer_cube_scripted'], 'episode_len', 3)


def test_a_toy_policy_trains_evaluates_exports_and_runs(toy, tiny_dataset, tmp_path, capsys):
    ckpt = str(tmp_path / 'ckpt')
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', TASK, '--policy_class', 'Toy', '--ckpt_dir', ckpt, '--dataset_dir', tiny_dataset,
         '--num_episodes', '5', '--camera_names', 'top', '--batch_size', '2', '--num_epochs', '2',
         '--chunk_size', '4', '--device', 'cpu'])))
    config = json.load(open(os.path.join(ckpt, 'config.json')))
    assert config['policy_class'] == 'Toy' and config['policy_config']['num_queries'] == 4
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--eval', '--ckpt_dir', ckpt, '--num_rollouts', '1', '--no_video', '--device', 'cpu'])))
    assert 'policy_best.ckpt: success_rate=' in capsys.readouterr().out
    out = str(tmp_path / 'export')
    export_policy.main(['--ckpt_dir', ckpt, '--format', 'onnx', '--out', out])
    assert 'Exported Toy (onnx)' in capsys.readouterr().out
    from policy_runtime import PolicyRunner
    runner = PolicyRunner(out)
    height, width = runner.image_size
    action = runner.act(np.zeros(14, np.float32), np.zeros((1, height, width, 3), np.uint8))
    assert action.shape == (14,) and np.isfinite(action).all()
    assert registry.checkpoint_policy_class(torch.load(os.path.join(ckpt, 'policy_best.ckpt'))) == 'Toy'


def test_a_policys_own_setting_is_a_flag_with_its_range_help_and_lerobot_name(toy):
    from cli.flags import flag_problem
    from cli.lerobot_names import translate_lerobot_flags
    from cli.run_config import make_policy_config
    parser = imitate_episodes.build_parser()
    assert 'Toy: scale of the chunk (default: 1.0)' in ' '.join(parser.format_help().split())
    args = vars(parser.parse_args(['--task_name', TASK, '--policy_class', 'Toy', '--toy_gain', '0.5']))
    assert make_policy_config(args, ['top'], 14, 14, (24, 32))['gain'] == 0.5
    args['toy_gain'] = -1.0
    assert flag_problem(args) == '--toy_gain must be more than 0, got -1.0'
    assert translate_lerobot_flags(['--policy.toy_gain=2'])[0] == ['--toy_gain', '2']
