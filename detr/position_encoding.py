"""2-D position embeddings of a feature map, as DETR's (sine: fixed, learned: row/column tables).

Both return (1, hidden_dim, h, w): the embedding depends only on the map's size, never on its content
or batch, and the transformer broadcasts it over the batch.
"""
import math

import torch
from torch import nn

SINE_TEMPERATURE = 10000  # wavelength base of the sine embedding
SINE_SCALE = 2 * math.pi  # normalised coordinates run over (0, 2 pi]
SINE_NORMALISE_EPS = 1e-6
LEARNED_MAX_SIZE = 50  # rows/columns the learned tables cover (feature maps up to 50 x 50)


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine of normalised row and column indices; no parameters.

    Channels [0, F) encode the row, [F, 2F) the column; within each half, channel 2i is
    sin(p / T^(2i/F)) and channel 2i+1 is cos(p / T^(2i/F)), p the normalised 1-based coordinate.
    """

    def __init__(self, num_pos_feats):
        super().__init__()
        self.num_pos_feats = num_pos_feats

    def forward(self, x):
        """x: (B, C, h, w) feature map -> (1, 2 * num_pos_feats, h, w) in x's dtype"""
        h, w = x.shape[-2:]
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)  # (h,)
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)  # (w,)
        ys = ys / (ys[-1] + SINE_NORMALISE_EPS) * SINE_SCALE
        xs = xs / (xs[-1] + SINE_NORMALISE_EPS) * SINE_SCALE
        pos_y = self._encode(ys)[:, None, :].expand(h, w, -1)  # (h, w, F)
        pos_x = self._encode(xs)[None, :, :].expand(h, w, -1)  # (h, w, F)
        pos = torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1)  # (2F, h, w)
        return pos.unsqueeze(0).to(x.dtype)

    def _encode(self, coords):
        """coords: (n,) -> (n, F) interleaved sin (even channels) and cos (odd channels)"""
        feats = torch.arange(self.num_pos_feats, dtype=torch.float32, device=coords.device)
        dim_t = SINE_TEMPERATURE ** (2 * (feats // 2) / self.num_pos_feats)  # (F,)
        angles = coords[:, None] / dim_t  # (n, F)
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)


class PositionEmbeddingLearned(nn.Module):
    """Learned row and column tables: channels [0, F) the column, [F, 2F) the row."""

    def __init__(self, num_pos_feats):
        super().__init__()
        self.row_embed = nn.Embedding(LEARNED_MAX_SIZE, num_pos_feats)
        self.col_embed = nn.Embedding(LEARNED_MAX_SIZE, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, x):
        """x: (B, C, h, w) feature map -> (1, 2 * num_pos_feats, h, w)"""
        h, w = x.shape[-2:]
        if h > LEARNED_MAX_SIZE or w > LEARNED_MAX_SIZE:
            raise ValueError(f'learned position embedding covers feature maps up to {LEARNED_MAX_SIZE} x '
                             f'{LEARNED_MAX_SIZE}, got {h} x {w}: use the sine embedding or smaller images')
        col = self.col_embed.weight[:w][None, :, :].expand(h, w, -1)  # (h, w, F)
        row = self.row_embed.weight[:h][:, None, :].expand(h, w, -1)  # (h, w, F)
        return torch.cat([col, row], dim=-1).permute(2, 0, 1).unsqueeze(0).to(x.dtype)


def build_position_encoding(kind, hidden_dim):
    """'sine' (the original's default) or 'learned'; the embedding has hidden_dim channels."""
    if hidden_dim % 2:
        raise ValueError(f'hidden_dim must be even for a 2-D position embedding, got {hidden_dim}')
    if kind == 'sine':
        return PositionEmbeddingSine(hidden_dim // 2)
    if kind == 'learned':
        return PositionEmbeddingLearned(hidden_dim // 2)
    raise ValueError(f"unknown position_embedding '{kind}': expected 'sine' or 'learned'")
