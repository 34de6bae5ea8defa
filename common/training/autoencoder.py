"""Stage 1 of every two-stage recipe: an AutoencoderKL or a VQVAE with L1 + regulariser (KL or quantisation)
+ perceptual + patch-adversarial losses.

Runs inside `monai.engines.AdversarialTrainer`: the inferer returns only the reconstruction (what the trainer
hands to the discriminator) and keeps the regulariser of the same forward pass (`regularisers`) and, for a VQVAE,
codebook statistics (`stats`: perplexity and the fraction of codes used in the batch) so that the loss adds the
regulariser and the logs show the codebook; the generator adversarial loss is switched on after a warm-up.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from monai.inferers import Inferer
from monai.losses import PatchAdversarialLoss

logger = logging.getLogger(__name__)

# MONAI PerceptualLoss network types and where their weights must already be on disk (torch hub cache).
_HUB_REPOS = {
    "radimagenet_resnet50": "Warvito_radimagenet-models_main",
    "medicalnet_resnet10_23datasets": "warvito_MedicalNet-models_main",
    "medicalnet_resnet50_23datasets": "warvito_MedicalNet-models_main",
}


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, averaged over the batch (the LDM recipe's KL)."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1.0)
    return kl.flatten(1).sum(dim=1).mean()


class KLAutoencoderInferer(Inferer):
    """Runs an AutoencoderKL and returns the reconstruction; keeps the KL of that same forward."""

    def __init__(self) -> None:
        super().__init__()
        self.regularisers: dict[str, torch.Tensor] = {}
        self.stats: dict[str, float] = {}

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        reconstruction, z_mu, z_sigma = network(inputs)
        self.regularisers = {"kl": kl_divergence(z_mu, z_sigma)}
        return reconstruction


class VQAutoencoderInferer(Inferer):
    """Runs a MONAI VQVAE and returns the reconstruction; keeps its quantisation loss and codebook statistics.

    The code indices and the encoder outputs are read with a forward hook on the quantiser, so a DDP-wrapped
    network still runs through its own forward (gradients synchronise); `last_encodings` ([N, D]) feeds the
    dead-code restarts (``common.training.codebook.RestartDeadCodes``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.regularisers: dict[str, torch.Tensor] = {}
        self.stats: dict[str, float] = {}
        self.last_encodings: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        from common.sampling.denoiser import unwrap

        quantizer = unwrap(network).quantizer.quantizer
        captured: dict[str, torch.Tensor] = {}

        def keep(module: Any, args: tuple, out: tuple) -> None:
            captured["indices"], captured["inputs"] = out[2], args[0]

        handle = quantizer.register_forward_hook(keep)
        try:
            reconstruction, quantization_loss = network(inputs)
        finally:
            handle.remove()
        encodings = captured["inputs"].detach()
        self.last_encodings = encodings.movedim(1, -1).reshape(-1, encodings.shape[1])
        self.regularisers = {"quantization": quantization_loss}
        self.stats = codebook_stats(captured["indices"], int(quantizer.num_embeddings))
        return reconstruction


def codebook_stats(indices: torch.Tensor, num_embeddings: int) -> dict[str, float]:
    """Perplexity (effective number of codes) and the fraction of the codebook used, over a batch of indices."""
    counts = torch.bincount(indices.detach().reshape(-1).long().cpu(), minlength=num_embeddings).float()
    probs = counts / counts.sum().clamp_min(1.0)
    perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
    return {"perplexity": float(perplexity), "codebook_usage": float((counts > 0).float().mean())}


def build_perceptual_loss(
    spatial_dims: int,
    network_type: str | None = "radimagenet_resnet50",
    is_fake_3d: bool = True,
    fake_3d_ratio: float = 0.25,
) -> torch.nn.Module | None:
    """MONAI PerceptualLoss when its pretrained network is already in the local torch hub cache, else None.

    Never downloads and never builds a randomly initialised network: a missing network disables the term,
    with a log line that says how to enable it.
    """
    if not network_type:
        logger.warning("perceptual loss disabled by config (perceptual_network is null)")
        return None
    hub_dir = torch.hub.get_dir()
    repo = _HUB_REPOS.get(network_type)
    if repo is None or not os.path.isdir(os.path.join(hub_dir, repo)):
        logger.warning(
            "perceptual loss DISABLED: pretrained network '%s' is not in the local torch hub cache %s "
            "(put the hub repo there, or set perceptual_network to null to silence this)",
            network_type,
            hub_dir,
        )
        return None
    from monai.losses import PerceptualLoss

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loss = PerceptualLoss(
        spatial_dims=spatial_dims, network_type=network_type, is_fake_3d=is_fake_3d, fake_3d_ratio=fake_3d_ratio
    )
    logger.info("perceptual loss: %s from %s", network_type, hub_dir)
    return loss


class AutoencoderLoss(torch.nn.Module):
    """L1 reconstruction + the inferer's regulariser (kl_weight * KL or quantization_weight * quantisation loss)
    + perceptual_weight * perceptual.

    `last_terms` holds the float value of each term (and the inferer's codebook stats) of the latest call,
    logged to TensorBoard.
    """

    def __init__(
        self,
        inferer: KLAutoencoderInferer | VQAutoencoderInferer,
        kl_weight: float = 1e-6,
        perceptual_loss: torch.nn.Module | None = None,
        perceptual_weight: float = 0.001,
        quantization_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.weights = {"kl": float(kl_weight), "quantization": float(quantization_weight)}
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.last_terms: dict[str, float] = {}

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        l1 = torch.nn.functional.l1_loss(reconstruction.float(), target.float())
        total = l1
        terms = {"l1": float(l1.detach())}
        for name, value in self.inferer.regularisers.items():
            total = total + self.weights[name] * value
            terms[name] = float(value.detach())
        terms.update(self.inferer.stats)
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            perceptual = self.perceptual_loss(reconstruction.float(), target.float())
            total = total + self.perceptual_weight * perceptual
            terms["perceptual"] = float(perceptual.detach())
        self.last_terms = terms
        return total


class GeneratorAdversarialLoss(torch.nn.Module):
    """Patch-adversarial loss for the generator, 0 during the first `warmup_iterations` calls (one per iteration).

    The call counter is part of state_dict, so a resumed run keeps its place in the warm-up.
    """

    def __init__(self, weight: float = 0.01, warmup_iterations: int = 0, criterion: str = "least_squares") -> None:
        super().__init__()
        self.weight = float(weight)
        self.warmup_iterations = int(warmup_iterations)
        self.loss = PatchAdversarialLoss(criterion=criterion)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @property
    def active(self) -> bool:
        return self.weight > 0 and int(self.calls) >= self.warmup_iterations

    def forward(self, fake_logits: torch.Tensor | list) -> torch.Tensor:
        active = self.active
        self.calls += 1
        logits = fake_logits[-1] if isinstance(fake_logits, (list, tuple)) else fake_logits
        if not active:
            return logits.sum() * 0.0
        return self.weight * self.loss(logits, target_is_real=True, for_discriminator=False)


class DiscriminatorAdversarialLoss(torch.nn.Module):
    """Patch-adversarial loss for the discriminator: mean of real->1 and fake->0 (least squares by default)."""

    def __init__(self, weight: float = 0.01, criterion: str = "least_squares") -> None:
        super().__init__()
        self.weight = float(weight)
        self.loss = PatchAdversarialLoss(criterion=criterion)

    def forward(self, real_logits: torch.Tensor | list, fake_logits: torch.Tensor | list) -> torch.Tensor:
        real = real_logits[-1] if isinstance(real_logits, (list, tuple)) else real_logits
        fake = fake_logits[-1] if isinstance(fake_logits, (list, tuple)) else fake_logits
        loss_real = self.loss(real, target_is_real=True, for_discriminator=True)
        loss_fake = self.loss(fake, target_is_real=False, for_discriminator=True)
        return self.weight * 0.5 * (loss_real + loss_fake)


class AutoencoderPrepareBatch:
    """(image, image): an autoencoder's input is its own target (MONAI's default_prepare_batch gives no label)."""

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def __call__(
        self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no '{self.image_key}' key (keys: {sorted(batchdata)})")
        image = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=non_blocking).float()
        return image, image
