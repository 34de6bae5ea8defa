"""Conditioning: the `Condition` record and the conditioners (covariates, text, classes, a ControlNet image, a noised
low-resolution image with its noise level) that make it.

Names resolve lazily so that `import common.conditioning` does not import torch.
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "Condition": "base",
    "Conditioner": "base",
    "ConditionError": "base",
    "CovariateConditioner": "covariates",
    "TextConditioner": "text_conditioner",
    "prompt_tag": "text_conditioner",
    "ClassConditioner": "classes",
    "repeat_classes": "classes",
    "ControlConditioner": "control",
    "NoiseLevelConditioner": "noise_level",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
