"""Datalist loading for training, with one-line errors that say what is wrong and how to fix it."""

from __future__ import annotations

import json
import os
from typing import Any

from monai.transforms import Transform


# datalist keys that name image files (checked to exist before training starts)
IMAGE_KEYS = ("image", "flair", "image_lowres", "seg", "label_image")


def load_datalist(datalist: str, split: str = "training", max_items: int | None = None) -> list[dict[str, Any]]:
    """Entries of one split of a Decathlon-style datalist, file paths made absolute (relative to its folder)."""
    if not datalist or not os.path.isfile(datalist):
        raise FileNotFoundError(
            f"datalist not found: {datalist!r}; make a built-in population with `python -m common.data make "
            "brain|cxr|mammo|oct --n N --out DIR` (the bundle's card gives its command) and pass --datalist DIR/datalist.json"
        )
    try:
        with open(datalist) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {datalist} is not valid JSON ({err.msg} at line {err.lineno})") from None
    from common.data.make import check_population_version

    check_population_version(content, datalist)
    if not isinstance(content, dict) or not isinstance(content.get(split), list) or not content[split]:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"datalist {datalist} has no non-empty '{split}' list (it has: {keys})")
    from monai.data import load_decathlon_datalist

    entries = load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=split,
                                      base_dir=os.path.dirname(os.path.abspath(datalist)))
    if max_items is not None and int(max_items) > 0:
        entries = entries[: int(max_items)]
    missing = [v for e in entries for k, v in e.items()
               if isinstance(v, str) and k in IMAGE_KEYS and not os.path.isfile(v)]
    if missing:
        raise FileNotFoundError(f"datalist {datalist} names {len(missing)} file(s) that do not exist, e.g. {missing[0]}: "
                                "fix the paths (relative to the datalist's folder) or regenerate the data")
    return entries


class CheckImaged(Transform):
    """Refuse, with one line naming the file, an image of another dimensionality or channel count than the
    bundle trains on (MONAI's crop would fail later with "Sequence must have length 2, got 3.").

    The checks here are MONAI ``Transform`` subclasses: ``CacheDataset`` caches up to the first transform that is
    random OR not a ``Transform``, so a plain class here made every later deterministic transform (intensity
    scaling, the upscaler's cubic interpolation: 3 s per 1 mm volume) run again on every item of every epoch."""

    def __init__(self, keys: str | list[str], spatial_dims: int, channels: int = 1) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.spatial_dims, self.channels = int(spatial_dims), int(channels)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            image = data[key]
            shape = tuple(image.shape)
            if len(shape) != self.spatial_dims + 1 or shape[0] != self.channels:
                meta = getattr(image, "meta", {}) or {}
                name = meta.get("filename_or_obj", key)
                found = f"{len(shape) - 1}D with {shape[0]} channel(s)" if shape else "a scalar"
                fix = (f"give {self.spatial_dims}D files or use a {'2D' if self.spatial_dims == 3 else '3D'} bundle"
                       if len(shape) != self.spatial_dims + 1 else f"convert it to {self.channels} channel(s) (greyscale)")
                raise ValueError(f"{name}: image of shape {shape} ({found}); this bundle trains on {self.spatial_dims}D "
                                 f"images with {self.channels} channel(s): {fix}")
        return data


class CheckHalfResolutiond(Transform):
    """Refuse, with one line naming the file, a low-resolution image that is not the half-resolution grid of its
    image (a super-resolution pair is cropped jointly on that grid, so 80x112x80 must go with 160x224x160)."""

    def __init__(self, key: str = "image", lowres_key: str = "image_lowres") -> None:
        self.key, self.lowres_key = key, lowres_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        high, low = tuple(data[self.key].shape[1:]), tuple(data[self.lowres_key].shape[1:])
        if low != tuple(n // 2 for n in high):
            meta = getattr(data[self.lowres_key], "meta", {}) or {}
            name = meta.get("filename_or_obj", self.lowres_key)
            raise ValueError(f"{name}: low-resolution shape {low} is not half of the image's {high}; pair each 1 mm "
                             "image with its 2 mm copy (python -m common.data make brain --spacing 1 writes both)")
        return data


class InterpolationResiduald(Transform):
    """Replace ``key`` (the 1 mm image) by what a residual upscaler models, ``scale * (image - base(lowres))``
    (common.sampling.upscale, module docstring); ``base=None`` leaves the image as it is (the published recipe)."""

    def __init__(self, key: str = "image", lowres_key: str = "image_lowres", base: str | None = None,
                 scale: float = 1.0) -> None:
        from common.sampling.upscale import check_base

        self.key, self.lowres_key, self.base, self.scale = key, lowres_key, check_base(base), float(scale)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.base is None:
            return data
        from common.sampling.upscale import interpolation_residual

        image = data[self.key]
        residual = interpolation_residual(image, data[self.lowres_key], self.base, self.scale)
        data = dict(data)
        data[self.key] = residual.to(image.device) if hasattr(image, "device") else residual
        return data


class PairPrepareBatch:
    """(input, target) of a supervised image-to-image step from two batch keys (FLAIR -> T1 regression): MONAI's
    default prepare_batch reads only ``image`` / ``label``."""

    def __init__(self, input_key: str, target_key: str) -> None:
        self.input_key, self.target_key = input_key, target_key

    def __call__(self, batchdata: dict[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any):
        missing = [k for k in (self.input_key, self.target_key) if k not in batchdata]
        if missing:
            raise KeyError(f"batch has no {missing[0]!r} (keys: {sorted(batchdata)}); set the prepare_batch keys")
        return (batchdata[self.input_key].to(device, non_blocking=non_blocking).float(),
                batchdata[self.target_key].to(device, non_blocking=non_blocking).float())
