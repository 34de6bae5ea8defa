"""Brain covariates (sex, age, ventricular volume, brain volume) as a diffusion `Condition`.

The published brain LDM (Pinaya et al. 2022/2023) feeds the four covariates, each normalised to [0, 1],
twice: concatenated to the latent's channels and as a one-token cross-attention context (dim 4). The same
object builds the Condition from a training batch (datalist keys) and from user values at inference, so the
two can never disagree on order or scaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from common.conditioning.base import Condition, ConditionError
from common.sampling.settings import check_num_samples

COVARIATE_KEYS: tuple[str, ...] = ("gender", "age", "ventricular_vol", "brain_vol")


class CovariateError(ConditionError):
    """A covariate is missing, not a number, or outside [0, 1]."""


def check_covariate(name: str, value: Any) -> float:
    """Return `value` as a float in [0, 1], or raise a one-line error naming the covariate and the fix."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise CovariateError(f"missing covariate '{name}': pass --{name} <value in [0, 1]>")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CovariateError(f"covariate '{name}'={value!r} is not a number: pass --{name} <value in [0, 1]>") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise CovariateError(
            f"covariate '{name}'={value!r} is outside [0, 1]: covariates are normalised, pass --{name} in [0, 1]"
        )
    return number


class CovariateConditioner:
    """Maps a batch (training) or user values (inference) to a `Condition` of normalised covariates.

    Args:
        keys: covariate names, in the order the network was trained with.
        concat: put the covariates in `Condition.vector` ([B, C], concatenated to the latent's channels).
        context: put them in `Condition.context` ([B, 1, C], cross-attention with cross_attention_dim = C).
    """

    def __init__(self, keys: Sequence[str] = COVARIATE_KEYS, concat: bool = True, context: bool = True) -> None:
        if not keys:
            raise ValueError("CovariateConditioner needs at least one covariate key")
        if not (concat or context):
            raise ValueError("CovariateConditioner: enable concat, context or both")
        self.keys = tuple(keys)
        self.concat = concat
        self.context = context

    @property
    def num_channels(self) -> int:
        """Extra UNet input channels (concat) and cross-attention dim (context)."""
        return len(self.keys)

    def _condition(self, values: torch.Tensor) -> Condition:
        values = values.float()
        return Condition(
            context=values.unsqueeze(1) if self.context else None,
            vector=values if self.concat else None,
        )

    def from_batch(self, batch: Mapping[str, Any], train: bool = True) -> Condition:
        """Condition of a collated training batch whose entries carry the covariate keys (no dropout)."""
        columns = []
        for key in self.keys:
            if key not in batch:
                raise CovariateError(
                    f"batch has no covariate '{key}': the datalist entries need the keys {list(self.keys)}"
                )
            column = torch.as_tensor(batch[key]).float().reshape(-1)
            if column.numel() and (not torch.isfinite(column).all() or column.min() < 0 or column.max() > 1):
                raise CovariateError(
                    f"covariate '{key}' in the batch is outside [0, 1]: normalise it in the datalist"
                )
            columns.append(column)
        return self._condition(torch.stack(columns, dim=1))

    def from_values(self, num_samples: int = 1, **values: Any) -> Condition:
        """Condition for `num_samples` samples that all share the user's covariates (validated, one-line errors)."""
        unknown = sorted(set(values) - set(self.keys))
        if unknown:
            raise CovariateError(f"unknown covariate(s) {unknown}: expected {list(self.keys)}")
        num_samples = check_num_samples(num_samples)
        row = torch.tensor([check_covariate(key, values.get(key)) for key in self.keys])
        return self._condition(row.unsqueeze(0).repeat(int(num_samples), 1))

    def null(self, num_samples: int = 1) -> Condition:
        """All-zero covariates: the 'unconditional' Condition a guided sampler pairs with the conditional one.

        The brain LDM is trained without condition dropout, so guidance scale 1 (no guidance) is its setting.
        """
        return self._condition(torch.zeros(int(num_samples), len(self.keys)))
