"""Time FID feature extraction: ``python ci/bench_fid.py [--n 1000] [--size 128] [--batch_size 50]``.

The issue's target: InceptionV3 features for 1,000 128x128 images in under 2 minutes on the CI CPU. Prints the
wall time, images per second, peak resident memory and the FID of the set against a noised copy of itself.
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
    p.add_argument("--batch_size", type=int, default=50)
    p.add_argument("--extractor", default="inception")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
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


if __name__ == "__main__":
    main()
