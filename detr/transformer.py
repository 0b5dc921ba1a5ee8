"""The DETR transformer used by ACT.

How it differs from torch.nn.Transformer (as DETR's):
    * position embeddings are added to queries and keys (not values) inside every attention;
    * post-norm by default (`pre_norm` gives pre-norm, with a final encoder LayerNorm);
    * the decoder has a final LayerNorm.
How it differs from the original ACT code, with the same parameters and numbers:
    * tensors are batch-first (B, L, D) inside; attention runs through
      F.scaled_dot_product_attention (a fused kernel) with the parameter names of
      nn.MultiheadAttention (`in_proj_weight`, `in_proj_bias`, `out_proj`);
    * only the first decoder layer is computed, since only its output reaches the heads.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from detr.recompute import recompute


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameters and maths on batch-first tensors, fused attention kernel."""

    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f'hidden_dim ({embed_dim}) must be divisible by nheads ({num_heads})')
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))  # rows: q, k, v
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None):
        """query (B, Lq, D), key/value (B, Lk, D), key_padding_mask (B, Lk) bool, True = ignore.

        Returns (B, Lq, D).
        """
        d = self.embed_dim
        if query is key:  # self-attention: one matmul for q and k
            q, k = F.linear(query, self.in_proj_weight[:2 * d], self.in_proj_bias[:2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d])
            k = F.linear(key, self.in_proj_weight[d:2 * d], self.in_proj_bias[d:2 * d])
        v = F.linear(value, self.in_proj_weight[2 * d:], self.in_proj_bias[2 * d:])
        q, k, v = (self._split_heads(t) for t in (q, k, v))  # (B, heads, L, D / heads)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk), True = attend
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).flatten(2)  # (B, Lq, D)
        return self.out_proj(out)

    def _split_heads(self, x):
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, -1).transpose(1, 2)  # (B, heads, L, D / heads)


def _with_pos(x, pos):
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward (ReLU), post-norm or pre-norm."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, normalize_before):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _feed_forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src, pos=None, key_padding_mask=None):
        """src (B, L, D), pos (B or 1, L, D), key_padding_mask (B, L) -> (B, L, D)"""
        if self.normalize_before:
            x = self.norm1(src)
            qk = _with_pos(x, pos)
            src = src + self.dropout1(self.self_attn(qk, qk, x, key_padding_mask))
            return src + self.dropout2(self._feed_forward(self.norm2(src)))
        qk = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, key_padding_mask)))
        return self.norm2(src + self.dropout2(self._feed_forward(src)))


class TransformerDecoderLayer(nn.Module):
    """Self-attention over queries, cross-attention to memory, feed-forward; post- or pre-norm."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, normalize_before):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _feed_forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, tgt, memory, pos=None, query_pos=None):
        """tgt (B, Q, D), memory (B, L, D), pos (B or 1, L, D), query_pos (B or 1, Q, D) -> (B, Q, D)"""
        key = _with_pos(memory, pos)
        if self.normalize_before:
            x = self.norm1(tgt)
            qk = _with_pos(x, query_pos)
            tgt = tgt + self.dropout1(self.self_attn(qk, qk, x))
            x = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(_with_pos(x, query_pos), key, memory))
            return tgt + self.dropout3(self._feed_forward(self.norm3(tgt)))
        qk = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)))
        tgt = self.norm2(tgt + self.dropout2(self.multihead_attn(_with_pos(tgt, query_pos), key, memory)))
        return self.norm3(tgt + self.dropout3(self._feed_forward(tgt)))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers, with a final LayerNorm when pre-norm."""

    def __init__(self, layer, num_layers, norm=None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm
        self.gradient_checkpointing = False  # Policy.set_gradient_checkpointing

    def forward(self, src, pos=None, key_padding_mask=None):
        """src (B, L, D), pos (B or 1, L, D), key_padding_mask (B, L) -> (B, L, D)"""
        for layer in self.layers:
            src = recompute(self.gradient_checkpointing, layer, src, pos, key_padding_mask)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """All `num_layers` layers are parameters (checkpoint keys); only the first one runs."""

    def __init__(self, layer, num_layers, norm):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm
        self.gradient_checkpointing = False  # Policy.set_gradient_checkpointing

    def forward(self, tgt, memory, pos=None, query_pos=None):
        """tgt (B, Q, D), memory (B, L, D) -> (B, Q, D)"""
        # NOTE(faithful): the original stacks the normalised output of every decoder layer and the
        # model keeps only index 0, i.e. the first layer's output after the final norm. Layers
        # 2..dec_layers never change the actions and get zero gradient; they stay as parameters so
        # original checkpoints load, but they are not computed here (the original also applied
        # AdamW's weight decay to them, which never reaches the output).
        return self.norm(recompute(self.gradient_checkpointing, self.layers[0], tgt, memory, pos, query_pos))


class Transformer(nn.Module):
    """Encoder over [latent, proprio, image tokens] and a decoder over the action queries."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, normalize_before=False):
        super().__init__()
        enc_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.encoder = TransformerEncoder(enc_layer, num_encoder_layers,
                                          nn.LayerNorm(d_model) if normalize_before else None)
        dec_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.decoder = TransformerDecoder(dec_layer, num_decoder_layers, nn.LayerNorm(d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model = d_model
        self.nhead = nhead

    def forward(self, src, pos, query_embed, extra_tokens, extra_pos):
        """Encode the tokens, decode the queries.

        src (B, L, D) image tokens, pos (1, L, D) their position embedding,
        query_embed (Q, D), extra_tokens (B, 2, D) latent and proprio tokens, extra_pos (2, D).
        Returns hs (B, Q, D).
        """
        src = torch.cat([extra_tokens, src], dim=1)  # (B, 2 + L, D)
        pos = torch.cat([extra_pos.unsqueeze(0), pos], dim=1)  # (1, 2 + L, D)
        memory = self.encoder(src, pos)  # (B, 2 + L, D)
        query_pos = query_embed.unsqueeze(0)  # (1, Q, D)
        tgt = torch.zeros(src.shape[0], *query_embed.shape, dtype=memory.dtype, device=memory.device)
        return self.decoder(tgt, memory, pos, query_pos)


def build_transformer(hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout, pre_norm):
    return Transformer(d_model=hidden_dim, nhead=nheads, num_encoder_layers=enc_layers,
                       num_decoder_layers=dec_layers, dim_feedforward=dim_feedforward,
                       dropout=dropout, normalize_before=pre_norm)


def build_encoder(hidden_dim, nheads, enc_layers, dim_feedforward, dropout, pre_norm):
    """The CVAE encoder: same layer type and sizes as the transformer's encoder (default init)."""
    layer = TransformerEncoderLayer(hidden_dim, nheads, dim_feedforward, dropout, pre_norm)
    return TransformerEncoder(layer, enc_layers, nn.LayerNorm(hidden_dim) if pre_norm else None)
