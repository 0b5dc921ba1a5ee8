"""The Diffusion sampling loops of an exported policy in float32 numpy, without torch: each turns
the initial noise into the clean chunk (in [-1, 1]) by calling the exported denoiser once per step.

    sampler = make_sampler(manifest['diffusion'])
    chunk = sampler.sample(noise, denoise)  # noise (B, T, A); denoise(sample, t) -> the prediction (B, T, A)

Both reproduce the diffusers schedulers the policy samples with in evaluation (policies/diffusion.py),
for a denoiser that predicts the noise ('epsilon') or the clean chunk ('sample'), the clean chunk
clipped to [-1, 1] at every step.
"""
import numpy as np

SAMPLERS = ('ddim', 'dpmsolver')  # policy.json's diffusion.sampler; exports without the key: ddim
CONSTANTS = {'ddim': ('timesteps', 'num_train_timesteps', 'alphas_cumprod', 'final_alpha_cumprod'),
             'dpmsolver': ('timesteps', 'sigmas')}


def make_sampler(constants):
    """policy.json's 'diffusion' constants -> the sampler they describe; a ValueError naming the key
    that is missing or wrong."""
    name = constants.get('sampler', 'ddim')
    if name not in SAMPLERS:
        raise ValueError(f"diffusion.sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    missing = [key for key in CONSTANTS[name] if key not in constants]
    if missing:
        raise ValueError(f"diffusion lacks {', '.join(missing)} (the {name} sampler's constants)")
    if name == 'dpmsolver' and len(constants['sigmas']) != len(constants['timesteps']) + 1:
        raise ValueError(f"diffusion.sigmas has {len(constants['sigmas'])} values: expected one per timestep "
                         f"and a final 0 ({len(constants['timesteps']) + 1})")
    return DDIM(constants) if name == 'ddim' else DPMSolver(constants)


class DDIM:
    """diffusers' DDIMScheduler.step, deterministic (eta 0; Song et al. 2021, arXiv 2010.02502)."""

    def __init__(self, constants):
        self.alphas_cumprod = np.asarray(constants['alphas_cumprod'], dtype=np.float32)  # (num_train_timesteps,)
        self.timesteps = [int(t) for t in constants['timesteps']]  # descending
        self.step_ratio = constants['num_train_timesteps'] // len(self.timesteps)
        self.final_alpha_cumprod = np.float32(constants['final_alpha_cumprod'])
        self.prediction_type = constants.get('prediction_type', 'epsilon')  # older exports: epsilon

    def step(self, prediction, t, sample):
        """The sample at the step after t: (B, T, A) float32."""
        prev_t = t - self.step_ratio
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        if self.prediction_type == 'epsilon':
            eps = prediction
            original = (sample - np.sqrt(1 - alpha_t) * eps) / np.sqrt(alpha_t)
        else:
            original = prediction
            eps = (sample - np.sqrt(alpha_t) * original) / np.sqrt(1 - alpha_t)
        original = np.clip(original, -1, 1)
        return (np.sqrt(alpha_prev) * original + np.sqrt(1 - alpha_prev) * eps).astype(np.float32)

    def sample(self, noise, denoise):
        sample = np.asarray(noise, dtype=np.float32)
        for t in self.timesteps:
            sample = self.step(denoise(sample, t), t, sample)
        return sample


class DPMSolver:
    """diffusers' DPMSolverMultistepScheduler as the policy configures it: DPM-Solver++ (Lu et al. 2022,
    arXiv 2211.01095), the data-prediction solver, second-order multistep (its DPM-Solver++(2M)), first
    order (the one-step update, which is DDIM's) at the first step and at the last, which ends at noise
    level 0. With x_t = alpha_t x_0 + sigma_t noise and lambda_t = log(alpha_t / sigma_t), one step
    from s to t with h = lambda_t - lambda_s and the clean-chunk estimates D0 (at s) and D1 (their
    finite difference over the previous step, divided by r = h_prev / h):
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) (D0 + D1 / 2)."""

    def __init__(self, constants):
        self.timesteps = [int(t) for t in constants['timesteps']]  # descending, S of them
        sigmas = np.asarray(constants['sigmas'], dtype=np.float32)  # (S + 1,): sqrt((1 - a) / a), the last 0
        self.alpha = (1 / np.sqrt(sigmas ** 2 + 1)).astype(np.float32)  # (S + 1,)
        self.sigma = (sigmas * self.alpha).astype(np.float32)
        with np.errstate(divide='ignore'):  # lambda is +inf at noise level 0
            self.lam = (np.log(self.alpha) - np.log(self.sigma)).astype(np.float32)
        self.prediction_type = constants.get('prediction_type', 'epsilon')

    def clean_chunk(self, prediction, i, sample):
        """The denoiser's prediction at step i -> the clean-chunk estimate, clipped to [-1, 1]."""
        if self.prediction_type == 'epsilon':
            prediction = (sample - self.sigma[i] * prediction) / self.alpha[i]
        return np.clip(prediction, -1, 1)

    def update(self, i, sample, estimates):
        """Step i -> i + 1 from the estimates so far (the last is step i's)."""
        h = self.lam[i + 1] - self.lam[i]
        decay = self.alpha[i + 1] * (np.exp(-h) - 1)
        x = (self.sigma[i + 1] / self.sigma[i]) * sample - decay * estimates[-1]
        if len(estimates) > 1 and i < len(self.timesteps) - 1:  # second order between the first and last steps
            r = (self.lam[i] - self.lam[i - 1]) / h
            x = x - 0.5 * decay * (estimates[-1] - estimates[-2]) / r
        return x.astype(np.float32)

    def sample(self, noise, denoise):
        sample = np.asarray(noise, dtype=np.float32)
        estimates = []
        for i, t in enumerate(self.timesteps):
            estimates = [*estimates[-1:], self.clean_chunk(denoise(sample, t), i, sample)]
            sample = self.update(i, sample, estimates)
        return sample
