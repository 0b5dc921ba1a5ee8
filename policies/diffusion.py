"""Diffusion Policy (Chi et al., 2023) beside ACT and CNNMLP, as the Mobile ALOHA code
(act-plus-plus) trained it on ACT's data.

Per camera, a ResNet trunk (ResNet-18 by default) with group norm in place of batch norm feeds a spatial-softmax
layer (32 keypoints) whose keypoints are projected to 64 features; the features of all cameras
and qpos, over the observation horizon, are the global condition of a 1-D UNet over the action
chunk. The UNet predicts the noise added to the chunk (epsilon prediction, act-plus-plus's), or with
prediction_type 'sample' the clean chunk itself, and is FiLM-conditioned on the diffusion step and
the global condition. Noise schedules come from diffusers, imported only
when a DiffusionPolicy is built so that ACT works without it.

Module names follow act-plus-plus (robomimic's ResNet18Conv / SpatialSoftmax and the
ConditionalUnet1D of the diffusion_policy code), so its checkpoints load. Differences:
- the keypoint grid is computed from the feature map that arrives, so any image size works
  (act-plus-plus fixed it to 480x640 frames); its constant grid buffers are dropped on load;
- the action chunk is zero-padded inside the UNet to a multiple of 2 ** (levels - 1), so any
  chunk size works (act-plus-plus fails unless the chunk size divides by 4);
- training images are augmented in batch on the device (random 95% crop resized back, rotation,
  colour jitter) and evaluation sees the centre 95% crop, as act-plus-plus did for ACT (its
  Diffusion checkpoints saw whole frames: evaluate them with augment_images False);
- the EMA is updated in post_step() after each optimizer step instead of inside forward, so
  validation passes do not move it;
- weight decay 1e-6 (the diffusion_policy default; act-plus-plus used 0).
Images enter the trunk in [0, 1] as in act-plus-plus; ImageNet statistics are applied only when
the trunk starts from ImageNet weights (pretrained_backbone).

style 'lerobot' computes LeRobot's Diffusion (its DiffusionModel) with the same modules, so that its
checkpoints read here give its actions (checkpoints/lerobot_diffusion.py): each camera's keypoints
go through a linear layer of 2 x num_keypoints outputs and a ReLU; the condition puts the state
before the image features; images are always standardised by image_mean / image_std (LeRobot's
MEAN_STD statistics) and cut to crop_shape (a random window in training, the centre one in
evaluation) with no other augmentation; the chunk of num_queries (LeRobot's horizon) starts at the
oldest observation, so a query returns its actions from the current step on (num_queries -
obs_horizon + 1) and training targets start obs_horizon - 1 steps back. Its other settings
(shared_encoder, step_embed_dim, film_scale, backbone_norm, the noise schedule) are LeRobot's
options under this project's names.
"""
import copy
import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from common.safe_load import load_torch_file
from policies.base import AMP_DTYPES, IMAGENET_MEAN, IMAGENET_STD, Policy, autocast, load_matching
from policies.diffusion_nets import (CAMERA_FEATURE_DIM, DOWN_DIMS, KERNEL_SIZE, N_GROUPS, NORMS, NUM_KEYPOINTS,
                                     STEP_EMBED_DIM, ConditionalUnet1D, SpatialSoftmax, augment_images, build_trunk,
                                     centre_crop, centre_window, random_windows)
from policies.rtc import guided_clean_chunk
from policies.settings import AT_LEAST_1, ModelSetting

### Fixed values
BETA_SCHEDULES = ('squaredcos_cap_v2', 'linear', 'scaled_linear')  # diffusers' names
STYLES = ('act_plus_plus', 'lerobot')  # module conventions: act-plus-plus's or LeRobot's (module docstring)
EMA_MAX_DECAY = 0.9999         # ceiling of the EMA decay (warm-up 1 - (1 + step) ** -ema_power)
SCHEDULERS = ('ddim', 'ddpm', 'dpmsolver')  # dpmsolver: DPM-Solver++, second order, multistep
PREDICTION_TYPES = ('epsilon', 'sample')  # what the UNet predicts: the noise, or the clean chunk

# Diffusion's flags (policies/settings.py); the defaults shown in --help are DEFAULTS'
DIFFUSION_SETTINGS = (
    ModelSetting('num_inference_steps', 'num_inference_steps', 'Diffusion: denoising steps per query', int,
                 range=AT_LEAST_1, lerobot=('--policy.num_inference_steps',)),
    ModelSetting('scheduler', 'scheduler', "Diffusion: the sampler (LeRobot's --noise_scheduler_type DDPM or DDIM; "
                 'dpmsolver: DPM-Solver++, second-order multistep); all three share the training noise, so --eval and '
                 'export_policy.py may sample a trained policy with another', str.lower, choices=SCHEDULERS,
                 aliases=('--noise_scheduler_type',)),
    ModelSetting('prediction_type', 'prediction_type', 'Diffusion: what the UNet predicts, the noise or the clean '
                 'action chunk; a training setting', choices=PREDICTION_TYPES, lerobot=('--policy.prediction_type',)),
    ModelSetting('obs_horizon', 'obs_horizon', "Diffusion: observation steps per query (LeRobot's --n_obs_steps)", int,
                 range=AT_LEAST_1, aliases=('--n_obs_steps',), lerobot=('--policy.n_obs_steps',)),
    ModelSetting('diffusion_style', 'style', "Diffusion: act_plus_plus (act-plus-plus's network: 64 features per "
                 "camera, the state after them, crop-rotate-jitter augmentation) or lerobot (LeRobot's: ReLU keypoint "
                 'features, the state first, images standardised by their statistics and cut to --crop_shape, the '
                 'chunk starting at the oldest observation, --n_action_steps counted from the current one; a LeRobot '
                 "checkpoint's style)", choices=STYLES),
    ModelSetting('crop_shape', 'crop_shape', 'Diffusion, lerobot style: the window of each image the trunk sees, '
                 'random in training and the centre in evaluation (default: the whole image)', int, nargs=2,
                 metavar=('H', 'W'), lerobot=('--policy.crop_shape',), show_default=False),
    ModelSetting('down_dims', 'down_dims', 'Diffusion: channels of the UNet levels, finest first (a smaller UNet '
                 'trains faster on a CPU)', int, nargs='+', metavar='C', lerobot=('--policy.down_dims',)),
    ModelSetting('augment_images', 'augment_images', 'Diffusion: random crop, rotation and colour jitter in training, '
                 'the centre crop in evaluation', switch='both'),
)

# Optional policy_config keys (a missing key or None takes the default) and the flag that sets each.
DEFAULTS = {
    'num_queries': 100,            # --chunk_size, the prediction horizon (a policy_config must give it)
    'state_dim': 14,
    'action_dim': 14,
    'lr': 1e-4,
    'weight_decay': 1e-6,
    'num_inference_steps': 10,     # --num_inference_steps
    'scheduler': 'ddim',           # --scheduler
    'prediction_type': 'epsilon',  # --prediction_type (act-plus-plus: epsilon)
    'num_train_timesteps': 50,
    'obs_horizon': 1,              # --obs_horizon
    'action_horizon': 8,           # --action_horizon (act-plus-plus: 8); capped at the chunk size
    'ema_power': 0.75,
    'down_dims': DOWN_DIMS,        # --down_dims
    'kernel_size': KERNEL_SIZE,
    'n_groups': N_GROUPS,
    'backbone': 'resnet18',        # --backbone: resnet18 | resnet34 | resnet50
    'pretrained_backbone': False,  # act-plus-plus trained the trunk from scratch
    'backbone_weights': None,
    'augment_images': True,        # training augmentation and the matching evaluation centre crop
    'amp': 'off',                  # inference precision: off (fp32) | bf16 | fp16 (autocast)
    'style': 'act_plus_plus',      # --diffusion_style: act_plus_plus | lerobot (module docstring)
    'crop_shape': None,            # --crop_shape H W (lerobot style): the window the trunk sees
    'num_keypoints': NUM_KEYPOINTS,  # spatial-softmax keypoints per camera
    'shared_encoder': False,       # one trunk for all cameras (LeRobot: use_separate_rgb_encoder_per_camera false)
    'step_embed_dim': STEP_EMBED_DIM,  # width of the diffusion-step embedding (LeRobot's default 128)
    'film_scale': True,            # FiLM scales and shifts (False: shifts only)
    'backbone_norm': 'group',      # group | batch: the trunk's norm layers (LeRobot: use_group_norm)
    'beta_schedule': 'squaredcos_cap_v2',
    'beta_start': 1e-4,            # linear schedules only
    'beta_end': 0.02,
    'clip_sample': True,           # the predicted clean chunk clipped to +-clip_sample_range
    'clip_sample_range': 1.0,
    # the images' standardisation (3 values, or a triple per camera): with pretrained_backbone or the lerobot style
    'image_mean': IMAGENET_MEAN,
    'image_std': IMAGENET_STD,
}


def _config_value(policy_config, key):
    value = policy_config.get(key)
    return DEFAULTS[key] if value is None else value


def resolve_config(policy_config):
    """policy_config -> complete settings dict; clear errors naming the flag for bad values."""
    for key in ('camera_names', 'num_queries'):
        if policy_config.get(key) is None:
            raise KeyError(f"Diffusion policy_config needs '{key}' (given keys: {sorted(policy_config)})")
    cfg = {key: _config_value(policy_config, key) for key in DEFAULTS}
    cfg['camera_names'] = list(policy_config['camera_names'])
    cfg['num_queries'] = int(policy_config['num_queries'])
    if policy_config.get('action_horizon') is None:
        cfg['action_horizon'] = min(DEFAULTS['action_horizon'], cfg['num_queries'] - chunk_start(cfg))
    cfg['scheduler'] = str(cfg['scheduler']).lower()
    cfg['down_dims'] = tuple(cfg['down_dims'])
    if cfg['crop_shape'] is not None:
        cfg['crop_shape'] = tuple(int(n) for n in cfg['crop_shape'])
    _check_config(cfg)
    return cfg


def chunk_start(cfg):
    """Index of the current step in the predicted chunk: obs_horizon - 1 in LeRobot's style, else 0."""
    return cfg['obs_horizon'] - 1 if cfg['style'] == 'lerobot' else 0


def _check_config(cfg):
    if not cfg['camera_names']:
        raise ValueError('the Diffusion policy needs at least one camera (camera_names is empty)')
    if cfg['num_queries'] < 1:
        raise ValueError(f"--chunk_size (the prediction horizon) must be >= 1, got {cfg['num_queries']}")
    if cfg['amp'] not in AMP_DTYPES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_DTYPES)}; got {cfg['amp']!r}")
    if cfg['scheduler'] not in SCHEDULERS:
        raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got {cfg['scheduler']!r}")
    if cfg['prediction_type'] not in PREDICTION_TYPES:
        raise ValueError(f"--prediction_type must be one of {', '.join(PREDICTION_TYPES)}; "
                         f"got {cfg['prediction_type']!r}")
    if cfg['style'] not in STYLES:
        raise ValueError(f"--diffusion_style must be one of {', '.join(STYLES)}; got {cfg['style']!r}")
    playable = cfg['num_queries'] - chunk_start(cfg)
    if not 1 <= cfg['action_horizon'] <= playable:
        raise ValueError(f"--action_horizon must be between 1 and the {playable} actions a query returns from the "
                         f"current step (--chunk_size {cfg['num_queries']}"
                         f"{f' less --obs_horizon - 1' if chunk_start(cfg) else ''}); got {cfg['action_horizon']}")
    if cfg['crop_shape'] is not None and (cfg['style'] != 'lerobot' or len(cfg['crop_shape']) != 2
                                          or min(cfg['crop_shape']) < 1):
        raise ValueError(f"--crop_shape takes two sizes H W and the lerobot style (--diffusion_style lerobot); "
                         f"got {list(cfg['crop_shape'])} with style {cfg['style']!r}")
    if cfg['backbone_norm'] not in NORMS:
        raise ValueError(f"backbone_norm must be one of {', '.join(NORMS)}; got {cfg['backbone_norm']!r}")
    if cfg['beta_schedule'] not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {cfg['beta_schedule']!r}")
    if cfg['step_embed_dim'] < 4 or cfg['step_embed_dim'] % 2:
        raise ValueError(f"step_embed_dim must be an even number >= 4; got {cfg['step_embed_dim']}")
    if not cfg['down_dims'] or any(c < 1 or c % cfg['n_groups'] for c in cfg['down_dims']):
        raise ValueError(f"--down_dims must be one or more channel counts, each a multiple of the "
                         f"{cfg['n_groups']} group-norm groups; got {list(cfg['down_dims'])}")
    if cfg['obs_horizon'] < 1:
        raise ValueError(f"--obs_horizon must be >= 1 (1 = the current observation only); got {cfg['obs_horizon']}")
    if not 1 <= cfg['num_inference_steps'] <= cfg['num_train_timesteps']:
        raise ValueError(f"--num_inference_steps must be between 1 and the {cfg['num_train_timesteps']} "
                         f"training timesteps; got {cfg['num_inference_steps']}")
    if cfg['scheduler'] != 'ddpm' and cfg['num_train_timesteps'] % cfg['num_inference_steps']:
        warnings.warn(f"--num_inference_steps {cfg['num_inference_steps']} does not divide the "
                      f"{cfg['num_train_timesteps']} training timesteps; {cfg['scheduler']} will stop short of "
                      f"the noisiest timestep")


def make_noise_scheduler(name, cfg):
    """The diffusers scheduler `name` for the settings cfg (resolve_config's): the betas of
    beta_schedule (squared cosine by default), the clean chunk clipped to +-clip_sample_range, and what
    the UNet predicts ('epsilon': the noise; 'sample': the clean chunk). All three share the training
    noise (the same betas), so a policy trained with one samples with any."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    common = dict(num_train_timesteps=cfg['num_train_timesteps'], beta_schedule=cfg['beta_schedule'],
                  beta_start=cfg['beta_start'], beta_end=cfg['beta_end'], prediction_type=cfg['prediction_type'])
    clip = dict(clip_sample=bool(cfg['clip_sample']), clip_sample_range=float(cfg['clip_sample_range']))
    if name == 'ddim':
        return DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **clip, **common)
    if name == 'dpmsolver':
        # Thresholding at the ratio's quantile s, with s held to [1, sample_max_value], is the other
        # schedulers' clipping of the predicted clean chunk. Its timesteps are DDIM's (set_sampling_steps).
        return DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2, solver_type='midpoint',
                                           lower_order_final=True, final_sigmas_type='zero',
                                           thresholding=clip['clip_sample'],
                                           sample_max_value=clip['clip_sample_range'], **common)
    return DDPMScheduler(variance_type='fixed_small', **clip, **common)


def ddim_timesteps(num_train_timesteps, num_inference_steps):
    """DDIMScheduler's timesteps (its 'leading' spacing, no offset): 45, 40, ..., 0 for 10 of 50."""
    step_ratio = num_train_timesteps // num_inference_steps
    return [i * step_ratio for i in reversed(range(num_inference_steps))]


def set_sampling_steps(scheduler, num_inference_steps):
    """Prepare `scheduler` for one sampling loop of num_inference_steps. DPM-Solver++ runs on DDIM's
    timesteps, so that the two differ only in the solver: its own 'linspace' spacing starts at t = 49
    of 50, where the squared-cosine schedule leaves alpha / sigma = 1e-3 and a predicted noise's
    rounding error reaches the clean chunk 1,000-fold (8-fold at DDIM's first step, t = 45)."""
    if scheduler.__class__.__name__ == 'DPMSolverMultistepScheduler':
        scheduler.set_timesteps(timesteps=ddim_timesteps(scheduler.config.num_train_timesteps, num_inference_steps))
    else:
        scheduler.set_timesteps(num_inference_steps)


### Policy
class DiffusionPolicy(Policy):
    """policy(qpos, image, actions=None, is_pad=None), as ACT.

    With obs_horizon 1: qpos (B, state_dim), image (B, num_cams, 3, H, W) in [0, 1]; with
    obs_horizon To > 1: qpos (B, To, state_dim), image (B, To, num_cams, 3, H, W).
    Training (actions (B, T >= horizon, action_dim) in [-1, 1], is_pad (B, T) bool) returns
    {'l2_loss', 'loss'}; inference returns the denoised chunk (B, chunk_size, action_dim) in
    [-1, 1], sampled with the EMA weights.
    """
    policy_class = 'Diffusion'
    settings = DIFFUSION_SETTINGS
    samples = True
    lerobot_type = 'diffusion'
    defaults = DEFAULTS
    required = ('camera_names', 'num_queries')
    action_normalization = 'min_max'  # actions scaled to [-1, 1], where the noise schedule lives

    @classmethod
    def resolve_config(cls, policy_config):
        return resolve_config(policy_config)

    @classmethod
    def sample_window(cls, cfg):
        """obs_horizon observations; in LeRobot's style the actions start at the oldest of them."""
        return cfg['obs_horizon'], chunk_start(cfg)

    def __init__(self, policy_config, load_pretrained=True):
        """load_pretrained False skips the ImageNet trunk weights (a checkpoint will replace them)."""
        super().__init__(self.resolve_config(policy_config))
        from diffusers.training_utils import EMAModel
        cfg = self.cfg
        self.action_horizon = cfg['action_horizon']
        self.obs_horizon = cfg['obs_horizon']
        self.chunk_start = chunk_start(cfg)  # the current step's index in the predicted chunk
        self.horizon = cfg['num_queries']  # the sampled chunk's length (--chunk_size, LeRobot's horizon)
        self.chunk_size = self.horizon - self.chunk_start  # actions a query returns, from the current step
        self.lerobot_style = cfg['style'] == 'lerobot'
        # ImageNet trunks expect ImageNet statistics; LeRobot standardises images by its statistics
        self.normalise_images = bool(cfg['pretrained_backbone']) or self.lerobot_style
        self.nets = self._build_nets(cfg, load_pretrained)
        self.ema_nets = copy.deepcopy(self.nets).requires_grad_(False)
        self.ema = EMAModel(self.nets.parameters(), decay=EMA_MAX_DECAY, min_decay=0.0, update_after_step=0,
                            use_ema_warmup=True, inv_gamma=1.0, power=cfg['ema_power'], foreach=True)
        # The average lives in ema_nets itself: it moves with .to(), is saved as 'ema', and is
        # what inference runs. EMAModel.step updates its shadow parameters in place.
        self.ema.shadow_params = list(self.ema_nets.parameters())
        self.noise_scheduler = make_noise_scheduler(cfg['scheduler'], cfg)  # the sampler
        # the forward process: DDPM's add_noise, the same arithmetic as DDIM's (bit for bit)
        self.training_noise = make_noise_scheduler('ddpm', cfg)
        print(f'number of parameters: {sum(p.numel() for p in self.nets.parameters()) / 1e6:.2f}M')

    def _build_nets(self, cfg, load_pretrained):
        num_cams = len(cfg['camera_names'])
        keypoints = 2 * cfg['num_keypoints']  # (x, y) of each
        # LeRobot projects the keypoints to as many features; act-plus-plus to 64
        feature_dim = keypoints if self.lerobot_style else CAMERA_FEATURE_DIM
        obs_dim = feature_dim * num_cams + cfg['state_dim']
        pretrained = cfg['pretrained_backbone'] and load_pretrained
        num_encoders = 1 if cfg['shared_encoder'] else num_cams
        backbones = nn.ModuleList(build_trunk(cfg['backbone'], pretrained, cfg['backbone_weights'],
                                              cfg['backbone_norm']) for _ in range(num_encoders))
        return nn.ModuleDict({'policy': nn.ModuleDict({
            'backbones': backbones,
            'pools': nn.ModuleList(SpatialSoftmax(trunk.num_channels, cfg['num_keypoints']) for trunk in backbones),
            'linears': nn.ModuleList(nn.Linear(keypoints, feature_dim) for _ in range(num_encoders)),
            'noise_pred_net': ConditionalUnet1D(cfg['action_dim'], obs_dim * cfg['obs_horizon'],
                                                step_embed_dim=cfg['step_embed_dim'], down_dims=cfg['down_dims'],
                                                kernel_size=cfg['kernel_size'], n_groups=cfg['n_groups'],
                                                film_scale=cfg['film_scale']),
        })})

    ### Training interface
    def optimizer_groups(self):
        return [{'params': list(self.nets.parameters())}]

    def post_step(self):
        """Move the EMA toward the current weights; the training loop calls it after each optimizer step."""
        self.ema.step(self.nets.parameters())

    def serialize(self):
        """{'nets': trained weights, 'ema': averaged weights (used for inference), 'ema_step': int}."""
        return {'nets': self.nets.state_dict(), 'ema': self.ema_nets.state_dict(),
                'ema_step': self.ema.optimization_step}

    def deserialize(self, checkpoint):
        """Load serialize()'s dict (or a checkpoint file path) strictly (act-plus-plus checkpoints too);
        inference then uses 'ema' (or 'nets' when the checkpoint has no EMA weights)."""
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = load_torch_file(os.fspath(checkpoint))
        if not isinstance(checkpoint, dict) or 'nets' not in checkpoint:
            keys = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise KeyError(f"a Diffusion checkpoint is a dict with 'nets' and 'ema' state dicts; got {keys} "
                           f"(a raw state_dict comes from --policy_class ACT or CNNMLP)")
        self.load_strict(self.nets, _without_constants(checkpoint['nets']), "checkpoint 'nets'")
        ema = checkpoint.get('ema')
        if ema is None:
            warnings.warn("checkpoint has no EMA weights ('ema'); inference uses the trained weights")
            ema = self.nets.state_dict()
        self.load_strict(self.ema_nets, _without_constants(ema), "checkpoint 'ema'")
        self.ema.optimization_step = int(checkpoint.get('ema_step', 0))
        return self

    def load_matching(self, state_dict, source):
        """--init_from: a checkpoint's averaged weights (its trained ones when it has none; a LeRobot
        folder's one set, network keys) into the network where name and shape fit; the EMA restarts
        from the result -> (kept, fresh) key lists."""
        if 'nets' in state_dict:
            state_dict = state_dict.get('ema') or state_dict['nets']
        kept, fresh = load_matching(self.nets, _without_constants(state_dict), source)
        self.ema_nets.load_state_dict(self.nets.state_dict())
        self.ema.optimization_step = 0
        return kept, fresh

    def mismatch_causes(self, expected, got):
        return _probable_causes(expected, got)

    ### Forward
    def _check_observation(self, qpos, image):
        """-> qpos (B, To, state_dim), image (B, To, num_cams, 3, H, W)."""
        num_cams, horizon = len(self.camera_names), self.obs_horizon
        if horizon == 1 and qpos.dim() == 2 and image.dim() == 5:
            qpos, image = qpos.unsqueeze(1), image.unsqueeze(1)
        expected = (f'qpos (B, {self.state_dim}) and image (B, {num_cams}, 3, H, W)' if horizon == 1 else
                    f'qpos (B, {horizon}, {self.state_dim}) and image (B, {horizon}, {num_cams}, 3, H, W)')
        if (qpos.dim() != 3 or image.dim() != 6 or tuple(qpos.shape[1:]) != (horizon, self.state_dim)
                or tuple(image.shape[1:4]) != (horizon, num_cams, 3)):
            raise ValueError(f'with --obs_horizon {horizon} the Diffusion policy expects {expected}; '
                             f'got qpos {tuple(qpos.shape)} and image {tuple(image.shape)}')
        return qpos, image

    def _encode(self, nets, qpos, image):
        """qpos (B, To, S), image (B, To, K, 3, H, W) -> global condition (B, To * (F K + S)), F the
        features per camera; LeRobot's style puts the state first."""
        batch, horizon = qpos.shape[:2]
        image = image.flatten(0, 1)  # (B To, K, 3, H, W)
        features = []
        for cam_id in range(len(self.camera_names)):
            net = 0 if self.cfg['shared_encoder'] else cam_id
            frames = self._prepare_images(image[:, cam_id], cam_id)  # (B To, 3, h, w)
            feature_map = nets['policy']['backbones'][net](frames)  # (B To, C, h', w')
            keypoints = nets['policy']['pools'][net](feature_map).flatten(1)  # (B To, 2 num_keypoints)
            camera_features = nets['policy']['linears'][net](keypoints.to(frames.dtype))  # (B To, F)
            features.append(F.relu(camera_features) if self.lerobot_style else camera_features)
        features = torch.cat(features, dim=-1).view(batch, horizon, -1)  # (B, To, F K)
        parts = [qpos, features] if self.lerobot_style else [features, qpos]
        return torch.cat(parts, dim=-1).flatten(1)  # (B, To * (F K + S))

    def _prepare_images(self, frames, cam_id=0):
        """Augmentation (training) or its evaluation view, and the image statistics where the trunk
        expects them. (N, 3, H, W) -> (N, 3, H, W), or crop_shape's size in LeRobot's style. LeRobot
        standardises before cropping; a window of standardised pixels is the same either way."""
        if self.lerobot_style:
            crop = self.cfg['crop_shape']
            if crop is not None:
                frames = random_windows(frames, crop) if self.training else centre_window(frames, crop)
        elif self.cfg['augment_images']:
            frames = augment_images(frames) if self.training else centre_crop(frames)
        if self.normalise_images:
            mean, std = (self.image_mean, self.image_std) if self.image_mean.dim() == 3 else \
                (self.image_mean[cam_id], self.image_std[cam_id])
            frames = (frames - mean) / std
        return frames

    def loss(self, qpos, image, actions, is_pad=None):
        qpos, image = self._check_observation(qpos, image)
        horizon = self.horizon
        if actions.shape[1] < horizon or actions.shape[2] != self.action_dim:
            raise ValueError(f'actions must be (B, T >= {horizon}, {self.action_dim}) '
                             f'(chunk size, action_dim); got {tuple(actions.shape)}')
        actions = actions[:, :horizon]  # (B, T, A)
        if is_pad is None:
            is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        is_pad = is_pad[:, :horizon]  # (B, T)
        global_cond = self._encode(self.nets, qpos, image)
        noise = torch.randn_like(actions)
        steps = torch.randint(0, self.cfg['num_train_timesteps'], (actions.shape[0],), device=actions.device)
        noisy_actions = self.training_noise.add_noise(actions, noise, steps)
        prediction = self.nets['policy']['noise_pred_net'](noisy_actions, steps, global_cond)  # (B, T, A)
        target = noise if self.cfg['prediction_type'] == 'epsilon' else actions
        # NOTE(faithful): padded steps count in the denominator (mean over all elements), as in
        # act-plus-plus; they only contribute zeros.
        loss = (F.mse_loss(prediction, target, reduction='none') * ~is_pad.unsqueeze(-1)).mean()
        return {'l2_loss': loss, 'loss': loss}

    def action_chunk(self, qpos, image, inpainting=None, trace=None):
        """Start from Gaussian noise and denoise with the EMA weights: -> (B, chunk_size, A) float32,
        the chunk's actions from the current step on (policy.chunk_size of them).
        inpainting: a policies.rtc.Inpainting that guides each step toward the queued actions (RTC).
        trace: a list that receives (timestep, the clean chunk estimated at that step (B, horizon, A))
        for every denoising step, to look inside the sampling (evaluation/denoising.py)."""
        qpos, image = self._check_observation(qpos, image)
        if inpainting is not None and self.chunk_start:
            raise ValueError('real-time chunking guides a chunk that starts at the current step; this policy\'s '
                             f'chunk starts {self.chunk_start} steps back (LeRobot style, --obs_horizon > 1)')
        # the guidance differentiates through the UNet: no inference tensors then
        with torch.inference_mode(inpainting is None), torch.no_grad(), autocast(qpos.device.type, self.cfg['amp']):
            global_cond = self._encode(self.ema_nets, qpos, image)  # (B, G)
            unet = self.ema_nets['policy']['noise_pred_net']
            batch, device = qpos.shape[0], qpos.device
            actions = torch.randn(batch, self.horizon, self.action_dim, device=device)  # (B, horizon, A)
            set_sampling_steps(self.noise_scheduler, self.cfg['num_inference_steps'])
            steps = self.noise_scheduler.timesteps  # (S,) descending
            # FiLM of all S steps in one pass: (S B, C, 1) each, rows [i B, (i + 1) B) for step i
            films = unet.condition(steps.to(device).repeat_interleave(batch), global_cond.repeat(len(steps), 1))
            for i, step in enumerate(steps):
                rows = slice(i * batch, (i + 1) * batch)
                step_films = [(None if scale is None else scale[rows], bias[rows]) for scale, bias in films]

                def denoise(sample):  # (B, T, A) -> the noise or the clean chunk (B, T, A)
                    return unet(sample, None, None, films=step_films).float()
                if inpainting is None:
                    prediction = denoise(actions)
                else:
                    prediction = self._guided_prediction(denoise, actions, int(step), inpainting)
                if trace is not None:
                    clean = self._clean_estimate(prediction, int(step), actions)  # (B, T, A)
                    trace.append((int(step), clean[:, self.chunk_start:]))
                actions = self.noise_scheduler.step(prediction, step, actions).prev_sample
        return actions[:, self.chunk_start:]  # (B, chunk_size, A)

    def _clean_estimate(self, prediction, step, sample):
        """The clean chunk the prediction at `step` stands for, clipped as the sampler clips it: (B, T, A)."""
        if self.cfg['prediction_type'] == 'epsilon':
            alpha_bar = float(self.noise_scheduler.alphas_cumprod[step])
            prediction = (sample - math.sqrt(1 - alpha_bar) * prediction) / math.sqrt(alpha_bar)
        if self.cfg['clip_sample']:
            prediction = prediction.clamp(-self.cfg['clip_sample_range'], self.cfg['clip_sample_range'])
        return prediction

    def _guided_prediction(self, denoise, sample, step, inpainting):
        """RTC (policies/rtc.py): the prediction whose clean chunk is the guided one, for the sampler's step."""
        alpha_bar = float(self.noise_scheduler.alphas_cumprod[step])
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        epsilon = self.cfg['prediction_type'] == 'epsilon'

        def clean_chunk(x):  # x_t (B, T, A) -> x0 (B, T, A)
            prediction = denoise(x)
            return (x - sigma * prediction) / alpha if epsilon else prediction
        clean = guided_clean_chunk(clean_chunk, sample, alpha, sigma, inpainting)
        return (sample - alpha * clean) / sigma if epsilon else clean


### Checkpoint loading
# act-plus-plus stored robomimic's constant keypoint grid and temperature; they are not weights.
_CONSTANT_KEYS = ('.pos_x', '.pos_y', '.temperature')

# Key fragment -> the setting that most likely differs when its shape does not match.
_SHAPE_HINTS = (
    ('cond_encoder', 'state_dim, the number of cameras or --obs_horizon'),
    ('noise_pred_net.down_modules.0.0', 'action_dim or down_dims'),
    ('final_conv.1', 'action_dim'),
    ('noise_pred_net', 'down_dims, kernel_size or n_groups'),
)


def _without_constants(state_dict):
    return {k: v for k, v in state_dict.items() if not k.endswith(_CONSTANT_KEYS)}


def _probable_causes(expected, got):
    """Sentences naming the settings that most likely differ between two Diffusion state dicts."""
    causes = []
    if set(got) - set(expected):
        causes.append('unexpected keys: the checkpoint has more cameras or other down_dims')
    if set(expected) - set(got):
        causes.append('missing keys: the checkpoint has fewer cameras or other down_dims')
    mismatched = [k for k in sorted(set(expected) & set(got)) if expected[k].shape != got[k].shape]
    if mismatched:
        hint = next((h for fragment, h in _SHAPE_HINTS if fragment in mismatched[0]), 'the model configuration')
        causes.append(f'{mismatched[0]} has another shape: check {hint}')
    return causes
