"""Latent diffusion sampling: one loop over a denoiser, classifier-free guidance, memory-bounded decoding."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from common.conditioning.base import Condition, ConditionError
from common.sampling.decode import DECODE_MODES, decode_latents
from common.sampling.denoiser import Denoiser, GuidedDenoiser, UNetDenoiser
from common.sampling.settings import GenerationSettings, check_num_samples


def _step_kwargs(scheduler: Any, generator: torch.Generator | None, device: torch.device) -> dict[str, Any]:
    """A generator for stochastic steps (DDPM), on the latents' device, derived once from the CPU generator."""
    if generator is None or "generator" not in inspect.signature(scheduler.step).parameters:
        return {}
    if generator.device != device:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return {"generator": torch.Generator(device).manual_seed(seed)}
    return {"generator": generator}


def denoise(
    denoiser: Denoiser,
    scheduler: Any,
    latents: torch.Tensor,
    condition: Condition | None,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The sampling loop: from noise ``latents`` to x_0 with ``scheduler`` (MONAI interface) over ``denoiser``.

    The loop knows nothing of the network: conditioning and guidance live in the denoiser. The per-step
    timestep tensors are built once.
    """
    scheduler.set_timesteps(int(num_inference_steps))
    timesteps = scheduler.timesteps
    t_dev = timesteps.to(latents.device).long()
    step_kw = _step_kwargs(scheduler, generator, latents.device)
    from tqdm.auto import tqdm

    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
        out = denoiser(latents, t_dev[i : i + 1], condition)
        latents, _ = scheduler.step(out, t, latents, **step_kw)
    return latents


class LatentDiffusionSampler:
    """Sample images from a latent diffusion model: a denoiser over latents, then the autoencoder's decoder.

    Why not MONAI's ``LatentDiffusionInferer.sample``: it passes no class labels or ControlNet scale, its guidance
    fills the unconditional input with -1 instead of the trained null, and it decodes the whole volume in one
    pass (13 GB for a 160x224x160 brain). Here:

    * the loop (``denoise``) calls one ``denoiser(x_t, t, condition)``; ``UNetDenoiser`` feeds the UNet
      (and a ControlNet) from the ``Condition``; ``GuidedDenoiser`` adds guidance as ONE batched call per step;
    * generation settings (steps, guidance, progress) are passed per call and validated once
      (``common.sampling.settings``);
    * a decode mode (``full`` | ``slab`` | ``tiled`` | ``auto``, see ``common.sampling.decode``);
    * ``release_denoiser()`` frees the denoiser's weights between drawing latents and decoding them.

    Args:
        autoencoder: MONAI AutoencoderKL / VQVAE (``decode_stage_2_outputs``).
        denoiser: a ``UNetDenoiser``, or a DiffusionModelUNet (wrapped in one).
        scheduler: MONAI-interface scheduler (``set_timesteps``, ``timesteps``, ``step``), e.g. from
            ``common.schedulers.build_scheduler``; its ``prediction_type`` is what the UNet predicts.
        scale_factor: latent scale factor read from the weights (latents are divided by it before decoding).
        latent_shape: (C, *spatial) of the diffusion latent.
        decode: decode mode; slab_mb / tile / tile_overlap / tile_ramp are its options.
        device: where to run (default: the UNet's device).
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        denoiser: UNetDenoiser | nn.Module,
        scheduler: Any,
        scale_factor: float,
        latent_shape: Sequence[int],
        decode: str = "auto",
        slab_mb: float = 64.0,
        tile: int | Sequence[int] = 32,
        tile_overlap: int = 12,
        tile_ramp: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if not float(scale_factor) > 0:
            raise ValueError(f"scale_factor must be > 0 (read it from the weights), got {scale_factor}")
        if len(latent_shape) not in (3, 4) or any(int(s) < 1 for s in latent_shape):
            raise ValueError(f"latent_shape must be (C, H, W) or (C, D, H, W) of positive ints, got {list(latent_shape)}")
        if decode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {decode!r}; use one of {', '.join(DECODE_MODES)}")
        self.denoiser = denoiser if isinstance(denoiser, UNetDenoiser) else UNetDenoiser(denoiser)
        for net in self.denoiser.networks():
            net.eval()
        self.autoencoder = autoencoder.eval()
        self.scheduler = scheduler
        self.scale_factor = float(scale_factor)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.decode_mode = decode
        self.decode_kw = {"slab_mb": slab_mb, "tile": tile, "overlap": tile_overlap, "ramp": tile_ramp}
        if device is None:
            param = next(self.denoiser.unet.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.released = False

    # ---------------------------------------------------------------- helpers
    def _prepare(self, condition: Condition | None, n: int, name: str) -> Condition | None:
        if condition is None:
            return None
        if not isinstance(condition, Condition):
            raise TypeError(f"{name} must be a common.conditioning.Condition, got {type(condition).__name__}")
        try:
            return condition.to(self.device, torch.float32).expand(n)
        except ConditionError as err:
            raise ValueError(f"{name}: {err}; give batch 1 (shared) or num_samples={n}") from None

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial latent noise, drawn on the CPU (same seed, same noise on any device)."""
        return torch.randn((int(num_samples), *self.latent_shape), generator=generator, dtype=torch.float32)

    def release_denoiser(self) -> None:
        """Free the denoiser's weights (moved to the meta device) so the decoder has the memory; sampling after
        this is an error. Used between drawing every latent and decoding them (3D bundles)."""
        for net in self.denoiser.networks():
            net.to("meta")
        self.released = True
        from common.sampling.decode import release_freed_memory

        release_freed_memory()

    # ---------------------------------------------------------------- sampling
    @torch.inference_mode()
    def sample_latents(
        self,
        condition: Condition | None = None,
        null_condition: Condition | None = None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        settings: GenerationSettings | None = None,
    ) -> torch.Tensor:
        """Final scaled latents [num_samples, *latent_shape] (not decoded)."""
        if self.released:
            raise RuntimeError("the denoiser was released (release_denoiser); build a new sampler to sample again")
        settings = settings or GenerationSettings()
        n = check_num_samples(num_samples)
        cond = self._prepare(condition, n, "condition")
        null = self._prepare(null_condition, n, "null_condition") if settings.guided else None
        denoiser = GuidedDenoiser(self.denoiser, settings.guidance_scale, null)  # checks the null condition
        if noise is None:
            noise = self.noise(n, generator)
        elif tuple(noise.shape[:2]) != (n, self.latent_shape[0]) or noise.ndim != len(self.latent_shape) + 1:
            # the spatial size may differ from latent_shape: the UNet is fully convolutional (an upscaler's latent
            # follows its input's size)
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match (num_samples, latent channels, "
                             f"*spatial) = {(n, self.latent_shape[0])} + {len(self.latent_shape) - 1} spatial dims")
        return denoise(
            denoiser, self.scheduler, noise.to(self.device, torch.float32), cond, settings.num_inference_steps,
            generator, settings.progress,
        )

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode scaled diffusion latents into images with the configured decode mode."""
        return decode_latents(self.autoencoder, latents / self.scale_factor, self.decode_mode, **self.decode_kw)

    def sample(
        self,
        condition: Condition | None = None,
        null_condition: Condition | None = None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_latents: bool = False,
        settings: GenerationSettings | None = None,
        **setting_values: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Decoded images [num_samples, C_img, *spatial] (and the final scaled latents if return_latents).

        condition / null_condition: ``Condition`` with batch 1 (shared) or num_samples; the null condition is
        required when guidance_scale != 1. settings: a ``GenerationSettings``, or its values
        (``num_inference_steps``, ``guidance_scale``, ``progress``) as keywords. noise: optional initial latent
        noise [num_samples, *latent_shape]; otherwise drawn on the CPU from ``generator``.
        """
        if settings is not None and setting_values:
            raise TypeError("give either settings or their values as keywords, not both")
        settings = settings if settings is not None else GenerationSettings(**setting_values)
        latents = self.sample_latents(condition, null_condition, num_samples, generator, noise, settings)
        images = self.decode(latents)
        return (images, latents) if return_latents else images
