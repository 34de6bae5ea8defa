"""2D training items cut from 3D volumes: the axial slices of every datalist volume, held in memory.

Why: a 2D model that translates whole volumes slice by slice (flair2t1_controlnet) must see every axial level of
the volumes it will translate, not the one slice the 2D brain population writes. Each volume is loaded once
(through the config's transforms: load, check, intensity scaling), cut along ``axis`` into [C, H, W] slices, and
slices with too little foreground are dropped. The items are plain dicts, so the stage-1 DataLoader and the
stage-2 latent cache (``LatentCacheDataset``) take them like datalist entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


class VolumeSlices(Dataset):
    """Items ``{key: [C, H, W] slice for every image key, "subject", "slice": index}`` of every volume.

    Args:
        data: datalist entries of 3D volumes (e.g. ``{"image": t1.nii.gz, "flair": flair.nii.gz, ...}``).
        transform: loads one entry into ``[C, X, Y, Z]`` tensors under ``keys`` (applied once per volume).
        keys: the image keys to slice (all must share the volume's grid).
        axis: the spatial axis cut across (2 = the third axis, axial for RAS volumes).
        min_foreground: keep a slice only if at least this fraction of its ``foreground_key`` pixels exceeds
            ``foreground_threshold`` (0 keeps every slice).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        keys: Sequence[str] = ("image",),
        axis: int = 2,
        min_foreground: float = 0.0,
        foreground_key: str | None = None,
        foreground_threshold: float = 0.05,
    ) -> None:
        if len(data) == 0:
            raise ValueError("VolumeSlices: the datalist split is empty")
        if axis not in (0, 1, 2):
            raise ValueError(f"VolumeSlices: axis must be 0, 1 or 2 (a spatial axis of a 3D volume), got {axis}")
        if not 0.0 <= float(min_foreground) < 1.0:
            raise ValueError(f"VolumeSlices: min_foreground must be in [0, 1), got {min_foreground}")
        self.data = list(data)
        self.transform = transform
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.axis = int(axis)
        self.min_foreground = float(min_foreground)
        self.foreground_key = foreground_key or self.keys[0]
        self.foreground_threshold = float(foreground_threshold)
        self._items: list[dict[str, Any]] | None = None

    def build(self) -> None:
        """Load every volume and cut it into slices (idempotent)."""
        if self._items is not None:
            return
        items: list[dict[str, Any]] = []
        for entry in self.data:
            loaded = self.transform(dict(entry))
            volumes = {k: torch.as_tensor(loaded[k]).float() for k in self.keys}
            shapes = {k: tuple(v.shape) for k, v in volumes.items()}
            if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 4:
                raise ValueError(f"VolumeSlices: {entry.get(self.keys[0])}: the images {shapes} must be 3D "
                                 "[C, X, Y, Z] on one grid; give volumes of one shape per subject")
            subject = str(entry.get("subject", len(items)))
            dim = self.axis + 1
            for index in range(volumes[self.keys[0]].shape[dim]):
                cut = {k: v.select(dim, index).clone() for k, v in volumes.items()}
                if self.min_foreground > 0:
                    fraction = float((cut[self.foreground_key] > self.foreground_threshold).float().mean())
                    if fraction < self.min_foreground:
                        continue
                items.append({**cut, "subject": subject, "slice": index})
        if not items:
            raise ValueError(f"VolumeSlices: no slice has {self.min_foreground:.0%} foreground; lower min_foreground")
        logger.info("%d slices of %d volumes", len(items), len(self.data))
        self._items = items

    def __len__(self) -> int:
        self.build()
        assert self._items is not None
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.build()
        assert self._items is not None
        return dict(self._items[index])
