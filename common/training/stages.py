"""Pick and run one training stage of a bundle's train.json (`--stage autoencoder|diffusion|...`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def run_stage(trainers: Mapping[str, Any], stage: str) -> Any:
    """Run `trainers[stage]` (an ignite/MONAI engine); a one-line error names the valid stages."""
    if stage not in trainers:
        raise ValueError(f"unknown stage {stage!r}: use --stage {'|'.join(trainers)}")
    logger.info("training stage %r", stage)
    trainer = trainers[stage]
    trainer.run()
    return trainer
