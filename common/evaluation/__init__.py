"""The paper's evaluation metrics (FID, MS-SSIM, MMD, PSNR, MAE, AUC), feature extractors and the evaluate runner.

Names resolve lazily (PEP 562) so that ``import common.evaluation`` stays free of torch until a metric is used;
bundle configs reference ``common.evaluation.EvaluationRunner`` directly.
"""

from __future__ import annotations

import importlib
from typing import Any

from common.evaluation.errors import EvaluationError

_EXPORTS = {
    "fid": "metrics",
    "fid_per_plane": "metrics",
    "frechet_distance": "metrics",
    "mmd": "metrics",
    "psnr": "metrics",
    "mae": "metrics",
    "auc": "metrics",
    "ms_ssim_settings": "metrics",
    "ms_ssim_reconstruction": "metrics",
    "ms_ssim_diversity": "metrics",
    "Features": "features",
    "extract_features": "features",
    "get_extractor": "extractors",
    "EXTRACTORS": "extractors",
    "load_image": "loading",
    "load_samples": "loading",
    "load_reals": "loading",
    "write_report": "report",
    "format_table": "report",
    "EvaluationRunner": "runner",
}

__all__ = ["EvaluationError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'common.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"common.evaluation.{module}"), name)
    globals()[name] = value
    return value
