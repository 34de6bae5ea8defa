"""The evaluate runner behind every bundle's ``configs/evaluate.json``: samples folder + datalist -> JSON report.

All inputs are read and checked before any metric runs, and the report is written once, atomically, at the end:
a bad input leaves no file behind.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.evaluation.errors import EvaluationError
from common.evaluation.features import extract_features, resolve_method
from common.evaluation.loading import load_reals, load_samples
from common.evaluation.metrics import (
    auc,
    distinct_pairs,
    fid_per_plane,
    mae,
    mmd,
    ms_ssim_diversity,
    ms_ssim_reconstruction,
    ms_ssim_settings,
    psnr,
)
from common.evaluation.report import format_table, write_report



@dataclass
class _Inputs:
    """What the metrics read: both image sets and their files; the paired images are made once, on first use."""

    runner: EvaluationRunner
    samples: torch.Tensor
    s_paths: list[Path]
    reals: torch.Tensor
    r_paths: list[Path]

    @functools.cached_property
    def paired(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(reals, their counterparts, how they were paired) for the paired metrics."""
        r = self.runner
        if r.autoencoder is not None:
            return self.reals, r._reconstruct(self.reals), "autoencoder reconstruction of reals"
        si, ri, order = r._pairs(self.s_paths, self.r_paths)
        return self.reals[ri], self.samples[si], f"samples vs reals, paired {order}"


def _row(metric: str, value: float, n: Any, method: str | None, settings: dict[str, Any], extractor: str | None = None) -> dict[str, Any]:
    v = float(value)  # JSON has no inf / nan (PSNR of identical images is inf): those become strings
    return {"metric": metric, "value": v if np.isfinite(v) else str(v), "n": n, "extractor": extractor,
            "method": method, "settings": settings}


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the runner: ``check(runner, inputs, name)`` raises a one-line EvaluationError before anything
    expensive runs; ``compute(runner, inputs, name)`` returns its report row."""

    check: Callable[[EvaluationRunner, _Inputs, str], None]
    compute: Callable[[EvaluationRunner, _Inputs, str], dict[str, Any]]
    paired: bool = False


def _check_fid(r: EvaluationRunner, x: _Inputs, name: str) -> None:
    resolve_method(x.samples.ndim - 2, r.extractor, r.feature_method)
    for what, t in (("samples", x.samples), ("real images", x.reals)):
        if t.shape[0] < r.min_fid_samples:
            raise EvaluationError(f"FID needs at least {r.min_fid_samples} {what}, got {t.shape[0]}; provide more or drop 'fid'")


def _fid(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    kw = dict(extractor=r.extractor, method=r.feature_method, batch_size=r.batch_size,
              slices_per_plane=r.slices_per_plane, slice_range=r.slice_range, device=r.device,
              progress=r.progress, weights_path=r.extractor_weights)
    f_real, f_fake = extract_features(x.reals, **kw), extract_features(x.samples, **kw)
    per_plane = fid_per_plane(f_real, f_fake)
    settings = dict(f_fake.settings)  # slice indices stay in the features; sizes may differ per set
    for axis in range(3):
        settings.pop(f"slices_axis{axis}", None)
    if len(per_plane) > 1:
        settings["fid_per_plane"] = [round(v, 6) for v in per_plane]
    settings["feature_vectors"] = {"samples": f_fake.n, "reals": f_real.n}
    return _row(name, float(np.mean(per_plane)), {"samples": x.samples.shape[0], "reals": x.reals.shape[0]},
                f_fake.method, settings, r.extractor)


def _check_ms_ssim(r: EvaluationRunner, x: _Inputs) -> None:
    for t in (x.samples, x.reals):
        ms_ssim_settings(t.shape[2:], r.ms_ssim_kernel_size, r.ms_ssim_scales)


def _check_diversity(r: EvaluationRunner, x: _Inputs, name: str, real: bool) -> None:
    if (x.reals if real else x.samples).shape[0] < 2:
        raise EvaluationError("MS-SSIM diversity of reals needs at least 2 real images" if real
                              else "MS-SSIM diversity needs at least 2 samples; generate more or drop it")
    _check_ms_ssim(r, x)


def _diversity(r: EvaluationRunner, x: _Inputs, name: str, real: bool) -> dict[str, Any]:
    images = x.reals if real else x.samples
    st = ms_ssim_settings(images.shape[2:], r.ms_ssim_kernel_size, r.ms_ssim_scales)
    value = ms_ssim_diversity(images, max_pairs=r.max_pairs, seed=r.seed, settings=st)
    n_pairs = len(distinct_pairs(images.shape[0], r.max_pairs, r.seed))
    return _row(name, value, n_pairs, "mean over pairs of distinct images", {**st, "max_pairs": r.max_pairs, "seed": r.seed})


def _check_same_size(x: _Inputs, what: str) -> None:
    if x.samples.shape[2:] != x.reals.shape[2:]:
        raise EvaluationError(
            f"{what}: sample size {tuple(x.samples.shape[2:])} and real size {tuple(x.reals.shape[2:])} cannot be "
            "compared; set spatial_size"
        )


def _check_mmd(r: EvaluationRunner, x: _Inputs, name: str) -> None:
    _check_same_size(x, "MMD")
    if min(x.samples.shape[0], x.reals.shape[0]) < 2:
        raise EvaluationError("MMD needs at least 2 samples and 2 real images")


def _mmd(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    n = min(x.samples.shape[0], x.reals.shape[0])
    return _row(name, mmd(x.reals[:n], x.samples[:n]), n, "linear kernel on voxels, first n of each set", {})


def _check_paired(r: EvaluationRunner, x: _Inputs, name: str) -> None:
    if r.autoencoder is None:
        _check_same_size(x, "paired metrics")
        r._pairs(x.s_paths, x.r_paths)


def _check_reconstruction(r: EvaluationRunner, x: _Inputs, name: str) -> None:
    _check_paired(r, x, name)
    _check_ms_ssim(r, x)


def _reconstruction(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    real_p, pred_p, how = x.paired
    st = ms_ssim_settings(real_p.shape[2:], r.ms_ssim_kernel_size, r.ms_ssim_scales)
    return _row(name, ms_ssim_reconstruction(real_p, pred_p, settings=st), real_p.shape[0], how, st)


def _psnr(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    real_p, pred_p, how = x.paired
    return _row(name, psnr(real_p, pred_p), real_p.shape[0], how, {"data_range": 1.0, "unit": "dB"})


def _mae(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    real_p, pred_p, how = x.paired
    return _row(name, mae(real_p, pred_p), real_p.shape[0], how, {"data_range": 1.0})


def _check_auc(r: EvaluationRunner, x: _Inputs, name: str) -> None:
    r._scores()


def _auc(r: EvaluationRunner, x: _Inputs, name: str) -> dict[str, Any]:
    s_in, s_out = r._scores()
    return _row(name, auc(s_in, s_out), {"in": len(s_in), "out": len(s_out)}, "ROC AUC, out-of-distribution positive", {})


# Every metric the runner knows, in report order: its input check and its computation.
METRIC_SPECS: dict[str, MetricSpec] = {
    "fid": MetricSpec(_check_fid, _fid),
    "ms_ssim_diversity": MetricSpec(functools.partial(_check_diversity, real=False), functools.partial(_diversity, real=False)),
    "ms_ssim_diversity_real": MetricSpec(functools.partial(_check_diversity, real=True), functools.partial(_diversity, real=True)),
    "mmd": MetricSpec(_check_mmd, _mmd),
    "ms_ssim_reconstruction": MetricSpec(_check_reconstruction, _reconstruction, paired=True),
    "psnr": MetricSpec(_check_paired, _psnr, paired=True),
    "mae": MetricSpec(_check_paired, _mae, paired=True),
    "auc": MetricSpec(_check_auc, _auc),
}
METRICS = tuple(METRIC_SPECS)
PAIRED = tuple(m for m, spec in METRIC_SPECS.items() if spec.paired)


class EvaluationRunner:
    """Compute the paper's metrics for a bundle's samples against held-out real images.

    Args:
        samples_dir: folder of generated ``.nii.gz`` / ``.png`` files (the bundle's inference output).
        datalist: Decathlon-style datalist; reals are ``datalist[split][*][image_key]``.
        output_path: where the JSON report goes (written atomically).
        metrics: any of ``METRICS``. ``fid`` compares features of samples and reals; ``ms_ssim_diversity`` is the
            mean MS-SSIM over pairs of distinct samples (``_real``: the same over reals, its reference); ``mmd``
            compares the first ``min(n_samples, n_real)`` images of each set; the paired metrics (MS-SSIM
            reconstruction, PSNR, MAE) compare each real with the ``autoencoder``'s reconstruction of it when an
            autoencoder is given, else with the sample of the same file stem (or, failing that, the same rank in
            sorted order); ``auc`` reads ``ood_scores`` (``{"in": [...], "out": [...]}``, higher = more anomalous).
        extractor / feature_method / extractor_weights: FID features (see ``extract_features``).
        spatial_size: resample both sets to this size first (needed when their sizes differ, except for FID).
        ms_ssim_kernel_size / ms_ssim_scales: None = valid settings chosen for the image size (recorded).
        max_pairs / seed: MS-SSIM diversity uses all pairs, or a seeded subset of ``max_pairs``.
        min_fid_samples: fewest images per set that FID accepts (at least 2, the covariance needs them).
    """

    def __init__(
        self,
        samples_dir: str,
        datalist: str,
        output_path: str,
        metrics: Sequence[str] = ("fid", "ms_ssim_diversity"),
        extractor: str = "inception",
        feature_method: str | None = None,
        extractor_weights: str | None = None,
        split: str = "test",
        image_key: str = "image",
        batch_size: int = 16,
        slices_per_plane: int = 8,
        slice_range: Sequence[float] = (0.25, 0.75),
        spatial_size: Sequence[int] | None = None,
        ms_ssim_kernel_size: int | None = None,
        ms_ssim_scales: int | None = None,
        max_pairs: int | None = 100,
        seed: int = 0,
        min_fid_samples: int = 2,
        autoencoder: torch.nn.Module | None = None,
        autoencoder_weights: str | None = None,
        ood_scores: str | None = None,
        device: str = "cpu",
        progress: bool = True,
        name: str | None = None,
    ) -> None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise EvaluationError(f"unknown metrics {unknown or '[]'}: choose from {', '.join(METRICS)}")
        self.samples_dir, self.datalist, self.output_path = samples_dir, datalist, output_path
        self.metrics = list(dict.fromkeys(metrics))
        self.extractor, self.feature_method, self.extractor_weights = extractor, feature_method, extractor_weights
        self.split, self.image_key = split, image_key
        self.batch_size, self.slices_per_plane, self.slice_range = batch_size, slices_per_plane, list(slice_range)
        self.spatial_size = list(spatial_size) if spatial_size else None
        self.ms_ssim_kernel_size, self.ms_ssim_scales = ms_ssim_kernel_size, ms_ssim_scales
        self.max_pairs, self.seed = max_pairs, seed
        self.min_fid_samples = max(2, int(min_fid_samples))
        self.autoencoder, self.autoencoder_weights = autoencoder, autoencoder_weights
        self.ood_scores, self.device, self.progress, self.name = ood_scores, device, progress, name

    # -- inputs ---------------------------------------------------------------------------------------------
    def _resize(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self.spatial_size is None or list(t.shape[2:]) == self.spatial_size:
            return t
        if len(self.spatial_size) != t.ndim - 2:
            raise EvaluationError(f"spatial_size {self.spatial_size} does not match {t.ndim - 2}D images")
        from monai.transforms import Resize

        mode = "bilinear" if t.ndim == 4 else "trilinear"
        resize = Resize(self.spatial_size, mode=mode, anti_aliasing=True)
        return torch.stack([torch.as_tensor(resize(i)) for i in t]).float().clamp(0, 1)

    def _load(self) -> tuple[torch.Tensor, list[Path], torch.Tensor, list[Path], str]:
        samples, s_paths = load_samples(self.samples_dir)
        reals, r_paths, split = load_reals(self.datalist, self.split, self.image_key)
        if samples.ndim != reals.ndim or samples.shape[1] != reals.shape[1]:
            raise EvaluationError(
                f"samples {tuple(samples.shape[1:])} and reals {tuple(reals.shape[1:])} (channels, *size) cannot be "
                "compared: they differ in dimensionality or channels; evaluate against a datalist of the same kind"
            )
        return self._resize(samples), s_paths, self._resize(reals), r_paths, split

    def _check(self, inputs: _Inputs) -> None:
        """Everything that can be known wrong before the expensive steps."""
        for metric in self._ordered():
            METRIC_SPECS[metric].check(self, inputs, metric)

    def _ordered(self) -> list[str]:
        """The chosen metrics in report order."""
        return [m for m in METRICS if m in self.metrics]

    @staticmethod
    def _stem(p: Path) -> str:
        return p.name.split(".")[0]

    def _pairs(self, s_paths: list[Path], r_paths: list[Path]) -> tuple[list[int], list[int], str]:
        """Indices (samples, reals) of paired images: by file stem when every real has one, else by order."""
        s_index = {self._stem(p): i for i, p in enumerate(s_paths)}
        r_stems = [self._stem(p) for p in r_paths]
        if all(s in s_index for s in r_stems):
            return [s_index[s] for s in r_stems], list(range(len(r_paths))), "by file stem"
        if len(s_paths) == len(r_paths):
            return list(range(len(s_paths))), list(range(len(r_paths))), "by sorted order"
        raise EvaluationError(
            f"paired metrics: {len(s_paths)} samples and {len(r_paths)} reals, and the file stems do not match; "
            "name each output after its input or give equal counts"
        )

    def _scores(self) -> tuple[list[float], list[float]]:
        if not self.ood_scores:
            raise EvaluationError("metric 'auc' needs ood_scores: a JSON file {\"in\": [...], \"out\": [...]}")
        path = Path(self.ood_scores)
        try:
            data = json.loads(path.read_text())
            return [float(v) for v in data["in"]], [float(v) for v in data["out"]]
        except FileNotFoundError:
            raise EvaluationError(f"ood_scores file {path} does not exist: write the likelihood scores first") from None
        except Exception as exc:
            raise EvaluationError(f"ood_scores {path} must be JSON {{\"in\": [numbers], \"out\": [numbers]}} ({type(exc).__name__})") from None

    def _reconstruct(self, reals: torch.Tensor) -> torch.Tensor:
        ae = self.autoencoder
        if self.autoencoder_weights:
            from common.weights import load_into

            try:
                load_into(ae, self.autoencoder_weights)
            except Exception as exc:
                raise EvaluationError(str(exc).splitlines()[0]) from None
        ae = ae.to(self.device).eval()
        outs = []
        with torch.inference_mode():
            for s in range(0, reals.shape[0], self.batch_size):
                x = reals[s : s + self.batch_size].to(self.device)
                y = ae.reconstruct(x) if hasattr(ae, "reconstruct") else ae(x)
                outs.append((y[0] if isinstance(y, (tuple, list)) else y).float().cpu())
        recon = torch.cat(outs)
        if recon.shape != reals.shape:
            raise EvaluationError(f"the autoencoder returns {tuple(recon.shape)} for inputs {tuple(reals.shape)}: check its config")
        return recon

    # -- run ------------------------------------------------------------------------------------------------
    def run_cli(self) -> dict[str, Any]:
        """``run`` for ``python -m monai.bundle run``: a bad input prints ``error: <one line>`` and exits with 2.

        (MONAI's bundle runner would otherwise wrap the message in a long traceback of config evaluation.)
        """
        try:
            return self.run()
        except EvaluationError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def run(self) -> dict[str, Any]:
        """Read, check, compute every metric, print the table and write the report; returns the report."""
        samples, s_paths, reals, r_paths, split = self._load()
        inputs = _Inputs(self, samples, s_paths, reals, r_paths)
        self._check(inputs)
        results = [METRIC_SPECS[metric].compute(self, inputs, metric) for metric in self._ordered()]

        report = {
            "name": self.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "samples_dir": str(self.samples_dir),
            "datalist": str(self.datalist),
            "split": split,
            "n_samples": int(samples.shape[0]),
            "n_real": int(reals.shape[0]),
            "image_shape": {"samples": list(samples.shape[1:]), "reals": list(reals.shape[1:])},
            "intensity": "PNG / bit depth; NIfTI reoriented to RAS, min-max to [0, 1] per image",
            "spatial_size": self.spatial_size,
            "results": results,
        }
        print(format_table(results), flush=True)
        write_report(report, self.output_path)
        print(f"report written to {self.output_path}", flush=True)
        return report
