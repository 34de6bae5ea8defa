"""A conditioning image -> `Condition(control=...)` for a ControlNet, with control dropout to a trained null.

The null control is an all-zero image: training replaces a fraction of the conditioning images by zeros, so the
ControlNet learns what "no control" means and guidance (``out_null + g * (out_control - out_null)``) pairs the
image with an input the network was trained on (MONAI's inferers fill the unconditional input with -1 instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from common.conditioning.base import Condition, ConditionError, drop_mask
from common.sampling.settings import check_num_samples

__all__ = ["ControlConditioner"]


class ControlConditioner:
    """Implements `common.conditioning.base.Conditioner` for a ControlNet's conditioning image.

    Args:
        image_shape: (C, *spatial) of the conditioning image the ControlNet was built for (checked; the null's
            shape).
        key: the batch key holding the conditioning images [B, C, *spatial].
        control_dropout: probability of replacing a training image by the null (zeros).
        context: an optional fixed cross-attention context [1, S, D] shared by every sample and by the null (the
            published recipe's base UNet reads the embedding of one fixed prompt).
    """

    def __init__(self, image_shape: Sequence[int], key: str = "control", control_dropout: float = 0.1,
                 context: torch.Tensor | None = None) -> None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) or (C, D, H, W) of positive ints, got {list(image_shape)}")
        if not 0.0 <= float(control_dropout) <= 1.0:
            raise ValueError(f"control_dropout must be in [0, 1] (got {control_dropout}); 0.1 is the usual value")
        self.image_shape = shape
        self.key = key
        self.control_dropout = float(control_dropout)
        if context is not None and (context.ndim != 3 or context.shape[0] != 1):
            raise ValueError(f"context must be one fixed context [1, S, D], got shape {tuple(context.shape)}")
        self.context = context

    def _condition(self, images: torch.Tensor) -> Condition:
        context = None if self.context is None else self.context.expand(images.shape[0], -1, -1)
        return Condition(control=images, context=context)

    def _checked(self, images: Any, where: str) -> torch.Tensor:
        images = torch.as_tensor(images).float()
        if images.ndim == len(self.image_shape):
            images = images.unsqueeze(0)
        if tuple(images.shape[1:]) != self.image_shape:
            raise ConditionError(f"{where}: conditioning image of shape {tuple(images.shape[1:])}, the model takes "
                                 f"{self.image_shape}: resample it to the model's grid")
        if not torch.isfinite(images).all():
            raise ConditionError(f"{where}: the conditioning image has NaN or inf values")
        return images

    def from_batch(self, batch: Mapping[str, Any], train: bool = True) -> Condition:
        """The batch's conditioning images; control dropout (zeros) only when `train`."""
        if self.key not in batch:
            raise ConditionError(f"batch has no {self.key!r} (keys: {sorted(batch)}); set the conditioner's key")
        images = self._checked(batch[self.key], f"batch key {self.key!r}").clone()
        if train:
            images[drop_mask(images.shape[0], self.control_dropout)] = 0.0
        return self._condition(images)

    def from_values(self, num_samples: int = 1, control: Any = None) -> Condition:
        """One conditioning image shared by every sample (batch 1), or one per sample."""
        num_samples = check_num_samples(num_samples)
        if control is None:
            raise ConditionError("missing conditioning image: give the input image (--input_image / --input_dir)")
        images = self._checked(control, "control")
        if images.shape[0] not in (1, num_samples):
            raise ConditionError(f"{images.shape[0]} conditioning images for num_samples={num_samples}: give 1 or one each")
        return self._condition(images)

    def null(self, num_samples: int = 1) -> Condition:
        """The null control (zeros) for `num_samples` samples."""
        return self._condition(torch.zeros((int(num_samples), *self.image_shape)))
