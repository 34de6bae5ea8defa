"""``python -m common.evaluation --samples_dir DIR --datalist FILE --output report.json [--metrics fid,mmd ...]``.

The same runner as the bundles' ``configs/evaluate.json``, for samples from anywhere; errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys

from common.evaluation.errors import EvaluationError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.evaluation", description=__doc__.splitlines()[0])
    p.add_argument("--samples_dir", required=True)
    p.add_argument("--datalist", required=True)
    p.add_argument("--output", required=True, help="report JSON path (written atomically)")
    p.add_argument("--metrics", default="fid,ms_ssim_diversity", help="comma-separated, e.g. fid,ms_ssim_diversity,mmd")
    p.add_argument("--extractor", default="inception", choices=["inception", "radimagenet", "medicalnet"])
    p.add_argument("--feature_method", default=None, choices=["2d", "2.5d", "3d"])
    p.add_argument("--extractor_weights", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--image_key", default="image")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--slices_per_plane", type=int, default=8)
    p.add_argument("--spatial_size", type=lambda s: [int(v) for v in s.split(",")], default=None)
    p.add_argument("--max_pairs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ood_scores", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    try:
        from common.evaluation.runner import EvaluationRunner

        EvaluationRunner(
            samples_dir=a.samples_dir, datalist=a.datalist, output_path=a.output,
            metrics=[m.strip() for m in a.metrics.split(",") if m.strip()], extractor=a.extractor,
            feature_method=a.feature_method, extractor_weights=a.extractor_weights, split=a.split,
            image_key=a.image_key, batch_size=a.batch_size, slices_per_plane=a.slices_per_plane,
            spatial_size=a.spatial_size, max_pairs=a.max_pairs, seed=a.seed, ood_scores=a.ood_scores,
            device=a.device, progress=not a.no_progress,
        ).run()
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
