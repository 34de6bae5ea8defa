"""Latents of a frozen autoencoder for stage-2 training, and the latent scale factor.

Encoding a 3D volume costs far more than a UNet step on its latent, so every training image is encoded
once (posterior mean and sigma kept in memory) and each epoch draws a fresh posterior sample from them.
The scale factor 1/std is computed over all training latents (not one batch) and travels with the
diffusion weights (common.training.handlers.SafetensorsExport).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


def compute_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents (all of them), so the diffusion model sees unit-variance inputs."""
    std = float(latents.float().std())
    if not std > 0:
        raise ValueError("latents have zero variance: the autoencoder is not trained (check its weights)")
    return 1.0 / std


def encode_latent(autoencoder: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean, sigma) of a KL autoencoder's posterior, or (quantised latent, None) for a VQVAE.

    A VQVAE's stage-2 input is its deterministic `encode_stage_2_inputs`. For an AutoencoderKL the posterior is
    kept (its `encode_stage_2_inputs` draws one sample with the global RNG), so that each epoch can draw a fresh,
    seeded sample from the cache.
    """
    if hasattr(autoencoder, "quantizer"):
        return autoencoder.encode_stage_2_inputs(image), None
    z_mu, z_sigma = autoencoder.encode(image)
    return z_mu, z_sigma


def _scalar_items(entry: Mapping[str, Any], skip: set[str]) -> dict[str, Any]:
    """The entry's numeric / string scalars (covariates, ids) to carry next to the latent."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in skip:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = value.reshape(()).float()
        elif isinstance(value, (bool, int, float)):
            out[key] = torch.tensor(float(value))
        elif isinstance(value, str):
            out[key] = value
    return out


class LatentCacheDataset(Dataset):
    """Items {latent_key: scaled latent, covariates...} for every datalist entry, encoded lazily at first use.

    Args:
        data: datalist entries (dicts with `image_key` and covariates).
        transform: loads one entry (e.g. LoadImaged, scaling); applied once per entry when encoding (None: the
            entries are already loaded items, e.g. ``common.training.slices.VolumeSlices``).
        autoencoder: the stage-1 network (AutoencoderKL or VQVAE); frozen and in eval mode here (a VQVAE
            updates its EMA codebook in train mode even under no_grad).
        autoencoder_weights: safetensors/torch file loaded strictly into it before encoding (None: as is).
        sample_posterior: draw z = mu + sigma * eps per item access (else the mean; a VQVAE has no sigma).
        scale_factor: fixed scale; None computes 1/std over all training latents (seeded, same on every rank).
        device: where to encode.
        tokens: keep a VQVAE's code indices (``index_quantize``: long [*spatial], the token grid an
            autoregressive prior trains on) instead of latents; no posterior and no scale factor.
        keep_keys: image keys carried next to the latent as they are (a ControlNet's full-resolution
            conditioning image, e.g. the FLAIR slice of a T1 slice's latent).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None,
        autoencoder: torch.nn.Module,
        autoencoder_weights: str | None = None,
        image_key: str = "image",
        latent_key: str = "latent",
        sample_posterior: bool = True,
        scale_factor: float | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        tokens: bool = False,
        keep_keys: Sequence[str] = (),
    ) -> None:
        if len(data) == 0:
            raise ValueError("LatentCacheDataset: the datalist split is empty")
        self.data = list(data)
        self.transform = transform
        self.autoencoder = autoencoder
        self.autoencoder_weights = autoencoder_weights
        self.image_key = image_key
        self.latent_key = latent_key
        self.sample_posterior = sample_posterior
        self.scale_factor = None if scale_factor is None else float(scale_factor)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.tokens = bool(tokens)
        self.keep_keys = [keep_keys] if isinstance(keep_keys, str) else list(keep_keys)
        if self.tokens and not hasattr(autoencoder, "index_quantize"):
            raise ValueError("tokens=True needs a VQVAE stage 1 (it has no index_quantize)")
        if self.tokens:
            self.sample_posterior, self.scale_factor = False, 1.0
        self._mu: torch.Tensor | None = None
        self._sigma: torch.Tensor | None = None
        self._extras: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.data)

    @torch.no_grad()
    def build(self) -> None:
        """Load the frozen autoencoder, encode every entry, compute the scale factor (idempotent)."""
        if self._mu is not None:
            return
        if self.autoencoder_weights:
            from common.weights import load_into

            load_into(self.autoencoder, self.autoencoder_weights, strict=True)
        net = self.autoencoder.to(self.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        mus, sigmas = [], []
        for entry in self.data:
            item = dict(entry) if self.transform is None else self.transform(dict(entry))
            image = torch.as_tensor(item[self.image_key]).float().unsqueeze(0).to(self.device)
            if self.tokens:
                z_mu, z_sigma = net.index_quantize(image), None
            else:
                z_mu, z_sigma = encode_latent(net, image)
            mus.append(z_mu[0].cpu())
            sigmas.append(torch.zeros_like(z_mu[0].cpu()) if z_sigma is None else z_sigma[0].cpu())
            kept = {k: torch.as_tensor(item[k]).float() for k in self.keep_keys}
            self._extras.append({**_scalar_items(item, skip={self.image_key, *self.keep_keys}), **kept})
        shapes = {tuple(m.shape) for m in mus}
        if len(shapes) != 1:
            raise ValueError(f"latents of different shapes {sorted(shapes)}: resize the images to one shape")
        self._mu, self._sigma = torch.stack(mus), torch.stack(sigmas)
        if self.scale_factor is None:
            gen = torch.Generator().manual_seed(self.seed)
            z = self._mu + self._sigma * torch.randn(self._mu.shape, generator=gen) if self.sample_posterior else self._mu
            self.scale_factor = compute_scale_factor(z)
        logger.info(
            "encoded %d %s of shape %s; scale factor %.6f", len(mus), "token grids" if self.tokens else "latents",
            tuple(self._mu.shape[1:]), self.scale_factor,
        )

    @property
    def latent_shape(self) -> tuple[int, ...]:
        self.build()
        assert self._mu is not None
        return tuple(self._mu.shape[1:])

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.build()
        assert self._mu is not None and self._sigma is not None and self.scale_factor is not None
        z = self._mu[index]
        if self.tokens:
            return {self.latent_key: z, **self._extras[index]}
        if self.sample_posterior:
            z = z + self._sigma[index] * torch.randn_like(z)
        return {self.latent_key: z * self.scale_factor, **self._extras[index]}


class BuildLatents:
    """Handler: encode the latents at STARTED (before the first batch), so the log shows it as its own step."""

    def __init__(self, dataset: LatentCacheDataset) -> None:
        self.dataset = dataset

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        import time

        start = time.perf_counter()
        self.dataset.build()
        engine.logger.info(
            "latents: %d of shape %s encoded in %.0f s; scale factor %.6f",
            len(self.dataset), self.dataset.latent_shape, time.perf_counter() - start, self.dataset.scale_factor,
        )
