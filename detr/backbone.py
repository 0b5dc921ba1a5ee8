"""Image backbone: a ResNet trunk joined with a position embedding.

The module layout gives the original checkpoint names: `backbones.{i}.0.body.<torchvision name>` for
the trunk and `backbones.{i}.1.*` for a learned position embedding (the sine one has no parameters).
"""
import torch
from torch import nn

from .position_encoding import build_position_encoding
from .resnet import build_resnet_trunk, load_imagenet_weights


class Backbone(nn.Module):
    """Holds the trunk as `body`; returns the last feature map.

    The trunk runs channels-last (NHWC): same numbers, faster convolutions on CPU and GPU.
    """

    def __init__(self, trunk):
        super().__init__()
        self.body = trunk.to(memory_format=torch.channels_last)
        self.num_channels = trunk.num_channels

    def forward(self, x):
        """x: (B, 3, H, W) -> (B, num_channels, h, w)"""
        return self.body(x.contiguous(memory_format=torch.channels_last))


class Joiner(nn.Sequential):
    """(Backbone, position embedding): image -> (features, position embedding)."""

    def __init__(self, backbone, position_embedding):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, x):
        """x: (B, 3, H, W) -> features (B, C, h, w), pos (1, hidden_dim, h, w)"""
        features = self[0](x)
        return features, self[1](features)


def build_backbone(name, hidden_dim, position_embedding='sine', pretrained=True, weights_path=None):
    """A trunk with frozen batch norm plus its position embedding.

    pretrained: start from ImageNet weights (weights_path file, else torch hub cache / download,
    else random with one warning). A weights_path is used even when pretrained is False.
    """
    trunk = build_resnet_trunk(name)
    if pretrained or weights_path is not None:
        load_imagenet_weights(trunk, name, weights_path)
    return Joiner(Backbone(trunk), build_position_encoding(position_embedding, hidden_dim))
