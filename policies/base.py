"""The interface every policy offers (`Policy`) and what the policies share: mixed precision,
image standardisation, strict and partial state-dict loading with readable mismatch reports.

Every policy is called as `policy(qpos, image, actions=None, is_pad=None)`, as the original's:
    qpos (B, state_dim) normalised, image (B, num_cams, 3, H, W) float in [0, 1],
    actions (B, T, action_dim) normalised, is_pad (B, T) bool.
With actions it returns a dict of scalar losses including 'loss'; without, its inference output:
the action chunk (B, chunk_size, action_dim) (CNNMLP: the single action (B, action_dim), as the
original).
"""
import torch
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}  # --amp choices
MAX_LISTED = 10  # keys listed per category in a checkpoint mismatch message


def autocast(device_type, amp):
    """torch.autocast for --amp / policy_config amp 'off' | 'bf16' | 'fp16' ('off': a no-op)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def load_matching(module, state_dict, source):
    """Load into `module` the tensors of state_dict whose name and shape fit; print what was kept, what
    keeps its fresh initialisation and why -> (kept, fresh) key lists."""
    own = module.state_dict()
    kept = [k for k in own if k in state_dict and tuple(state_dict[k].shape) == tuple(own[k].shape)]
    fresh = [k for k in own if k not in kept]
    module.load_state_dict({k: state_dict[k] for k in kept}, strict=False)
    why = [f'{k} ({tuple(state_dict[k].shape)} there, {tuple(own[k].shape)} here)' if k in state_dict else
           f'{k} (absent)' for k in fresh]
    unused = sorted(set(state_dict) - set(own))
    lines = [f'--init_from {source}: kept {len(kept)} of {len(own)} tensors']
    lines += [_listing(title, items) for title, items in (('initialised afresh', why),
                                                         ('not used here', unused)) if items]
    print('\n'.join(lines))
    return kept, fresh


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
        action_chunk(qpos, image) -> (B, chunk_size, action_dim) normalised actions
        reset()            before each rollout
        optimizer_groups() / configure_optimizers()
        post_step()        after each optimizer step
        serialize() / deserialize(obj)
        chunk_size         actions a query returns (the config's num_queries, the original's name)
        action_horizon     actions executed per query without temporal ensembling
        obs_horizon        past observations a query takes (1: the current one)
        action_normalization  how the data pipeline scales actions ('mean_std' or 'min_max')
    Subclasses name their `defaults` (the values of absent or None policy_config keys) and the
    `required` keys a policy_config must give, and answer for themselves what the rest of the project
    asks of a policy (no code outside policies/ tells one policy from another by its name):
        samples            True: the chunk is sampled from noise (exported as an encoder and a denoiser,
                           the runtime draws the noise, --execution rtc guides it); False: one forward
                           pass, predict(qpos, image), exported as one graph
        lerobot_type       LeRobot's policy type its checkpoints convert to and from, or None
        settings           its own command-line settings (policies/settings.py), beside the common ones
        settings_for_images(image_hw)  settings a run fixes from its image size
        settings_problem(values)       what is wrong with the flag values given for it, or None
    """
    policy_class = None
    defaults = {}
    settings = ()  # its own flags (policies/settings.py ModelSetting), beside the common ones
    required = ('camera_names',)
    action_normalization = 'mean_std'
    samples = False
    lerobot_type = None

    @classmethod
    def settings_for_images(cls, image_hw):
        """Settings a run fixes from its image size (H, W) (none by default)."""
        return {}

    @classmethod
    def settings_problem(cls, values):
        """What is wrong with the settings {policy_config key: value or None} given for this policy, or None."""
        return None

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

    @classmethod
    def sample_window(cls, cfg):
        """What one training sample holds for a resolved `cfg` -> (observation steps, steps before the
        current one its actions start): the current observation and the actions from it."""
        return 1, 0

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.camera_names = list(cfg['camera_names'])
        self.state_dim, self.action_dim = cfg['state_dim'], cfg['action_dim']
        self.chunk_size = cfg['num_queries']
        self.action_horizon = self.chunk_size
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
        return load_matching(self, state_dict, source)

    def set_gradient_checkpointing(self, enabled=True):
        """Recompute the activations of the transformer's layers, the trunk's stages and the UNet's
        blocks in the backward pass instead of keeping them: less memory, the same losses and gradients."""
        for module in self.modules():
            if hasattr(module, 'gradient_checkpointing'):
                module.gradient_checkpointing = enabled

    def freeze_backbone(self):
        """Keep the image trunk's weights fixed (no gradients; the optimizer leaves them out)."""
        for name, param in self.named_parameters():
            if '.backbones.' in name:
                param.requires_grad_(False)

    def _report_size(self, module):
        n_parameters = sum(p.numel() for p in module.parameters() if p.requires_grad)
        print('number of parameters: %.2fM' % (n_parameters / 1e6,))
