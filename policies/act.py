"""ACT (CVAE + DETR transformer) and CNNMLP, the original's two policies, behind `policies.base.Policy`.

ACT and CNNMLP checkpoints are plain `state_dict()`s, the original's format:
`torch.save(policy.serialize(), path)` and `policy.deserialize(torch.load(path))`.
"""
import os

import torch
import torch.nn.functional as F

from common.safe_load import load_torch_file
from constants import IMAGE_HW
from detr import build_act_model, build_cnnmlp_model
from detr.state_dict import probable_causes
from policies.base import IMAGENET_MEAN, IMAGENET_STD, Policy
from policies.settings import AT_LEAST_0, AT_LEAST_1, FRACTION, ModelSetting

### Config defaults: one set per policy; the command line falls back on them too
ACT_DEFAULTS = {
    'num_queries': 100,  # chunk size (--chunk_size)
    'action_horizon': None,  # actions played per query (--action_horizon); None: the whole chunk, as the original
    'kl_weight': 10.0,  # weight of the KL term of the loss
    'hidden_dim': 512,
    'dim_feedforward': 3200,
    'enc_layers': 4,
    'dec_layers': 7,  # all are checkpoint parameters; only the first one is computed
    'nheads': 8,
    'latent_dim': 32,  # CVAE latent size
    'use_vae': True,  # False (--no_vae, LeRobot's use_vae false): no CVAE objective, the latent zero in training too
    'dropout': 0.1,
    'pre_norm': False,
    'position_embedding': 'sine',  # sine | learned
    'backbone': 'resnet18',  # resnet18 | resnet34 | resnet50
    'per_camera_backbone': False,  # one trunk per camera instead of one shared trunk
    'lr': 1e-5,
    'lr_backbone': 1e-5,
    'weight_decay': 1e-4,  # AdamW
    'backbone_weights': None,  # torchvision-format ResNet state-dict file
    'pretrained_backbone': True,  # ImageNet trunk: backbone_weights, else hub cache, else download
    'state_dim': 14,  # NOTE(faithful): the original's fixed bimanual sizes; training takes both from the data
    'action_dim': 14,
    'amp': 'off',  # inference precision: off (fp32) | bf16 | fp16 (autocast)
    # images in [0, 1] are standardised per channel by these: 3 values for every camera, or one
    # triple per camera ([[r, g, b], ...]); ImageNet's as the original (a LeRobot checkpoint brings its own)
    'image_mean': IMAGENET_MEAN,
    'image_std': IMAGENET_STD,
}
CNNMLP_DEFAULTS = {
    **{k: ACT_DEFAULTS[k] for k in ('hidden_dim', 'position_embedding', 'backbone', 'lr', 'lr_backbone',
                                    'weight_decay', 'backbone_weights', 'pretrained_backbone', 'state_dim',
                                    'action_dim', 'amp', 'image_mean', 'image_std')},
    'num_queries': 1,  # CNNMLP predicts one action
    'image_size': IMAGE_HW,  # (H, W) of its images; sets the MLP input size
}

# ACT's flags (policies/settings.py); the defaults shown in --help are ACT_DEFAULTS'
ACT_SETTINGS = (
    ModelSetting('kl_weight', 'kl_weight', 'ACT: weight of the KL term of the loss', float, range=AT_LEAST_0,
                 lerobot=('--policy.kl_weight',), original=True),
    ModelSetting('hidden_dim', 'hidden_dim', 'ACT: transformer width', int, range=AT_LEAST_1,
                 lerobot=('--policy.dim_model',), original=True),
    ModelSetting('dim_feedforward', 'dim_feedforward', 'ACT: feed-forward width', int, range=AT_LEAST_1,
                 lerobot=('--policy.dim_feedforward',), original=True),
    ModelSetting('enc_layers', 'enc_layers', 'ACT: transformer encoder layers', int, range=AT_LEAST_1,
                 lerobot=('--policy.n_encoder_layers',)),
    ModelSetting('dec_layers', 'dec_layers', 'ACT: transformer decoder layers', int, range=AT_LEAST_1,
                 lerobot=('--policy.n_decoder_layers',)),
    ModelSetting('nheads', 'nheads', 'ACT: attention heads', int, range=AT_LEAST_1, lerobot=('--policy.n_heads',)),
    ModelSetting('latent_dim', 'latent_dim', 'ACT: size of the CVAE latent', int, range=AT_LEAST_1),
    ModelSetting('dropout', 'dropout', 'ACT: transformer dropout', float, range=FRACTION),
    ModelSetting('use_vae', 'use_vae', "ACT: the CVAE objective; --no-use_vae (or --no_vae, LeRobot's use_vae false) "
                 'trains without it: the latent is zero in training too and the loss has no KL term', switch='both',
                 off_alias='--no_vae', lerobot=('--policy.use_vae',)),  # LeRobot's true / false
    ModelSetting('pre_norm', 'pre_norm', 'ACT: layer norm before attention (pre-norm)', switch='on',
                 show_default=False),
    ModelSetting('per_camera_backbone', 'per_camera_backbone', 'ACT: one backbone per camera', switch='on',
                 show_default=False),
    ModelSetting('lr_backbone', 'lr_backbone', 'ACT/CNNMLP: learning rate of the backbone', float, range=AT_LEAST_0,
                 lerobot=('--policy.optimizer_lr_backbone',)),
)


def actions_per_query(cfg):
    """The actions ACT plays of each chunk without temporal ensembling: the policy config's
    action_horizon, else the whole chunk (the original)."""
    return cfg.get('action_horizon') or cfg['num_queries']


def kl_divergence(mu, logvar):
    """KL(N(mu, sigma) || N(0, I)) summed over the latent, averaged over the batch: (B, L) -> ()"""
    klds = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return klds.sum(1).mean(0)


class _DETRPolicy(Policy):
    """ACT and CNNMLP: a `model` from detr/, input checks, the backbone learning rate, plain
    state-dict checkpoints."""

    def check_inputs(self, qpos, image, actions=None, is_pad=None):
        n_cams, state_dim, action_dim = len(self.camera_names), self.state_dim, self.action_dim
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

    def optimizer_groups(self):
        """The image trunk in its own group at lr_backbone."""
        # NOTE(faithful): the original puts every parameter whose name contains "backbone" in the
        # backbone group, so CNNMLP's `backbone_down_projs` also train at lr_backbone.
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return [{'params': [p for n, p in named if 'backbone' not in n]},
                {'params': [p for n, p in named if 'backbone' in n], 'lr': self.cfg['lr_backbone']}]

    def serialize(self):
        """The object to torch.save: the state_dict, exactly the original's checkpoint format."""
        return self.state_dict()

    def deserialize(self, obj):
        """Load a state dict (or a checkpoint file path) strictly; clear errors when it does not fit."""
        source = 'checkpoint'
        if isinstance(obj, (str, os.PathLike)):
            source = f'checkpoint {os.fspath(obj)}'
            obj = load_torch_file(obj)
        if not isinstance(obj, dict):
            raise TypeError(f'{source} must be a state dict (as written by torch.save(policy.serialize())), '
                            f'got {type(obj).__name__}')
        self.load_strict(self, obj, source)
        return self

    def mismatch_causes(self, expected, got):
        return probable_causes(expected, got)


class ACTPolicy(_DETRPolicy):
    """Action Chunking with Transformers: predicts chunk_size future actions."""
    policy_class = 'ACT'
    settings = ACT_SETTINGS
    lerobot_type = 'act'
    defaults = ACT_DEFAULTS
    required = ('camera_names', 'kl_weight')

    @classmethod
    def resolve_config(cls, policy_config):
        cfg = super().resolve_config(policy_config)
        horizon = cfg['action_horizon']
        if horizon is not None and not 1 <= horizon <= cfg['num_queries']:
            raise ValueError(f"--action_horizon must be between 1 and the chunk size {cfg['num_queries']} (the actions "
                             f"a query returns); got {horizon}")
        return cfg

    def __init__(self, policy_config, load_pretrained=True):
        """load_pretrained False skips the ImageNet trunk weights (a checkpoint will replace them)."""
        super().__init__(self.resolve_config(policy_config))
        self.action_horizon = actions_per_query(self.cfg)
        self.model = build_act_model(self.cfg, load_pretrained)  # CVAE decoder
        self.kl_weight = self.cfg['kl_weight']
        self._report_size(self.model)
        print(f'KL Weight {self.kl_weight}')

    @classmethod
    def settings_problem(cls, values):
        hidden_dim, nheads = (values.get(k) or cls.defaults[k] for k in ('hidden_dim', 'nheads'))
        if hidden_dim % nheads:
            return f'--hidden_dim {hidden_dim} must be a multiple of --nheads {nheads} (attention heads split it)'
        return None

    def predict(self, qpos, image):
        """Normalised qpos (B, S), standardised image (B, K, 3, H, W) -> actions (B, chunk_size, A), the latent
        at the prior mean; no checks (the export traces it)."""
        return self.model(qpos, image)[0]

    def action_chunk(self, qpos, image):
        """-> actions (B, chunk_size, A), the latent at the prior mean."""
        self.check_inputs(qpos, image)
        return self.infer(self.predict, qpos, self.normalize(image))

    def loss(self, qpos, image, actions, is_pad=None):
        """-> {'l1', 'kl', 'loss'} ({'l1', 'loss'} without the VAE); actions longer than the chunk are cut to it."""
        self.check_inputs(qpos, image, actions, is_pad)
        image = self.normalize(image)
        if actions.shape[1] < self.chunk_size:
            raise ValueError(f'actions have {actions.shape[1]} steps, fewer than the chunk size {self.chunk_size}')
        if is_pad is None:
            is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        actions = actions[:, :self.chunk_size]  # (B, Q, A)
        is_pad = is_pad[:, :self.chunk_size]  # (B, Q)
        a_hat, mu, logvar = self.model(qpos, image, actions, is_pad)
        all_l1 = F.l1_loss(actions, a_hat, reduction='none')  # (B, Q, A)
        # NOTE(faithful): padded steps are zeroed but still counted in the mean's denominator.
        l1 = (all_l1 * ~is_pad.unsqueeze(-1)).mean()
        if mu is None:  # without the VAE: no KL term
            return {'l1': l1, 'loss': l1}
        kl = kl_divergence(mu, logvar)
        # NOTE(faithful): a constant KL weight, no warm-up; the sampled-latent loss is also what
        # validation reports, since the latent is sampled whenever actions are given.
        return {'l1': l1, 'kl': kl, 'loss': l1 + kl * self.kl_weight}


class CNNMLPPolicy(_DETRPolicy):
    """ResNet features + MLP: predicts one action."""
    policy_class = 'CNNMLP'
    defaults = CNNMLP_DEFAULTS

    def __init__(self, policy_config, load_pretrained=True):
        super().__init__(self.resolve_config(policy_config))
        self.model = build_cnnmlp_model(self.cfg, load_pretrained)
        self._report_size(self.model)

    def check_inputs(self, qpos, image, actions=None, is_pad=None):
        super().check_inputs(qpos, image, actions, is_pad)
        if tuple(image.shape[-2:]) != self.model.image_size:
            raise ValueError(f'CNNMLP was built for {self.model.image_size[0]}x{self.model.image_size[1]} images '
                             f'(policy_config image_size), got {image.shape[-2]}x{image.shape[-1]}')

    def forward(self, qpos, image, actions=None, is_pad=None):
        """Training: {'mse', 'loss'}. Inference: the action (B, A)."""
        if actions is not None:
            return self.loss(qpos, image, actions, is_pad)
        # NOTE(faithful): the original returns one action (B, A), not a chunk of one.
        return self.action_chunk(qpos, image)[:, 0]

    @classmethod
    def settings_for_images(cls, image_hw):
        return {'num_queries': 1, 'image_size': tuple(image_hw)}  # the MLP takes the flattened features of this size

    def predict(self, qpos, image):
        """Normalised qpos (B, S), standardised image (B, K, 3, H, W) -> (B, 1, A): the action as a chunk of
        one; no checks (the export traces it)."""
        return self.model(qpos, image).unsqueeze(1)

    def action_chunk(self, qpos, image):
        """-> (B, 1, A): the predicted action as a chunk of one."""
        self.check_inputs(qpos, image)
        return self.infer(self.predict, qpos, self.normalize(image))

    def loss(self, qpos, image, actions, is_pad=None):
        self.check_inputs(qpos, image, actions, is_pad)
        # NOTE(faithful): only the first action of the chunk is supervised; is_pad is not used.
        mse = F.mse_loss(actions[:, 0], self.model(qpos, self.normalize(image)))
        return {'mse': mse, 'loss': mse}
