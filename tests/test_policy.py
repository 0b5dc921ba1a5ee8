"""policies/act.py: ACT and CNNMLP training losses, inference, checkpoints, optimizer, bad input."""
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import policy as policy_module
from policies.act import ACTPolicy, CNNMLPPolicy, kl_divergence
from policies.registry import make_policy
from tests.helpers import PROCESS_TIMEOUT_S, ROOT

IMAGE_HW = (24, 32)
CNNMLP_HW = (392, 392)  # smallest square the CNNMLP head accepts (13 x 13 trunk features)


def _batch(cfg, batch=2, image_hw=IMAGE_HW, steps=None):
    steps = steps or cfg['num_queries']
    n_cams = len(cfg['camera_names'])
    qpos = torch.randn(batch, cfg.get('state_dim', 14))
    image = torch.rand(batch, n_cams, 3, *image_hw)
    actions = torch.randn(batch, steps, cfg.get('action_dim', 14))
    is_pad = torch.zeros(batch, steps, dtype=torch.bool)
    is_pad[0, steps // 2:] = True
    return qpos, image, actions, is_pad


def _seeded(fn, seed=123):
    torch.manual_seed(seed)
    return fn()


def test_act_shapes(tiny_act_config):
    policy = ACTPolicy(tiny_act_config)
    qpos, image, actions, is_pad = _batch(tiny_act_config, steps=8)  # longer than the chunk: truncated
    losses = policy(qpos, image, actions, is_pad)
    assert set(losses) == {'l1', 'kl', 'loss'} and all(v.dim() == 0 for v in losses.values())
    losses['loss'].backward()
    policy.eval()
    out = policy(qpos, image)
    assert out.shape == (2, 5, 14) and out.dtype == torch.float32 and not out.requires_grad


def test_act_plays_its_whole_chunk_unless_given_an_action_horizon(tiny_act_config):
    assert ACTPolicy(tiny_act_config).action_horizon == 5  # as the original
    assert ACTPolicy({**tiny_act_config, 'action_horizon': 2}).action_horizon == 2  # LeRobot's n_action_steps
    with pytest.raises(ValueError, match=r'--action_horizon must be between 1 and the chunk size 5 .*; got 6'):
        ACTPolicy({**tiny_act_config, 'action_horizon': 6})


def test_act_loss_is_the_hand_computation(tiny_act_config):
    policy = ACTPolicy(tiny_act_config).eval()
    qpos, image, actions, is_pad = _batch(tiny_act_config)
    losses = _seeded(lambda: policy(qpos, image, actions, is_pad))
    a_hat, mu, logvar = _seeded(lambda: policy.model(qpos, policy.normalize(image), actions, is_pad))
    mask = (~is_pad).unsqueeze(-1).float()
    l1 = ((actions - a_hat).abs() * mask).sum() / actions.numel()  # padded steps count in the denominator
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).sum(1).mean()
    assert torch.allclose(losses['l1'], l1, atol=1e-6)
    assert torch.allclose(losses['kl'], kl, atol=1e-6)
    assert torch.allclose(losses['loss'], l1 + tiny_act_config['kl_weight'] * kl, atol=1e-5)


def test_act_without_the_vae_has_a_zero_latent_and_no_kl(tiny_act_config):
    policy = ACTPolicy(dict(tiny_act_config, use_vae=False)).eval()
    qpos, image, actions, is_pad = _batch(tiny_act_config)
    losses = policy(qpos, image, actions, is_pad)
    assert set(losses) == {'l1', 'loss'} and torch.equal(losses['loss'], losses['l1'])
    a_hat, mu, logvar = policy.model(qpos, policy.normalize(image), actions, is_pad)
    assert mu is None and logvar is None
    assert torch.allclose(a_hat, policy(qpos, image), atol=1e-5)  # training sees the latent inference sees: zero
    mask = (~is_pad).unsqueeze(-1).float()
    assert torch.allclose(losses['l1'], ((actions - a_hat).abs() * mask).sum() / actions.numel(), atol=1e-6)
    losses['loss'].backward()
    assert policy.model.encoder.layers[0].linear1.weight.grad is None  # the CVAE encoder does not train


def test_padded_steps_are_ignored_the_original_way(tiny_act_config):
    policy = ACTPolicy(tiny_act_config).eval()
    qpos, image, actions, is_pad = _batch(tiny_act_config)
    changed = actions.clone()
    changed[is_pad] = 100.0  # padded targets: masked out of the CVAE encoder and of the l1 sum
    base = _seeded(lambda: policy(qpos, image, actions, is_pad))
    other = _seeded(lambda: policy(qpos, image, changed, is_pad))
    for key in base:
        assert torch.allclose(base[key], other[key], atol=1e-6), key
    unpadded = _seeded(lambda: policy(qpos, image, actions, torch.zeros_like(is_pad)))
    assert not torch.allclose(base['l1'], unpadded['l1'])


def test_kl_is_the_closed_form():
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    normal = torch.distributions.Normal(mu, (logvar / 2).exp())
    standard = torch.distributions.Normal(torch.zeros(4, 6), torch.ones(4, 6))
    expected = torch.distributions.kl_divergence(normal, standard).sum(1).mean()
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)


def test_save_load_round_trip(tiny_act_config, tmp_path):
    source = ACTPolicy(tiny_act_config).eval()
    path = tmp_path / 'policy_best.ckpt'
    torch.save(source.serialize(), path)
    torch.manual_seed(99)  # a differently initialised policy
    loaded = ACTPolicy(tiny_act_config).eval().deserialize(torch.load(path, map_location='cpu'))
    for (k, v), (k2, v2) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    qpos, image, _, _ = _batch(tiny_act_config)
    assert torch.equal(source(qpos, image), loaded(qpos, image))
    assert torch.equal(ACTPolicy(tiny_act_config).eval().deserialize(str(path))(qpos, image), source(qpos, image))


def test_decoder_layers_after_the_first_do_not_matter(tiny_act_config):
    policy = ACTPolicy(dict(tiny_act_config, dec_layers=4)).eval()
    qpos, image, actions, is_pad = _batch(tiny_act_config)
    before = policy(qpos, image)
    loss_before = _seeded(lambda: policy(qpos, image, actions, is_pad)['loss'])
    with torch.no_grad():
        for layer in policy.model.transformer.decoder.layers[1:]:
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
    assert torch.equal(policy(qpos, image), before)
    loss = _seeded(lambda: policy(qpos, image, actions, is_pad)['loss'])
    assert torch.equal(loss, loss_before)
    loss.backward()
    assert all(p.grad is None for layer in policy.model.transformer.decoder.layers[1:] for p in layer.parameters())
    assert policy.model.transformer.decoder.layers[0].linear1.weight.grad is not None


def test_import_with_unrelated_argv(tiny_act_config):
    # a fresh interpreter whose sys.argv holds flags the policy code knows nothing about
    code = ('import sys, torch; sys.path.insert(0, sys.argv.pop()); import policy; '
            f'p = policy.ACTPolicy({tiny_act_config!r}).eval(); '
            'print(tuple(p(torch.zeros(1, 14), torch.zeros(1, 1, 3, 24, 32)).shape))')
    result = subprocess.run([sys.executable, '-c', code, '--ckpt_dir', 'x', '--unknown_flag', '3', ROOT],
                            capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith('(1, 5, 14)')


def test_optimizer_groups_and_learning_rates(tiny_act_config):
    policy = ACTPolicy(tiny_act_config)
    optimizer = policy.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    main, backbone = optimizer.param_groups
    assert main['lr'] == tiny_act_config['lr'] and backbone['lr'] == tiny_act_config['lr_backbone']
    assert main['weight_decay'] == backbone['weight_decay'] == 1e-4
    backbone_ids = {id(p) for p in policy.model.backbones.parameters()}
    assert {id(p) for p in backbone['params']} == backbone_ids
    assert len(main['params']) + len(backbone['params']) == len(list(policy.parameters()))


def test_cnnmlp_down_projections_train_at_backbone_lr():
    policy = CNNMLPPolicy({'lr': 1e-4, 'lr_backbone': 1e-5, 'camera_names': ['top'], 'pretrained_backbone': False,
                           'weight_decay': 0.01})
    main, backbone = policy.configure_optimizers().param_groups
    down_ids = {id(p) for p in policy.model.backbone_down_projs.parameters()}
    assert down_ids <= {id(p) for p in backbone['params']}
    assert main['weight_decay'] == 0.01


def test_trunk_weights_from_config_file(tiny_act_config, tmp_path):
    trunk_state = ACTPolicy(tiny_act_config).model.backbones[0][0].body.state_dict()
    file_state = {k: torch.randn_like(v) for k, v in trunk_state.items()}
    file_state.update({'fc.weight': torch.randn(1000, 512), 'fc.bias': torch.randn(1000)})
    path = str(tmp_path / 'trunk.pth')
    torch.save(file_state, path)
    policy = ACTPolicy(dict(tiny_act_config, backbone_weights=path, pretrained_backbone=True))
    for k, v in policy.model.backbones[0][0].body.state_dict().items():
        assert torch.equal(v, file_state[k]), k


def test_two_cameras(tiny_act_config):
    cfg = dict(tiny_act_config, camera_names=['left', 'right'])
    policy = ACTPolicy(cfg).eval()
    qpos, image, actions, is_pad = _batch(cfg)
    assert policy(qpos, image).shape == (2, 5, 14)
    assert not torch.allclose(policy(qpos, image), policy(qpos, image.flip(1)))  # both views are used
    assert policy(qpos, image, actions, is_pad)['loss'].isfinite()


def test_per_camera_backbones(tiny_act_config):
    cfg = dict(tiny_act_config, camera_names=['a', 'b', 'c'], per_camera_backbone=True)
    policy = ACTPolicy(cfg).eval()
    assert len(policy.model.backbones) == 3
    assert 'model.backbones.2.0.body.conv1.weight' in policy.state_dict()
    assert policy(*_batch(cfg)[:2]).shape == (2, 5, 14)


def test_ten_dimensional_robot(tiny_act_config):
    cfg = dict(tiny_act_config, state_dim=10, action_dim=10)
    policy = ACTPolicy(cfg)
    state = policy.state_dict()
    assert state['model.input_proj_robot_state.weight'].shape == (32, 10)
    assert state['model.encoder_action_proj.weight'].shape == (32, 10)
    assert state['model.action_head.weight'].shape == (10, 32)
    qpos, image, actions, is_pad = _batch(cfg)
    policy(qpos, image, actions, is_pad)['loss'].backward()
    assert policy.eval()(qpos, image).shape == (2, 5, 10)


def test_cnnmlp_shapes_and_loss():
    cfg = {'lr': 1e-4, 'lr_backbone': 1e-5, 'camera_names': ['top'], 'pretrained_backbone': False,
           'num_queries': 1, 'state_dim': 10, 'action_dim': 10, 'image_size': CNNMLP_HW}
    policy = CNNMLPPolicy(cfg).eval()
    assert policy.state_dict()['model.mlp.0.weight'].shape == (1024, 32 + 10)
    qpos, image, actions, is_pad = _batch(cfg, image_hw=CNNMLP_HW, steps=3)
    losses = policy(qpos, image, actions, is_pad)
    with torch.no_grad():
        a_hat = policy.model(qpos, policy.normalize(image))
    assert torch.allclose(losses['mse'], F.mse_loss(a_hat, actions[:, 0]), atol=1e-6)
    assert torch.equal(losses['loss'], losses['mse'])
    assert policy(qpos, image).shape == (2, 10)  # the original's inference output: one action per sample
    assert torch.allclose(policy(qpos, image), a_hat, atol=1e-6)
    assert torch.allclose(policy.action_chunk(qpos, image), a_hat.unsqueeze(1), atol=1e-6)  # what evaluation plays
    with pytest.raises(ValueError, match='392x392'):
        policy(qpos, torch.rand(2, 1, 3, 400, 400))


def test_cnnmlp_rejects_images_too_small():
    with pytest.raises(ValueError, match='image_size'):
        CNNMLPPolicy({'camera_names': ['top'], 'pretrained_backbone': False, 'image_size': IMAGE_HW})


def test_bf16_inference_is_opt_in(tiny_act_config):
    policy = ACTPolicy(tiny_act_config).eval()
    qpos, image, _, _ = _batch(tiny_act_config)
    fp32 = policy(qpos, image)
    policy.cfg['amp'] = 'bf16'
    bf16 = policy(qpos, image)
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16, fp32, atol=0.1) and not torch.equal(bf16, fp32)


@pytest.mark.parametrize('image_shape,match', [((2, 2, 3, 24, 32), r'\(batch, 1, 3, H, W\)'),
                                               ((2, 1, 4, 24, 32), r'\(batch, 1, 3, H, W\)'),
                                               ((2, 3, 24, 32), r'\(batch, 1, 3, H, W\)')])
def test_bad_image_shapes(tiny_act_config, image_shape, match):
    policy = ACTPolicy(tiny_act_config).eval()
    with pytest.raises(ValueError, match=match):
        policy(torch.randn(2, 14), torch.rand(image_shape))


def test_bad_qpos_and_dtype(tiny_act_config):
    policy = ACTPolicy(tiny_act_config).eval()
    with pytest.raises(ValueError, match='state_dim=14'):
        policy(torch.randn(2, 10), torch.rand(2, 1, 3, 24, 32))
    with pytest.raises(ValueError, match='float'):
        policy(torch.randn(2, 14), torch.zeros(2, 1, 3, 24, 32, dtype=torch.uint8))


def test_missing_config_key(tiny_act_config):
    cfg = dict(tiny_act_config)
    del cfg['kl_weight']
    with pytest.raises(KeyError, match='kl_weight'):
        ACTPolicy(cfg)


@pytest.mark.parametrize('change,hints', [({'num_queries': 7}, ['num_queries', 'chunk_size', 'query_embed', 'pos_table']),
                                          ({'hidden_dim': 48}, ['hidden_dim']),
                                          ({'dim_feedforward': 96}, ['dim_feedforward']),
                                          ({'dec_layers': 3}, ['dec_layers', 'missing keys']),
                                          ({'state_dim': 10}, ['state_dim']),
                                          ({'camera_names': ['a', 'b'], 'per_camera_backbone': True},
                                           ['number of image trunks', 'missing keys'])])
def test_checkpoint_that_does_not_fit(tiny_act_config, change, hints):
    checkpoint = ACTPolicy(tiny_act_config).serialize()
    other = ACTPolicy(dict(tiny_act_config, **change))
    with pytest.raises(ValueError) as err:
        other.deserialize(checkpoint)
    for hint in hints:
        assert hint in str(err.value), str(err.value)


def test_checkpoint_of_wrong_kind(tiny_act_config):
    policy = ACTPolicy(tiny_act_config)
    with pytest.raises(TypeError, match='state dict'):
        policy.deserialize([1, 2])
    with pytest.raises(ValueError, match="not an ACT/CNNMLP"):
        policy.deserialize({'net.weight': torch.zeros(1)})


def test_cnnmlp_checkpoint_with_other_camera_count():
    cfg = {'camera_names': ['top'], 'pretrained_backbone': False, 'image_size': CNNMLP_HW}
    checkpoint = CNNMLPPolicy(cfg).serialize()
    with pytest.raises(ValueError, match='number of image trunks'):
        CNNMLPPolicy(dict(cfg, camera_names=['top', 'wrist'])).deserialize(checkpoint)


def test_make_policy_and_lazy_diffusion(tiny_act_config, monkeypatch):
    assert isinstance(make_policy('ACT', tiny_act_config), ACTPolicy)
    with pytest.raises(ValueError, match='ACT, CNNMLP, Diffusion'):
        make_policy('Transformer', tiny_act_config)
    fake = types.ModuleType('policies.diffusion')
    fake.DiffusionPolicy = type('DiffusionPolicy', (), {
        '__init__': lambda self, cfg, load_pretrained=True: setattr(self, 'cfg', cfg)})
    monkeypatch.setitem(sys.modules, 'policies.diffusion', fake)
    from policies.diffusion import DiffusionPolicy
    assert DiffusionPolicy is fake.DiffusionPolicy
    assert make_policy('Diffusion', {'x': 1}).cfg == {'x': 1}
    with pytest.raises(AttributeError):
        policy_module.NoSuchPolicy


@pytest.mark.parametrize('kind', ['ACT', 'Diffusion'])
def test_gradient_checkpointing_gives_the_same_losses_and_gradients(tiny_act_config, kind, monkeypatch):
    from detr import recompute
    from policies.registry import make_policy
    from tests.test_diffusion_policy import tiny_config as tiny_diffusion_config
    checkpointed, checkpoint = [], recompute.checkpoint
    monkeypatch.setattr(recompute, 'checkpoint',
                        lambda *args, **kwargs: checkpointed.append(1) or checkpoint(*args, **kwargs))
    config = dict(tiny_act_config) if kind == 'ACT' else tiny_diffusion_config()
    qpos, image, actions, is_pad = _batch(dict(tiny_act_config, num_queries=config['num_queries']))
    results = []
    for enabled in (False, True):
        torch.manual_seed(0)
        policy = make_policy(kind, config, load_pretrained=False).train()  # dropout and noise on
        policy.set_gradient_checkpointing(enabled)
        torch.manual_seed(1)
        losses = policy(qpos, image, actions, is_pad)
        losses['loss'].backward()
        results.append((losses, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (recomputed, recomputed_grads) = results
    assert all(torch.equal(plain[k], recomputed[k]) for k in plain)
    assert plain_grads.keys() == recomputed_grads.keys() and len(plain_grads) > 10
    assert all(torch.allclose(plain_grads[n], recomputed_grads[n], rtol=1e-5, atol=1e-7) for n in plain_grads)
    assert len(checkpointed) >= 4  # the blocks ran recomputed: the trunk's stages, and layers or UNet blocks
