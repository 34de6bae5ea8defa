"""DDIM with the step taken to the next timestep the loop actually uses (MONAI 1.6.1 fault fixed).

MONAI 1.6.1's ``DDIMScheduler.set_timesteps`` spaces timesteps with ``linspace`` (999, 888, 777, ... at 10 steps)
but ``step`` moves to ``t - T // N`` (999 -> 899), so the sample handed to the next model call at 888 sits at the
wrong noise level. Here ``step`` / ``reversed_step`` look the neighbour up in ``self.timesteps``.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler as _MonaiDDIM

from ._timesteps import check_num_steps, next_timestep, prev_timestep
from .prediction import predict_x0_eps


class DDIMScheduler(_MonaiDDIM):
    """MONAI's DDIM (same arguments), stepping between the timesteps of ``set_timesteps``."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Validate 1 <= N <= T, then MONAI's linspace timesteps."""
        super().set_timesteps(check_num_steps(num_inference_steps, self.num_train_timesteps), device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update from ``timestep`` to the next used timestep; returns (prev_sample, pred_original)."""
        return self._step_to(model_output, timestep, prev_timestep(self.timesteps, timestep), sample, eta, generator)

    def reversed_step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic DDIM inversion from ``timestep`` up to the next used timestep."""
        return self._step_to(model_output, timestep, next_timestep(self.timesteps, timestep), sample, 0.0, None)

    def _step_to(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        target: int,
        sample: torch.Tensor,
        eta: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = int(timestep)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_prev = self.alphas_cumprod[target] if target >= 0 else self.final_alpha_cumprod
        pred_x0, pred_eps = predict_x0_eps(model_output, sample, alpha_prod_t, self.prediction_type)
        if self.clip_sample:
            pred_x0 = torch.clamp(pred_x0, self.clip_sample_values[0], self.clip_sample_values[1])
        std = 0.0
        if eta > 0 and target < t:
            variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
            std = eta * variance**0.5
        prev = alpha_prod_prev**0.5 * pred_x0 + (1 - alpha_prod_prev - std**2) ** 0.5 * pred_eps
        if eta > 0 and target < t:
            noise = torch.randn(
                model_output.shape, dtype=model_output.dtype, generator=generator, device=model_output.device
            )
            prev = prev + std * noise
        return prev, pred_x0
