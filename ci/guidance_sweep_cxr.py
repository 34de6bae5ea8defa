"""Finding fidelity against diversity over the classifier-free guidance scale (the paper's Figure 2, our data).

    python ci/guidance_sweep_cxr.py --out docs_out/ [--guidance 1 1.5 2 3 5 7 10] [--n 8] [--steps 50]

For each prompt of the built-in chest X-ray population's findings and each guidance scale, ``--n`` samples are
drawn from the shipped weights (same seeds at every scale) and given to the data room's analyser
(``common.data.cxr.analyse``): fidelity = share of samples in which it sees the requested finding (e.g. the
effusion on the asked side). The empty prompt (the unconditional model; guidance has no effect on it) gives the
base rate of every finding. Diversity = mean MS-SSIM between the samples of one prompt (lower = more diverse).
Writes ``sweep.json``, ``fidelity_vs_diversity.png`` and ``samples_per_prompt.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "cxr_text_ldm"
sys.path.insert(0, str(REPO))

from bench_cxr_text_ldm import _parser, load_radiographs  # noqa: E402  (same folder: one parser, one PNG loader)

from common.io import write_json  # noqa: E402

# prompt -> (finding name, test on the analyser's output). Sides are patient sides.
PROMPTS = {
    "effusion_right": ("Large right pleural effusion.", lambda a: a["effusion_side"] == "right"),
    "effusion_left": ("Large left pleural effusion.", lambda a: a["effusion_side"] == "left"),
    "effusion_bilateral": ("Large bilateral pleural effusions.", lambda a: a["effusion_side"] == "bilateral"),
    "cardiomegaly": ("Cardiomegaly. No pleural effusion.", lambda a: bool(a["cardiomegaly"])),
    "pneumothorax_right": ("Right pneumothorax.", lambda a: a["pneumothorax_side"] == "right"),
    "pneumothorax_left": ("Left pneumothorax.", lambda a: a["pneumothorax_side"] == "left"),
    "no_finding": (
        "No acute cardiopulmonary process.",
        lambda a: a["effusion_side"] == "none" and a["pneumothorax_side"] == "none" and not a["cardiomegaly"],
    ),
}
# prompt -> the held-out cases that match it (datalist entries), for the data's own diversity per prompt
DATA_MATCH = {
    "effusion_right": lambda e: e["effusion_side"] == "right" and e["effusion_size"] == "large",
    "effusion_left": lambda e: e["effusion_side"] == "left" and e["effusion_size"] == "large",
    "effusion_bilateral": lambda e: e["effusion_side"] == "bilateral" and e["effusion_size"] == "large",
    "cardiomegaly": lambda e: e["finding"] == "cardiomegaly",
    "pneumothorax_right": lambda e: e["pneumothorax_side"] == "right",
    "pneumothorax_left": lambda e: e["pneumothorax_side"] == "left",
    "no_finding": lambda e: e["finding"] == "no_finding",
}


def _data_diversity(datalist: str, keys: list[str], max_pairs: int = 100) -> dict:
    """MS-SSIM between the held-out (test split) radiographs that match each prompt: the data's own diversity."""
    from common.evaluation.metrics import ms_ssim_diversity
    from common.training import load_datalist

    entries = load_datalist(datalist, "test")
    out = {}
    for key in keys:
        own = [e for e in entries if DATA_MATCH[key](e)]
        if len(own) > 1:
            out[key] = {"n": len(own), "ms_ssim": round(ms_ssim_diversity(load_radiographs(own), max_pairs=max_pairs), 4)}
    return out


def _analyse(images) -> list[dict]:
    """Analyser findings of samples [N, 1, W, H] (MONAI layout, which the analysers take)."""
    from common.data.cxr import analyse

    return [analyse(img[0].numpy()) for img in images]


def _sample(sampler, conditioner, prompt: str, n: int, guidance: float, seed: int, steps: int):
    import torch

    from common.sampling.runner import sample_seed

    noise = torch.stack([torch.randn(sampler.latent_shape, generator=torch.Generator().manual_seed(sample_seed(seed, i)))
                         for i in range(n)])
    cond = conditioner.from_values(1, prompt=prompt)
    null = conditioner.null(1) if guidance != 1.0 else None
    images = sampler.sample(cond, null, num_samples=n, generator=torch.Generator().manual_seed(seed), noise=noise,
                            num_inference_steps=steps, guidance_scale=guidance, progress=False)
    return images.float().clamp(0, 1).cpu()


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    g = [row["guidance_scale"] for row in result["sweep"]]
    fid = [row["fidelity_mean"] for row in result["sweep"]]
    div = [row["ms_ssim_within_prompt_mean"] for row in result["sweep"]]
    ax = axes[0]
    ax.plot(div, fid, "o-")
    for x, y, s in zip(div, fid, g):
        ax.annotate(f"w={s:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(result["empty_prompt"]["base_rate_mean"], ls="--", c="grey", label="empty prompt (base rate)")
    ax.set_xlabel("MS-SSIM between samples of a prompt (lower = more diverse)")
    ax.set_ylabel("finding fidelity (share of samples)")
    ax.set_title("fidelity vs diversity over guidance")
    ax.legend(fontsize=8)
    ax = axes[1]
    for key in result["prompts"]:
        ax.plot(g, [row["fidelity"][key] for row in result["sweep"]], "o-", label=key, ms=3)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(g, [f"{s:g}" for s in g])
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("fidelity")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(rows: dict, path: Path) -> None:
    """Samples per prompt: one row per prompt (label on the left), images in file orientation."""
    from PIL import Image, ImageDraw

    from common.io import atomic_path, png_image

    label_w, pad = 230, 2
    first = next(iter(rows.values()))
    h, w = first.shape[-1], first.shape[-2]
    cols = max(len(v) for v in rows.values())
    canvas = Image.new("L", (label_w + cols * (w + pad), len(rows) * (h + pad)), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (label, imgs) in enumerate(rows.items()):
        draw.text((4, r * (h + pad) + h // 2 - 6), label, fill=0)
        for c, img in enumerate(imgs):
            canvas.paste(png_image(img[0]), (label_w + c * (w + pad), r * (h + pad)))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _finish(result: dict, grid_rows: dict, out: Path) -> None:
    _plot(result, out / "fidelity_vs_diversity.png")
    if grid_rows:
        _grid(grid_rows, out / "samples_per_prompt.png")


def merge(parts: list[str], out: Path) -> int:
    """Combine sweeps run in parallel over different prompts (same guidance scales and settings)."""
    import torch

    results = [json.loads((Path(d) / "sweep.json").read_text()) for d in parts]
    merged = dict(results[0])
    merged["prompts"] = {k: v for r in results for k, v in r["prompts"].items()}
    merged["empty_prompt"] = next(r["empty_prompt"] for r in results if r.get("empty_prompt"))
    base = {k: merged["empty_prompt"]["base_rate"][k] for k in merged["prompts"]}
    merged["empty_prompt"]["base_rate"] = base
    merged["empty_prompt"]["base_rate_mean"] = sum(base.values()) / len(base)
    if any("data_diversity" in r for r in results):
        merged["data_diversity"] = {k: v for r in results for k, v in r.get("data_diversity", {}).items()}
    merged["sweep"] = []
    for rows in zip(*(r["sweep"] for r in results)):
        assert len({row["guidance_scale"] for row in rows}) == 1, "parts used different guidance scales"
        row = {"guidance_scale": rows[0]["guidance_scale"], "fidelity": {}, "ms_ssim_within_prompt": {}}
        for r in rows:
            row["fidelity"].update(r["fidelity"])
            row["ms_ssim_within_prompt"].update(r["ms_ssim_within_prompt"])
        row["fidelity_mean"] = sum(row["fidelity"].values()) / len(row["fidelity"])
        row["ms_ssim_within_prompt_mean"] = sum(row["ms_ssim_within_prompt"].values()) / len(row["ms_ssim_within_prompt"])
        row["elapsed_s"] = max(r["elapsed_s"] for r in rows)
        merged["sweep"].append(row)
    merged["settings"]["parts"] = len(parts)
    grid_rows: dict = {}
    for d in parts:
        f = Path(d) / "grid_rows.pt"
        if f.is_file():
            grid_rows.update(torch.load(f, weights_only=True))
    out.mkdir(parents=True, exist_ok=True)
    write_json(merged, out / "sweep.json")
    _finish(merged, grid_rows, out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge", nargs="+", help="only merge the sweep folders given (run in parallel) into --out")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1, 1.5, 2, 3, 5, 7, 10])
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    ap.add_argument("--n", type=int, default=8, help="samples per prompt and guidance scale")
    ap.add_argument("--n-empty", type=int, default=32, help="samples with the empty prompt (0: skip)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--grid-guidance", type=float, default=3.0, help="guidance of the samples figure")
    ap.add_argument("--grid-n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datalist", default=None, help="population datalist: also the test split's diversity per prompt")
    ap.add_argument("--model-dir", default=str(BUNDLE / "models"), help="weights folder (default: the shipped ones)")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, Path(args.out))
    import torch

    from common.evaluation.metrics import ms_ssim_diversity

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = _parser(progress=False, num_inference_steps=args.steps, scheduler=args.scheduler, model_dir=args.model_dir)
    sampler, conditioner = p.get_parsed_content("sampler"), p.get_parsed_content("conditioner")
    t_start = time.perf_counter()
    result = {
        "settings": {"steps": args.steps, "scheduler": args.scheduler, "n_per_prompt": args.n, "n_empty": args.n_empty,
                     "seed": args.seed, "image_size": p["image_size"], "threads": torch.get_num_threads()},
        "prompts": {k: PROMPTS[k][0] for k in args.prompts},
        "empty_prompt": None,
        "sweep": [],
    }
    if args.datalist:
        result["data_diversity"] = _data_diversity(args.datalist, args.prompts)
        print(json.dumps({"data_diversity": result["data_diversity"]}), flush=True)
    grid_rows = {}
    if args.n_empty > 0:
        empty = _sample(sampler, conditioner, "", args.n_empty, 1.0, args.seed + 1000, args.steps)
        found = _analyse(empty)
        base = {k: sum(test(a) for a in found) / len(found) for k, (_, test) in PROMPTS.items()}
        result["empty_prompt"] = {"base_rate": base, "base_rate_mean": sum(base[k] for k in args.prompts) / len(args.prompts),
                                  "ms_ssim_between_samples": round(ms_ssim_diversity(empty[: min(16, len(empty))]), 4)}
        print(json.dumps(result["empty_prompt"]), flush=True)
        grid_rows["(empty prompt)"] = empty[: args.grid_n]
    for g in args.guidance:
        row = {"guidance_scale": g, "fidelity": {}, "ms_ssim_within_prompt": {}}
        for key in args.prompts:
            prompt, test = PROMPTS[key]
            imgs = _sample(sampler, conditioner, prompt, args.n, g, args.seed, args.steps)
            row["fidelity"][key] = sum(test(a) for a in _analyse(imgs)) / len(imgs)
            row["ms_ssim_within_prompt"][key] = round(ms_ssim_diversity(imgs), 4)
            if g == args.grid_guidance:
                grid_rows[prompt] = imgs[: args.grid_n]
        row["fidelity_mean"] = sum(row["fidelity"].values()) / len(row["fidelity"])
        row["ms_ssim_within_prompt_mean"] = sum(row["ms_ssim_within_prompt"].values()) / len(row["ms_ssim_within_prompt"])
        row["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        result["sweep"].append(row)
        print(json.dumps(row), flush=True)
        write_json(result, out / "sweep.json")
    torch.save({k: v.contiguous() for k, v in grid_rows.items()}, out / "grid_rows.pt")
    if result["empty_prompt"] is not None:
        _finish(result, grid_rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
