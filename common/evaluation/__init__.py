"""The paper's evaluation metrics (FID, MS-SSIM, MMD, PSNR, MAE, AUC), feature extractors and the evaluate runner.

Names resolve lazily (PEP 562) so that ``import common.evaluation`` stays free of torch until a metric is used;
bundle configs reference ``common.evaluation.EvaluationRunner`` directly.
"""

from __future__ import annotations

from common._lazy import lazy_exports
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

__getattr__ = lazy_exports(__name__, _EXPORTS)[0]


def __dir__() -> list[str]:
    return sorted(__all__)
