"""Incremental decoding of MONAI's DecoderOnlyTransformer with a key/value cache, on its own modules.

MONAI's forward recomputes the whole prefix for every new token, so drawing L tokens costs O(L^2) token
passes. Here each step runs the blocks on the one new token, reusing the keys and values of the earlier ones:
the same modules and weights, the same maths (test: the logits equal the full forward's at every position).
Self-attention blocks only (the zoo's token priors are unconditional; a cross-attention transformer is refused).
"""

from __future__ import annotations

import torch
from torch import nn


class KVCacheDecoder:
    """``step(tokens)``: logits [B, V] for the next token after feeding ``tokens`` [B] at the next position."""

    def __init__(self, transformer: nn.Module) -> None:
        if getattr(transformer, "with_cross_attention", False):
            raise ValueError("KVCacheDecoder: cross-attention transformers are not supported; use the full forward")
        self.transformer = transformer
        self.keys: list[torch.Tensor | None] = [None] * len(transformer.blocks)
        self.values: list[torch.Tensor | None] = [None] * len(transformer.blocks)
        self.position = 0

    def _qkv(self, attn: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, heads, 1, dim] query, key and value of the new token, as the SABlock computes them."""
        if attn.use_combined_linear:
            out = attn.input_rearrange(attn.qkv(h))
            return out[0], out[1], out[2]
        return attn.input_rearrange(attn.to_q(h)), attn.input_rearrange(attn.to_k(h)), attn.input_rearrange(attn.to_v(h))

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        if self.position >= int(t.max_seq_len):
            raise ValueError(f"the transformer reads at most {t.max_seq_len} tokens")
        position = torch.full_like(tokens, self.position)
        x = t.embedding_dropout(t.token_embeddings(tokens) + t.position_embeddings.embedding(position))[:, None, :]
        for i, block in enumerate(t.blocks):
            attn = block.attn
            q, k, v = self._qkv(attn, block.norm1(x))
            if attn.attention_dtype is not None:
                q, k = q.to(attn.attention_dtype), k.to(attn.attention_dtype)
            keys = k if self.keys[i] is None else torch.cat([self.keys[i], k], dim=2)
            values = v if self.values[i] is None else torch.cat([self.values[i], v], dim=2)
            self.keys[i], self.values[i] = keys, values
            a = torch.nn.functional.scaled_dot_product_attention(q, keys, values, scale=attn.scale)  # all earlier: no mask
            a = attn.out_rearrange(a)
            if attn.include_fc:
                a = attn.out_proj(a)
            x = x + attn.drop_output(a)
            x = x + block.mlp(block.norm2(x))
        self.position += 1
        return t.to_logits(x)[:, 0, :]
