"""The denoiser seam: every sampling loop calls one callable, ``denoiser(x_t, t, condition) -> model output``.

After k-diffusion's samplers (``sample_x(model, x, sigmas, extra_args)``): the loop knows nothing of how a
network is fed. ``UNetDenoiser`` is the one place a DiffusionModelUNet (and an optional ControlNet) is fed
from a ``Condition``: ``vector`` and ``image`` concatenated to the channels, ``context`` to cross-attention,
``class_labels`` to the class embedding, ``control`` through the ControlNet's residuals with a conditioning
scale. Training computes its loss through the same adapter (``common.training.diffusion``), so training and
sampling cannot feed the network differently. ``GuidedDenoiser`` wraps any denoiser with classifier-free
guidance as one batched call on [conditional; null].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.conditioning.base import Condition, ConditionError

Denoiser = Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, nn.Module) else network


def unet_input(x: torch.Tensor, condition: Condition) -> torch.Tensor:
    """The UNet's input: x [B, C, *spatial] with the condition's vector (broadcast) and image channels appended."""
    parts = [x]
    if condition.vector is not None:
        v = condition.vector.to(x.dtype)
        parts.append(v.view(*v.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))
    if condition.image is not None:
        if tuple(condition.image.shape[2:]) != tuple(x.shape[2:]):
            raise ConditionError(
                f"condition image has spatial shape {tuple(condition.image.shape[2:])}, the latent "
                f"{tuple(x.shape[2:])}: resample it to the latent grid"
            )
        parts.append(condition.image.to(x.dtype))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def check_class_embedding(network: nn.Module, condition: Condition) -> None:
    """Refuse labels for a UNet without a class embedding (MONAI 1.6.1 would ignore them silently) or beyond it."""
    if condition.class_labels is None:
        return
    size = getattr(unwrap(network), "num_class_embeds", None)
    if size is None:
        raise ConditionError(
            f"{type(unwrap(network)).__name__} has no class embedding (num_class_embeds is None), so MONAI would "
            "ignore the class labels / noise level: set num_class_embeds in the network definition"
        )
    labels = condition.class_labels
    outside = labels[(labels < 0) | (labels >= int(size))]
    if outside.numel():
        raise ConditionError(
            f"class label / noise level {int(outside[0])} is outside the UNet's class embedding [0, {int(size) - 1}]: "
            "raise num_class_embeds or lower the level"
        )


class UNetDenoiser:
    """``denoiser(x_t, t, condition)`` for a MONAI DiffusionModelUNet, optionally steered by a ControlNet.

    Args:
        unet: DiffusionModelUNet (or one wrapped in DDP).
        controlnet: MONAI ControlNet fed the same input as the UNet and ``condition.control``; its residuals
            are scaled by ``conditioning_scale`` and added to the UNet's skip connections.
        conditioning_scale: ControlNet residual scale (1.0 = as trained; 0 = the base model alone).
    """

    def __init__(self, unet: nn.Module, controlnet: nn.Module | None = None, conditioning_scale: float = 1.0) -> None:
        self.unet = unet
        self.controlnet = controlnet
        from common.sampling.settings import check_float

        self.conditioning_scale = check_float("conditioning_scale", conditioning_scale, 0.0, 10.0, "1.0 (0 = the base model alone)")

    def networks(self) -> list[nn.Module]:
        """The networks this denoiser runs (what releasing it frees)."""
        return [n for n in (self.unet, self.controlnet) if n is not None]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        condition = condition if condition is not None else Condition()
        check_class_embedding(self.unet, condition)
        t = torch.as_tensor(t, device=x.device).long().reshape(-1)
        if t.numel() == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        inputs = unet_input(x, condition)
        extra = {}
        if self.controlnet is not None:
            if condition.control is None:
                raise ConditionError("this model is a ControlNet: give the conditioning image (Condition.control)")
            down, mid = self.controlnet(
                x=inputs, timesteps=t, controlnet_cond=condition.control.to(x.dtype),
                conditioning_scale=self.conditioning_scale, context=condition.context,
                class_labels=condition.class_labels,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(inputs, timesteps=t, context=condition.context, class_labels=condition.class_labels, **extra)


class GuidedDenoiser:
    """Classifier-free guidance around any denoiser: ``out_u + g * (out_c - out_u)`` from ONE batched call.

    ``guidance_scale`` 1.0 calls the wrapped denoiser as it is. The null condition is the conditioner's trained
    null (empty prompt, null class), batch 1 or the same batch as the condition.
    """

    def __init__(self, denoiser: Denoiser, guidance_scale: float, null_condition: Condition | None) -> None:
        if guidance_scale != 1.0 and null_condition is None:
            raise ConditionError(
                "guidance_scale != 1 needs the null condition (null_condition, the unconditional input); "
                "pass one or set guidance_scale 1.0"
            )
        self.denoiser = denoiser
        self.guidance_scale = float(guidance_scale)
        self.null_condition = null_condition
        self._stacked: tuple[Condition, int, Condition] | None = None

    def _stack(self, condition: Condition, n: int) -> Condition:
        """[condition; null] for batch n, built once per (condition, n) rather than at every step."""
        if self._stacked is None or self._stacked[0] is not condition or self._stacked[1] != n:
            assert self.null_condition is not None
            self._stacked = (condition, n, condition.expand(n).cat(self.null_condition.expand(n)))
        return self._stacked[2]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        if self.guidance_scale == 1.0:
            return self.denoiser(x, t, condition)
        n = x.shape[0]
        out = self.denoiser(torch.cat([x, x]), t, self._stack(condition if condition is not None else Condition(), n))
        out_c, out_u = out[:n], out[n:]
        return out_u + self.guidance_scale * (out_c - out_u)
