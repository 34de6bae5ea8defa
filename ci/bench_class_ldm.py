"""Measure a class-conditioned 2D LDM bundle (oct_ldm, mammo_ldm) on its held-out population images.

    python ci/bench_class_ldm.py recon  --bundle oct_ldm
    python ci/bench_class_ldm.py sample --bundle oct_ldm --n 50 --guidance 2 --steps 50 --scheduler ddim
    python ci/bench_class_ldm.py sweep  --bundle oct_ldm --n 20 --guidance 1 1.5 2 3 5
    python ci/bench_class_ldm.py steps  --bundle oct_ldm --n 20 --guidance 2 --solver-steps 5 8 10 15 20
    python ci/bench_class_ldm.py speed  --bundle oct_ldm
    python ci/bench_class_ldm.py figure --bundle oct_ldm --n 6

- recon: the autoencoder's reconstruction of the test split (posterior mean): MS-SSIM (settings for the size),
  PSNR, MAE.
- sample: n samples per class from the shipped weights; class fidelity = the share of samples the population's
  analyser (common.data.<population>.analyse, the one validated in docs/data.md) assigns to the requested class;
  mammography also reports the mean measured density per class (must rise low < medium < high); MS-SSIM
  diversity of the samples of each class beside the held-out data's own of that class; FID (packaged
  InceptionV3) of all samples against the held-out images; seconds per sample.
- sweep: `sample` at several guidance scales (fidelity against diversity), with a plot.
- steps: DDIM 50 against DPM-Solver++ 2M at fewer steps, same noise: the fewest steps whose mean fidelity is
  within 0.03 and whose diversity and FID are within 2 % and 5 % of DDIM 50's.
- speed: one sample end to end through `python -m monai.bundle run` (the user's command), twice.
- figure: n samples per class beside one held-out image per class, as a PNG.
Results go to runs/<bundle>/bench/<subcommand>.json (and figures to the bundle's docs/ with --docs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
POPULATION = {"oct_ldm": "oct", "mammo_ldm": "mammo"}


def _parser(bundle: str, **overrides):
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
    p = ConfigParser()
    p.read_config(str(root / "configs" / "inference.json"))
    p.update({"bundle_root": str(root), "device": "cpu", "progress": False, **overrides})
    return p


def _reals(args) -> tuple:
    """Held-out images [N, 1, W, H] in [0, 1] and their class labels."""
    import numpy as np
    import torch

    from common.evaluation.loading import load_reals

    images, _, split = load_reals(args.datalist, args.split)
    entries = json.loads(Path(args.datalist).read_text())[split]
    labels = np.array([int(e["label"]) for e in entries])
    return torch.as_tensor(images).float(), labels


def _analyse(bundle: str, images) -> list[dict]:
    analyse = importlib.import_module(f"common.data.{POPULATION[bundle]}").analyse
    return [analyse(img[0].numpy()) for img in images]


def _class_samples(bundle: str, n: int, guidance: float, steps: int, scheduler: str, seed: int, batch: int):
    """n samples per class (same noise for every class: sample i of each class starts from the same latent)."""
    import torch

    from common.sampling.runner import sample_seed

    p = _parser(bundle, scheduler=scheduler)
    sampler, conditioner = p.get_parsed_content("sampler"), p.get_parsed_content("conditioner")
    null = conditioner.null(1)
    out, seconds = {}, 0.0
    for name in p["class_names"]:
        images = []
        for lo in range(0, n, batch):
            k = min(batch, n - lo)
            noise = torch.stack([sampler.noise(1, torch.Generator().manual_seed(sample_seed(seed, i)))[0]
                                 for i in range(lo, lo + k)])
            t0 = time.perf_counter()
            images.append(sampler.sample(conditioner.from_values(1, classes=name), null, k, noise=noise,
                                         num_inference_steps=steps, guidance_scale=guidance, progress=False)
                          .clamp(0, 1).float())
            seconds += time.perf_counter() - t0
        out[name] = torch.cat(images)
    return out, seconds / (n * len(out))


_DATA_DIVERSITY: dict = {}


def _data_diversity(names: list[str], reals, labels) -> dict:
    """MS-SSIM diversity of the held-out images of each class (100 pairs), computed once per process."""
    import torch

    from common.evaluation import ms_ssim_diversity

    if not _DATA_DIVERSITY:
        for k, name in enumerate(names):
            own = reals[torch.as_tensor(labels == k)]
            _DATA_DIVERSITY[name] = round(ms_ssim_diversity(own, max_pairs=100), 4) if len(own) > 1 else None
    return dict(_DATA_DIVERSITY)


def _score(bundle: str, samples: dict, reals, labels, real_features) -> dict:
    import torch

    from common.evaluation import extract_features, fid, ms_ssim_diversity

    names = list(samples)
    fidelity, diversity, density = {}, {}, {}
    data_diversity = _data_diversity(names, reals, labels)
    for k, name in enumerate(names):
        found = _analyse(bundle, samples[name])
        fidelity[name] = round(sum(f["label"] == k for f in found) / len(found), 4)
        diversity[name] = round(ms_ssim_diversity(samples[name], max_pairs=100), 4)
        if "density" in found[0]:
            density[name] = round(sum(f["density"] for f in found) / len(found), 4)
    everything = torch.cat([samples[n] for n in names])
    result = {
        "fidelity": fidelity, "fidelity_mean": round(sum(fidelity.values()) / len(names), 4),
        "ms_ssim_diversity": diversity, "ms_ssim_diversity_data": data_diversity,
        "fid_vs_heldout": round(fid(real_features, extract_features(everything, "inception", progress=False)), 3),
        "n_per_class": int(samples[names[0]].shape[0]), "n_heldout": int(reals.shape[0]),
    }
    if density:
        result["mean_density"] = density
        result["density_ordered"] = all(density[a] < density[b] for a, b in zip(names, names[1:]))
    return result


def recon(args) -> dict:
    import torch

    from common.evaluation import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr

    reals, _ = _reals(args)
    p = _parser(args.bundle)
    p.get_parsed_content("load_autoencoder")
    ae = p.get_parsed_content("autoencoder_def").eval()
    recons = []
    with torch.inference_mode():
        for i in range(0, len(reals), 16):
            z_mu, _ = ae.encode(reals[i : i + 16])
            recons.append(ae.decode(z_mu).clamp(0, 1))
    recon_ = torch.cat(recons)
    settings = ms_ssim_settings(reals.shape[2:])
    return {"what": "reconstruction", "n": int(len(reals)), "ms_ssim": round(ms_ssim_reconstruction(reals, recon_, settings=settings), 4),
            "ms_ssim_settings": settings, "psnr_db": round(psnr(reals, recon_), 2), "mae": round(mae(reals, recon_), 4)}


def sample(args) -> dict:
    from common.evaluation import extract_features

    reals, labels = _reals(args)
    real_features = extract_features(reals, "inception", progress=False)
    samples, per_sample = _class_samples(args.bundle, args.n, args.guidance[0], args.steps, args.scheduler, args.seed,
                                         args.batch)
    return {"what": "samples", "guidance_scale": args.guidance[0], "scheduler": args.scheduler, "steps": args.steps,
            "seconds_per_sample_in_process": round(per_sample, 3),
            **_score(args.bundle, samples, reals, labels, real_features)}


def sweep(args) -> dict:
    from common.evaluation import extract_features

    reals, labels = _reals(args)
    real_features = extract_features(reals, "inception", progress=False)
    rows = []
    for g in args.guidance:
        samples, _ = _class_samples(args.bundle, args.n, g, args.steps, args.scheduler, args.seed, args.batch)
        rows.append({"guidance_scale": g, **_score(args.bundle, samples, reals, labels, real_features)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"what": "guidance sweep", "scheduler": args.scheduler, "steps": args.steps, "rows": rows}
    if args.docs:
        _plot_sweep(result, REPO / "bundles" / args.bundle / "docs" / "fidelity_vs_diversity.png")
    return result


def steps(args) -> dict:
    from common.evaluation import extract_features

    reals, labels = _reals(args)
    real_features = extract_features(reals, "inception", progress=False)
    g = args.guidance[0]
    ref_samples, ref_s = _class_samples(args.bundle, args.n, g, 50, "ddim", args.seed, args.batch)
    ref = {"scheduler": "ddim", "steps": 50, "seconds_per_sample": round(ref_s, 3),
           **_score(args.bundle, ref_samples, reals, labels, real_features)}
    rows, fewest = [], None
    for k in args.solver_steps:
        s, sec = _class_samples(args.bundle, args.n, g, k, "dpmpp2m", args.seed, args.batch)
        row = {"scheduler": "dpmpp2m", "steps": k, "seconds_per_sample": round(sec, 3),
               **_score(args.bundle, s, reals, labels, real_features)}
        div = sum(row["ms_ssim_diversity"].values()) / len(row["ms_ssim_diversity"])
        div_ref = sum(ref["ms_ssim_diversity"].values()) / len(ref["ms_ssim_diversity"])
        row["matches_ddim50"] = (abs(row["fidelity_mean"] - ref["fidelity_mean"]) <= 0.03
                                 and abs(div - div_ref) <= 0.02 * div_ref
                                 and row["fid_vs_heldout"] <= 1.05 * ref["fid_vs_heldout"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["matches_ddim50"] and fewest is None:
            fewest = k
    return {"what": "steps at equal quality", "guidance_scale": g, "reference": ref, "rows": rows,
            "rule": "mean fidelity within 0.03, mean diversity MS-SSIM within 2 %, FID within 5 % of DDIM 50",
            "fewest_matching_dpmpp2m_steps": fewest}


def speed(args) -> dict:
    root = REPO / "bundles" / args.bundle
    runs = []
    for steps_, scheduler in ((50, "ddim"), (args.steps, args.scheduler)):
        for _ in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / "inference.json"),
                       "--bundle_root", str(root), "--output_dir", tmp, "--progress", "false", "--class",
                       str(_parser(args.bundle)["class_names"][0]), "--num_inference_steps", str(steps_),
                       "--scheduler", scheduler, "--guidance_scale", str(args.guidance[0])]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
                runs.append({"scheduler": scheduler, "steps": steps_, "seconds_end_to_end": round(time.perf_counter() - t0, 2)})
    return {"what": "one sample end to end (python -m monai.bundle run, incl. start-up)", "runs": runs}


def figure(args) -> dict:
    import torch

    from common.io import atomic_path, png_image

    reals, labels = _reals(args)
    samples, _ = _class_samples(args.bundle, args.n, args.guidance[0], args.steps, args.scheduler, args.seed, args.n)
    from PIL import Image, ImageDraw

    names = list(samples)
    w, h = reals.shape[2], reals.shape[3]
    label_w, pad = 70, 3
    canvas = Image.new("L", (label_w + (args.n + 1) * (w + pad) + pad, len(names) * (h + pad)), 255)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        draw.text((4, r * (h + pad) + h // 2 - 12), f"{name}\n(real |\n samples)", fill=0)
        real = reals[torch.as_tensor(labels == r)][0]
        canvas.paste(png_image(real[0]), (label_w, r * (h + pad)))
        for c in range(args.n):
            canvas.paste(png_image(samples[name][c, 0]), (label_w + (c + 1) * (w + pad) + pad, r * (h + pad)))
    out = REPO / "bundles" / args.bundle / "docs" / "samples_per_class.png"
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return {"what": "figure", "path": str(out.relative_to(REPO)), "guidance_scale": args.guidance[0],
            "scheduler": args.scheduler, "steps": args.steps}


def _plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    div = [sum(r["ms_ssim_diversity"].values()) / len(r["ms_ssim_diversity"]) for r in rows]
    fid_ = [r["fidelity_mean"] for r in rows]
    ax.plot(div, fid_, "o-")
    for x, y, r in zip(div, fid_, rows):
        ax.annotate(f"w={r['guidance_scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    data = [v for v in rows[0]["ms_ssim_diversity_data"].values() if v is not None]
    ax.axvline(sum(data) / len(data), ls="--", c="grey", label="held-out data's own diversity")
    ax.set_xlabel("MS-SSIM between samples of a class (lower = more diverse)")
    ax.set_ylabel("class fidelity (mean over classes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from common.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("recon", "sample", "sweep", "steps", "speed", "figure"):
        p = sub.add_parser(name)
        p.add_argument("--bundle", required=True, choices=sorted(POPULATION))
        p.add_argument("--datalist", default=None, help="default: data/<population>/datalist.json")
        p.add_argument("--split", default="test")
        p.add_argument("--n", type=int, default=50, help="samples per class")
        p.add_argument("--guidance", type=float, nargs="+", default=[2.0])
        p.add_argument("--steps", type=int, default=50)
        p.add_argument("--scheduler", default="ddim")
        p.add_argument("--solver-steps", type=int, nargs="+", default=[5, 8, 10, 15, 20])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch", type=int, default=25)
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--docs", action="store_true", help="write figures into the bundle's docs/")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.datalist = args.datalist or str(REPO / "data" / POPULATION[args.bundle] / "datalist.json")
    start = time.perf_counter()
    result = globals()[args.cmd](args)
    result.update(bundle=args.bundle, threads=torch.get_num_threads(), wall_s=round(time.perf_counter() - start, 1),
                  datalist=args.datalist, split=args.split)
    out = REPO / "runs" / args.bundle / "bench" / f"{args.cmd}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from common.io import write_json

    write_json(result, out, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
