"""Time the built-in populations: seconds per case (generate + write), after a warm-up case.

Usage: python ci/bench_data.py [--n 5] [--brain1mm] [--calibrate] [--accuracy] [--only cxr mammo ...]
--accuracy prints how well each population's analyser recovers the recorded attributes.
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
    (out / name).mkdir(parents=True, exist_ok=True)
    write_case(0, 10_000, path)  # warm-up: imports, template cache
    gen_t, t0 = [], time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        write_case(0, i, path)
        gen_t.append(time.perf_counter() - t)
    return (time.perf_counter() - t0) / n, max(gen_t)


def _accuracy(brain, cxr, mammo, octp, only: set[str]) -> None:
    import numpy as np

    for dims, n in ((3, 20), (2, 100)) if "brain" in only else ():
        rec, meas = [], []
        for i in range(n):
            s = brain.generate_subject(11, i, dims=dims)
            m = brain.analyse_volumes(s.t1, (2.0,) * dims)
            rec.append([s.covariates[k] for k in ("ventricular_vol_ml", "brain_vol_ml", "ventricular_vol", "brain_vol")])
            nm = brain.normalise_covariates(m, dims)
            meas.append([m["ventricular_vol_ml"], m["brain_vol_ml"], nm["ventricular_vol"], nm["brain_vol"]])
        r, m = np.array(rec), np.array(meas)
        print(f"brain {dims}D 2 mm n={n}: ventricular r={np.corrcoef(r[:, 0], m[:, 0])[0, 1]:.3f} "
              f"brain r={np.corrcoef(r[:, 1], m[:, 1])[0, 1]:.3f}; normalised |error| mean/max "
              f"ventricular {np.abs(r[:, 2] - m[:, 2]).mean():.3f}/{np.abs(r[:, 2] - m[:, 2]).max():.3f} "
              f"brain {np.abs(r[:, 3] - m[:, 3]).mean():.3f}/{np.abs(r[:, 3] - m[:, 3]).max():.3f}", flush=True)
    if "cxr" in only:
        cases = [cxr.generate(21, i) for i in range(300)]
        res = [cxr.analyse(c.image) for c in cases]
        eff = [(r, c.attributes) for r, c in zip(res, cases) if c.attributes["effusion_side"] != "none"]
        clear = [(r, c.attributes) for r, c in zip(res, cases) if c.attributes["effusion_side"] == "none"]
        ptx = [(r, c.attributes) for r, c in zip(res, cases) if c.attributes["pneumothorax_side"] != "none"]
        rec, meas = np.array([a["ctr"] for r, a in clear]), np.array([r["ctr"] for r, a in clear])
        print(f"cxr n=300: effusion side {np.mean([r['effusion_side'] == a['effusion_side'] for r, a in eff]):.3f} "
              f"size {np.mean([r['effusion_size'] == a['effusion_size'] for r, a in eff]):.3f} (n={len(eff)}); "
              f"no false effusion {np.mean([r['effusion_side'] == 'none' for r, a in clear]):.3f}; "
              f"pneumothorax side (all cases) {np.mean([r['pneumothorax_side'] == c.attributes['pneumothorax_side'] for r, c in zip(res, cases)]):.3f}, "
              f"found {np.mean([r['pneumothorax_side'] == a['pneumothorax_side'] for r, a in ptx]):.3f} of n={len(ptx)}; "
              f"ctr r={np.corrcoef(rec, meas)[0, 1]:.3f} mean |error| {np.abs(rec - meas).mean():.3f} "
              f"(no effusion, n={len(clear)}); cardiomegaly {np.mean([r['cardiomegaly'] == a['cardiomegaly'] for r, a in clear]):.3f}",
              flush=True)
    if "mammo" in only:
        cases = [mammo.generate(5, i) for i in range(100)]
        res = [mammo.analyse(c.image) for c in cases]
        print(f"mammo n=100: masking level {np.mean([r['masking'] == c.attributes['masking'] for r, c in zip(res, cases)]):.3f}, "
              f"density r={np.corrcoef([c.attributes['density'] for c in cases], [r['density'] for r in res])[0, 1]:.4f}",
              flush=True)
    if "oct" in only:
        cases = [octp.generate(9, i) for i in range(100)]
        res = [octp.analyse(c.image) for c in cases]
        print(f"oct n=100: class {np.mean([r['class'] == c.attributes['class'] for r, c in zip(res, cases)]):.3f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--brain1mm", action="store_true", help="also time 1 mm 3D subjects (builds a 1 mm template)")
    ap.add_argument("--calibrate", action="store_true",
                    help="print the brain analyser's calibration fits (common.data.brain.CALIBRATION) and exit")
    ap.add_argument("--accuracy", action="store_true", help="print the analysers' agreement with the ground truth and exit")
    ap.add_argument("--only", nargs="+", choices=["brain", "cxr", "mammo", "oct"], default=["brain", "cxr", "mammo", "oct"],
                    help="populations to measure (default: all)")
    args = ap.parse_args()
    from common.data import brain, cxr, mammo, oct as octp

    if args.accuracy:
        _accuracy(brain, cxr, mammo, octp, set(args.only))
        return 0

    if args.calibrate:
        grids = [("3d_2mm", 3, 2, 60), ("2d_2mm", 2, 2, 200), ("2d_1mm", 2, 1, 100)]
        if args.brain1mm:
            grids.append(("3d_1mm", 3, 1, 20))
        for key, dims, spacing, n in grids:
            fits = brain.calibrate(n=n, seed=100, dims=dims, spacing=spacing)
            print(key, f"n={n}", {k: tuple(round(v, 4) for v in f) for k, f in fits.items()}, "(slope, intercept, r)",
                  flush=True)
        return 0

    jobs = {
        "brain3d_2mm": lambda s, i, p: brain.write_case(s, i, p, dims=3, spacing=2),
        "brain2d_2mm": lambda s, i, p: brain.write_case(s, i, p, dims=2, spacing=2),
        "brain2d_1mm": lambda s, i, p: brain.write_case(s, i, p, dims=2, spacing=1),
        "cxr": lambda s, i, p: cxr.write_case(s, i, p, size=(128, 128)),
        "cxr_256": lambda s, i, p: cxr.write_case(s, i, p, size=(256, 256)),
        "mammo": lambda s, i, p: mammo.write_case(s, i, p, size=(160, 128)),
        "oct": lambda s, i, p: octp.write_case(s, i, p, size=(128, 128)),
    }
    jobs = {k: v for k, v in jobs.items() if any(k.startswith(p) for p in args.only)}
    if args.brain1mm and "brain" in args.only:
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
