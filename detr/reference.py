"""The original ACT computation, step by step, on a DETRVAE's own parameters.

Sequence-first tensors, torch's reference multi-head attention maths, one trunk call per camera and
every decoder layer computed, as the original code did. Tests use it to show that the optimised
DETRVAE.forward gives the same numbers; bench/policy_latency.py uses it as the unoptimised baseline.
Not used for training or evaluation.
"""
import torch
import torch.nn.functional as F

from .resnet import FrozenBatchNorm2d


def randomise_batch_norm(module):
    """Give every frozen batch norm non-trivial statistics, as a trained trunk has (fresh ones are
    the identity, which would hide a wrong order of normalisation and convolution)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.2, 2.0)


def _frozen_bn(bn, x):
    scale, shift = bn.scale_shift()
    return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def _block(block, x):
    """A BasicBlock or Bottleneck with separate convolution and batch-norm passes."""
    identity = x if block.downsample is None else _frozen_bn(block.downsample[1], block.downsample[0](x))
    out = block.relu(_frozen_bn(block.bn1, block.conv1(x)))
    out = _frozen_bn(block.bn2, block.conv2(out))
    if hasattr(block, 'conv3'):
        out = _frozen_bn(block.bn3, block.conv3(block.relu(out)))
    return block.relu(out + identity)


def original_trunk(body, x):
    """ResNet trunk with frozen batch norm, as torchvision's modules compute it: (B, 3, H, W) -> (B, C, h, w)"""
    x = body.maxpool(body.relu(_frozen_bn(body.bn1, body.conv1(x))))
    for stage in (body.layer1, body.layer2, body.layer3, body.layer4):
        for block in stage:
            x = _block(block, x)
    return x


def _attention(attn, query, key, value, key_padding_mask=None):
    """query (Lq, B, D), key/value (Lk, B, D) -> (Lq, B, D), as nn.MultiheadAttention(need_weights=True)."""
    out, _ = F.multi_head_attention_forward(
        query, key, value, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        None, None, False, attn.dropout, attn.out_proj.weight, attn.out_proj.bias,
        training=attn.training, key_padding_mask=key_padding_mask, need_weights=True)
    return out


def _encoder_layer(layer, src, pos, key_padding_mask):
    ff = lambda x: layer.linear2(layer.dropout(F.relu(layer.linear1(x))))
    if layer.normalize_before:
        x = layer.norm1(src)
        src = src + layer.dropout1(_attention(layer.self_attn, x + pos, x + pos, x, key_padding_mask))
        return src + layer.dropout2(ff(layer.norm2(src)))
    src = layer.norm1(src + layer.dropout1(_attention(layer.self_attn, src + pos, src + pos, src, key_padding_mask)))
    return layer.norm2(src + layer.dropout2(ff(src)))


def _decoder_layer(layer, tgt, memory, pos, query_pos):
    ff = lambda x: layer.linear2(layer.dropout(F.relu(layer.linear1(x))))
    if layer.normalize_before:
        x = layer.norm1(tgt)
        tgt = tgt + layer.dropout1(_attention(layer.self_attn, x + query_pos, x + query_pos, x))
        x = layer.norm2(tgt)
        tgt = tgt + layer.dropout2(_attention(layer.multihead_attn, x + query_pos, memory + pos, memory))
        return tgt + layer.dropout3(ff(layer.norm3(tgt)))
    tgt = layer.norm1(tgt + layer.dropout1(_attention(layer.self_attn, tgt + query_pos, tgt + query_pos, tgt)))
    tgt = layer.norm2(tgt + layer.dropout2(_attention(layer.multihead_attn, tgt + query_pos, memory + pos, memory)))
    return layer.norm3(tgt + layer.dropout3(ff(tgt)))


def _encoder(encoder, src, pos, key_padding_mask=None):
    for layer in encoder.layers:
        src = _encoder_layer(layer, src, pos, key_padding_mask)
    return src if encoder.norm is None else encoder.norm(src)


def _decoder_all_layers(decoder, tgt, memory, pos, query_pos):
    """The normalised output of every decoder layer: (num_layers, Q, B, D)."""
    outputs = []
    for layer in decoder.layers:
        tgt = _decoder_layer(layer, tgt, memory, pos, query_pos)
        outputs.append(decoder.norm(tgt))
    return torch.stack(outputs)


def original_forward(model, qpos, image, actions=None, is_pad=None):
    """DETRVAE maths in the original's order. Same inputs/outputs as DETRVAE.forward, plus is_pad_hat.

    Returns a_hat (B, Q, A), is_pad_hat (B, Q, 1), mu, logvar.
    """
    bs = qpos.shape[0]
    if actions is not None:
        action_embed = model.encoder_action_proj(actions)  # (B, Q, D)
        qpos_embed = model.encoder_joint_proj(qpos).unsqueeze(1)  # (B, 1, D)
        cls_embed = model.cls_embed.weight.unsqueeze(0).repeat(bs, 1, 1)  # (B, 1, D)
        encoder_input = torch.cat([cls_embed, qpos_embed, action_embed], dim=1).permute(1, 0, 2)  # (Q + 2, B, D)
        is_pad = torch.cat([torch.zeros(bs, 2, dtype=torch.bool, device=qpos.device), is_pad], dim=1)
        pos_embed = model.pos_table.permute(1, 0, 2)  # (Q + 2, 1, D)
        encoder_output = _encoder(model.encoder, encoder_input, pos_embed, is_pad)[0]  # (B, D)
        latent_info = model.latent_proj(encoder_output)
        mu, logvar = latent_info[:, :model.latent_dim], latent_info[:, model.latent_dim:]
        latent_sample = mu + (logvar / 2).exp() * torch.randn_like(mu)
    else:
        mu = logvar = None
        latent_sample = torch.zeros(bs, model.latent_dim, dtype=torch.float32, device=qpos.device)
    latent_input = model.latent_out_proj(latent_sample)
    all_features, all_pos = [], []
    for cam_id in range(len(model.camera_names)):
        joiner = model.backbones[cam_id if len(model.backbones) > 1 else 0]
        features = original_trunk(joiner[0].body, image[:, cam_id])  # (B, C, h, w)
        all_features.append(model.input_proj(features))
        all_pos.append(joiner[1](features))
    src = torch.cat(all_features, dim=3)  # (B, D, h, N * w)
    pos = torch.cat(all_pos, dim=3)  # (1, D, h, N * w)
    proprio_input = model.input_proj_robot_state(qpos)
    # the transformer, sequence-first
    src = src.flatten(2).permute(2, 0, 1)  # (L, B, D)
    pos = pos.flatten(2).permute(2, 0, 1).repeat(1, bs, 1)  # (L, B, D)
    query_pos = model.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # (Q, B, D)
    extra_pos = model.additional_pos_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # (2, B, D)
    pos = torch.cat([extra_pos, pos], dim=0)
    src = torch.cat([torch.stack([latent_input, proprio_input], dim=0), src], dim=0)  # (2 + L, B, D)
    memory = _encoder(model.transformer.encoder, src, pos)
    tgt = torch.zeros_like(query_pos)
    hs = _decoder_all_layers(model.transformer.decoder, tgt, memory, pos, query_pos).transpose(1, 2)[0]  # (B, Q, D)
    return model.action_head(hs), model.is_pad_head(hs), mu, logvar
