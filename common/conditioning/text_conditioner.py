"""Report text -> ``Condition(context=token states)``, with prompt dropout for classifier-free guidance.

Training: each report is replaced by the empty prompt with probability ``prompt_dropout`` (the paper's 10%), so
one UNet learns both the conditional and the unconditional model. Inference: ``from_values(n, prompt=...)`` and
``null(n)`` (the empty prompt) feed the guided sampler. Implements ``common.conditioning.base.Conditioner``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from common.conditioning.base import Condition, ConditionError, drop_mask
from common.sampling.settings import check_num_samples
from common.conditioning.text import TextEncoder, check_prompt, get_text_encoder

__all__ = ["TextConditioner"]


class TextConditioner:
    """Maps a batch's report text (training) or user prompts (inference) to cross-attention context.

    Args:
        encoder: a ``TextEncoder``; or None to build one from ``encoder_name`` / ``encoder_path`` / ``max_length``
            (cached per process).
        key: the batch key holding the report text (``report`` in the built-in CXR datalist).
        prompt_dropout: probability of replacing a report by the empty prompt in training.
        device: where the context tensors are put.
    """

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        key: str = "report",
        prompt_dropout: float = 0.1,
        encoder_name: str = "minilm",
        encoder_path: str | os.PathLike | None = None,
        max_length: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0.0 <= float(prompt_dropout) <= 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1] (got {prompt_dropout}); the paper uses 0.1")
        self._encoder = encoder
        self._spec = (encoder_name, encoder_path, max_length)
        self.key = key
        self.prompt_dropout = float(prompt_dropout)
        self.device = torch.device(device)

    @property
    def encoder(self) -> TextEncoder:
        """Built on first use, so that configs parse without loading the language model."""
        if self._encoder is None:
            name, path, max_length = self._spec
            self._encoder = get_text_encoder(name, path, max_length)
        return self._encoder

    @property
    def context_dim(self) -> int:
        return self.encoder.dim

    def prompts_of(self, batch: Mapping) -> list[str]:
        """The report strings of a collated batch (a list of str, or a single str for batch size 1)."""
        if self.key not in batch:
            raise KeyError(f"batch has no {self.key!r} text (keys: {sorted(batch)}); set the conditioner's key")
        texts = batch[self.key]
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [check_prompt(t) for t in texts]

    def drop(self, prompts: Sequence[str], generator: torch.Generator | None = None) -> list[str]:
        """Replace each prompt by ``""`` with probability ``prompt_dropout`` (global RNG unless a generator)."""
        if self.prompt_dropout <= 0.0:
            return list(prompts)
        dropped = drop_mask(len(prompts), self.prompt_dropout, generator)
        return ["" if d else p for p, d in zip(prompts, dropped.tolist())]

    def encode(self, prompts: Sequence[str]) -> Condition:
        """The Condition of prompts as they are (no dropout)."""
        return Condition(context=self.encoder.encode(list(prompts)).to(self.device))

    def from_batch(self, batch: Mapping, train: bool = True) -> Condition:
        """The Condition of a training / validation batch; prompt dropout only when ``train``."""
        prompts = self.prompts_of(batch)
        return self.encode(self.drop(prompts) if train else prompts)

    def from_values(self, num_samples: int = 1, prompt: str | Sequence[str] | None = None) -> Condition:
        """One prompt shared by every sample (batch 1), or one prompt per sample (a list of num_samples)."""
        num_samples = check_num_samples(num_samples)
        if prompt is None:
            raise ConditionError("missing prompt: pass --prompt \"'Small left pleural effusion.'\"")
        prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
        if len(prompts) not in (1, num_samples):
            raise ConditionError(f"{len(prompts)} prompts for num_samples={num_samples}: give one prompt or one per sample")
        return self.encode([check_prompt(p) for p in prompts])

    def null(self, num_samples: int = 1) -> Condition:
        """The unconditional Condition (empty prompt) for ``num_samples`` samples."""
        return self.encode([""] * int(num_samples))


def prompt_tag(prompt: str | Sequence[str]) -> str | list[str]:
    """A short file-name tag per prompt (``p`` + 8 hex digits of its sha256, after the same whitespace clean-up
    as encoding), so that runs with different prompts and the same seed never replace each other's files."""
    import hashlib

    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
    tags = ["p" + hashlib.sha256(" ".join(check_prompt(p).split()).encode()).hexdigest()[:8] for p in prompts]
    return tags if isinstance(prompt, (list, tuple)) else tags[0]
