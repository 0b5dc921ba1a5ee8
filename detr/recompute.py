"""Gradient checkpointing: a block's activations recomputed in the backward pass instead of kept."""
import torch
from torch.utils.checkpoint import checkpoint


def recompute(enabled, block, *inputs):
    """block(*inputs); with `enabled` and gradients on, its activations are not kept but recomputed
    in the backward pass (the same values and gradients, dropout included: the RNG state is replayed)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)
