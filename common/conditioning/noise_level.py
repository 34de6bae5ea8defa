"""Super-resolution conditioning: the low-resolution image, noised to a level, with that level as a class label.

Noise-conditioning augmentation (Ho et al. 2022, "Cascaded Diffusion Models"; diffusers' x4 upscaler): in training the
low-resolution image is noised by a second DDPM schedule at a level drawn in [0, max_noise_level), and the UNet is told
the level through its class embedding, so at sampling time one can pick how much the upscaler should trust its input
(a cascade's first stage output is imperfect; a little noise hides its artefacts). The level only reaches the network
if the UNet has a class embedding with room for every level (`num_class_embeds >= max_noise_level`): MONAI 1.6.1's
DiffusionModelUNet silently ignores `class_labels` when `num_class_embeds` is None, which is how the published upscaler
recipe (and MONAI's 2D super-resolution tutorial) lost the conditioning; `UNetDenoiser` refuses that in one line.

The image goes to the UNet concatenated to the latent's channels (`Condition.image`), so it must lie on the latent
grid: for an autoencoder with one 2x downsampling, the 2 mm volume of a 1 mm target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from common.conditioning.base import Condition, ConditionError
from common.sampling.settings import check_int, check_num_samples

__all__ = ["NoiseLevelConditioner"]


class NoiseLevelConditioner:
    """Implements `common.conditioning.base.Conditioner` for a noised low-resolution image and its noise level.

    Args:
        key: the batch key of the low-resolution image ([B, C, *latent spatial]).
        max_noise_level: training levels are drawn in [0, max_noise_level); the UNet needs
            `num_class_embeds >= max_noise_level`.
        noise_level: the level used at sampling time (and for `from_batch(train=False)`).
        num_train_timesteps, schedule, beta_start, beta_end: the augmentation's DDPM schedule (the published
            upscaler: 1000 steps, linear 0.0015-0.0195).
    """

    def __init__(self, key: str = "image_lowres", max_noise_level: int = 350, noise_level: int = 1,
                 num_train_timesteps: int = 1000, schedule: str = "linear_beta", beta_start: float = 0.0015,
                 beta_end: float = 0.0195) -> None:
        from monai.networks.schedulers import DDPMScheduler

        self.key = key
        self.max_noise_level = check_int("max_noise_level", max_noise_level, 1, int(num_train_timesteps))
        self.noise_level = self.check_level(noise_level)
        self.scheduler = DDPMScheduler(num_train_timesteps=int(num_train_timesteps), schedule=schedule,
                                       beta_start=beta_start, beta_end=beta_end)

    @property
    def num_class_embeds(self) -> int:
        """What the UNet's `num_class_embeds` must be at least: one embedding per level."""
        return self.max_noise_level

    def check_level(self, level: Any) -> int:
        """A noise level the model was trained on, or a one-line error naming the override."""
        return check_int("noise_level", level, 0, self.max_noise_level - 1)

    def noised(self, images: torch.Tensor, levels: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        """The images noised to `levels` ([B] integers) and the levels as class labels."""
        images = torch.as_tensor(images).float()
        if not torch.isfinite(images).all():
            raise ConditionError("the low-resolution image has NaN or inf values")
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        levels = levels.to(images.device, torch.long)
        return Condition(image=self.scheduler.add_noise(images, noise, levels), class_labels=levels)

    def from_batch(self, batch: Mapping[str, Any], train: bool = True) -> Condition:
        """Training: each image at its own random level in [0, max_noise_level); otherwise at `noise_level`."""
        if self.key not in batch:
            raise ConditionError(f"batch has no {self.key!r} (keys: {sorted(batch)}); set the conditioner's key")
        images = torch.as_tensor(batch[self.key])
        n = images.shape[0]
        levels = torch.randint(0, self.max_noise_level, (n,)) if train else torch.full((n,), self.noise_level)
        return self.noised(images, levels)

    def from_values(self, num_samples: int = 1, image: Any = None, noise_level: Any = None, seed: int = 0) -> Condition:
        """One low-resolution image per sample (or one shared), noised at `noise_level` with the noise of `seed`."""
        num_samples = check_num_samples(num_samples)
        if image is None:
            raise ConditionError("missing low-resolution image: give the input image (--input_image / --input_dir)")
        images = torch.as_tensor(image).float()
        if images.shape[0] not in (1, num_samples):
            raise ConditionError(f"{images.shape[0]} low-resolution images for num_samples={num_samples}: give 1 or one each")
        level = self.noise_level if noise_level is None else self.check_level(noise_level)
        images = images.expand(num_samples, *images.shape[1:])
        return self.noised(images, torch.full((num_samples,), level), torch.Generator().manual_seed(int(seed)))

    def null(self, num_samples: int = 1) -> Condition:
        """Super-resolution is not guided: there is no null low-resolution image."""
        raise ConditionError("the upscaler has no unconditional (null) input, so it cannot be guided: use --guidance_scale 1")
