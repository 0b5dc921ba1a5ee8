"""ResNet-18/34/50 trunks written in the project, with torchvision's module names.

A trunk is a ResNet without its pooling and classifier: conv1, bn1, relu, maxpool, layer1..layer4,
returning the last feature map (B, C, H / 32, W / 32). Its state_dict keys are exactly those of
torchvision's ResNet minus `fc.*`, so torchvision ImageNet files and original ACT checkpoints load
into it. Normalisation is frozen batch norm by default (statistics and affine terms are buffers, no
`num_batches_tracked`); pass any `norm_layer(num_channels)` factory instead, e.g.
`lambda c: nn.GroupNorm(c // 16, c)`.

ImageNet weights come from, in order: a torchvision-format state-dict file named by the caller, the
torch hub cache (the file torchvision itself downloads), a download with torch's hub utilities;
when none works a warning is printed once and the trunk keeps its random initialisation.
"""
import os
import socket
import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from common.safe_load import load_torch_file
from detr.recompute import recompute

### ImageNet weights (torchvision's IMAGENET1K_V1 files, the ones `pretrained=True` gave the original)
IMAGENET_WEIGHT_FILES = {
    'resnet18': 'resnet18-f37072fd.pth',
    'resnet34': 'resnet34-b627a593.pth',
    'resnet50': 'resnet50-0676ba61.pth',
}
WEIGHTS_URL_ROOT = 'https://download.pytorch.org/models/'
WEIGHTS_HOST = 'download.pytorch.org'
NETWORK_PROBE_TIMEOUT_S = 3.0  # how long to wait for the weights host before going on offline
BN_EPS = 1e-5  # frozen batch norm epsilon, as torchvision's BatchNorm2d

_warned_random_init = False  # the "no ImageNet weights" warning is printed once per process


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, all stored as buffers."""

    def __init__(self, num_features):
        super().__init__()
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self._folded = (None, None)  # (key, (weight, bias)) of the last folded convolution

    def train(self, mode=True):
        # Parameters change between mode switches (an optimizer step, a checkpoint load): drop the
        # folded weights then too, since some in-place updates (fused optimizers) leave the tensors'
        # version counters unchanged.
        self._folded = (None, None)
        return super().train(mode)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # torchvision files carry a batch counter that frozen statistics do not need
        state_dict.pop(prefix + 'num_batches_tracked', None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_shift(self):
        """(C,) scale and shift with norm(x) = x * scale + shift"""
        scale = self.weight * (self.running_var + BN_EPS).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x):
        """x: (B, C, H, W) -> (B, C, H, W)"""
        scale, shift = self.scale_shift()
        return torch.addcmul(shift.reshape(1, -1, 1, 1), x, scale.reshape(1, -1, 1, 1))

    def folded(self, conv_weight):
        """Weight and bias of the convolution `conv_weight` followed by this norm, cached until any of
        the tensors involved is changed or moved, or the module's mode is switched."""
        tensors = (conv_weight, self.weight, self.bias, self.running_mean, self.running_var)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._folded[0] != key:
            scale, shift = self.scale_shift()
            self._folded = (key, (conv_weight * scale.reshape(-1, 1, 1, 1), shift))
        return self._folded[1]


def conv_norm(conv, norm, x):
    """norm(conv(x)). Outside autograd a frozen batch norm is folded into the convolution's weight and
    bias, which saves a scale-and-shift pass over the feature map (same numbers to float rounding)."""
    if isinstance(norm, FrozenBatchNorm2d) and not torch.is_grad_enabled():
        weight, bias = norm.folded(conv.weight)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return norm(conv(x))


def _conv3x3(in_ch, out_ch, stride=1):
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch, out_ch, stride=1):
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
    expansion = 1

    def __init__(self, in_ch, width, stride, downsample, norm_layer):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = norm_layer(width)
        self.downsample = downsample

    def forward(self, x):
        """x: (B, C_in, H, W) -> (B, width, H / stride, W / stride)"""
        identity = x if self.downsample is None else conv_norm(*self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's V1.5), 1x1 expand, residual (ResNet-50)."""
    expansion = 4

    def __init__(self, in_ch, width, stride, downsample, norm_layer):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = norm_layer(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        """x: (B, C_in, H, W) -> (B, 4 * width, H / stride, W / stride)"""
        identity = x if self.downsample is None else conv_norm(*self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        return self.relu(out + identity)


### Architectures: block type and blocks per stage
RESNET_SPECS = {
    'resnet18': (BasicBlock, (2, 2, 2, 2)),
    'resnet34': (BasicBlock, (3, 4, 6, 3)),
    'resnet50': (Bottleneck, (3, 4, 6, 3)),
}
BACKBONES = tuple(RESNET_SPECS)  # --backbone choices


class ResNetTrunk(nn.Module):
    """ResNet up to layer4: (B, 3, H, W) -> (B, num_channels, ceil(H / 32), ceil(W / 32))."""

    def __init__(self, block, blocks_per_stage, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for stage, (width, n_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            stride = 1 if stage == 0 else 2
            layer, in_ch = _make_stage(block, in_ch, width, n_blocks, stride, norm_layer)
            self.add_module(f'layer{stage + 1}', layer)
        self.num_channels = in_ch
        self.gradient_checkpointing = False  # Policy.set_gradient_checkpointing: layer1..layer4 recomputed
        self._init_weights()

    def _init_weights(self):
        # same distributions as torchvision's ResNet
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """x: (B, 3, H, W) normalised image -> (B, num_channels, h, w) last feature map"""
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))  # (B, 64, H / 4, W / 4)
        for stage in (self.layer1, self.layer2, self.layer3):  # (B, 128 * e, H / 8, W / 8) after layer2
            x = recompute(self.gradient_checkpointing, stage, x)
        return recompute(self.gradient_checkpointing, self.layer4, x)  # (B, 512 * e, H / 32, W / 32)


def _make_stage(block, in_ch, width, n_blocks, stride, norm_layer):
    out_ch = width * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))
    blocks = [block(in_ch, width, stride, downsample, norm_layer)]
    blocks += [block(out_ch, width, 1, None, norm_layer) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks), out_ch


def build_resnet_trunk(name='resnet18', norm_layer=None):
    """A randomly initialised trunk; `norm_layer(num_channels)` defaults to FrozenBatchNorm2d."""
    if name not in RESNET_SPECS:
        raise ValueError(f"unknown backbone '{name}': expected one of {', '.join(RESNET_SPECS)}")
    block, blocks_per_stage = RESNET_SPECS[name]
    return ResNetTrunk(block, blocks_per_stage, norm_layer or FrozenBatchNorm2d)


def trunk_output_hw(height, width):
    """Spatial size of a trunk's feature map for an input of height x width."""
    def down(n, kernel, stride, pad):
        return (n + 2 * pad - kernel) // stride + 1
    h, w = down(height, 7, 2, 3), down(width, 7, 2, 3)  # conv1
    h, w = down(h, 3, 2, 1), down(w, 3, 2, 1)  # maxpool
    for _ in range(3):  # the strided 3x3 convolutions of layer2..layer4
        h, w = down(h, 3, 2, 1), down(w, 3, 2, 1)
    return h, w


def load_trunk_state_dict(trunk, state_dict, source):
    """Load a torchvision-format ResNet state dict into `trunk`.

    The classifier (`fc.*`), batch counters and statistics the trunk's norm layers do not keep are
    skipped; any missing trunk key or shape mismatch raises an error naming `source`.
    """
    own = trunk.state_dict()
    wanted = {k: v for k, v in state_dict.items() if k in own}
    missing = sorted(set(own) - set(wanted))
    bad_shapes = [f'{k}: file {tuple(v.shape)}, trunk {tuple(own[k].shape)}'
                  for k, v in wanted.items() if v.shape != own[k].shape]
    if missing or bad_shapes:
        raise ValueError(f'{source} is not a torchvision-format state dict of this ResNet: '
                         f'missing keys {missing[:8]}{" ..." if len(missing) > 8 else ""}; '
                         f'shape mismatches {bad_shapes[:8]}')
    trunk.load_state_dict(wanted, strict=True)


def _hub_cache_file(name):
    return os.path.join(torch.hub.get_dir(), 'checkpoints', IMAGENET_WEIGHT_FILES[name])


def _network_reachable(host=WEIGHTS_HOST, timeout=NETWORK_PROBE_TIMEOUT_S):
    """True when `host` accepts a TCP connection within `timeout` s (DNS included)."""
    result = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result)


def download_imagenet_weights(name):
    """Fetch torchvision's ImageNet file into the torch hub cache; returns the state dict."""
    if not _network_reachable():
        raise OSError(f'{WEIGHTS_HOST} is not reachable')
    url = WEIGHTS_URL_ROOT + IMAGENET_WEIGHT_FILES[name]
    return torch.hub.load_state_dict_from_url(url, map_location='cpu', progress=False, check_hash=True)


def load_imagenet_weights(trunk, name='resnet18', weights_path=None):
    """Give `trunk` ImageNet weights: file -> hub cache -> download -> warn once, stay random.

    A `weights_path` given by the user must load (a bad file is an error). Returns the source used,
    or None when the trunk stays randomly initialised.
    """
    global _warned_random_init
    if weights_path is not None:
        load_trunk_state_dict(trunk, load_torch_file(weights_path, 'backbone weights'), weights_path)
        return weights_path
    if name not in IMAGENET_WEIGHT_FILES:
        raise ValueError(f"no ImageNet weights known for '{name}': expected one of {', '.join(IMAGENET_WEIGHT_FILES)}")
    cached = _hub_cache_file(name)
    if os.path.isfile(cached):
        load_trunk_state_dict(trunk, load_torch_file(cached, 'backbone weights'), cached)
        return cached
    try:
        state_dict = download_imagenet_weights(name)
    except Exception as err:  # no network, proxy, bad download: training goes on from scratch
        if not _warned_random_init:
            warnings.warn(f'ImageNet weights for {name} are not available ({err}); the image trunk starts '
                          f'from random initialisation. To use them offline, put torchvision\'s file at '
                          f'{cached} or pass a state-dict file as backbone_weights.', RuntimeWarning,
                          stacklevel=2)
            _warned_random_init = True
        return None
    load_trunk_state_dict(trunk, state_dict, WEIGHTS_URL_ROOT + IMAGENET_WEIGHT_FILES[name])
    return cached
