"""Real-Time Chunking for the Diffusion policy: training-free guided inpainting of the next chunk.

Black, Galliker and Levine 2025, "Real-Time Execution of Action Chunking Flow Policies" (RTC,
arXiv 2506.07339), Section 4. A chunk requested at step t while q actions are still queued overlaps
them on its first q positions; by the time it arrives, its first d (the inference delay) have been
played from the queue. Sampling is therefore guided so that its start agrees with the queue: the
first d positions are held to the queued actions, the rest of the overlap is pulled toward them
with weights that decay along the chunk, and the positions after the overlap are free.

The paper's notation: H the prediction horizon (the chunk size), s the execution horizon (the
actions played from one chunk before the next query), d the delay; here H - s = q.

- Soft mask (eq. 5): W_i = 1 for i < d; c_i (e^c_i - 1) / (e - 1) with c_i = (H - s - i) / (H - s - d + 1)
  for d <= i < H - s; 0 for i >= H - s.
- Guidance (eqs. 2-4) for a flow policy whose sample A^tau goes from noise (tau = 0) to the chunk (tau = 1):
      v' = v + min(beta, (1 - tau) / (tau r^2)) (Y - A1)^T diag(W) dA1/dA^tau,
      A1 = A^tau + (1 - tau) v,   r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2),
  Y the queued actions (zero beyond the overlap), beta the guidance weight's ceiling (5 in the paper).

Our Diffusion policy samples a variance-preserving process x_t = alpha x_0 + sigma eps (alpha^2 + sigma^2
= 1). The same state in the flow's variables is A^tau = x_t / (alpha + sigma) with tau = alpha / (alpha +
sigma); the flow's clean estimate A1 is the sampler's clean chunk x0, and dA1/dA^tau = (alpha + sigma)
dx0/dx_t. The guided velocity then moves the clean estimate by (1 - tau) w (alpha + sigma) g = sigma w g,
with w the clipped weight and g = (Y - x0)^T diag(W) dx0/dx_t, a vector-Jacobian product through the
denoiser. Each denoising step therefore replaces x0 by x0 + sigma w g and steps the sampler (DDIM, DDPM
or DPM-Solver++) from the guided estimate. Unclipped, sigma w g = g / alpha, pseudoinverse-guided
diffusion's (PiGDM) step for a variance-preserving process: the two agree.
"""
import dataclasses
import math

import numpy as np
import torch

MAX_GUIDANCE_WEIGHT = 5.0  # beta, the paper's


def soft_mask(delay, overlap, horizon):
    """Eq. 5: the guidance weight of each chunk position (horizon,) float32. delay: d, the positions
    played from the queue before the chunk arrives; overlap: H - s, the positions the queue covers."""
    overlap = min(overlap, horizon)
    frozen = min(delay, overlap)
    weights = np.zeros(horizon, dtype=np.float32)
    weights[:frozen] = 1
    i = np.arange(frozen, overlap)
    c = (overlap - i) / (overlap - frozen + 1)
    weights[frozen:overlap] = c * np.expm1(c) / (math.e - 1)
    return weights


@dataclasses.dataclass
class Inpainting:
    """What one query is guided toward: target Y (B, H, A), the queued actions in the policy's
    normalised units, zero after them; weights W (H,) from soft_mask; beta the weight's ceiling."""
    target: torch.Tensor
    weights: torch.Tensor
    max_weight: float = MAX_GUIDANCE_WEIGHT

    @classmethod
    def of_queue(cls, queued, delay, horizon, max_weight=MAX_GUIDANCE_WEIGHT):
        """queued [(A,), ...]: the executor's actions for the step of the request and the ones after it."""
        queued = torch.stack([torch.as_tensor(a, dtype=torch.float32) for a in queued[:horizon]])  # (q, A)
        target = torch.zeros(1, horizon, queued.shape[-1], device=queued.device)  # (1, H, A)
        target[0, :len(queued)] = queued
        weights = torch.from_numpy(soft_mask(delay, len(queued), horizon)).to(queued.device)  # (H,)
        return cls(target, weights, max_weight)


def guidance_weight(alpha, sigma, max_weight):
    """min(beta, (1 - tau) / (tau r^2)) at the flow time tau = alpha / (alpha + sigma) of this step."""
    tau = alpha / (alpha + sigma)
    if tau <= 0 or tau >= 1:
        return max_weight  # the weight is unbounded at both ends
    r2 = (1 - tau) ** 2 / (tau ** 2 + (1 - tau) ** 2)
    return min(max_weight, (1 - tau) / (tau * r2))


def guided_clean_chunk(clean_chunk, sample, alpha, sigma, inpainting):
    """The clean-chunk estimate of one denoising step, guided toward inpainting.target.

    clean_chunk: x_t (B, H, A) -> x0 (B, H, A), differentiable (the denoiser and the sampler's
    formula for x0); sample: x_t; alpha, sigma: sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t).
    -> x0 + sigma w g (B, H, A), no gradient attached."""
    with torch.enable_grad():
        x = sample.detach().requires_grad_(True)
        clean = clean_chunk(x)  # (B, H, A)
        error = (inpainting.target - clean.detach()) * inpainting.weights[:, None]  # (B, H, A), no graph
        (g,) = torch.autograd.grad(clean, x, error)  # (Y - x0)^T diag(W) dx0/dx_t
    return clean.detach() + sigma * guidance_weight(alpha, sigma, inpainting.max_weight) * g
