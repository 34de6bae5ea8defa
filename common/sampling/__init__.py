"""Latent diffusion sampling shared by the bundles: batched classifier-free guidance, exact slab / tiled
decoding, and the inference runner that writes files (``run_sampling``).

Names are resolved lazily so ``import common.sampling`` does not import torch until a bundle uses them.
"""

from __future__ import annotations

_EXPORTS = {
    "LatentDiffusionSampler": "common.sampling.sampler",
    "run_sampling": "common.sampling.runner",
    "sample_filename": "common.sampling.runner",
    "sample_seed": "common.sampling.runner",
    "decode_latents": "common.sampling.decode",
    "slab_decode": "common.sampling.decode",
    "tiled_decode": "common.sampling.decode",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'common.sampling' has no attribute {name!r}")
