"""The one conditioning currency of every generative family: `Condition`, and the `Conditioner` interface.

A `Condition` is an open record of what a denoiser is conditioned on, for a batch of B samples. Every
operation (`to`, `cat`, `expand`, slicing) loops over the dataclass fields, so a new field is added in one place. How a
field reaches a network is the denoiser adapter's job (`common.sampling.denoiser.UNetDenoiser`), used by
training and sampling alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch

class ConditionError(ValueError):
    """A conditioning value is missing, of the wrong shape, or outside what the model was trained on."""


@dataclass
class Condition:
    """What a denoiser is conditioned on (every field optional; None = not used by this model).

    context:      [B, S, D] tokens for cross-attention (text, covariates as one token).
    vector:       [B, C] values broadcast over the latent's spatial dims and concatenated to its channels.
    image:        [B, C, *latent spatial] an image on the latent grid, concatenated to the channels
                  (super-resolution: the noised low-resolution image).
    class_labels: [B] integer labels for the UNet's class embedding (a class, or a noise level); the
                  conditioner that makes them also names the null class used for guidance.
    control:      [B, C, *image spatial] a ControlNet's conditioning image (full resolution).
    """

    context: torch.Tensor | None = None
    vector: torch.Tensor | None = None
    image: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None
    control: torch.Tensor | None = None

    # ------------------------------------------------------------------ record operations
    def items(self) -> dict[str, torch.Tensor]:
        """The fields that are set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def map(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> "Condition":
        """A new Condition with `fn(name, tensor)` applied to every set field."""
        return replace(self, **{name: fn(name, t) for name, t in self.items().items()})

    @property
    def batch_size(self) -> int | None:
        """The batch size shared by the set fields (1 = shared by every sample), or None if empty."""
        sizes = {int(t.shape[0]) for t in self.items().values()}
        if len(sizes) > 1:
            raise ConditionError(f"Condition fields have different batch sizes {sorted(sizes)}")
        return sizes.pop() if sizes else None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Condition":
        """Move every field to `device`; floating fields also to `dtype` (class labels stay integers)."""

        def move(name: str, t: torch.Tensor) -> torch.Tensor:
            if name == "class_labels":
                return t.to(device, torch.long)
            return t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)

        return self.map(move)

    def cat(self, other: "Condition") -> "Condition":
        """Stack two conditions on the batch axis (conditional + unconditional for one guided call)."""
        mine, theirs = set(self.items()), set(other.items())
        if mine != theirs:
            raise ConditionError(
                f"cannot stack conditions with different fields {sorted(mine)} and {sorted(theirs)}: "
                "the null condition must fill the same fields"
            )
        return self.map(lambda name, t: torch.cat([t, getattr(other, name)], dim=0))

    def expand(self, n: int) -> "Condition":
        """Every field with batch n: a shared (batch 1) field is broadcast, a batch-n field kept."""

        def grow(name: str, t: torch.Tensor) -> torch.Tensor:
            if t.shape[0] == n:
                return t
            if t.shape[0] != 1:
                raise ConditionError(f"condition field '{name}' has batch {t.shape[0]}; give 1 (shared) or {n}")
            return t.expand(n, *t.shape[1:])

        return self.map(grow)

    def __getitem__(self, rows: slice) -> "Condition":
        """Rows of a per-sample condition; shared (batch 1) fields are kept as they are."""
        if not isinstance(rows, slice):
            raise TypeError("index a Condition with a slice of rows, e.g. condition[lo:hi]")
        return self.map(lambda name, t: t if t.shape[0] == 1 else t[rows])


@runtime_checkable
class Conditioner(Protocol):
    """Turns data into Conditions, the same way for training and for sampling.

    from_batch(batch, train): the Condition of a collated training batch (condition dropout when train).
    from_values(num_samples, **values): the Condition of user values (command-line overrides), validated
        with one-line `ConditionError`s naming the override to fix.
    null(num_samples): the unconditional Condition that guidance pairs with the conditional one (the same
        null the dropout trained on).
    """

    def from_batch(self, batch: Mapping[str, Any], train: bool = True) -> Condition: ...

    def from_values(self, num_samples: int = 1, **values: Any) -> Condition: ...

    def null(self, num_samples: int = 1) -> Condition: ...


def drop_mask(n: int, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean [n]: True where a sample's condition is replaced by the null (condition dropout for guidance)."""
    if probability <= 0.0:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < probability
