"""The order in which an autoregressive transformer reads a VQ-VAE's token grid, stored with its weights.

MONAI's ``Ordering`` builds the permutation; its RANDOM type shuffles with the global numpy RNG, so a random
ordering is reproducible only if it is saved. ``TokenOrdering`` therefore carries the permutation itself, is
built with a seed (the global numpy state is left as it was), and travels as JSON in the transformer's
safetensors metadata (``to_json`` / ``read_ordering``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch

ORDERING_TYPES = ("raster_scan", "s_curve", "random")


class OrderingError(ValueError):
    """An ordering that does not fit the token grid, or stored metadata that is not an ordering."""


class TokenOrdering:
    """A permutation of the flattened token grid (``sequence[i] = flat[order[i]]``) and its inverse.

    Args:
        order: the permutation of ``range(prod(token_shape))``.
        token_shape: spatial shape of the token grid, e.g. (16, 16).
        ordering_type: name of the rule that built it (for logs and the card).
    """

    def __init__(self, order: Sequence[int], token_shape: Sequence[int], ordering_type: str = "raster_scan") -> None:
        self.token_shape = tuple(int(s) for s in token_shape)
        self.order = torch.as_tensor(np.asarray(order, dtype=np.int64))
        size = int(np.prod(self.token_shape))
        if self.order.ndim != 1 or self.order.numel() != size or not torch.equal(
            torch.sort(self.order).values, torch.arange(size)
        ):
            raise OrderingError(f"ordering is not a permutation of the {size} tokens of a {self.token_shape} grid")
        self.revert = torch.argsort(self.order)
        self.ordering_type = ordering_type

    @classmethod
    def build(cls, ordering_type: str, token_shape: Sequence[int], seed: int = 0) -> "TokenOrdering":
        """MONAI's ordering of that type over a (1, *token_shape) grid; `random` is drawn from `seed`."""
        if ordering_type not in ORDERING_TYPES:
            raise OrderingError(f"ordering_type {ordering_type!r} is unknown: use one of {', '.join(ORDERING_TYPES)}")
        from monai.utils.ordering import Ordering

        shape = tuple(int(s) for s in token_shape)
        state = np.random.get_state()
        try:
            np.random.seed(int(seed))
            order = Ordering(ordering_type, spatial_dims=len(shape), dimensions=(1, *shape)).get_sequence_ordering()
        finally:
            np.random.set_state(state)
        return cls(order, shape, ordering_type)

    @property
    def length(self) -> int:
        return int(self.order.numel())

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, *token_shape] grid -> [B, L] sequence in reading order."""
        return tokens.reshape(tokens.shape[0], -1)[:, self.order.to(tokens.device)]

    def to_grid(self, sequence: torch.Tensor) -> torch.Tensor:
        """[B, L] values in reading order -> [B, *token_shape] grid (tokens or per-token scores)."""
        return sequence[:, self.revert.to(sequence.device)].reshape(sequence.shape[0], *self.token_shape)

    def to_json(self) -> str:
        return json.dumps({"type": self.ordering_type, "token_shape": list(self.token_shape), "order": self.order.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "TokenOrdering":
        try:
            data = json.loads(text)
            return cls(data["order"], data["token_shape"], data.get("type", "stored"))
        except (ValueError, KeyError, TypeError) as err:
            raise OrderingError(f"stored ordering is unreadable ({err}): re-export the transformer weights") from None


def read_ordering(path: str) -> TokenOrdering:
    """The ordering saved in a transformer's safetensors metadata (key ``ordering``)."""
    from common.weights import read_metadata

    text = read_metadata(path).get("ordering")
    if not text:
        raise OrderingError(f"{path} carries no token ordering: it was not exported by a transformer training run")
    return TokenOrdering.from_json(text)
