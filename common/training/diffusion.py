"""Stage 2 of an LDM recipe: a conditioned DiffusionModelUNet trained on (cached) latents.

`ConditionedDiffusionPrepareBatch` extends MONAI's DiffusionPrepareBatch (noise, timesteps, epsilon or
v-prediction target) with a conditioner that turns the batch into a `Condition`; `ConditionedDiffusionInferer`
extends MONAI's DiffusionInferer so that one call can both concatenate covariates to the latent and give
cross-attention context (MONAI's inferer does one or the other). Works for 2D and 3D latents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer

from common.conditioning.base import Condition

PREDICTION_TYPES = ("epsilon", "v_prediction")


class ConditionedDiffusionPrepareBatch(DiffusionPrepareBatch):
    """(latents, target, (), {noise, timesteps, condition}) for one diffusion training step.

    Args:
        scheduler: MONAI-interface scheduler (gives num_train_timesteps and get_velocity for v-prediction).
        conditioner: callable batch -> Condition (None: unconditional). Prompt dropout, if any, lives there.
        image_key: batch key of the (already scaled) latents or images.
        prediction_type: "epsilon" (target = noise) or "v_prediction" (target = scheduler velocity).
    """

    def __init__(
        self,
        scheduler: Any,
        conditioner: Callable[[Mapping[str, Any]], Condition] | None = None,
        image_key: str = "latent",
        prediction_type: str = "epsilon",
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r}: use one of {PREDICTION_TYPES}")
        super().__init__(num_train_timesteps=int(scheduler.num_train_timesteps))
        self.scheduler = scheduler
        self.conditioner = conditioner
        self.image_key = image_key
        self.prediction_type = prediction_type

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        return noise

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no '{self.image_key}' key (keys: {sorted(batchdata)})")
        images = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=non_blocking).float()
        noise = self.get_noise(images)
        timesteps = self.get_timesteps(images)
        target = self.get_target(images, noise, timesteps)
        condition = self.conditioner(batchdata) if self.conditioner is not None else Condition()
        return images, target, (), {"noise": noise, "timesteps": timesteps, "condition": condition.to(images.device)}


class ConditionedDiffusionInferer(DiffusionInferer):
    """MONAI DiffusionInferer whose condition is a `Condition` (concat and/or cross-attention at once)."""

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        condition = condition if condition is not None else Condition()
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        return diffusion_model(x=condition.concat_to(noisy), timesteps=timesteps, context=condition.context)
