"""Steps at equal quality: the few-step solver against the reference DDIM-50 on the shipped cxr_text_ldm weights.

    python ci/steps_sweep_cxr.py --out sweep_steps/ [--configs ddim:50 dpmpp2m:5 dpmpp2m:10 ...] [--n 16]

Every configuration (scheduler:steps) samples the same prompts from the same noise at the same guidance, so
differences come from the solver alone. Per configuration: finding fidelity (``common.data.cxr.analyse``, as in
``ci/guidance_sweep_cxr.py``), MS-SSIM between the samples of a prompt (diversity), FID of all its samples
against the held-out real images (InceptionV3, ``common.evaluation``), and the mean absolute pixel difference to
the reference sample drawn from the same noise. The first configuration is the reference; a configuration
"matches" it when fidelity is within 0.02 (absolute share), and diversity MS-SSIM and FID within 2 % (relative).
Writes ``steps_sweep.json`` into ``--out`` and prints one line per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_cxr_text_ldm import _parser  # noqa: E402  (same folder: one way to build the inference parser)
from guidance_sweep_cxr import PROMPTS, _analyse, _sample  # noqa: E402

DEFAULT_CONFIGS = ["ddim:50", "dpmpp2m:5", "dpmpp2m:8", "dpmpp2m:10", "dpmpp2m:15", "dpmpp2m:20", "dpmpp2m:25",
                   "ddim:10", "ddim:20"]
FIDELITY_TOL, RELATIVE_TOL = 0.02, 0.02


def _real_images(datalist: str, split: str, limit: int):
    """Held-out real images [N, 1, W, H] in [0, 1] (MONAI layout, as the sampler writes them)."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, ScaleIntensityRange

    from common.training import load_datalist

    files = load_datalist(datalist, split=split, max_items=limit)
    load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensityRange(0, 255, 0, 1, clip=True)])
    return torch.stack([torch.as_tensor(load(f["image"])).float() for f in files])


def _save(result: dict, out: Path) -> None:
    from common.io import write_json

    write_json(result, out / "steps_sweep.json")


def _fewest_matching_steps(rows: list[dict]) -> dict[str, int | None]:
    """Per solver: the fewest steps from which every run with more steps also matches the reference."""
    fewest: dict[str, int | None] = {}
    for solver in dict.fromkeys(r["scheduler"] for r in rows):
        runs = sorted((r["steps"], r["matches_reference"]) for r in rows if r["scheduler"] == solver)
        fewest[solver] = None
        for steps, ok in reversed(runs):
            if not ok:
                break
            fewest[solver] = steps
    return fewest


def _matches(row: dict, ref: dict) -> bool:
    return (abs(row["fidelity_mean"] - ref["fidelity_mean"]) <= FIDELITY_TOL
            and abs(row["ms_ssim_within_prompt_mean"] - ref["ms_ssim_within_prompt_mean"])
            <= RELATIVE_TOL * ref["ms_ssim_within_prompt_mean"]
            and abs(row["fid_vs_real"] - ref["fid_vs_real"]) <= RELATIVE_TOL * ref["fid_vs_real"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="scheduler:steps, the first is the reference")
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    ap.add_argument("--n", type=int, default=16, help="samples per prompt")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--datalist", default=str(REPO / "data" / "cxr128" / "datalist.json"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--n-real", type=int, default=0, help="real images for FID (0: the whole split)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    configs = []
    for c in args.configs:
        name, _, steps = c.partition(":")
        if not steps.isdigit() or int(steps) < 1:
            sys.exit(f"steps_sweep_cxr: config {c!r} is not scheduler:steps (e.g. dpmpp2m:10)")
        configs.append((name, int(steps)))
    if not Path(args.datalist).is_file():
        sys.exit(f"steps_sweep_cxr: {args.datalist} missing: python -m common.data make cxr --n 3000 "
                 f"--out {Path(args.datalist).parent} --size 128 --seed 0")
    import torch

    from common.evaluation import extract_features, fid
    from common.evaluation.metrics import ms_ssim_diversity

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = _real_images(args.datalist, args.split, args.n_real)
    real_feats = extract_features(real, "inception", progress=False)
    result = {"settings": {"prompts": {k: PROMPTS[k][0] for k in args.prompts}, "n_per_prompt": args.n,
                           "guidance_scale": args.guidance, "seed": args.seed, "n_real": len(real),
                           "real": f"{args.datalist} [{args.split}]", "threads": torch.get_num_threads(),
                           "tolerances": {"fidelity_abs": FIDELITY_TOL, "ms_ssim_and_fid_rel": RELATIVE_TOL}},
              "configs": []}
    reference = None
    for name, steps in configs:
        p = _parser(progress=False, num_inference_steps=steps, scheduler=name)
        sampler, conditioner = p.get_parsed_content("sampler"), p.get_parsed_content("conditioner")
        t0 = time.perf_counter()
        per_prompt = {key: _sample(sampler, conditioner, PROMPTS[key][0], args.n, args.guidance, args.seed, steps)
                      for key in args.prompts}
        seconds = time.perf_counter() - t0
        allimgs = torch.cat(list(per_prompt.values()))
        row = {"scheduler": name, "steps": steps, "sampling_s": round(seconds, 1),
               "fidelity": {k: sum(PROMPTS[k][1](a) for a in _analyse(v)) / len(v) for k, v in per_prompt.items()},
               "ms_ssim_within_prompt": {k: round(ms_ssim_diversity(v), 4) for k, v in per_prompt.items()},
               "fid_vs_real": round(fid(extract_features(allimgs, "inception", progress=False), real_feats), 3)}
        row["fidelity_mean"] = round(sum(row["fidelity"].values()) / len(row["fidelity"]), 4)
        row["ms_ssim_within_prompt_mean"] = round(
            sum(row["ms_ssim_within_prompt"].values()) / len(row["ms_ssim_within_prompt"]), 4)
        if reference is None:
            reference, ref_images = row, allimgs
            row["mean_abs_diff_to_reference"], row["matches_reference"] = 0.0, True
        else:
            row["mean_abs_diff_to_reference"] = round(float((allimgs - ref_images).abs().mean()), 5)
            row["matches_reference"] = _matches(row, reference)
        result["configs"].append(row)
        print(f"{name}:{steps:<4} fidelity {row['fidelity_mean']:.3f}  MS-SSIM {row['ms_ssim_within_prompt_mean']:.4f}  "
              f"FID {row['fid_vs_real']:.2f}  |x - ref| {row['mean_abs_diff_to_reference']:.4f}  "
              f"{'matches' if row['matches_reference'] else 'differs'}  ({seconds:.0f} s)", flush=True)
        _save(result, out)
    result["fewest_matching_steps"] = _fewest_matching_steps(result["configs"][1:])
    _save(result, out)
    print("fewest steps matching the reference:", json.dumps(result["fewest_matching_steps"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
