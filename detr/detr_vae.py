"""DETRVAE (the ACT network: a CVAE whose decoder is a DETR transformer) and CNNMLP.

Parameter names and shapes are those of the original ACT code (its checkpoints load with
strict=True). Image inputs here are already ImageNet-normalised; the policies in policies/act.py do that.
"""
import numpy as np
import torch
from torch import nn

from .backbone import build_backbone
from .resnet import trunk_output_hw
from .transformer import build_encoder, build_transformer

CNNMLP_HIDDEN = 1024  # width of the CNNMLP head's two hidden layers
CNNMLP_UNUSED_HEAD_IN = 1000  # input size of CNNMLP's unused `action_head` (a checkpoint key)


def reparametrize(mu, logvar):
    """Sample mu + sigma * eps, eps ~ N(0, I); mu, logvar (B, latent) -> (B, latent)"""
    return mu + (logvar / 2).exp() * torch.randn_like(mu)


def get_sinusoid_encoding_table(n_position, d_hid):
    """Fixed 1-D sinusoid table (1, n_position, d_hid), computed in float64 as the original."""
    pos = np.arange(n_position, dtype=np.float64)[:, None]  # (n, 1)
    rates = np.power(10000, 2 * (np.arange(d_hid) // 2) / d_hid)  # (d,)
    table = pos / rates  # (n, d)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32).unsqueeze(0)


class DETRVAE(nn.Module):
    """CVAE encoder over [CLS, qpos, actions] -> latent z; transformer over [z, qpos, image tokens]
    decodes `num_queries` actions.

    backbones: one Joiner shared by all cameras (as the original) or one per camera.
    """

    def __init__(self, backbones, transformer, encoder, state_dim, action_dim, num_queries,
                 camera_names, latent_dim=32, use_vae=True):
        super().__init__()
        self.use_vae = use_vae  # False: the latent is zero in training too (LeRobot's use_vae false)
        hidden_dim = transformer.d_model
        self.num_queries = num_queries
        self.camera_names = list(camera_names)
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.latent_dim = latent_dim
        self.transformer = transformer
        self.encoder = encoder
        self.action_head = nn.Linear(hidden_dim, action_dim)
        # NOTE(faithful): the original builds and checkpoints a padding head but never uses its output.
        self.is_pad_head = nn.Linear(hidden_dim, 1)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbones[0].num_channels, hidden_dim, kernel_size=1)
        self.backbones = nn.ModuleList(backbones)
        self.input_proj_robot_state = nn.Linear(state_dim, hidden_dim)
        # CVAE encoder inputs
        self.cls_embed = nn.Embedding(1, hidden_dim)
        self.encoder_action_proj = nn.Linear(action_dim, hidden_dim)
        self.encoder_joint_proj = nn.Linear(state_dim, hidden_dim)
        self.latent_proj = nn.Linear(hidden_dim, latent_dim * 2)  # -> (mu, logvar)
        self.register_buffer('pos_table', get_sinusoid_encoding_table(1 + 1 + num_queries, hidden_dim))
        # decoder-side inputs
        self.latent_out_proj = nn.Linear(latent_dim, hidden_dim)
        self.additional_pos_embed = nn.Embedding(2, hidden_dim)  # positions of the latent and proprio tokens

    def encode_latent(self, qpos, actions, is_pad):
        """qpos (B, S), actions (B, Q, A), is_pad (B, Q) -> mu, logvar (B, latent)"""
        bs = qpos.shape[0]
        action_embed = self.encoder_action_proj(actions)  # (B, Q, D)
        qpos_embed = self.encoder_joint_proj(qpos).unsqueeze(1)  # (B, 1, D)
        cls_embed = self.cls_embed.weight.unsqueeze(0).expand(bs, -1, -1)  # (B, 1, D)
        encoder_input = torch.cat([cls_embed, qpos_embed, action_embed], dim=1)  # (B, Q + 2, D)
        not_pad = torch.zeros(bs, 2, dtype=torch.bool, device=qpos.device)  # CLS and qpos are never padding
        is_pad = torch.cat([not_pad, is_pad], dim=1)  # (B, Q + 2)
        encoder_output = self.encoder(encoder_input, self.pos_table, key_padding_mask=is_pad)
        latent_info = self.latent_proj(encoder_output[:, 0])  # CLS token -> (B, 2 * latent)
        return latent_info[:, :self.latent_dim], latent_info[:, self.latent_dim:]

    def image_tokens(self, image):
        """image (B, N, 3, H, W) normalised -> tokens (B, h * N * w, D), pos (1, h * N * w, D)

        Token order is the original's: camera feature maps side by side along the width, then
        flattened row by row.
        """
        bs, n_cams = image.shape[:2]
        if len(self.backbones) == 1:  # shared trunk: all cameras in one batch
            features, pos = self.backbones[0](image.flatten(0, 1))  # (B * N, C, h, w), (1, D, h, w)
            features = self.input_proj(features)  # (B * N, D, h, w)
            features = features.unflatten(0, (bs, n_cams))  # (B, N, D, h, w)
            pos = pos.unsqueeze(1).expand(-1, n_cams, -1, -1, -1)  # (1, N, D, h, w)
        else:
            per_cam = [self.backbones[i](image[:, i]) for i in range(n_cams)]
            features = torch.stack([self.input_proj(f) for f, _ in per_cam], dim=1)  # (B, N, D, h, w)
            pos = torch.stack([p for _, p in per_cam], dim=1)  # (1, N, D, h, w)
        return _to_tokens(features), _to_tokens(pos)

    def forward(self, qpos, image, actions=None, is_pad=None):
        """qpos (B, S); image (B, N, 3, H, W) normalised; actions (B, Q, A) and is_pad (B, Q) in training.

        Returns a_hat (B, Q, A), mu, logvar ((B, latent) each, None without actions or without the VAE).
        """
        bs = qpos.shape[0]
        if actions is not None and self.use_vae:
            # NOTE(faithful): the latent is sampled whenever actions are given, also in eval mode
            # (the original's validation loss is computed this way).
            mu, logvar = self.encode_latent(qpos, actions, is_pad)
            latent_sample = reparametrize(mu, logvar)
        else:
            mu = logvar = None
            latent_sample = torch.zeros(bs, self.latent_dim, dtype=qpos.dtype, device=qpos.device)
        latent_input = self.latent_out_proj(latent_sample)  # (B, D)
        proprio_input = self.input_proj_robot_state(qpos)  # (B, D)
        src, pos = self.image_tokens(image)
        extra_tokens = torch.stack([latent_input, proprio_input], dim=1)  # (B, 2, D)
        hs = self.transformer(src, pos, self.query_embed.weight, extra_tokens, self.additional_pos_embed.weight)
        return self.action_head(hs), mu, logvar  # (B, Q, A)


def _to_tokens(maps):
    """(B, N, D, h, w) camera maps -> (B, h * N * w, D), i.e. maps concatenated along width, row-major"""
    bs, n_cams, d, h, w = maps.shape
    return maps.permute(0, 3, 1, 4, 2).reshape(bs, h * n_cams * w, d)


class CNNMLP(nn.Module):
    """Per-camera trunk -> three 5x5 convolutions -> flatten, with qpos -> MLP -> one action."""

    def __init__(self, backbones, state_dim, action_dim, camera_names, image_size):
        super().__init__()
        self.camera_names = list(camera_names)
        self.image_size = tuple(image_size)
        # NOTE(faithful): the original defines this head and checkpoints it, but predicts with the MLP.
        self.action_head = nn.Linear(CNNMLP_UNUSED_HEAD_IN, action_dim)
        self.backbones = nn.ModuleList(backbones)
        # NOTE(faithful): no activation between the three down-projection convolutions.
        self.backbone_down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(b.num_channels, 128, kernel_size=5), nn.Conv2d(128, 64, kernel_size=5),
                          nn.Conv2d(64, 32, kernel_size=5))
            for b in backbones)
        # NOTE(faithful): the original hard-codes 768 features per camera, the size for 480 x 640 images;
        # computed here from image_size, which gives 768 by default.
        feat_per_cam = cnnmlp_features_per_camera(*self.image_size)
        self.mlp = nn.Sequential(
            nn.Linear(feat_per_cam * len(backbones) + state_dim, CNNMLP_HIDDEN), nn.ReLU(inplace=True),
            nn.Linear(CNNMLP_HIDDEN, CNNMLP_HIDDEN), nn.ReLU(inplace=True),
            nn.Linear(CNNMLP_HIDDEN, action_dim))

    def forward(self, qpos, image):
        """qpos (B, S), image (B, N, 3, H, W) normalised -> a_hat (B, A)"""
        bs = qpos.shape[0]
        flat = []
        for cam_id in range(len(self.camera_names)):
            features, _ = self.backbones[cam_id](image[:, cam_id])  # (B, C, h, w)
            flat.append(self.backbone_down_projs[cam_id](features).reshape(bs, -1))  # (B, 32 * h' * w')
        return self.mlp(torch.cat(flat + [qpos], dim=1))


def cnnmlp_features_per_camera(height, width):
    """Flattened size of one camera's CNNMLP features for height x width images."""
    h, w = trunk_output_hw(height, width)
    h, w = h - 12, w - 12  # three unpadded 5x5 convolutions
    if h < 1 or w < 1:
        raise ValueError(f'CNNMLP needs images whose trunk feature map is at least 13 x 13 '
                         f'(about 385 x 385 pixels); image_size is {height} x {width}')
    return 32 * h * w


def _build_backbones(cfg, count, load_pretrained):
    pretrained = cfg['pretrained_backbone'] and load_pretrained
    weights_path = cfg['backbone_weights'] if load_pretrained else None
    return [build_backbone(cfg['backbone'], cfg['hidden_dim'], cfg['position_embedding'], pretrained, weights_path)
            for _ in range(count)]


def build_act_model(cfg, load_pretrained=True):
    """DETRVAE from a complete config dict (policies/act.py fills in the defaults); load_pretrained False
    skips the trunks' ImageNet weights, for a checkpoint that replaces them."""
    n_backbones = len(cfg['camera_names']) if cfg['per_camera_backbone'] else 1
    transformer = build_transformer(cfg['hidden_dim'], cfg['nheads'], cfg['enc_layers'], cfg['dec_layers'],
                                    cfg['dim_feedforward'], cfg['dropout'], cfg['pre_norm'])
    encoder = build_encoder(cfg['hidden_dim'], cfg['nheads'], cfg['enc_layers'], cfg['dim_feedforward'],
                            cfg['dropout'], cfg['pre_norm'])
    return DETRVAE(_build_backbones(cfg, n_backbones, load_pretrained), transformer, encoder, cfg['state_dim'],
                   cfg['action_dim'], cfg['num_queries'], cfg['camera_names'], cfg['latent_dim'], cfg['use_vae'])


def build_cnnmlp_model(cfg, load_pretrained=True):
    """CNNMLP from a complete config dict: one trunk per camera, as the original."""
    return CNNMLP(_build_backbones(cfg, len(cfg['camera_names']), load_pretrained), cfg['state_dim'], cfg['action_dim'],
                  cfg['camera_names'], cfg['image_size'])
