"""Decoding latents to images: one pass, exact slab streaming, or tiled sliding windows.

Why three modes: a one-pass decode of a 160x224x160 volume with the published brain AutoencoderKL peaks at about
13 GB, dominated by full-resolution activations held at the same time.

* ``full``: the autoencoder's own ``decode_stage_2_outputs`` (the reference).
* ``slab``: the same maths, run block by block over slabs of the first spatial axis. Convolutions read a halo
  row from the neighbouring slabs and GroupNorm uses the statistics of the *whole* activation (accumulated over
  slabs in float64), so the result equals the one-pass decode up to float rounding, while the largest thing
  held is one activation of the widest full-resolution level (plus slab temporaries) instead of several.
  Supported blocks: MONAI ``Convolution`` (stride 1, "same" padding), ``AEKLResBlock``, nearest ``UpSample``
  with a post-convolution and ``nn.GroupNorm``; any other block (e.g. attention) runs on the gathered tensor,
  which stays exact but not memory-bounded.
* ``tiled``: MONAI's ``sliding_window_inference`` over latent tiles with an overlap margin and blending. Peak
  memory is flat in the volume size. It is exact only for decoders without global operations (e.g. MONAI's
  VQVAE); with GroupNorm (AutoencoderKL) each tile normalises with its own statistics, so the result differs
  from one pass (measure with ``ci/bench_sampling.py``; prefer ``slab`` for AutoencoderKL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DECODE_MODES = ("full", "slab", "tiled", "auto")

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _inner_conv(block: nn.Module) -> nn.Module | None:
    """The torch conv inside a MONAI ``Convolution`` (conv_only) or a bare conv; None if not a plain conv."""
    if isinstance(block, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        conv = block
    elif isinstance(block, nn.Sequential) and len(block) == 1 and isinstance(block[0], (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        conv = block[0]
    else:
        return None
    k = conv.kernel_size
    ok = (
        all(s == 1 for s in conv.stride)
        and all(d == 1 for d in conv.dilation)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and all(p == kk // 2 and kk % 2 == 1 for p, kk in zip(conv.padding, k))
        and conv.padding[0] <= 1
    )
    return conv if ok else None


def _upsample_parts(block: nn.Module) -> tuple[int, nn.Module] | None:
    """(integer scale, post conv) for a MONAI nearest ``UpSample`` with a post conv and no pre conv, else None."""
    if not isinstance(block, nn.Sequential):
        return None
    children = dict(block.named_children())
    up = children.get("upsample_non_trainable")
    post = children.get("postconv")
    if up is None or post is None or set(children) != {"upsample_non_trainable", "postconv"}:
        return None
    if up.mode != "nearest" or up.size is not None:
        return None
    scales = up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor,)
    if len(set(float(s) for s in scales)) != 1 or float(scales[0]) != int(scales[0]) or int(scales[0]) < 1:
        return None
    conv = _inner_conv(post)
    return (int(scales[0]), conv) if conv is not None else None


def _is_resblock(block: nn.Module) -> bool:
    """An ``AEKLResBlock``-shaped block: norm1/silu/conv1, norm2/silu/conv2, 1x1 or identity shortcut."""
    names = ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
    if not all(hasattr(block, n) for n in names) or type(block).__name__ != "AEKLResBlock":
        return False
    if not isinstance(block.norm1, nn.GroupNorm) or not isinstance(block.norm2, nn.GroupNorm):
        return False
    if _inner_conv(block.conv1) is None or _inner_conv(block.conv2) is None:
        return False
    return isinstance(block.nin_shortcut, nn.Identity) or _inner_conv(block.nin_shortcut) is not None


class _Stats:
    """Per-(batch, channel) affine ``y = x * scale + shift`` equivalent to a GroupNorm with global statistics."""

    def __init__(self, chunks: list[torch.Tensor], gn: nn.GroupNorm) -> None:
        b, c = chunks[0].shape[:2]
        g = gn.num_groups
        s = torch.zeros(b, g, dtype=torch.float64, device=chunks[0].device)
        ss = torch.zeros_like(s)
        n = 0
        for ch in chunks:
            v = ch.reshape(b, g, -1).double()
            s += v.sum(-1)
            ss += (v * v).sum(-1)
            n += v.shape[-1]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0.0)
        rstd = torch.rsqrt(var + gn.eps)
        rstd_c = rstd.repeat_interleave(c // g, dim=1)  # [B, C]
        mean_c = mean.repeat_interleave(c // g, dim=1)
        w = gn.weight.double() if gn.affine else torch.ones(c, dtype=torch.float64, device=s.device)
        bias = gn.bias.double() if gn.affine else torch.zeros(c, dtype=torch.float64, device=s.device)
        scale = rstd_c * w
        shift = bias - mean_c * scale
        dtype = chunks[0].dtype
        extra = (1,) * (chunks[0].ndim - 2)
        self.scale = scale.to(dtype).view(b, c, *extra)
        self.shift = shift.to(dtype).view(b, c, *extra)

    def apply(self, x: torch.Tensor, silu: bool) -> torch.Tensor:
        y = torch.addcmul(self.shift, x, self.scale)
        return F.silu(y, inplace=True) if silu else y


def _conv_slab(
    chunks: list[torch.Tensor | None],
    i: int,
    conv: nn.Module,
    pre: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Output slab i of ``conv(pre(x))`` with zero padding applied after ``pre`` exactly as the one-pass conv."""
    p = conv.padding[0]
    cur = chunks[i]
    parts = []
    if p:
        if i > 0:
            parts.append(chunks[i - 1][:, :, -p:])
        parts.append(cur)
        if i + 1 < len(chunks):
            parts.append(chunks[i + 1][:, :, :p])
        win = torch.cat(parts, dim=2)
    else:
        win = cur
    if pre is not None:
        win = pre(win)
    if p:
        pad = [0, 0] * (win.ndim - 3) + [p if i == 0 else 0, p if i + 1 == len(chunks) else 0]
        if pad[-1] or pad[-2]:
            win = F.pad(win, pad)
    return _CONV[win.ndim - 2](win, conv.weight, conv.bias, 1, (0, *conv.padding[1:]), 1, conv.groups)


def _run_conv(chunks: list, conv: nn.Module, pre=None) -> list[torch.Tensor]:
    out = []
    for i in range(len(chunks)):
        out.append(_conv_slab(chunks, i, conv, pre))
        if i > 0:
            chunks[i - 1] = None  # free the input slab no later slab needs
    chunks.clear()
    return out


def _run_resblock(chunks: list, block: nn.Module) -> list[torch.Tensor]:
    conv1, conv2 = _inner_conv(block.conv1), _inner_conv(block.conv2)
    nin = None if isinstance(block.nin_shortcut, nn.Identity) else _inner_conv(block.nin_shortcut)
    st1 = _Stats(chunks, block.norm1)
    h, res = [], []
    for i in range(len(chunks)):
        h.append(_conv_slab(chunks, i, conv1, lambda t: st1.apply(t, silu=True)))
        res.append(chunks[i] if nin is None else _conv_slab(chunks, i, nin))
        if i > 0:
            chunks[i - 1] = None
    chunks.clear()
    st2 = _Stats(h, block.norm2)
    out = []
    for i in range(len(h)):
        r = res[i]
        res[i] = None
        out.append(r.add_(_conv_slab(h, i, conv2, lambda t: st2.apply(t, silu=True))))
        if i > 0:
            h[i - 1] = None
    return out


def _run_upsample(chunks: list, scale: int, conv: nn.Module) -> list[torch.Tensor]:
    p = conv.padding[0]
    out = []
    n = len(chunks)
    for i in range(n):
        parts = ([chunks[i - 1][:, :, -1:]] if i > 0 and p else []) + [chunks[i]]
        parts += [chunks[i + 1][:, :, :1]] if i + 1 < n and p else []
        win = F.interpolate(torch.cat(parts, dim=2), scale_factor=scale, mode="nearest")
        lo = scale - p if i > 0 and p else 0
        hi = win.shape[2] - (scale - p if i + 1 < n and p else 0)
        win = win[:, :, lo:hi]
        pad = [0, 0] * (win.ndim - 3) + [p if i == 0 else 0, p if i + 1 == n else 0]
        if pad[-1] or pad[-2]:
            win = F.pad(win, pad)
        out.append(_CONV[win.ndim - 2](win, conv.weight, conv.bias, 1, (0, *conv.padding[1:]), 1, conv.groups))
        if i > 0:
            chunks[i - 1] = None
    chunks.clear()
    return out


def _run_groupnorm(chunks: list, gn: nn.GroupNorm) -> list[torch.Tensor]:
    st = _Stats(chunks, gn)
    return [st.apply(c, silu=False) for c in chunks]


def _run_gathered(chunks: list, block: nn.Module, rows: int) -> list[torch.Tensor]:
    x = torch.cat(chunks, dim=2)
    chunks.clear()
    y = block(x)
    del x
    return [c.clone() for c in torch.split(y, rows, dim=2)]


def slab_decode(decoder: nn.Module, z: torch.Tensor, slab_rows: int = 2) -> torch.Tensor:
    """Exact, memory-bounded ``decoder(z)`` for a MONAI AutoencoderKL ``Decoder`` (``.blocks``), one sample at a time.

    slab_rows: latent rows (first spatial axis) per slab; output slabs grow with each upsampling.
    """
    if not hasattr(decoder, "blocks"):
        raise TypeError(f"slab decode needs a decoder with .blocks (MONAI AutoencoderKL Decoder), got {type(decoder).__name__}")
    if slab_rows < 1:
        raise ValueError(f"slab_rows must be >= 1, got {slab_rows}")
    outs = []
    for b in range(z.shape[0]):
        chunks = [c.clone() for c in torch.split(z[b : b + 1], slab_rows, dim=2)]
        for block in decoder.blocks:
            conv = _inner_conv(block)
            up = _upsample_parts(block)
            if conv is not None:
                chunks = _run_conv(chunks, conv)
            elif up is not None:
                chunks = _run_upsample(chunks, *up)
            elif _is_resblock(block):
                chunks = _run_resblock(chunks, block)
            elif isinstance(block, nn.GroupNorm):
                chunks = _run_groupnorm(chunks, block)
            else:
                chunks = _run_gathered(chunks, block, max(c.shape[2] for c in chunks))
        outs.append(torch.cat(chunks, dim=2))
        del chunks
    return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]


def supports_slab(autoencoder: nn.Module) -> bool:
    """True for an AutoencoderKL-like model (post_quant_conv + decoder.blocks) whose decode slab mode can stream."""
    dec = getattr(autoencoder, "decoder", None)
    return (
        hasattr(autoencoder, "post_quant_conv")
        and dec is not None
        and hasattr(dec, "blocks")
        and type(autoencoder).__name__ == "AutoencoderKL"
    )


def tiled_decode(
    decode_fn: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    tile: int | Sequence[int],
    overlap: int,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Decode latent tiles of ``tile`` voxels overlapping by ``overlap`` latent voxels, blended by MONAI's
    ``sliding_window_inference`` (memory flat in the volume size; exact only for decoders without global ops)."""
    from monai.inferers import sliding_window_inference

    spatial = z.shape[2:]
    tiles = [tile] * len(spatial) if isinstance(tile, int) else list(tile)
    if len(tiles) != len(spatial):
        raise ValueError(f"tile has {len(tiles)} sizes for a {len(spatial)}D latent; give one size or one per axis")
    roi = [min(t, s) for t, s in zip(tiles, spatial)]
    if any(overlap >= r for r in roi if r > 1) or overlap < 0:
        raise ValueError(f"overlap must be in [0, tile) latent voxels; got overlap={overlap} for tile {roi}")
    frac = [overlap / r if r < s else 0.0 for r, s in zip(roi, spatial)]
    outs = []
    for b in range(z.shape[0]):
        outs.append(
            sliding_window_inference(z[b : b + 1], roi, 1, decode_fn, overlap=frac, mode=blend, progress=False)
        )
    out = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def decode_latents(
    autoencoder: nn.Module,
    z: torch.Tensor,
    mode: str = "auto",
    slab_rows: int = 2,
    tile: int | Sequence[int] = 16,
    overlap: int = 4,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Decode unscaled latents ``z`` [B, C, *spatial] with the chosen mode (see module docstring).

    auto: slab for 3D latents of an AutoencoderKL, full otherwise.
    """
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {mode!r}; use one of {', '.join(DECODE_MODES)}")
    if mode == "auto":
        mode = "slab" if z.ndim == 5 and supports_slab(autoencoder) else "full"
    if mode == "full":
        return autoencoder.decode_stage_2_outputs(z)
    if mode == "slab":
        if not supports_slab(autoencoder):
            raise ValueError(
                f"decode mode 'slab' needs a MONAI AutoencoderKL, got {type(autoencoder).__name__}; use 'tiled' or 'full'"
            )
        return slab_decode(autoencoder.decoder, autoencoder.post_quant_conv(z), slab_rows)
    return tiled_decode(autoencoder.decode_stage_2_outputs, z, tile, overlap, blend)
