"""Stage 2 of an LDM recipe: a conditioned DiffusionModelUNet trained on (cached) latents.

`ConditionedDiffusionPrepareBatch` extends MONAI's DiffusionPrepareBatch (noise, timesteps, epsilon or
v-prediction target) with a conditioner (`common.conditioning.base.Conditioner`) that turns the batch into a
`Condition`; `ConditionedDiffusionInferer` computes the model output through the same denoiser adapter that
sampling uses (`common.sampling.denoiser.UNetDenoiser`), so the network is fed one way. With `frozen_unet`
the trained network is a ControlNet over that frozen base. Works for 2D and 3D latents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer

from common.conditioning.base import Condition, Conditioner
from common.sampling.denoiser import UNetDenoiser

PREDICTION_TYPES = ("epsilon", "v_prediction")


class ConditionedDiffusionPrepareBatch(DiffusionPrepareBatch):
    """(latents, target, (), {noise, timesteps, condition}) for one diffusion training step.

    Args:
        scheduler: MONAI-interface scheduler (gives num_train_timesteps and get_velocity for v-prediction).
        conditioner: a Conditioner (`from_batch(batch, train=True)`; None: unconditional). Condition dropout,
            if any, lives there.
        image_key: batch key of the (already scaled) latents or images.
        prediction_type: "epsilon" (target = noise) or "v_prediction" (target = scheduler velocity).
    """

    def __init__(
        self,
        scheduler: Any,
        conditioner: Conditioner | None = None,
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
        condition = self.conditioner.from_batch(batchdata, train=True) if self.conditioner is not None else Condition()
        return images, target, (), {"noise": noise, "timesteps": timesteps, "condition": condition.to(images.device)}


class ConditionedDiffusionInferer(DiffusionInferer):
    """MONAI DiffusionInferer whose condition is a `Condition`, fed through `UNetDenoiser`.

    Args:
        scheduler: adds the training noise.
        frozen_unet: when set, the trainer's network is a ControlNet steering this frozen base UNet.
    """

    def __init__(self, scheduler: Any, frozen_unet: torch.nn.Module | None = None) -> None:
        super().__init__(scheduler)
        self.frozen_unet = frozen_unet

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        if self.frozen_unet is None:
            denoiser = UNetDenoiser(diffusion_model)
        else:
            denoiser = UNetDenoiser(self.frozen_unet, controlnet=diffusion_model)
        return denoiser(noisy, timesteps, condition)
