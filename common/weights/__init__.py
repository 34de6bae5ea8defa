"""Safe weights I/O (safetensors, ``torch.load(weights_only=True)``, sha256, latent scale factor in metadata)
and loading of old GenerativeModels checkpoints into MONAI 1.6 networks.

Names resolve lazily so that ``import common.weights`` does not import torch (CLIs start fast).
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "WeightsError": "io",
    "WeightsNotFoundError": "io",
    "SCALE_FACTOR_KEY": "io",
    "save_weights": "io",
    "load_weights": "io",
    "load_into": "io",
    "check_state_dict": "io",
    "read_metadata": "io",
    "read_scale_factor": "io",
    "check_prediction_type": "io",
    "PREDICTION_TYPE_KEY": "io",
    "sha256_file": "io",
    "verify_sha256": "io",
    "load_generative_models_checkpoint": "legacy",
    "convert_generative_models_state_dict": "legacy",
    "legacy_net_kwargs": "legacy",
    "build_legacy_net": "legacy",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
