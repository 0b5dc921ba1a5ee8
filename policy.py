"""Policies: ACT (CVAE + DETR transformer), CNNMLP, and the Diffusion policy (from diffusion_policy.py).

Every policy is called as `policy(qpos, image, actions=None, is_pad=None)`:
    qpos (B, state_dim) normalised, image (B, num_cams, 3, H, W) float in [0, 1],
    actions (B, T, action_dim) normalised, is_pad (B, T) bool.
With actions it returns a dict of scalar losses including 'loss'; without, the predicted actions
(B, num_queries, action_dim). ACT and CNNMLP checkpoints are plain `state_dict()`s, the original's
format: `torch.save(policy.serialize(), path)` and `policy.deserialize(torch.load(path))`.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

from detr import build_act_model, build_cnnmlp_model
from detr.state_dict import mismatch_report

### Config defaults: the original's (detr/main.py argparse) plus the new optional keys
POLICY_DEFAULTS = {
    'lr': 1e-4,
    'lr_backbone': 1e-5,
    'weight_decay': 1e-4,  # AdamW
    'backbone': 'resnet18',  # resnet18 | resnet34 | resnet50
    'position_embedding': 'sine',  # sine | learned
    'enc_layers': 4,
    'dec_layers': 6,  # all are checkpoint parameters; only the first one is computed
    'dim_feedforward': 2048,
    'hidden_dim': 256,
    'dropout': 0.1,
    'nheads': 8,
    'num_queries': 400,  # chunk size
    'pre_norm': False,
    'state_dim': 14,  # robot state size (qpos)
    'action_dim': 14,
    'latent_dim': 32,  # CVAE latent size
    'backbone_weights': None,  # torchvision-format ResNet state-dict file
    'pretrained_backbone': True,  # ImageNet trunk: backbone_weights, else hub cache, else download
    'per_camera_backbone': False,  # ACT: one trunk per camera instead of one shared trunk
    'image_size': (480, 640),  # CNNMLP: (H, W) of its images; sets the MLP input size
    'amp': 'off',  # inference precision: off (fp32) | bf16 | fp16 (autocast)
}
REQUIRED_KEYS = {'ACT': ('camera_names', 'kl_weight'), 'CNNMLP': ('camera_names',)}
AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_config(policy_config, policy_class):
    """The policy config with defaults filled in; a clear error for missing or bad values."""
    missing = [k for k in REQUIRED_KEYS[policy_class] if k not in policy_config]
    if missing:
        raise KeyError(f'{policy_class} policy_config needs {missing}')
    cfg = dict(POLICY_DEFAULTS)
    cfg.update({k: v for k, v in policy_config.items() if v is not None or k not in POLICY_DEFAULTS})
    if not cfg['camera_names']:
        raise ValueError(f'{policy_class} policy_config camera_names is empty: the policy needs at least one camera')
    if cfg['amp'] not in AMP_DTYPES:
        raise ValueError(f"policy_config amp must be one of {list(AMP_DTYPES)}, got '{cfg['amp']}'")
    return cfg


def kl_divergence(mu, logvar):
    """KL(N(mu, sigma) || N(0, I)) summed over the latent, averaged over the batch: (B, L) -> ()"""
    klds = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return klds.sum(1).mean(0)


def _backbone_param_groups(model, cfg):
    # NOTE(faithful): the original puts every parameter whose name contains "backbone" in the
    # backbone group, so CNNMLP's `backbone_down_projs` also train at lr_backbone.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{'params': [p for n, p in named if 'backbone' not in n]},
            {'params': [p for n, p in named if 'backbone' in n], 'lr': cfg['lr_backbone']}]


class _ImagePolicy(nn.Module):
    """Shared parts: ImageNet normalisation, input checks, optimizer, (de)serialisation."""
    policy_class = None

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.camera_names = list(cfg['camera_names'])
        self.register_buffer('image_mean', torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer('image_std', torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def _report_size(self):
        n_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print('number of parameters: %.2fM' % (n_parameters / 1e6,))

    def normalize(self, image):
        """image (B, N, 3, H, W) in [0, 1] -> ImageNet-normalised"""
        return (image - self.image_mean) / self.image_std

    def check_inputs(self, qpos, image, actions, is_pad):
        n_cams, state_dim, action_dim = len(self.camera_names), self.cfg['state_dim'], self.cfg['action_dim']
        if image.dim() != 5 or image.shape[1] != n_cams or image.shape[2] != 3:
            raise ValueError(f'image must be (batch, {n_cams}, 3, H, W) for cameras {self.camera_names}, '
                             f'got {tuple(image.shape)}')
        if not image.is_floating_point():
            raise ValueError(f'image must be float in [0, 1], got {image.dtype}')
        if qpos.dim() != 2 or qpos.shape[1] != state_dim or qpos.shape[0] != image.shape[0]:
            raise ValueError(f'qpos must be (batch={image.shape[0]}, state_dim={state_dim}), got {tuple(qpos.shape)}')
        if actions is None:
            return
        if actions.dim() != 3 or actions.shape[0] != qpos.shape[0] or actions.shape[2] != action_dim:
            raise ValueError(f'actions must be (batch={qpos.shape[0]}, T, action_dim={action_dim}), '
                             f'got {tuple(actions.shape)}')
        if is_pad is not None and tuple(is_pad.shape) != tuple(actions.shape[:2]):
            raise ValueError(f'is_pad must be {tuple(actions.shape[:2])} like actions, got {tuple(is_pad.shape)}')

    def infer(self, fn, *inputs):
        """Run fn(*inputs) in inference mode, under autocast when cfg['amp'] asks; float32 result."""
        dtype = AMP_DTYPES[self.cfg['amp']]
        with torch.inference_mode(), torch.autocast(inputs[0].device.type, dtype=dtype, enabled=dtype is not None):
            return fn(*inputs).float()

    def configure_optimizers(self):
        """AdamW with the image trunk in its own group at lr_backbone."""
        return torch.optim.AdamW(_backbone_param_groups(self.model, self.cfg), lr=self.cfg['lr'],
                                 weight_decay=self.cfg['weight_decay'])

    def serialize(self):
        """The object to torch.save: the state_dict, exactly the original's checkpoint format."""
        return self.state_dict()

    def deserialize(self, obj):
        """Load a state dict (or a checkpoint file path) strictly; clear errors when it does not fit."""
        source = 'checkpoint'
        if isinstance(obj, (str, os.PathLike)):
            source = f'checkpoint {os.fspath(obj)}'
            obj = torch.load(obj, map_location='cpu')
        if not isinstance(obj, dict):
            raise TypeError(f'{source} must be a state dict (as written by torch.save(policy.serialize())), '
                            f'got {type(obj).__name__}')
        report = mismatch_report(self.state_dict(), obj)
        if report:
            raise ValueError(f'{source} does not fit this {self.policy_class} policy:\n{report}')
        self.load_state_dict(obj, strict=True)
        return self


class ACTPolicy(_ImagePolicy):
    """Action Chunking with Transformers: predicts num_queries future actions."""
    policy_class = 'ACT'

    def __init__(self, policy_config):
        super().__init__(resolve_config(policy_config, 'ACT'))
        self.model = build_act_model(self.cfg)  # CVAE decoder
        self.kl_weight = self.cfg['kl_weight']
        self.num_queries = self.cfg['num_queries']
        self._report_size()
        print(f'KL Weight {self.kl_weight}')

    def forward(self, qpos, image, actions=None, is_pad=None):
        """Training (actions given): {'l1', 'kl', 'loss'}. Inference: actions (B, num_queries, A)."""
        self.check_inputs(qpos, image, actions, is_pad)
        image = self.normalize(image)
        if actions is None:
            return self.infer(lambda q, im: self.model(q, im)[0], qpos, image)
        if actions.shape[1] < self.num_queries:
            raise ValueError(f'actions have {actions.shape[1]} steps, fewer than num_queries={self.num_queries}')
        if is_pad is None:
            is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        actions = actions[:, :self.num_queries]  # (B, Q, A)
        is_pad = is_pad[:, :self.num_queries]  # (B, Q)
        a_hat, mu, logvar = self.model(qpos, image, actions, is_pad)
        all_l1 = F.l1_loss(actions, a_hat, reduction='none')  # (B, Q, A)
        # NOTE(faithful): padded steps are zeroed but still counted in the mean's denominator.
        l1 = (all_l1 * ~is_pad.unsqueeze(-1)).mean()
        kl = kl_divergence(mu, logvar)
        # NOTE(faithful): a constant KL weight, no warm-up; the sampled-latent loss is also what
        # validation reports, since the latent is sampled whenever actions are given.
        return {'l1': l1, 'kl': kl, 'loss': l1 + kl * self.kl_weight}


class CNNMLPPolicy(_ImagePolicy):
    """ResNet features + MLP: predicts one action (returned as a chunk of one)."""
    policy_class = 'CNNMLP'

    def __init__(self, policy_config):
        super().__init__(resolve_config(policy_config, 'CNNMLP'))
        self.model = build_cnnmlp_model(self.cfg)
        self._report_size()

    def check_inputs(self, qpos, image, actions, is_pad):
        super().check_inputs(qpos, image, actions, is_pad)
        if tuple(image.shape[-2:]) != self.model.image_size:
            raise ValueError(f'CNNMLP was built for {self.model.image_size[0]}x{self.model.image_size[1]} images '
                             f'(policy_config image_size), got {image.shape[-2]}x{image.shape[-1]}')

    def forward(self, qpos, image, actions=None, is_pad=None):
        """Training: {'mse', 'loss'} on the first action. Inference: (B, 1, A)."""
        self.check_inputs(qpos, image, actions, is_pad)
        image = self.normalize(image)
        if actions is None:
            return self.infer(lambda q, im: self.model(q, im).unsqueeze(1), qpos, image)
        # NOTE(faithful): only the first action of the chunk is supervised; is_pad is not used.
        mse = F.mse_loss(actions[:, 0], self.model(qpos, image))
        return {'mse': mse, 'loss': mse}


def make_policy(policy_class, policy_config):
    """Build 'ACT', 'CNNMLP' or 'Diffusion' from its config dict."""
    builders = {'ACT': ACTPolicy, 'CNNMLP': CNNMLPPolicy, 'Diffusion': lambda cfg: __getattr__('DiffusionPolicy')(cfg)}
    if policy_class not in builders:
        raise ValueError(f"unknown policy_class '{policy_class}': expected one of {', '.join(builders)}")
    return builders[policy_class](policy_config)


def __getattr__(name):
    # DiffusionPolicy lives in diffusion_policy.py, imported only when asked for (it needs diffusers)
    if name == 'DiffusionPolicy':
        from diffusion_policy import DiffusionPolicy
        return DiffusionPolicy
    raise AttributeError(f"module 'policy' has no attribute '{name}'")
