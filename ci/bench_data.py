"""Time the built-in populations: seconds per case (generate + write), after a warm-up case.

Usage: python ci/bench_data.py [--n 5] [--brain1mm]
Prints one line per population and whether it meets the targets (2 mm brain subject < 1 s, 2D case < 50 ms).
The template is built (first run only, cached under ~/.cache/monai_gen_zoo) before timing starts.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"brain3d_2mm": 1.0, "brain2d_1mm": 0.05, "brain2d_2mm": 0.05, "cxr": 0.05, "mammo": 0.05, "oct": 0.05}


def _bench(name: str, write_case, n: int, out: Path) -> tuple[float, float]:
    path = lambda rel: out / name / rel  # noqa: E731
    write_case(0, 10_000, path)  # warm-up: imports, template cache
    gen_t, t0 = [], time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        write_case(0, i, path)
        gen_t.append(time.perf_counter() - t)
    return (time.perf_counter() - t0) / n, max(gen_t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--brain1mm", action="store_true", help="also time 1 mm 3D subjects (builds a 1 mm template)")
    args = ap.parse_args()
    from common.data import brain, cxr, mammo, oct as octp

    jobs = {
        "brain3d_2mm": lambda s, i, p: brain.write_case(s, i, p, dims=3, spacing=2),
        "brain2d_2mm": lambda s, i, p: brain.write_case(s, i, p, dims=2, spacing=2),
        "brain2d_1mm": lambda s, i, p: brain.write_case(s, i, p, dims=2, spacing=1),
        "cxr": lambda s, i, p: cxr.write_case(s, i, p, size=(128, 128)),
        "cxr_256": lambda s, i, p: cxr.write_case(s, i, p, size=(256, 256)),
        "mammo": lambda s, i, p: mammo.write_case(s, i, p, size=(160, 128)),
        "oct": lambda s, i, p: octp.write_case(s, i, p, size=(128, 128)),
    }
    if args.brain1mm:
        jobs["brain3d_1mm"] = lambda s, i, p: brain.write_case(s, i, p, dims=3, spacing=1)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, job in jobs.items():
            n = args.n if "3d" in name else max(args.n, 20)
            mean, worst = _bench(name, job, n, Path(tmp))
            target = TARGETS.get(name)
            verdict = "" if target is None else ("  OK" if mean < target else f"  SLOW (target {target} s)")
            ok &= target is None or mean < target
            print(f"{name:12s} {mean * 1000:8.1f} ms/case (worst {worst * 1000:.1f} ms, n={n}){verdict}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
