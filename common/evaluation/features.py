"""Feature extraction for FID: 2D images, 3D volumes as 2.5D (slices of three planes) or natively 3D.

The result carries the extractor and method that produced it, so every reported FID says where it came from and
FID refuses to compare features of different origins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.evaluation.errors import EvaluationError
from common.evaluation.extractors import EXTRACTORS, get_extractor

METHODS = ("2d", "2.5d", "3d")


@dataclass
class Features:
    """Features ``[N, F]`` (2d / 3d) or ``[3 planes, N * slices, F]`` (2.5d), with their provenance."""

    values: torch.Tensor
    extractor: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of feature vectors per plane (images for 2d / 3d, slices for 2.5d)."""
        return int(self.values.shape[-2])


def _stack(images: Any) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images
    elif isinstance(images, np.ndarray):
        x = torch.from_numpy(images)
    elif isinstance(images, Sequence) and len(images) > 0:
        shapes = {tuple(torch.as_tensor(i).shape) for i in images}
        if len(shapes) > 1:
            raise EvaluationError(f"images have different shapes {sorted(shapes)[:3]}: resample them to one size first")
        x = torch.stack([torch.as_tensor(i) for i in images])
    else:
        raise EvaluationError("no images to extract features from: pass a non-empty [N, C, ...] tensor or list")
    if x.ndim not in (4, 5) or x.shape[0] == 0:
        raise EvaluationError(f"images have shape {tuple(x.shape)}: expected [N, C, H, W] or [N, C, D, H, W]")
    return x.float()


def resolve_method(spatial_dims: int, extractor: str, method: str | None) -> str:
    """The method for this image dimensionality and extractor (auto when ``method`` is None), or an error."""
    ext_dims = EXTRACTORS[extractor].spatial_dims if extractor in EXTRACTORS else None
    if ext_dims is None:
        raise EvaluationError(f"unknown extractor {extractor!r}: choose one of {', '.join(EXTRACTORS)}")
    if method is None:
        method = "2d" if spatial_dims == 2 else ("3d" if ext_dims == 3 else "2.5d")
    if method not in METHODS:
        raise EvaluationError(f"unknown feature method {method!r}: choose one of {', '.join(METHODS)}")
    expected = {"2d": (2, 2), "2.5d": (3, 2), "3d": (3, 3)}[method]
    if (spatial_dims, ext_dims) != expected:
        raise EvaluationError(
            f"method {method!r} with the {ext_dims}D extractor {extractor!r} does not apply to {spatial_dims}D images; "
            + ("use method '2.5d' or extractor 'medicalnet'" if spatial_dims == 3 else "use a 2D extractor (inception, radimagenet)")
        )
    return method


def slice_indices(size: int, slices_per_plane: int, slice_range: Sequence[float]) -> list[int]:
    """Evenly spaced slice indices over the central ``slice_range`` fraction of an axis (unique, sorted)."""
    lo, hi = float(slice_range[0]), float(slice_range[1])
    if not 0.0 <= lo <= hi <= 1.0 or slices_per_plane < 1:
        raise EvaluationError(f"slice_range {list(slice_range)} / slices_per_plane {slices_per_plane}: use 0 <= lo <= hi <= 1 and >= 1 slice")
    idx = np.linspace(lo * (size - 1), hi * (size - 1), slices_per_plane).round().astype(int)
    return sorted(set(int(i) for i in idx))


def extract_features(
    images: Any,
    extractor: str = "inception",
    method: str | None = None,
    batch_size: int = 8,
    slices_per_plane: int = 8,
    slice_range: Sequence[float] = (0.25, 0.75),
    device: str | torch.device = "cpu",
    progress: bool = True,
    weights_path: str | None = None,
) -> Features:
    """Features of ``images`` ``[N, C, *spatial]`` in ``[0, 1]`` with a progress bar over batches.

    ``method``: ``2d`` (2D images), ``2.5d`` (3D volumes, ``slices_per_plane`` slices from each of the three
    planes through a 2D extractor; FID is then computed per plane and averaged), ``3d`` (3D extractor); ``None``
    picks the natural one for the image and extractor dimensions.
    """
    from tqdm import tqdm

    x = _stack(images)
    method = resolve_method(x.ndim - 2, extractor, method)
    net = get_extractor(extractor, weights_path).to(device)
    settings: dict[str, Any] = {"batch_size": batch_size}
    if method == "2.5d":
        planes = []
        for axis in range(3):
            idx = slice_indices(x.shape[2 + axis], slices_per_plane, slice_range)
            in_plane = [s for a, s in enumerate(x.shape[2:]) if a != axis]
            slices = x.index_select(2 + axis, torch.tensor(idx)).movedim(2 + axis, 1)  # [N, S, C, *in_plane]
            planes.append(slices.reshape(-1, x.shape[1], *in_plane))
            settings[f"slices_axis{axis}"] = idx
        settings.update(slices_per_plane=slices_per_plane, slice_range=list(slice_range))
        groups = planes
    else:
        groups = [x]
    total = sum(g.shape[0] for g in groups)
    out: list[torch.Tensor] = []
    with torch.inference_mode(), tqdm(total=total, desc=f"{extractor} features ({method})", unit="img", disable=not progress) as bar:
        for g in groups:
            feats = []
            for s in range(0, g.shape[0], batch_size):
                feats.append(net(g[s : s + batch_size].to(device)).float().cpu())
                bar.update(min(batch_size, g.shape[0] - s))
            out.append(torch.cat(feats))
    values = torch.stack(out) if method == "2.5d" else out[0]
    return Features(values=values, extractor=extractor, method=method, settings=settings)
