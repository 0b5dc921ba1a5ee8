"""The detr/ package: original checkpoint layout, original numbers, ResNet trunk and its weights."""
import math
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import detr.resnet as resnet
from detr.detr_vae import get_sinusoid_encoding_table
from detr.position_encoding import PositionEmbeddingSine
from detr.reference import original_forward, randomise_batch_norm
from detr.transformer import MultiheadAttention
from policies.act import ACTPolicy, CNNMLPPolicy

COMPAT_DIR = os.path.join(os.path.dirname(__file__), 'compat')
# the config that produced compat/act_state_dict_keys_small.txt with the original code
SMALL_ORIGINAL_ACT = {'lr': 1e-4, 'num_queries': 10, 'kl_weight': 10, 'hidden_dim': 64, 'dim_feedforward': 128,
                      'lr_backbone': 1e-5, 'backbone': 'resnet18', 'enc_layers': 4, 'dec_layers': 7, 'nheads': 8,
                      'camera_names': ['top'], 'pretrained_backbone': False}


def _key_lines(module):
    return [f'{k}\t{tuple(v.shape)}\t{v.dtype}' for k, v in module.state_dict().items()]


def _compat_lines(name):
    with open(os.path.join(COMPAT_DIR, name)) as f:
        return f.read().splitlines()


def test_act_state_dict_is_the_originals():
    assert _key_lines(ACTPolicy(SMALL_ORIGINAL_ACT)) == _compat_lines('act_state_dict_keys_small.txt')


def test_cnnmlp_state_dict_is_the_originals():
    cfg = {'lr': 1e-4, 'lr_backbone': 1e-5, 'backbone': 'resnet18', 'num_queries': 1, 'camera_names': ['top'],
           'pretrained_backbone': False}
    assert _key_lines(CNNMLPPolicy(cfg)) == _compat_lines('cnnmlp_state_dict_keys.txt')


def test_readme_config_parameter_counts():
    cfg = dict(SMALL_ORIGINAL_ACT, num_queries=100, hidden_dim=512, dim_feedforward=3200)
    with torch.device('meta'):
        model = ACTPolicy(cfg).model
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert count(model) == 83_923_087
    assert count(model.backbones) == 11_166_912
    assert count(model.transformer) == 55_027_584
    assert count(model.encoder) == 17_332_736


@pytest.mark.parametrize('pre_norm,per_camera', [(False, False), (True, True)])
def test_same_numbers_as_original_computation(tiny_act_config, pre_norm, per_camera):
    cfg = dict(tiny_act_config, camera_names=['a', 'b'], pre_norm=pre_norm, per_camera_backbone=per_camera,
               dec_layers=3)
    model = ACTPolicy(cfg).model.eval()
    randomise_batch_norm(model)
    qpos, image = torch.randn(3, 14), torch.randn(3, 2, 3, 40, 72)
    actions, is_pad = torch.randn(3, 5, 14), torch.zeros(3, 5, dtype=torch.bool)
    is_pad[1, 2:] = True
    with torch.no_grad():
        assert torch.allclose(model(qpos, image)[0], original_forward(model, qpos, image)[0], atol=1e-5)
        torch.manual_seed(1)
        ours, mu, logvar = model(qpos, image, actions, is_pad)
        torch.manual_seed(1)
        ref, _, ref_mu, ref_logvar = original_forward(model, qpos, image, actions, is_pad)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(mu, ref_mu, atol=1e-5) and torch.allclose(logvar, ref_logvar, atol=1e-5)


def test_same_gradients_as_original_computation(tiny_act_config):
    model = ACTPolicy(tiny_act_config).model.eval()  # eval: no dropout, the latent is still sampled
    randomise_batch_norm(model)
    qpos, image, actions = torch.randn(2, 14), torch.randn(2, 1, 3, 40, 72), torch.randn(2, 5, 14)
    is_pad = torch.zeros(2, 5, dtype=torch.bool)

    def grads(forward):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        a_hat, mu, logvar = forward()
        ((a_hat - actions).abs().mean() + (mu ** 2 + logvar.exp()).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours = grads(lambda: model(qpos, image, actions, is_pad))
    ref = grads(lambda: [original_forward(model, qpos, image, actions, is_pad)[i] for i in (0, 2, 3)])
    unused = {n for n in ref if n.startswith('transformer.decoder.layers.1.')}
    assert unused and all(ref[n].abs().max() == 0 for n in unused)  # the original's zero gradients
    assert set(ours) == set(ref) - unused
    for n in ours:
        assert torch.allclose(ours[n], ref[n], rtol=1e-4, atol=1e-5), n


def test_attention_is_torch_multihead_attention():
    ours = MultiheadAttention(16, 4, dropout=0.0)
    theirs = nn.MultiheadAttention(16, 4, dropout=0.0)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same parameter names and shapes
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 4:] = True
    expected = theirs(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), key_padding_mask=pad)[0]
    assert torch.allclose(ours(q, kv, kv, pad), expected.transpose(0, 1), atol=1e-6)


def test_sine_position_embedding_formula():
    h, w, feats = 3, 4, 6
    pos = PositionEmbeddingSine(feats)(torch.zeros(2, 5, h, w))
    assert pos.shape == (1, 2 * feats, h, w)
    for c in range(2 * feats):
        i = c % feats
        rate = 10000 ** (2 * (i // 2) / feats)
        for r in range(h):
            for col in range(w):
                coord = (r + 1) / (h + 1e-6) if c < feats else (col + 1) / (w + 1e-6)
                angle = coord * 2 * math.pi / rate
                want = math.sin(angle) if i % 2 == 0 else math.cos(angle)
                assert abs(pos[0, c, r, col].item() - want) < 1e-5


def test_sinusoid_table_formula():
    table = get_sinusoid_encoding_table(7, 8)
    assert table.shape == (1, 7, 8)
    p, i = np.meshgrid(np.arange(7), np.arange(8), indexing='ij')
    angle = p / np.power(10000, 2 * (i // 2) / 8)
    want = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    assert np.allclose(table[0].numpy(), want, atol=1e-6)


def test_folded_batch_norm_outside_autograd():
    trunk = resnet.build_resnet_trunk('resnet18')
    randomise_batch_norm(trunk)
    x = torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        folded = trunk(x)
    assert torch.allclose(folded, trunk(x), rtol=1e-4, atol=1e-4)  # with autograd: separate passes
    with torch.no_grad():
        trunk.layer1[0].conv1.weight.mul_(2)  # an in-place change (optimizer step, load) refreshes the fold
        trunk.layer1[0].bn1.running_var.mul_(3)
        folded = trunk(x)
    assert torch.allclose(folded, trunk(x), rtol=1e-4, atol=1e-4)


def test_frozen_batch_norm_is_eval_batch_norm():
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    frozen = resnet.FrozenBatchNorm2d(4)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    assert 'num_batches_tracked' not in frozen.state_dict()
    assert len(list(frozen.parameters())) == 0
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)


@pytest.mark.parametrize('name,conv_params,channels', [('resnet18', 11_176_512, 512), ('resnet34', 21_284_672, 512),
                                                       ('resnet50', 23_508_032, 2048)])
def test_trunks_have_torchvision_sizes(name, conv_params, channels):
    # with GroupNorm the affine terms are parameters, so the count is torchvision's minus its classifier
    trunk = resnet.build_resnet_trunk(name, norm_layer=lambda c: nn.GroupNorm(c // 16, c))
    assert sum(p.numel() for p in trunk.parameters()) == conv_params
    assert trunk.num_channels == channels
    assert trunk(torch.rand(1, 3, 40, 72)).shape == (1, channels, *resnet.trunk_output_hw(40, 72))


def _torchvision_format(trunk):
    state = {k: torch.randn_like(v) for k, v in trunk.state_dict().items()}
    state.update({'fc.weight': torch.randn(1000, trunk.num_channels), 'fc.bias': torch.randn(1000),
                  'bn1.num_batches_tracked': torch.tensor(3)})
    return state


def test_trunk_weights_from_file(tmp_path):
    trunk = resnet.build_resnet_trunk('resnet18')
    state = _torchvision_format(trunk)
    path = str(tmp_path / 'resnet18.pth')
    torch.save(state, path)
    assert resnet.load_imagenet_weights(trunk, 'resnet18', weights_path=path) == path
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_trunk_weights_file_of_other_network_is_an_error(tmp_path):
    path = str(tmp_path / 'resnet50.pth')
    torch.save(_torchvision_format(resnet.build_resnet_trunk('resnet50')), path)
    with pytest.raises(ValueError, match='resnet50.pth'):
        resnet.load_imagenet_weights(resnet.build_resnet_trunk('resnet18'), 'resnet18', weights_path=path)


def test_trunk_weights_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path))
    monkeypatch.setattr(resnet, 'download_imagenet_weights', lambda name: pytest.fail('tried to download'))
    trunk = resnet.build_resnet_trunk('resnet18')
    state = _torchvision_format(trunk)
    os.makedirs(tmp_path / 'checkpoints')
    torch.save(state, str(tmp_path / 'checkpoints' / resnet.IMAGENET_WEIGHT_FILES['resnet18']))
    assert resnet.load_imagenet_weights(trunk, 'resnet18') is not None
    assert torch.equal(trunk.conv1.weight, state['conv1.weight'])


def test_no_weights_offline_warns_once_and_goes_on(tmp_path, monkeypatch):
    def offline(name):
        raise OSError('network is unreachable')
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path))
    monkeypatch.setattr(resnet, 'download_imagenet_weights', offline)
    monkeypatch.setattr(resnet, '_warned_random_init', False)
    trunk = resnet.build_resnet_trunk('resnet18')
    before = trunk.conv1.weight.clone()
    with pytest.warns(RuntimeWarning, match='random initialisation'):
        assert resnet.load_imagenet_weights(trunk, 'resnet18') is None
    assert torch.equal(trunk.conv1.weight, before)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert resnet.load_imagenet_weights(trunk, 'resnet18') is None
    assert not caught  # warned once per process


def test_network_probe_gives_up(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError('refused')
    monkeypatch.setattr(resnet.socket, 'create_connection', refuse)
    assert not resnet._network_reachable(timeout=0.5)
    with pytest.raises(OSError, match='not reachable'):
        resnet.download_imagenet_weights('resnet18')
