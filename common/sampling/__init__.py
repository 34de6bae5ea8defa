"""Sampling shared by the bundles: the denoiser seam (``UNetDenoiser``, ``GuidedDenoiser``), the loop
(``denoise``), ``LatentDiffusionSampler`` with exact slab / tiled decoding, generation settings validated once,
and the inference runner that writes files (``run_sampling``).

Names are resolved lazily so ``import common.sampling`` does not import torch until a bundle uses them.
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "LatentDiffusionSampler": "sampler",
    "denoise": "sampler",
    "UNetDenoiser": "denoiser",
    "GuidedDenoiser": "denoiser",
    "GenerationSettings": "settings",
    "RunSettings": "settings",
    "SettingsError": "settings",
    "run_sampling": "runner",
    "sample_filename": "runner",
    "sample_seed": "runner",
    "decode_latents": "decode",
    "slab_decode": "decode",
    "tiled_decode": "decode",
    "AutoregressiveSampler": "autoregressive",
    "select_prior": "autoregressive",
    "ControlNetTranslator": "translate",
    "run_translation": "translate",
    "Upscaler": "upscale",
    "run_upscaling": "upscale",
    "BundleSampler": "cascade",
    "run_cascade": "cascade",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
