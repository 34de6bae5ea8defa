"""Decoding latents to images: one pass, exact slab streaming, or overlapping tiles.

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
    """GroupNorm with the statistics of the whole activation, as a per-(batch, channel) ``x * scale + shift``.

    Slabs are added one by one (per-slab mean / variance, merged in float64), so the full activation is never needed at once.
    """

    def __init__(self, gn: nn.GroupNorm) -> None:
        self.gn = gn
        self.mean = self.m2 = None
        self.n = 0
        self.scale = self.shift = None

    def add(self, x: torch.Tensor) -> None:
        b = x.shape[0]
        v = x.reshape(b, self.gn.num_groups, -1)
        var_k, mean_k = torch.var_mean(v, dim=-1, unbiased=False)  # per-slab, numerically stable
        n_k = v.shape[-1]
        var_k, mean_k = var_k.double(), mean_k.double()
        if self.n == 0:
            self.mean, self.m2 = mean_k, var_k * n_k
        else:  # Chan et al.'s merge of (count, mean, M2), in float64
            delta = mean_k - self.mean
            tot = self.n + n_k
            self.mean = self.mean + delta * (n_k / tot)
            self.m2 = self.m2 + var_k * n_k + delta * delta * (self.n * n_k / tot)
        self.n += n_k

    def finish(self, like: torch.Tensor) -> "_Stats":
        gn, b, c = self.gn, like.shape[0], like.shape[1]
        mean = self.mean
        var = (self.m2 / self.n).clamp_min(0.0)
        rstd = torch.rsqrt(var + gn.eps).repeat_interleave(c // gn.num_groups, dim=1)  # [B, C]
        mean = mean.repeat_interleave(c // gn.num_groups, dim=1)
        w = gn.weight.double() if gn.affine else torch.ones(c, dtype=torch.float64, device=mean.device)
        bias = gn.bias.double() if gn.affine else torch.zeros(c, dtype=torch.float64, device=mean.device)
        scale = rstd * w
        shift = bias - mean * scale
        extra = (1,) * (like.ndim - 2)
        self.scale = scale.to(like.dtype).view(b, c, *extra)
        self.shift = shift.to(like.dtype).view(b, c, *extra)
        return self

    @classmethod
    def of(cls, act: "_Act", gn: nn.GroupNorm) -> "_Stats":
        st = cls(gn)
        for ch in act.chunks:
            st.add(ch)
        return st.finish(act.chunks[0])


class _Act:
    """An activation [B, C, R, ...] held as slabs of rows of the first spatial axis (freed as they are consumed)."""

    def __init__(self, chunks: list[torch.Tensor]) -> None:
        self.chunks: list[torch.Tensor | None] = chunks
        self.starts = [0]
        for ch in chunks:
            self.starts.append(self.starts[-1] + ch.shape[2])
        first = chunks[0]
        self.b, self.c, self.rest = first.shape[0], first.shape[1], tuple(first.shape[3:])
        self.rows = self.starts[-1]

    def window(self, lo: int, hi: int, pad: int, pre: _Stats | None = None, silu: bool = False) -> torch.Tensor:
        """Rows [lo - pad, hi + pad) in a new buffer: ``pre`` (GroupNorm, then SiLU) applied to the real rows,
        zero rows beyond the volume, exactly what the one-pass conv sees after its zero padding."""
        first = next(c for c in self.chunks if c is not None)
        buf = torch.empty((self.b, self.c, hi - lo + 2 * pad, *self.rest), dtype=first.dtype, device=first.device)
        r0, a, z = lo - pad, max(lo - pad, 0), min(hi + pad, self.rows)
        if a > r0:
            buf[:, :, : a - r0].zero_()
        if z < hi + pad:
            buf[:, :, z - r0 :].zero_()
        for j, ch in enumerate(self.chunks):
            s, e = self.starts[j], self.starts[j + 1]
            if e <= a or s >= z:
                continue
            src = ch[:, :, max(a, s) - s : min(z, e) - s]
            dst = buf[:, :, max(a, s) - r0 : min(z, e) - r0]
            if pre is None:
                dst.copy_(src)
            else:
                torch.addcmul(pre.shift, src, pre.scale, out=dst)
        if silu:
            F.silu(buf, inplace=True)
        return buf

    def rows_of(self, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi): a view when they lie in one slab, else a copy."""
        for j, ch in enumerate(self.chunks):
            s, e = self.starts[j], self.starts[j + 1]
            if s <= lo and hi <= e:
                return ch[:, :, lo - s : hi - s]
        return self.window(lo, hi, 0)

    def free_before(self, row: int) -> None:
        freed = False
        for j in range(len(self.chunks)):
            if self.starts[j + 1] <= row and self.chunks[j] is not None:
                self.chunks[j] = None
                freed = True
        if freed:
            release_freed_memory()


def _libc_malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_freed_memory() -> None:
    """Give freed slabs back to the OS: glibc keeps freed heap blocks (and, after the first large free, serves
    big tensors from the heap too), so without this the resident set keeps every activation ever freed."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _ranges(rows: int, row_elems: int, budget: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Split ``rows`` into slabs of at most ``budget`` elements (at least one row; a multiple of ``multiple``)."""
    step = max(multiple, (budget // max(row_elems, 1)) // multiple * multiple)
    return [(lo, min(lo + step, rows)) for lo in range(0, rows, step)]


def _conv(win: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """The conv on a window that already carries its row halo (no padding along the slab axis)."""
    return _CONV[win.ndim - 2](win, conv.weight, conv.bias, 1, (0, *conv.padding[1:]), 1, conv.groups)


def _row_elems(act: _Act, channels: int, scale: int = 1) -> int:
    n = act.b * channels
    for r in act.rest:
        n *= r * scale
    return n


def _run_conv(act: _Act, conv: nn.Module, budget: int) -> _Act:
    p, out = conv.padding[0], []
    for lo, hi in _ranges(act.rows, _row_elems(act, max(act.c, conv.out_channels)), budget):
        out.append(_conv(act.window(lo, hi, p), conv))
        act.free_before(hi - p)
    return _Act(out)


def _run_resblock(act: _Act, block: nn.Module, budget: int) -> _Act:
    """conv1 over the whole input (GroupNorm statistics need all of it), then conv2 + shortcut slab by slab.

    Alive at once: the input (freed as the 1x1 shortcut consumes it, or as the identity shortcut is added in the
    second pass), h, and the output being built, never more than two full activations of the block's width.
    """
    conv1, conv2 = _inner_conv(block.conv1), _inner_conv(block.conv2)
    nin = None if isinstance(block.nin_shortcut, nn.Identity) else _inner_conv(block.nin_shortcut)
    st1 = _Stats.of(act, block.norm1)
    st2 = _Stats(block.norm2)
    ranges = _ranges(act.rows, _row_elems(act, max(act.c, conv1.out_channels)), budget)
    h, res = [], []
    for lo, hi in ranges:
        hk = _conv(act.window(lo, hi, 1, st1, silu=True), conv1)
        st2.add(hk)
        h.append(hk)
        if nin is not None:
            res.append(_conv(act.rows_of(lo, hi), nin))
            act.free_before(hi - 1)
    h_act = _Act(h)
    del h
    st2.finish(h_act.chunks[0])
    out = []
    for k, (lo, hi) in enumerate(ranges):
        y = _conv(h_act.window(lo, hi, 1, st2, silu=True), conv2)
        if nin is not None:
            r, res[k] = res[k], None
            y = r.add_(y)
        else:
            y.add_(act.rows_of(lo, hi))
            act.free_before(hi)
        out.append(y)
        h_act.free_before(hi - 1)
    return _Act(out)


# Nearest x2 upsampling then a 3-tap conv (zero padding 1), per axis: output row 2i reads input rows (i-1, i, i) and
# row 2i+1 reads (i, i, i+1). So each output phase is a 2-tap conv of the input: phase 0 over rows (i-1, i) with taps
# (w0, w1 + w2), phase 1 over rows (i, i+1) with taps (w0 + w1, w2). _PHASE_TAPS[phase][tap] sums the 3 conv taps.
_PHASE_TAPS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def nearest2_conv_phases(weight: torch.Tensor) -> torch.Tensor:
    """Kernels [2**dims * C_out, C_in, 2, ...] of the 2**dims output phases of nearest x2 upsampling + ``weight``.

    Why: the conv after nearest upsampling sees each input value 2**dims times; folding the repeats into the kernel
    does the same sums with 8 instead of 27 multiply-adds per output voxel in 3D, and never builds the upsampled input.
    Phases are stacked in ``itertools.product((0, 1), repeat=dims)`` order. weight: [C_out, C_in, 3, ...] (pad 1).
    """
    dims = weight.ndim - 2
    if dims not in (1, 2, 3) or any(k != 3 for k in weight.shape[2:]):
        raise ValueError(f"need a conv weight [C_out, C_in, 3, ...] with 1-3 spatial dims, got {tuple(weight.shape)}")
    taps = torch.tensor(_PHASE_TAPS, dtype=torch.float64, device=weight.device)  # [phase, tap, conv tap]
    letters = "xyz"[:dims]
    spec = f"oi{letters}," + ",".join(f"{c.upper()}{c}" for c in letters) + f"->oi{letters.upper()}"
    w = weight.double()
    kernels = [torch.einsum(spec, w, *(taps[p] for p in phase)) for phase in itertools.product((0, 1), repeat=dims)]
    return torch.cat(kernels, 0).to(weight.dtype)


def _run_upsample_nearest2(act: _Act, conv: nn.Module, budget: int) -> _Act:
    """Nearest x2 upsampling + 3-tap conv as convs of the output phases, slab by slab (same sums, 0.3x the work).

    Each slab reads one input row of halo on each side (zeros beyond the volume, as the one-pass conv's padding);
    the other axes are zero-padded by one. Phase p of an axis reads input rows [p, p + n + 1) of that padded window,
    so the two phases of the slab axis run as two convs over their own rows (no output row computed twice) and
    are written to every second output row from p.
    """
    dims, c_out = conv.weight.ndim - 2, conv.out_channels
    kernel = nearest2_conv_phases(conv.weight)
    half = kernel.shape[0] // 2  # phases with slab-axis phase 0, then 1 (itertools.product order)
    bias = None if conv.bias is None else conv.bias.repeat(2 ** (dims - 1))
    phases = list(itertools.product((0, 1), repeat=dims - 1))
    out = []
    row_elems = _row_elems(act, max(act.c, c_out), 2) * 2
    for lo, hi in _ranges(act.rows, row_elems, budget):
        win = act.window(lo, hi, 1)
        if dims > 1:
            win = F.pad(win, (1, 1) * (dims - 1))
        act.free_before(hi - 1)
        n, rest = hi - lo, act.rest
        y = win.new_empty((act.b, c_out, 2 * n, *(2 * k for k in rest)))
        for row_phase in (0, 1):
            rows = win[:, :, row_phase : row_phase + n + 1]
            ph = _CONV[dims](rows, kernel[row_phase * half : (row_phase + 1) * half], bias)
            for j, phase in enumerate(phases):
                dst = (slice(None), slice(None), slice(row_phase, None, 2), *(slice(p, None, 2) for p in phase))
                src = (slice(None), slice(j * c_out, (j + 1) * c_out), slice(None),
                       *(slice(p, p + k) for p, k in zip(phase, rest)))
                y[dst] = ph[src]
            del ph
        out.append(y)
    return _Act(out)


def _run_upsample(act: _Act, scale: int, conv: nn.Module, budget: int) -> _Act:
    """Nearest upsampling + post conv, slab by slab: the folded phase kernels for x2 with 3-tap convs, else as written."""
    if scale == 2 and all(k == 3 for k in conv.kernel_size) and conv.groups == 1:
        return _run_upsample_nearest2(act, conv, budget)
    p, out = conv.padding[0], []
    row_elems = _row_elems(act, max(act.c, conv.out_channels), scale) * scale
    for lo, hi in _ranges(act.rows, row_elems, budget):
        need = 1 if p else 0  # one input row each side gives the output row halo after nearest upsampling
        win = F.interpolate(act.window(lo, hi, need), scale_factor=scale, mode="nearest")
        if need:
            win = win[:, :, scale - p : win.shape[2] - (scale - p)]
            if lo == 0:
                win[:, :, :p].zero_()
            if hi == act.rows:
                win[:, :, win.shape[2] - p :].zero_()
        out.append(_conv(win, conv))
        act.free_before(hi - 1)
    return _Act(out)


def _run_groupnorm(act: _Act, gn: nn.GroupNorm) -> _Act:
    st = _Stats.of(act, gn)
    for ch in act.chunks:
        ch.mul_(st.scale).add_(st.shift)
    return act


def _run_gathered(act: _Act, block: nn.Module, budget: int) -> _Act:
    x = act.window(0, act.rows, 0)
    del act
    y = block(x)
    del x
    tmp = _Act([y])
    return _Act([tmp.window(lo, hi, 0) for lo, hi in _ranges(tmp.rows, _row_elems(tmp, tmp.c), budget)])


def slab_decode(decoder: nn.Module, z: torch.Tensor, slab_mb: float = 64.0) -> torch.Tensor:
    """Exact, memory-bounded ``decoder(z)`` for a MONAI AutoencoderKL ``Decoder`` (``.blocks``), one sample at a time.

    slab_mb: the size of one output slab in MiB (small activations stay whole; large ones are cut into slabs).
    """
    if not hasattr(decoder, "blocks"):
        raise TypeError(f"slab decode needs a decoder with .blocks (MONAI AutoencoderKL Decoder), got {type(decoder).__name__}")
    if not slab_mb > 0:
        raise ValueError(f"slab_mb must be > 0, got {slab_mb}")
    budget = max(1, int(slab_mb * 2**20 / z.element_size()))
    outs = []
    for b in range(z.shape[0]):
        act = _Act([z[b : b + 1].clone()])
        for block in decoder.blocks:
            conv = _inner_conv(block)
            up = _upsample_parts(block)
            if conv is not None:
                act = _run_conv(act, conv, budget)
            elif up is not None:
                act = _run_upsample(act, *up, budget)
            elif _is_resblock(block):
                act = _run_resblock(act, block, budget)
            elif isinstance(block, nn.GroupNorm):
                act = _run_groupnorm(act, block)
            else:
                act = _run_gathered(act, block, budget)
        outs.append(act.window(0, act.rows, 0) if len(act.chunks) > 1 else act.chunks[0])
        del act
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
    slab_mb: float = 64.0,
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
        return slab_decode(autoencoder.decoder, autoencoder.post_quant_conv(z), slab_mb)
    return tiled_decode(autoencoder.decode_stage_2_outputs, z, tile, overlap, ramp)
