"""The ``run`` step of a VQ-VAE + transformer bundle's score.json: likelihoods of given images, all or nothing.

Per image: the summed and mean per-token log-likelihood (nats) in ``likelihoods.csv`` and a map PNG of the
per-token surprise (-log p, upsampled bilinearly to the image; black 0 nats, white >= ``map_max_nats``). Lower
likelihood = further from the training data. Files are written to a temp folder and moved into place only when
every image was scored; any bad input is a one-line error naming the file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.io.inputs import InputError, has_suffix, list_inputs
from common.sampling.settings import check_float, check_int
from common.tokens.likelihood import token_log_likelihoods
from common.tokens.ordering import TokenOrdering

CSV_NAME = "likelihoods.csv"
CSV_FIELDS = ("file", "log_likelihood_sum", "log_likelihood_mean", "tokens", "map")


ScoreInputError = InputError  # the name this module's callers and tests know


def read_input(path: Path, image_size: Sequence[int]) -> torch.Tensor:
    """[1, W, H] float in [0, 1] as the model was trained (LoadImage layout), or a one-line error."""
    from common.evaluation.errors import EvaluationError
    from common.evaluation.loading import load_image

    if not has_suffix(path, (".png",)):
        raise ScoreInputError(f"{path} is not a PNG: this model scores 8- or 16-bit grey PNG images")
    try:
        array = load_image(path)
    except EvaluationError as err:
        raise ScoreInputError(str(err)) from None
    want = tuple(int(s) for s in image_size)
    if array.shape[0] != 1:
        raise ScoreInputError(f"{path} has {array.shape[0]} channels: this model scores single-channel (grey) images; "
                              "convert it to greyscale first")
    if tuple(array.shape[1:]) != want:
        w, h = array.shape[1:]
        raise ScoreInputError(f"{path} is {w}x{h} pixels: this model scores {want[0]}x{want[1]} images; resize it first")
    return torch.from_numpy(array)


def surprise_map(log_probs: torch.Tensor, image_size: Sequence[int], map_max_nats: float) -> torch.Tensor:
    """[W, H] in [0, 1]: -log p per token, upsampled bilinearly to the image, divided by map_max_nats."""
    up = torch.nn.functional.interpolate(-log_probs[None, None].float(), size=tuple(int(s) for s in image_size),
                                         mode="bilinear", align_corners=False)[0, 0]
    return (up / map_max_nats).clamp(0.0, 1.0)


def run_scoring(
    vqvae: nn.Module,
    transformer: nn.Module,
    ordering: TokenOrdering,
    output_dir: str | os.PathLike,
    image_size: Sequence[int],
    input_image: str | None = None,
    input_dir: str | None = None,
    input_files: Sequence[str] | None = None,
    batch_size: int = 16,
    map_max_nats: float = 10.0,
    write_maps: bool = True,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Score every input image, write the CSV (and maps), print its path; returns the CSV rows."""
    from common.io.writers import staged_folder, write_bytes, write_png

    batch_size = check_int("batch_size", batch_size, 1)
    map_max_nats = check_float("map_max_nats", map_max_nats, 1e-3, 1e4, "10")
    paths = list_inputs(input_image, input_dir, input_files)
    images = [read_input(p, image_size) for p in paths]  # every input checked before anything is written
    stems = [p.name[: -len(p.suffix)] for p in paths]
    if len(set(stems)) != len(stems):
        raise ScoreInputError("two inputs share a file name: score them in separate runs")
    rows: list[dict] = []
    with staged_folder(output_dir, ".tmp-scoring-") as (out_dir, tmp_dir):
        for lo in range(0, len(images), batch_size):
            batch = torch.stack(images[lo : lo + batch_size]).to(device)
            log_probs = token_log_likelihoods(vqvae, transformer, ordering, batch).cpu()
            for k in range(batch.shape[0]):
                stem = stems[lo + k]
                map_name = f"{stem}_likelihood_map.png" if write_maps else ""
                if write_maps:
                    write_png(surprise_map(log_probs[k], image_size, map_max_nats), tmp_dir / map_name)
                rows.append({
                    "file": str(paths[lo + k]),
                    "log_likelihood_sum": f"{float(log_probs[k].sum()):.4f}",
                    "log_likelihood_mean": f"{float(log_probs[k].mean()):.6f}",
                    "tokens": int(log_probs[k].numel()),
                    "map": map_name,
                })
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_bytes(text.getvalue().encode(), tmp_dir / CSV_NAME)
        for name in [CSV_NAME] + [r["map"] for r in rows if r["map"]]:
            os.replace(tmp_dir / name, out_dir / name)
    print(out_dir / CSV_NAME)
    return rows


def log_likelihoods_of(vqvae: nn.Module, transformer: nn.Module, ordering: TokenOrdering, images: np.ndarray | torch.Tensor,
                       batch_size: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """Summed log-likelihood (nats) per image of an array [N, 1, W, H] in [0, 1] (for benchmarks)."""
    out = []
    tensor = torch.as_tensor(images).float()
    for lo in range(0, tensor.shape[0], batch_size):
        lp = token_log_likelihoods(vqvae, transformer, ordering, tensor[lo : lo + batch_size].to(device))
        out.append(lp.flatten(1).sum(1).cpu())
    return torch.cat(out).numpy()
