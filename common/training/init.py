"""Start a network from another's weights where names and shapes match (a ControlNet from its base UNet).

The published ControlNet recipe loads the base UNet's state dict into the ControlNet with ``strict=False`` and
says nothing of what did not match. Here MONAI's ``copy_model_state`` copies every tensor whose name and shape
match, and the log names what was copied and what kept its fresh initialisation (the conditioning embedding and
the zero convolutions, by design), so a wrong base (another architecture) shows as "0 copied", not as silence.
"""

from __future__ import annotations

import os

import torch


def init_from_network(network: torch.nn.Module, source: torch.nn.Module | str | os.PathLike,
                      min_copied: float = 0.5) -> torch.nn.Module:
    """Copy ``source``'s matching tensors (a module, or a weights file) into ``network``; returns ``network``.

    Raises a one-line error when less than ``min_copied`` of ``network``'s tensors were found in the source: the networks
    do not share an architecture, and a ControlNet started that way would not start from the base model.
    """
    from monai.networks.utils import copy_model_state

    if isinstance(source, (str, os.PathLike)):
        from common.weights import load_weights

        state, _ = load_weights(source)
        name = str(source)
    else:
        state, name = source.state_dict(), type(source).__name__
    _, copied, kept = copy_model_state(network, state, inplace=True)
    fraction = len(copied) / max(len(copied) + len(kept), 1)
    if fraction < float(min_copied):
        raise ValueError(f"only {len(copied)} of {len(copied) + len(kept)} tensors of {type(network).__name__} match {name} by "
                         "name and shape: the networks' configs differ (channels, levels, attention); make them match")
    roots = sorted({k.split(".")[0] for k in kept})
    print(f"{type(network).__name__}: {len(copied)} tensors copied from {name}; {len(kept)} not matched, "
          f"kept fresh: {', '.join(roots) or 'none'}", flush=True)
    return network


def frozen_network(network: torch.nn.Module, weights: str | os.PathLike) -> torch.nn.Module:
    """``network`` with ``weights`` loaded strictly, in eval mode, its parameters excluded from gradients: the base
    model a ControlNet is trained over (the published recipe freezes it the same way)."""
    from common.weights import load_into

    load_into(network, weights, strict=True)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def near_deterministic_posterior(autoencoder: torch.nn.Module, log_var: float = -10.0) -> torch.nn.Module:
    """Start an AutoencoderKL with an (almost) deterministic posterior, sigma = exp(log_var / 2) everywhere.

    MONAI's fresh AutoencoderKL has sigma near 1, as large as the latent itself, so the decoder first learns from
    heavily noised latents and the reconstruction stalls until the log-variance layer has been driven down (measured
    on the 3D upscaler: L1 stuck at 0.06 after 400 iterations, 10.8 dB on a held-out volume). Zero weights and a
    ``log_var`` bias on that layer start it where a small KL weight lets it end; the KL term is free to raise sigma.
    Resuming from a checkpoint loads over this. Returns the autoencoder.
    """
    layer = getattr(autoencoder, "quant_conv_log_sigma", None)
    conv = getattr(layer, "conv", layer)
    if conv is None or not isinstance(getattr(conv, "bias", None), torch.Tensor):
        raise ValueError(f"{type(autoencoder).__name__} has no quant_conv_log_sigma layer with a bias: use an AutoencoderKL")
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(float(log_var))
    return autoencoder
