"""DDPM whose ancestral step uses the posterior between the two timesteps actually used (MONAI 1.6.1 fault fixed).

MONAI 1.6.1 computes the step from ``t`` with ``alphas_cumprod[t - 1]`` and ``betas[t]``: right only when every
training timestep is visited. With N < T inference steps the chain jumps from ``t`` to ``t'`` < t - 1, and the exact
posterior q(x_t' | x_t, x_0) uses the effective ``beta = 1 - abar_t / abar_t'``:
mean = sqrt(abar_t') beta / (1 - abar_t) x_0 + sqrt(abar_t / abar_t') (1 - abar_t') / (1 - abar_t) x_t,
var = (1 - abar_t') / (1 - abar_t) beta.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDPMScheduler as _MonaiDDPM

from ._timesteps import check_num_steps, prev_timestep
from .prediction import predict_x0_eps


class DDPMScheduler(_MonaiDDPM):
    """MONAI's DDPM (same arguments), exact for any number of inference steps."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Validate 1 <= N <= T, then MONAI's linspace timesteps."""
        super().set_timesteps(check_num_steps(num_inference_steps, self.num_train_timesteps), device)

    def posterior(self, timestep: int, prev: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Coefficients (x0_coef, xt_coef, small variance, effective beta) of q(x_prev | x_t, x_0)."""
        abar_t = self.alphas_cumprod[timestep]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.one
        beta = 1 - abar_t / abar_prev
        x0_coef = abar_prev**0.5 * beta / (1 - abar_t)
        xt_coef = (abar_t / abar_prev) ** 0.5 * (1 - abar_prev) / (1 - abar_t)
        var = (1 - abar_prev) / (1 - abar_t) * beta
        return x0_coef, xt_coef, var, beta

    def _variance(self, var: torch.Tensor, beta: torch.Tensor, predicted: torch.Tensor | None) -> torch.Tensor:
        """MONAI's variance types, with the single-step beta replaced by the effective one."""
        if self.variance_type == "fixed_small":
            return torch.clamp(var, min=1e-20)
        if self.variance_type == "fixed_large":
            return beta
        if self.variance_type == "learned" and predicted is not None:
            return predicted
        if self.variance_type == "learned_range" and predicted is not None:
            frac = (predicted + 1) / 2
            return frac * beta + (1 - frac) * var
        return var

    def step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral step from ``timestep`` to the next used timestep; returns (prev_sample, pred_original)."""
        predicted = None
        if model_output.ndim > 1 and model_output.shape[1] == sample.shape[1] * 2 and self.variance_type in ("learned", "learned_range"):
            model_output, predicted = torch.split(model_output, sample.shape[1], dim=1)
        t = int(timestep)
        prev = prev_timestep(self.timesteps, t)
        pred_x0, _ = predict_x0_eps(model_output, sample, self.alphas_cumprod[t], self.prediction_type)
        if self.clip_sample:
            pred_x0 = torch.clamp(pred_x0, self.clip_sample_values[0], self.clip_sample_values[1])
        x0_coef, xt_coef, var, beta = self.posterior(t, prev)
        prev_sample = x0_coef * pred_x0 + xt_coef * sample
        if prev >= 0:
            noise = torch.randn(
                model_output.shape, dtype=model_output.dtype, generator=generator, device=model_output.device
            )
            prev_sample = prev_sample + self._variance(var, beta, predicted) ** 0.5 * noise
        return prev_sample, pred_x0
