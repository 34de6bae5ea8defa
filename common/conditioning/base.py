"""The one conditioning currency shared by the diffusion trainers and samplers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Condition:
    """What a DiffusionModelUNet is conditioned on, for a batch of B samples.

    context: [B, S, D] tensor given to cross-attention (None when the UNet has no cross-attention).
    concat:  [B, C] tensor broadcast over the latent's spatial dims and concatenated to its channels
             (None when nothing is concatenated). The UNet's in_channels = latent channels + C.
    """

    context: torch.Tensor | None = None
    concat: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Condition":
        return Condition(
            None if self.context is None else self.context.to(device),
            None if self.concat is None else self.concat.to(device),
        )

    def cat(self, other: "Condition") -> "Condition":
        """Stack two conditions on the batch axis (conditional + unconditional for one guided UNet call)."""
        return Condition(
            None if self.context is None else torch.cat([self.context, other.context], dim=0),
            None if self.concat is None else torch.cat([self.concat, other.concat], dim=0),
        )

    def concat_to(self, latent: torch.Tensor) -> torch.Tensor:
        """The UNet input: latent [B, C_lat, *spatial] with concat channels appended (if any)."""
        if self.concat is None:
            return latent
        view = self.concat.view(*self.concat.shape, *([1] * (latent.ndim - 2)))
        return torch.cat([latent, view.expand(-1, -1, *latent.shape[2:]).to(latent.dtype)], dim=1)
