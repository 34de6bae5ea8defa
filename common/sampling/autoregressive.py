"""Sampling from an autoregressive prior over a VQ-VAE's tokens, behind the interface ``run_sampling`` drives.

``run_sampling`` seeds one "noise" tensor per sample: here it is one uniform number per token, and token i is
drawn by inverting the CDF of the (temperature-scaled, top-k filtered) next-token distribution at that uniform.
So a sample depends on its own seed only, not on the batch it was drawn in, exactly as the diffusion samplers.
MONAI's ``VQVAETransformerInferer.sample`` draws with ``torch.multinomial`` from the global RNG and can also draw
the begin-of-sequence token; here only codebook entries are drawn.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from common.sampling.settings import GenerationSettings, check_float, check_int, check_num_samples
from common.tokens.cache import KVCacheDecoder
from common.tokens.ordering import TokenOrdering


def next_token(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """[B] token indices drawn from logits [B, V] by inverse CDF at uniforms [B] in [0, 1)."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    index = torch.searchsorted(cdf, (uniforms.float() * cdf[:, -1]).unsqueeze(-1), right=True)
    return index.squeeze(-1).clamp_(max=logits.shape[-1] - 1)


class AutoregressiveSampler:
    """Draw token grids with a DecoderOnlyTransformer and decode them with the VQVAE.

    Args:
        vqvae: MONAI VQVAE (stage 1); its codebook size sets the vocabulary, BOS is the index after it.
        transformer: MONAI DecoderOnlyTransformer over num_codes + 1 tokens.
        ordering: the reading order the transformer was trained with (``common.tokens.read_ordering``).
        temperature: > 0; < 1 sharpens, > 1 flattens the next-token distribution.
        top_k: draw only among the k most likely codes (0: all).
    """

    def __init__(self, vqvae: nn.Module, transformer: nn.Module, ordering: TokenOrdering, temperature: float = 1.0,
                 top_k: int = 0, device: str | torch.device | None = None) -> None:
        self.num_codes = int(vqvae.quantizer.quantizer.num_embeddings)
        self.temperature = check_float("temperature", temperature, 1e-3, 100.0, "1.0")
        self.top_k = check_int("top_k", top_k, 0, self.num_codes)
        if int(transformer.max_seq_len) < ordering.length:
            raise ValueError(f"the transformer reads {transformer.max_seq_len} tokens but the grid {ordering.token_shape} "
                             f"has {ordering.length}: the weights and the ordering do not belong together")
        self.vqvae = vqvae.eval()
        self.transformer = transformer.eval()
        self.ordering = ordering
        self.device = torch.device(device) if device is not None else next(transformer.parameters()).device
        self.latent_shape = (ordering.length,)

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """One uniform per token and sample, drawn on the CPU."""
        return torch.rand((int(num_samples), *self.latent_shape), generator=generator, dtype=torch.float64)

    def release_denoiser(self) -> None:
        """Nothing to free: the transformer is small next to the decoder (kept for the run_sampling interface)."""

    @torch.inference_mode()
    def sample_latents(self, condition: Any = None, null_condition: Any = None, num_samples: int = 1,
                       generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                       settings: GenerationSettings | None = None) -> torch.Tensor:
        """Token grids [num_samples, *token_shape] (long). condition/guidance: none (an unconditional prior)."""
        from tqdm.auto import tqdm

        settings = settings or GenerationSettings()
        if condition is not None or settings.guided:
            raise ValueError("the transformer prior is unconditional: drop the condition and use guidance_scale 1")
        n = check_num_samples(num_samples)
        uniforms = self.noise(n, generator) if noise is None else noise
        if tuple(uniforms.shape) != (n, *self.latent_shape):
            raise ValueError(f"noise shape {tuple(uniforms.shape)} != (num_samples, tokens) = {(n, *self.latent_shape)}")
        decoder = KVCacheDecoder(self.transformer)  # one token pass per step, not the whole prefix
        token = torch.full((n,), self.num_codes, dtype=torch.long, device=self.device)  # BOS
        drawn = []
        for i in tqdm(range(self.ordering.length), disable=not settings.progress, desc="tokens", leave=False):
            logits = decoder.step(token)[:, : self.num_codes]
            token = next_token(logits, uniforms[:, i].to(self.device), self.temperature, self.top_k)
            drawn.append(token)
        return self.ordering.to_grid(torch.stack(drawn, dim=1))

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] from token grids."""
        return self.vqvae.decode_samples(tokens.long().to(self.device))

    def sample(self, num_samples: int = 1, generator: torch.Generator | None = None, **setting_values: Any) -> torch.Tensor:
        """Decoded images of num_samples fresh draws."""
        settings = GenerationSettings(**setting_values)
        return self.decode(self.sample_latents(num_samples=num_samples, generator=generator, settings=settings))


def select_prior(prior: str, samplers: dict[str, Any]) -> Any:
    """The sampler of the chosen prior (``--prior``), or a one-line error listing the bundle's priors."""
    if prior not in samplers:
        raise ValueError(f"--prior {prior!r} is unknown: use one of {', '.join(sorted(samplers))}")
    return samplers[prior]
