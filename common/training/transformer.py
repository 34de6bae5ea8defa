"""Stage 2a of the VQ-VAE + transformer recipe: next-token prediction over the frozen VQ-VAE's token grids.

The grids come from ``LatentCacheDataset(tokens=True)`` (encoded once, VQ-VAE in eval mode). Each grid is read
in the bundle's ``TokenOrdering`` and prefixed with a begin-of-sequence token (the code index one past the
codebook, as in MONAI's ``VQVAETransformerInferer``): the transformer sees [BOS, t_0 .. t_{L-2}] and predicts
[t_0 .. t_{L-1}]. Runs in ``monai.engines.SupervisedTrainer`` with a ``SimpleInferer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from common.tokens.ordering import TokenOrdering


def shifted_inputs(sequence: torch.Tensor, bos_token: int) -> torch.Tensor:
    """[B, L] tokens in reading order -> [B, L] transformer inputs: BOS followed by all but the last token."""
    bos = torch.full((sequence.shape[0], 1), int(bos_token), dtype=torch.long, device=sequence.device)
    return torch.cat([bos, sequence[:, :-1].long()], dim=1)


class TokenPrepareBatch:
    """(inputs, targets) of one next-token step from a batch of token grids under `key`."""

    def __init__(self, ordering: TokenOrdering, bos_token: int, key: str = "tokens") -> None:
        self.ordering = ordering
        self.bos_token = int(bos_token)
        self.key = key

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key not in batchdata:
            raise KeyError(f"batch has no '{self.key}' key (keys: {sorted(batchdata)})")
        grid = torch.as_tensor(batchdata[self.key]).to(device, non_blocking=non_blocking).long()
        sequence = self.ordering.to_sequence(grid)
        return shifted_inputs(sequence, self.bos_token), sequence


class TokenCrossEntropy(torch.nn.Module):
    """Mean next-token cross-entropy (nats per token) of logits [B, L, V] against targets [B, L].

    `last_terms` adds the per-token accuracy and perplexity (exp of the loss) to the training logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_terms: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.long())
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == targets).float().mean()
        self.last_terms = {"token_accuracy": float(accuracy), "perplexity": float(torch.exp(loss.detach()))}
        return loss
