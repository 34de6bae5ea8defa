"""Trainers of the two-stage generative recipes, shared by the bundles (2D and 3D).

Stage 1, autoencoder: `monai.engines.AdversarialTrainer` with `KLAutoencoderInferer` or `VQAutoencoderInferer`
(codebook perplexity and usage), `AutoencoderLoss` (L1 + KL or quantisation + optional perceptual, `build_perceptual_loss` never downloads), `GeneratorAdversarialLoss` (warm-up)
and `DiscriminatorAdversarialLoss`.
Stage 2, diffusion: `monai.engines.SupervisedTrainer` with `LatentCacheDataset` (frozen autoencoder latents,
scale factor), `ConditionedDiffusionPrepareBatch` (epsilon / v_prediction, a conditioner batch -> Condition)
and `ConditionedDiffusionInferer`.
Handlers: one list per stage from `stage_handlers` (progress, time limit, resume, loss terms, finite-loss stop,
logs, checkpoints, `SafetensorsExport`). Names resolve lazily so `import common.training` does not import torch.
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "KLAutoencoderInferer": "autoencoder",
    "AutoencoderPrepareBatch": "autoencoder",
    "AutoencoderLoss": "autoencoder",
    "GeneratorAdversarialLoss": "autoencoder",
    "DiscriminatorAdversarialLoss": "autoencoder",
    "build_perceptual_loss": "autoencoder",
    "kl_divergence": "autoencoder",
    "ConditionedDiffusionPrepareBatch": "diffusion",
    "ConditionedDiffusionInferer": "diffusion",
    "LatentCacheDataset": "latents",
    "BuildLatents": "latents",
    "compute_scale_factor": "latents",
    "SafetensorsExport": "handlers",
    "ResumeFromLatest": "handlers",
    "EngineProgress": "handlers",
    "TermsToOutput": "handlers",
    "TimeLimit": "handlers",
    "FiniteLoss": "handlers",
    "TrainingError": "handlers",
    "stage_handlers": "handlers",
    "loggable": "handlers",
    "VQAutoencoderInferer": "autoencoder",
    "codebook_stats": "autoencoder",
    "load_datalist": "data",
    "VolumeSlices": "slices",
    "init_from_network": "init",
    "near_deterministic_posterior": "init",
    "frozen_network": "init",
    "PairPrepareBatch": "data",
    "CheckImaged": "data",
    "CheckHalfResolutiond": "data",
    "InterpolationResiduald": "data",
    "RestartDeadCodes": "codebook",
    "TokenPrepareBatch": "transformer",
    "TokenCrossEntropy": "transformer",
    "shifted_inputs": "transformer",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
