"""Golden tests: our ACT and CNNMLP against outputs computed by the original ACT code.

tests/golden/original_*.pt hold, for a small ACT (hidden 64, chunk 10, 2 encoder / 3 decoder layers,
cameras top and left_wrist) and a CNNMLP (one 480x640 camera), what the original code computed:
its state-dict shapes, fixed inputs, inference actions, the training losses and the gradients of
selected parameters. The weights are not stored but rebuilt here by a rule (golden_tensor), applied
to every state-dict entry but the fixed position table. Tolerances: actions 2e-5 absolute, losses
1e-5 relative, each gradient 1e-3 of that tensor's largest magnitude.
"""
import math
import os
import zlib

import pytest
import torch

from policies.registry import make_policy
from tests.helpers import GOLDEN_DIR
from training import loop

ACTION_ATOL = 2e-5
LOSS_RTOL = 1e-5
GRAD_TOL = 1e-3  # relative to the largest magnitude of each gradient tensor
FIXED_KEYS = ('model.pos_table',)  # left as the model builds it


def golden_tensor(key, shape):
    """The deterministic value of state-dict entry `key`: seeded by the CRC-32 of its name."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith('running_var'):
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) <= 1:
        scale, offset = 0.1, (1.0 if key.endswith('weight') else 0.0)
        return offset + scale * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def golden_policy(golden):
    policy = make_policy(golden['policy_class'], dict(golden['policy_config'], pretrained_backbone=False))
    own = policy.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v) for k, v in golden['state_dict_shapes'].items()}
    policy.load_state_dict({k: v if k in FIXED_KEYS else golden_tensor(k, tuple(v.shape)) for k, v in own.items()},
                           strict=True)
    return policy.eval()


def load(name):
    return torch.load(os.path.join(GOLDEN_DIR, name), weights_only=True)


@pytest.fixture(scope='module', params=['original_act_small.pt', 'original_cnnmlp.pt'])
def golden(request):
    return load(request.param)


def inputs(golden):
    x = golden['inputs']
    return x['qpos'], x['image_uint8'].float() / 255, x['actions'], x['is_pad']


def test_inference_actions_are_the_originals(golden):
    policy = golden_policy(golden)
    qpos, image, _, _ = inputs(golden)
    actions = policy(qpos, image)
    assert actions.shape == golden['eval_actions'].shape  # CNNMLP: (B, A), as the original returns
    torch.testing.assert_close(actions, golden['eval_actions'], atol=ACTION_ATOL, rtol=0)


def test_losses_and_gradients_are_the_originals(golden):
    policy = golden_policy(golden)
    qpos, image, actions, is_pad = inputs(golden)
    torch.manual_seed(golden.get('loss_seed', 0))  # ACT's latent noise, drawn as the original draws it
    losses = policy(qpos, image, actions, is_pad)
    assert set(losses) == set(golden['loss'])
    for key, value in golden['loss'].items():
        assert losses[key].item() == pytest.approx(value.item(), rel=LOSS_RTOL), key
    losses['loss'].backward()
    params = dict(policy.named_parameters())
    for key, grad in golden['grads'].items():
        error = (params[key].grad - grad).abs().max() / grad.abs().max()
        assert error < GRAD_TOL, (key, error.item())


def test_training_path_gives_the_originals_loss():
    """The loop's own path (uint8 frames converted on the device, channels-last weights)."""
    golden = load('original_act_small.pt')
    policy = golden_policy(golden)
    loop.to_channels_last(policy)
    x = golden['inputs']
    batch = (x['image_uint8'].permute(0, 1, 3, 4, 2), x['qpos'], x['actions'], x['is_pad'])  # frames (B, K, H, W, 3)
    torch.manual_seed(golden['loss_seed'])
    loss = loop.forward_pass(batch, policy, 'cpu')['loss']
    assert loss.item() == pytest.approx(golden['loss']['loss'].item(), rel=LOSS_RTOL)
