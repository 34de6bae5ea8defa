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
* ``tiled``: overlapping latent tiles, each cut / ramp-blended inside the overlap (``tiled_decode``). Peak
  memory is flat in the volume size. It is exact only for decoders without global operations (e.g. MONAI's
  VQVAE); with GroupNorm (AutoencoderKL) each tile normalises with its own statistics, so the result differs
  from one pass (measure with ``ci/bench_sampling.py``; prefer ``slab`` for AutoencoderKL).
"""

from __future__ import annotations

import itertools
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


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: stride tile - overlap, the last tile flush with the end (overlap >= requested)."""
    if tile >= size:
        return [0]
    starts = list(range(0, size - tile, tile - overlap)) + [size - tile]
    return sorted(set(starts))


def _profile(length: int, zero: int, ramp: int, left: bool, right: bool) -> torch.Tensor:
    """1D blend weight of one tile in output voxels: 0 over ``zero`` voxels at an inner edge, then a linear ramp."""
    w = torch.ones(length, dtype=torch.float64)
    up = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp if ramp else torch.ones(0, dtype=torch.float64)
    if left:
        w[:zero] = 0.0
        w[zero : zero + ramp] = up
    if right:
        w[length - zero :] = 0.0
        w[length - zero - ramp : length - zero] = torch.minimum(w[length - zero - ramp : length - zero], up.flip(0))
    return w


def tiled_decode(
    decode_fn: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    tile: int | Sequence[int],
    overlap: int,
    ramp: int = 0,
) -> torch.Tensor:
    """Decode overlapping latent tiles and stitch them (memory flat in the volume size).

    Adjacent tiles overlap by at least ``overlap`` latent voxels. In an overlap each tile's output is ignored over
    its outer ``(overlap - ramp) / 2`` latent voxels and the two tiles are blended by a linear ramp of ``ramp``
    latent voxels in the middle (0 = a hard cut). The result equals the one-pass decode when that ignored margin
    covers the decoder's receptive field and the decoder has no global operation (GroupNorm, attention).
    """
    spatial = tuple(z.shape[2:])
    tiles = [int(tile)] * len(spatial) if isinstance(tile, int) else [int(t) for t in tile]
    if len(tiles) != len(spatial):
        raise ValueError(f"tile has {len(tiles)} sizes for a {len(spatial)}D latent; give one size or one per axis")
    if overlap < 0 or ramp < 0 or ramp > overlap or (overlap - ramp) % 2:
        raise ValueError(f"need 0 <= ramp <= overlap with overlap - ramp even; got overlap={overlap}, ramp={ramp}")
    if any(t < s and (t <= overlap or t < overlap + ramp) for t, s in zip(tiles, spatial)):
        raise ValueError(f"tile {tiles} is too small for overlap {overlap}, ramp {ramp}: use tile > overlap + ramp")
    axes_starts = [_tile_starts(s, min(t, s), overlap) for s, t in zip(spatial, tiles)]
    sizes = [min(t, s) for s, t in zip(spatial, tiles)]
    out = wsum = None
    scale = None
    for b in range(z.shape[0]):
        for starts in itertools.product(*axes_starts):
            sl = tuple(slice(st, st + sz) for st, sz in zip(starts, sizes))
            piece = decode_fn(z[(slice(b, b + 1), slice(None), *sl)])
            if out is None:
                scale = [po // sz for po, sz in zip(piece.shape[2:], sizes)]
                out = torch.zeros((z.shape[0], piece.shape[1], *[s * f for s, f in zip(spatial, scale)]), dtype=piece.dtype)
                wsum = torch.zeros(tuple(s * f for s, f in zip(spatial, scale)), dtype=torch.float64)
            w = None
            for ax, (st, sz, full, f) in enumerate(zip(starts, sizes, spatial, scale)):
                zero, rmp = (overlap - ramp) * f // 2, ramp * f
                prof = _profile(sz * f, zero, rmp, left=st > 0, right=st + sz < full)
                shape = [1] * len(spatial)
                shape[ax] = -1
                w = prof.view(shape) if w is None else w * prof.view(shape)
            osl = tuple(slice(st * f, (st + sz) * f) for st, sz, f in zip(starts, sizes, scale))
            out[(slice(b, b + 1), slice(None), *osl)] += piece.cpu() * w.to(piece.dtype)
            if b == 0:
                wsum[osl] += w
    return (out / wsum.to(out.dtype).clamp_min(1e-12)).to(z.device)


def decode_latents(
    autoencoder: nn.Module,
    z: torch.Tensor,
    mode: str = "auto",
    slab_rows: int = 2,
    tile: int | Sequence[int] = 32,
    overlap: int = 12,
    ramp: int = 0,
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
    return tiled_decode(autoencoder.decode_stage_2_outputs, z, tile, overlap, ramp)
