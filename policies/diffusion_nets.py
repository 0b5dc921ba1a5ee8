"""The networks of the Diffusion policy (policies/diffusion.py): the conditional 1-D UNet over the
action chunk with FiLM conditioning, the ResNet trunk with spatial-softmax keypoints, and the image
augmentation and crops of training and evaluation. Module names follow act-plus-plus, so its
checkpoints load; LeRobot's variants (FiLM bias only, batch norm in the trunk, a fixed crop) are
settings of the same modules."""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detr.recompute import recompute

### Fixed values
DOWN_DIMS = (256, 512, 1024)   # UNet level widths, finest first (the default of --down_dims)
KERNEL_SIZE = 5                # UNet convolution width
N_GROUPS = 8                   # group-norm groups of the UNet blocks
NUM_KEYPOINTS = 32             # spatial-softmax keypoints per camera
CAMERA_FEATURE_DIM = 64        # features per camera after projecting its keypoints
STEP_EMBED_DIM = 256           # width of the diffusion-step embedding
GROUP_NORM_CHANNELS = 16       # channels per group where group norm replaces batch norm
CROP_RATIO = 0.95              # training crops 95% of each side at random, evaluation the centre
MAX_ROTATION_DEG = 5.0         # training rotates each image by up to this many degrees
BRIGHTNESS, CONTRAST, SATURATION = 0.3, 0.4, 0.5  # colour jitter: factors drawn in 1 -+ strength
GEMM_CONV_MAX_COLUMNS = 16    # CPU: below batch x length 16 a 1-D convolution runs as one matrix product


### Conditional 1-D UNet
class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step k (B,) -> (B, dim): sines then cosines of k at geometric frequencies."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, steps):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=steps.device) * (-math.log(10000) / (half - 1)))  # (half,)
        angles = steps.float()[:, None] * freqs[None, :]  # (B, half)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


def conv1d_same(x, conv):
    """`conv` (nn.Conv1d, odd kernel, 'same' padding) on x (B, C_in, T) -> (B, C_out, T).

    On CPU, for short sequences (the deepest UNet levels of short chunks at inference), one matrix
    product over the unfolded windows is several times faster than the convolution kernel
    (bench/diffusion_latency.py; figures in bench/RESULTS.md); the result is the same up to float
    rounding.
    """
    batch, _, length = x.shape
    if x.device.type != 'cpu' or batch * length >= GEMM_CONV_MAX_COLUMNS:
        return conv(x)
    k = conv.kernel_size[0]
    cols = F.pad(x, (k // 2, k // 2)).unfold(2, k, 1).transpose(1, 2).reshape(batch * length, -1)  # (B T, C_in K)
    out = torch.addmm(conv.bias, cols, conv.weight.reshape(conv.out_channels, -1).t())  # (B T, C_out)
    return out.view(batch, length, -1).transpose(1, 2)  # (B, C_out, T)


class Conv1dBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels, out_channels, kernel_size, n_groups):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x):
        conv, norm, activation = self.block
        return activation(norm(conv1d_same(x, conv)))


class FiLMResidualBlock(nn.Module):
    """Two conv blocks with FiLM between them and a residual path.

    FiLM (Perez et al., 2018): the condition predicts a per-channel scale and bias that modulate
    the output of the first conv block (film_scale False: a bias only, LeRobot's option); the
    second block then mixes it along time.
    """

    def __init__(self, in_channels, out_channels, cond_dim, kernel_size, n_groups, film_scale=True):
        super().__init__()
        self.blocks = nn.ModuleList([
            Conv1dBlock(in_channels, out_channels, kernel_size, n_groups),
            Conv1dBlock(out_channels, out_channels, kernel_size, n_groups),
        ])
        self.film_scale = film_scale
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, (2 if film_scale else 1) * out_channels))
        self.residual_conv = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def modulation(self, cond):
        """cond (N, cond_dim) -> FiLM (scale, bias), (N, C_out, 1) each; scale None without film_scale."""
        film = self.cond_encoder(cond).unsqueeze(-1)  # (N, 2 C_out or C_out, 1)
        return film.chunk(2, dim=1) if self.film_scale else (None, film)

    def forward(self, x, film):
        """x (B, C_in, T), film (scale, bias) (B, C_out, 1) each -> (B, C_out, T)."""
        scale, bias = film
        out = self.blocks[0](x)
        out = out + bias if scale is None else torch.addcmul(bias, out, scale)  # scale * out + bias
        return self.blocks[1](out) + self.residual_conv(x)


class Downsample1d(nn.Module):
    """(B, C, T) -> (B, C, ceil(T / 2))."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample1d(nn.Module):
    """(B, C, T) -> (B, C, 2 T)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class ConditionalUnet1D(nn.Module):
    """Predicts the noise in a noisy action chunk, conditioned on the step and the observation.

    Levels of widths `down_dims`: each level has two FiLM residual blocks and halves the length
    (not the last); two blocks in the middle; the way up mirrors the way down with skip
    connections; a conv block and a 1x1 conv map back to the action size.
    """

    def __init__(self, action_dim, global_cond_dim, step_embed_dim=STEP_EMBED_DIM,
                 down_dims=DOWN_DIMS, kernel_size=KERNEL_SIZE, n_groups=N_GROUPS, film_scale=True):
        super().__init__()
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalStepEmbedding(step_embed_dim),
            nn.Linear(step_embed_dim, 4 * step_embed_dim),
            nn.Mish(),
            nn.Linear(4 * step_embed_dim, step_embed_dim),
        )
        cond_dim = step_embed_dim + global_cond_dim
        dims = [action_dim, *down_dims]
        levels = list(zip(dims[:-1], dims[1:]))  # (in, out) channels of each level

        def block(c_in, c_out):
            return FiLMResidualBlock(c_in, c_out, cond_dim, kernel_size, n_groups, film_scale)

        self.down_modules = nn.ModuleList(
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out),
                           Downsample1d(c_out) if i < len(levels) - 1 else nn.Identity()])
            for i, (c_in, c_out) in enumerate(levels))
        self.mid_modules = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up_modules = nn.ModuleList(
            nn.ModuleList([block(2 * c_out, c_in), block(c_in, c_in), Upsample1d(c_in)])
            for c_in, c_out in reversed(levels[1:]))
        self.final_conv = nn.Sequential(
            # NOTE(faithful): the last conv block uses 8 groups whatever n_groups is, as the
            # diffusion_policy UNet does; checkpoints with n_groups != 8 depend on it.
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups=8),
            nn.Conv1d(down_dims[0], action_dim, 1),
        )
        self.length_multiple = 2 ** (len(levels) - 1)
        self.gradient_checkpointing = False  # Policy.set_gradient_checkpointing: each block recomputed
        # every FiLM block in the order forward runs them
        self.film_blocks = ([b for level in self.down_modules for b in level[:2]] + list(self.mid_modules)
                            + [b for level in self.up_modules for b in level[:2]])

    def condition(self, timestep, global_cond):
        """timestep (N,), global_cond (N, G) -> FiLM (scale, bias) of every block, (N, C, 1) each.
        It depends only on the step and the observation, so sampling computes it once per query."""
        cond = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)  # (N, cond_dim)
        return [block.modulation(cond) for block in self.film_blocks]

    def forward(self, sample, timestep, global_cond, films=None):
        """sample (B, T, A) noisy actions, timestep (B,) or scalar, global_cond (B, G) -> (B, T, A).
        `films` (from condition()) replaces timestep and global_cond when given."""
        batch, length = sample.shape[:2]
        if films is None:
            timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)  # (B,)
            films = self.condition(timestep, global_cond)
        films = iter(films)
        padded = -length % self.length_multiple
        x = F.pad(sample.transpose(1, 2), (0, padded))  # (B, A, T + padded)
        skips = []
        run = functools.partial(recompute, self.gradient_checkpointing)
        for first, second, downsample in self.down_modules:
            x = run(second, run(first, x, next(films)), next(films))
            skips.append(x)
            x = downsample(x)
        # NOTE(faithful): the way up pops one skip per up level, so the first level's output is never
        # used, as in the diffusion_policy UNet; the layer sizes of its checkpoints depend on it.
        for mid in self.mid_modules:
            x = run(mid, x, next(films))
        for first, second, upsample in self.up_modules:
            x = torch.cat([x, skips.pop()], dim=1)  # (B, 2 C, T')
            x = upsample(run(second, run(first, x, next(films)), next(films)))
        x = self.final_conv(x)  # (B, A, T + padded)
        return x[..., :length].transpose(1, 2)  # (B, T, A)


### Observation encoder
class SpatialSoftmax(nn.Module):
    """Feature map (N, C, h, w) -> keypoints (N, K, 2): a 1x1 conv makes K maps, a softmax over
    each map's positions gives a distribution, and its expected (x, y) in [-1, 1] is the keypoint.
    The position grid is made for the map that arrives, so the layer fits any image size."""

    def __init__(self, in_channels, num_keypoints=NUM_KEYPOINTS):
        super().__init__()
        self.nets = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)

    def forward(self, features):
        maps = self.nets(features)  # (N, K, h, w)
        attention = maps.flatten(2).float().softmax(dim=-1)  # (N, K, h * w)
        grid = torch.from_numpy(keypoint_grid(*maps.shape[-2:])).to(maps.device)  # (h * w, 2)
        return attention @ grid  # (N, K, 2)


@functools.lru_cache(maxsize=16)
def keypoint_grid(h, w):
    """(h * w, 2) float32 array: the (x, y) in [-1, 1] of each map position, row by row. Computed in
    float64 and rounded once, as robomimic's and LeRobot's grids are (float32 steps differ in the
    last bit)."""
    xs, ys = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))  # (h, w) each
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)


class ResNetTrunk(nn.Module):
    """ResNet without its pooling and classifier: (N, 3, H, W) -> (N, C, ceil(H/32), ceil(W/32)).
    `nets` holds conv1, bn1 (a group norm here), relu, maxpool, layer1..layer4 in that order.
    Weights and images are channels-last, the faster layout for these convolutions on CPU and GPU."""

    def __init__(self, resnet):
        super().__init__()
        self.num_channels = resnet.num_channels
        self.nets = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.nets.to(memory_format=torch.channels_last)

    def forward(self, images):
        return self.nets(images.contiguous(memory_format=torch.channels_last))


def group_norm(num_channels):
    """Group norm with 16 channels per group, where ResNet has batch norm."""
    return nn.GroupNorm(num_channels // GROUP_NORM_CHANNELS, num_channels)


NORMS = {'group': group_norm, 'batch': nn.BatchNorm2d}  # the trunk's norm layers (backbone_norm)


def build_trunk(name, pretrained, weights_path, norm='group'):
    """ResNet trunk with group norm (or batch norm, trained and tracking statistics, as LeRobot's
    use_group_norm false). From ImageNet weights the convolutions start pretrained and each group
    norm takes its batch norm's scale and shift (running statistics have no place)."""
    from detr.resnet import build_resnet_trunk, load_imagenet_weights
    resnet = build_resnet_trunk(name, norm_layer=NORMS[norm])
    if pretrained:
        load_imagenet_weights(resnet, name, weights_path)
    return ResNetTrunk(resnet)


### Image augmentation (batched torch ops on the images' device)
def _affine_resample(images, scale, shift, angle):
    """Sample each image at a rotated, scaled, shifted view, resized back to full size.

    images (N, 3, H, W); scale (N,) side of the view as a fraction of the image; shift (N, 2) its
    centre in normalised (x, y) coordinates; angle (N,) radians. Pixels from outside are black.
    """
    n, _, h, w = images.shape
    cos, sin = angle.cos() * scale, angle.sin() * scale  # (N,) each
    # output (u, v) -> input (x, y) in normalised coordinates; aspect terms keep the rotation rigid
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, shift[:, 0]], dim=-1),
        torch.stack([sin * w / h, cos, shift[:, 1]], dim=-1),
    ], dim=1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), [n, 3, h, w], align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def _luminance(images):
    """(N, 3, H, W) -> (N, 1, H, W), ITU-R 601 weights."""
    r, g, b = images.unbind(dim=1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _random_factors(n, strength, device):
    return 1.0 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * strength  # (N, 1, 1, 1)


def colour_jitter(images):
    """Random brightness, contrast and saturation per image, in that order: (N, 3, H, W) in [0, 1]."""
    n, device = images.shape[0], images.device
    images = (images * _random_factors(n, BRIGHTNESS, device)).clamp(0, 1)
    mean = _luminance(images).mean(dim=(2, 3), keepdim=True)  # (N, 1, 1, 1)
    images = ((images - mean) * _random_factors(n, CONTRAST, device) + mean).clamp(0, 1)
    gray = _luminance(images)  # (N, 1, H, W)
    return ((images - gray) * _random_factors(n, SATURATION, device) + gray).clamp(0, 1)


def augment_images(images):
    """Training augmentation, independent per image: a random crop of 95% of each side resized back
    to full size, a rotation of up to 5 degrees, colour jitter. (N, 3, H, W) in [0, 1] -> same."""
    n, device = images.shape[0], images.device
    scale = torch.full((n,), CROP_RATIO, device=device)
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * (1 - CROP_RATIO)  # crop stays inside the image
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    return colour_jitter(_affine_resample(images, scale, shift, angle))


def centre_crop(images):
    """Evaluation view matching the training crops: the centre 95% of each side resized back."""
    n, device = images.shape[0], images.device
    scale = torch.full((n,), CROP_RATIO, device=device)
    zeros = torch.zeros(n, 2, device=device)
    return _affine_resample(images, scale, zeros, zeros[:, 0])


### Fixed-size crops (LeRobot's crop_shape): pixels cut out, not resampled
def centre_window(images, crop_hw):
    """The centre crop_hw window of (N, 3, H, W) -> (N, 3, h, w); offsets rounded half to even."""
    (h, w), (height, width) = crop_hw, images.shape[-2:]
    top, left = int(round((height - h) / 2.0)), int(round((width - w) / 2.0))
    return images[..., top:top + h, left:left + w]


def random_windows(images, crop_hw):
    """An independent random crop_hw window of each image (N, 3, H, W) -> (N, 3, h, w)."""
    (h, w), (height, width) = crop_hw, images.shape[-2:]
    n, device = images.shape[0], images.device
    top = torch.randint(0, height - h + 1, (n, 1, 1), device=device)
    left = torch.randint(0, width - w + 1, (n, 1, 1), device=device)
    rows = (top + torch.arange(h, device=device).view(1, h, 1)).expand(n, h, w)  # (N, h, w)
    cols = (left + torch.arange(w, device=device).view(1, 1, w)).expand(n, h, w)  # (N, h, w)
    index = (rows * width + cols).flatten(1)  # (N, h w) positions in the flattened image
    flat = images.flatten(2)  # (N, 3, H W)
    return flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).view(n, -1, h, w)


### Configuration
