"""Policies: ACT (CVAE + DETR transformer), CNNMLP, and the Diffusion policy (diffusion_policy.py),
behind one small interface, `Policy`.

Every policy is called as `policy(qpos, image, actions=None, is_pad=None)`, as the original's:
    qpos (B, state_dim) normalised, image (B, num_cams, 3, H, W) float in [0, 1],
    actions (B, T, action_dim) normalised, is_pad (B, T) bool.
With actions it returns a dict of scalar losses including 'loss'; without, its inference output:
the action chunk (B, num_queries, action_dim) (CNNMLP: the single action (B, action_dim), as the
original). ACT and CNNMLP checkpoints are plain `state_dict()`s, the original's format:
`torch.save(policy.serialize(), path)` and `policy.deserialize(torch.load(path))`.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

from detr import build_act_model, build_cnnmlp_model
from detr.state_dict import probable_causes
from files import load_torch_file

### Config defaults: one set per policy; the command line falls back on them too
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
ACT_DEFAULTS = {
    'num_queries': 100,  # chunk size (--chunk_size)
    'kl_weight': 10.0,  # weight of the KL term of the loss
    'hidden_dim': 512,
    'dim_feedforward': 3200,
    'enc_layers': 4,
    'dec_layers': 7,  # all are checkpoint parameters; only the first one is computed
    'nheads': 8,
    'latent_dim': 32,  # CVAE latent size
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
    'image_size': (480, 640),  # (H, W) of its images; sets the MLP input size
}
AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MAX_LISTED = 10  # keys listed per category in a checkpoint mismatch message


def autocast(device_type, amp):
    """torch.autocast for --amp / policy_config amp 'off' | 'bf16' | 'fp16' ('off': a no-op)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def kl_divergence(mu, logvar):
    """KL(N(mu, sigma) || N(0, I)) summed over the latent, averaged over the batch: (B, L) -> ()"""
    klds = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return klds.sum(1).mean(0)


def _listing(title, items):
    more = f' ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return f'  {title} ({len(items)}): ' + ', '.join(items[:MAX_LISTED]) + more


def mismatch_report(expected, got, causes):
    """None if state dict `got` has exactly the keys and shapes of `expected`, else the differences
    and the probable causes, one per line; causes(expected, got) -> list of sentences."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f'{k} checkpoint {tuple(got[k].shape)} vs policy {tuple(expected[k].shape)}'
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    lines = [_listing(title, items) for title, items in
             (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes)) if items]
    return '\n'.join(lines + ['  probable cause: ' + c for c in causes(expected, got)])


class Policy(nn.Module):
    """What training, evaluation and deployment call on a policy:

        loss(qpos, image, actions, is_pad) -> {'loss': scalar, other terms}
        action_chunk(qpos, image) -> (B, num_queries, action_dim) normalised actions
        reset()            before each rollout
        optimizer_groups() / configure_optimizers()
        post_step()        after each optimizer step
        serialize() / deserialize(obj)
        num_queries        actions predicted per query
        action_horizon     actions executed per query without temporal ensembling
        obs_horizon        past observations a query takes (1: the current one)
        action_normalization  how the data pipeline scales actions ('mean_std' or 'min_max')
    Subclasses name their `defaults` (the values of absent or None policy_config keys) and the
    `required` keys a policy_config must give.
    """
    policy_class = None
    defaults = {}
    required = ('camera_names',)
    action_normalization = 'mean_std'

    @classmethod
    def resolve_config(cls, policy_config):
        """The policy config with defaults filled in; a clear error for missing or bad values."""
        missing = [k for k in cls.required if k not in policy_config]
        if missing:
            raise KeyError(f'{cls.policy_class} policy_config needs {missing}')
        cfg = dict(cls.defaults)
        cfg.update({k: v for k, v in policy_config.items() if v is not None or k not in cls.defaults})
        if not cfg['camera_names']:
            raise ValueError(f'{cls.policy_class} policy_config camera_names is empty: the policy needs at least '
                             f'one camera')
        if cfg['amp'] not in AMP_DTYPES:
            raise ValueError(f"policy_config amp must be one of {list(AMP_DTYPES)}, got '{cfg['amp']}'")
        return cfg

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.camera_names = list(cfg['camera_names'])
        self.state_dim, self.action_dim = cfg['state_dim'], cfg['action_dim']
        self.num_queries = cfg['num_queries']
        self.action_horizon = self.num_queries
        self.obs_horizon = 1
        self.register_buffer('image_mean', self._image_stat(cfg, 'image_mean', IMAGENET_MEAN), persistent=False)
        self.register_buffer('image_std', self._image_stat(cfg, 'image_std', IMAGENET_STD), persistent=False)

    def forward(self, qpos, image, actions=None, is_pad=None):
        if actions is not None:
            return self.loss(qpos, image, actions, is_pad)
        return self.action_chunk(qpos, image)

    def loss(self, qpos, image, actions, is_pad=None):
        raise NotImplementedError

    def action_chunk(self, qpos, image):
        raise NotImplementedError

    def reset(self):
        """Forget per-rollout state before a new rollout (none by default)."""

    def post_step(self):
        """Called after each optimizer step (Diffusion moves its EMA weights here)."""

    def optimizer_groups(self):
        raise NotImplementedError

    def configure_optimizers(self):
        """AdamW over optimizer_groups() at the config's lr and weight_decay."""
        return torch.optim.AdamW(self.optimizer_groups(), lr=self.cfg['lr'], weight_decay=self.cfg['weight_decay'])

    def _image_stat(self, cfg, key, default):
        """policy_config image_mean / image_std -> (3, 1, 1), or (cameras, 3, 1, 1) for one triple per camera."""
        values = torch.tensor(cfg.get(key, default), dtype=torch.float32)
        if tuple(values.shape) == (3,):
            return values.view(3, 1, 1)
        if tuple(values.shape) == (len(self.camera_names), 3):
            return values.view(-1, 3, 1, 1)
        raise ValueError(f'policy_config {key} must hold 3 values or one triple per camera '
                         f'({len(self.camera_names)}, 3), got shape {tuple(values.shape)}')

    def normalize(self, image):
        """image (B, cameras, 3, H, W) in [0, 1] -> standardised by image_mean and image_std (ImageNet's)"""
        return (image - self.image_mean) / self.image_std

    def infer(self, fn, *inputs):
        """Run fn(*inputs) in inference mode, under autocast when cfg['amp'] asks; float32 result."""
        with torch.inference_mode(), autocast(inputs[0].device.type, self.cfg['amp']):
            return fn(*inputs).float()

    def mismatch_causes(self, expected, got):
        """Probable reasons why state dict `got` does not fit `expected` (sentences)."""
        return []

    def load_strict(self, module, state_dict, source):
        """module.load_state_dict(strict) with an error that lists what differs and why."""
        report = mismatch_report(module.state_dict(), state_dict, self.mismatch_causes)
        if report:
            raise ValueError(f'{source} does not fit this {self.policy_class} policy:\n{report}')
        module.load_state_dict(state_dict, strict=True)

    def load_matching(self, state_dict, source):
        """Load the tensors of state_dict whose name and shape fit (fine-tuning from another run);
        print what was kept, what keeps its fresh initialisation and why -> (kept, fresh) key lists."""
        own = self.state_dict()
        kept = [k for k in own if k in state_dict and tuple(state_dict[k].shape) == tuple(own[k].shape)]
        fresh = [k for k in own if k not in kept]
        self.load_state_dict({k: state_dict[k] for k in kept}, strict=False)
        why = [f'{k} ({tuple(state_dict[k].shape)} there, {tuple(own[k].shape)} here)' if k in state_dict else
               f'{k} (absent)' for k in fresh]
        unused = sorted(set(state_dict) - set(own))
        lines = [f'--init_from {source}: kept {len(kept)} of {len(own)} tensors']
        lines += [_listing(title, items) for title, items in (('initialised afresh', why),
                                                             ('not used here', unused)) if items]
        print('\n'.join(lines))
        return kept, fresh

    def freeze_backbone(self):
        """Keep the image trunk's weights fixed (no gradients; the optimizer leaves them out)."""
        for name, param in self.named_parameters():
            if '.backbones.' in name:
                param.requires_grad_(False)

    def _report_size(self, module):
        n_parameters = sum(p.numel() for p in module.parameters() if p.requires_grad)
        print('number of parameters: %.2fM' % (n_parameters / 1e6,))


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
    """Action Chunking with Transformers: predicts num_queries future actions."""
    policy_class = 'ACT'
    defaults = ACT_DEFAULTS
    required = ('camera_names', 'kl_weight')

    def __init__(self, policy_config, load_pretrained=True):
        """load_pretrained False skips the ImageNet trunk weights (a checkpoint will replace them)."""
        super().__init__(self.resolve_config(policy_config))
        self.model = build_act_model(self.cfg, load_pretrained)  # CVAE decoder
        self.kl_weight = self.cfg['kl_weight']
        self._report_size(self.model)
        print(f'KL Weight {self.kl_weight}')

    def action_chunk(self, qpos, image):
        """-> actions (B, num_queries, A), the latent at the prior mean."""
        self.check_inputs(qpos, image)
        return self.infer(lambda q, im: self.model(q, im)[0], qpos, self.normalize(image))

    def loss(self, qpos, image, actions, is_pad=None):
        """-> {'l1', 'kl', 'loss'}; actions longer than the chunk are cut to it."""
        self.check_inputs(qpos, image, actions, is_pad)
        image = self.normalize(image)
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

    def action_chunk(self, qpos, image):
        """-> (B, 1, A): the predicted action as a chunk of one."""
        self.check_inputs(qpos, image)
        return self.infer(lambda q, im: self.model(q, im).unsqueeze(1), qpos, self.normalize(image))

    def loss(self, qpos, image, actions, is_pad=None):
        self.check_inputs(qpos, image, actions, is_pad)
        # NOTE(faithful): only the first action of the chunk is supervised; is_pad is not used.
        mse = F.mse_loss(actions[:, 0], self.model(qpos, self.normalize(image)))
        return {'mse': mse, 'loss': mse}


POLICY_CLASSES = ('ACT', 'CNNMLP', 'Diffusion')


def policy_type(policy_class):
    """The class of 'ACT', 'CNNMLP' or 'Diffusion' (Diffusion imported on demand)."""
    if policy_class not in POLICY_CLASSES:
        raise ValueError(f"unknown policy_class '{policy_class}': expected one of {', '.join(POLICY_CLASSES)}")
    return {'ACT': ACTPolicy, 'CNNMLP': CNNMLPPolicy}.get(policy_class) or __getattr__('DiffusionPolicy')


def resolve_policy_config(policy_class, policy_config):
    """The complete config `make_policy` would build `policy_class` from."""
    return policy_type(policy_class).resolve_config(policy_config)


def checkpoint_policy_class(obj):
    """The policy class a loaded checkpoint object was written by, read from its keys; None if unknown."""
    if not isinstance(obj, dict):
        return None
    if 'nets' in obj:
        return 'Diffusion'
    if 'model.mlp.0.weight' in obj:
        return 'CNNMLP'
    if 'model.query_embed.weight' in obj:
        return 'ACT'
    return None


def make_policy(policy_class, policy_config, load_pretrained=True):
    """Build 'ACT', 'CNNMLP' or 'Diffusion' from its config dict. load_pretrained False leaves the
    image trunks without their ImageNet weights, for a checkpoint that replaces them."""
    return policy_type(policy_class)(policy_config, load_pretrained=load_pretrained)


def __getattr__(name):
    # DiffusionPolicy lives in diffusion_policy.py, imported only when asked for (it needs diffusers)
    if name == 'DiffusionPolicy':
        from diffusion_policy import DiffusionPolicy
        return DiffusionPolicy
    raise AttributeError(f"module 'policy' has no attribute '{name}'")
