"""Per-token log-likelihoods of images under a VQ-VAE + transformer: the out-of-distribution score.

One VQ-VAE encode (eval mode: a VQVAE in train mode updates its EMA codebook even under no_grad) and one
transformer pass per image. ``log_softmax`` over the codebook entries (not the BOS token) gives log p(t_i | t_<i)
in nats; MONAI's ``VQVAETransformerInferer.get_likelihood`` takes log(softmax), which underflows to -inf for
very unlikely tokens, exactly the ones an out-of-distribution score is about.
"""

from __future__ import annotations

import torch
from torch import nn

from common.tokens.ordering import TokenOrdering
from common.training.transformer import shifted_inputs


@torch.inference_mode()
def token_log_likelihoods(vqvae: nn.Module, transformer: nn.Module, ordering: TokenOrdering,
                          images: torch.Tensor) -> torch.Tensor:
    """log p of each token, [B, *token_shape] (nats, <= 0), for images [B, C, H, W] in the training range."""
    vqvae.eval()
    transformer.eval()
    num_codes = int(vqvae.quantizer.quantizer.num_embeddings)
    grid = vqvae.index_quantize(images)
    if tuple(grid.shape[1:]) != ordering.token_shape:
        raise ValueError(f"the VQ-VAE gives a {tuple(grid.shape[1:])} token grid but the ordering is for "
                         f"{ordering.token_shape}: give images of the size the model was trained on")
    sequence = ordering.to_sequence(grid)
    logits = transformer(shifted_inputs(sequence, num_codes))[..., :num_codes]
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, sequence.unsqueeze(-1)).squeeze(-1)
    return ordering.to_grid(log_probs)


def reconstruction_error(vqvae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean absolute reconstruction error per image [B] (the simple OOD baseline the card compares against)."""
    with torch.inference_mode():
        reconstruction, _ = vqvae.eval()(images)
        return (reconstruction.float() - images.float()).abs().flatten(1).mean(dim=1)
