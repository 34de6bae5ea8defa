"""Measure cxr_vqvae_transformer on held-out data: reconstruction, out-of-distribution detection, both priors.

    python ci/bench_cxr_vqvae_transformer.py recon
    python ci/bench_cxr_vqvae_transformer.py ood    [--docs]      # AUROC table, ROC figure
    python ci/bench_cxr_vqvae_transformer.py priors --n 200       # FID of both priors, seconds per sample
    python ci/bench_cxr_vqvae_transformer.py score-speed          # seconds per image of score.json's work
    python ci/bench_cxr_vqvae_transformer.py figure [--docs]      # samples of both priors, likelihood maps

- recon: the VQ-VAE's reconstruction of the test split: MS-SSIM (settings for the size), PSNR, MAE; codebook
  usage and perplexity over all test tokens.
- ood: the score is the negated summed log-likelihood of an image under the transformer (higher = more
  anomalous); the baseline score is the VQ-VAE's mean absolute reconstruction error. In-distribution: the
  held-out (test) chest X-rays. Far-OOD: the built-in mammography, OCT and 2D brain populations at 128x128
  (fresh seeds), and real images of pydicom-data (an extremity CR, a CT slice, a shoulder MR; 16 random
  crops/flips of each); the real chest CR of pydicom-data is reported apart (a real chest radiograph is a domain
  shift from the synthetic population, not another anatomy). Near-OOD: the held-out chest X-rays with one
  corruption each (noise, blur, inversion, flips, a crop, a foreign-object square). AUROC per set by
  common.evaluation.metrics.auc.
- priors: n samples from each prior (seeds as `python -m monai.bundle run` uses them), FID (packaged
  InceptionV3) against the held-out images, MS-SSIM diversity beside the data's, seconds per sample.
Results go to runs/cxr_vqvae_transformer/bench/<subcommand>.json (and the bundle's docs/ with --docs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "bundles" / "cxr_vqvae_transformer"
SIZE = 128
CORRUPTIONS = ("noise", "blur", "inversion", "flip_lr", "flip_ud", "crop", "foreign_object")
REAL_FAR = {"extremity_cr": "RG3_UNCI.dcm", "ct_slice": "693_UNCI.dcm", "shoulder_mr": "MR2_UNCI.dcm"}
REAL_CHEST = "RG1_UNCI.dcm"


def _parser(**overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p.update({"bundle_root": str(BUNDLE), "device": "cpu", "progress": False, **overrides})
    return p


def _models():
    p = _parser()
    p.get_parsed_content("load_vqvae"), p.get_parsed_content("load_transformer")
    return p.get_parsed_content("vqvae"), p.get_parsed_content("transformer"), p.get_parsed_content("ordering")


def _heldout(datalist: str):
    import torch

    from common.evaluation.loading import load_reals

    images, _, _ = load_reals(datalist, "test")
    return torch.as_tensor(images).float()


def _resize(x, size: int = SIZE):
    """[N, 1, W, H] -> [N, 1, size, size], min-max scaled per image to [0, 1]."""
    import torch

    x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=True)
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def _population(name: str, n: int, workdir: Path, **make_kw):
    """n fresh cases (seed 1000) of a built-in population, resized to 128x128."""
    import numpy as np
    import torch

    from common.data.make import make
    from common.evaluation.loading import load_image

    out = workdir / name
    datalist = out / "datalist.json" if (out / "datalist.json").is_file() else make(
        name.split("_")[0], n, out, seed=1000, progress=False, **make_kw)
    data = json.loads(Path(datalist).read_text())
    entries = [e for split in ("training", "validation", "test") for e in data.get(split, [])][:n]
    arrays = [load_image(out / e["image"]) for e in entries]
    return _resize(torch.as_tensor(np.stack(arrays)))


def _dicom_image(filename: str):
    """A pydicom-data image as [1, 1, W, H] in [0, 1] (MONOCHROME1 inverted; middle frame of a multi-frame)."""
    import numpy as np
    import pydicom
    import torch

    try:
        import data_store  # the pydicom-data package
    except ImportError:
        raise SystemExit("error: the ood benchmark needs pydicom-data (a dependency of the project): pip install -e .") from None
    path = Path(data_store.__file__).parent / "data" / filename
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    if arr.ndim == 3:
        arr = arr[arr.shape[0] // 2]
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = arr.max() - arr
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8)
    return torch.from_numpy(np.ascontiguousarray(arr.T))[None, None]  # rows first -> [W, H] (LoadImage layout)


def _variants(image, k: int, seed: int):
    """k random crops (60-100 % of each side) with random flips, resized to 128x128."""
    import torch

    g = torch.Generator().manual_seed(seed)
    _, _, w, h = image.shape
    out = []
    for _ in range(k):
        f = 0.6 + 0.4 * float(torch.rand(1, generator=g))
        cw, ch = int(w * f), int(h * f)
        x0 = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        y0 = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        crop = image[:, :, x0 : x0 + cw, y0 : y0 + ch]
        if float(torch.rand(1, generator=g)) < 0.5:
            crop = crop.flip(2)
        out.append(_resize(crop))
    return torch.cat(out)


def corrupt(images, kind: str, seed: int = 0):
    """The held-out chest X-rays with one corruption (near-OOD)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = images.clone()
    if kind == "noise":
        return (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    if kind == "blur":
        from monai.transforms import GaussianSmooth

        return torch.stack([GaussianSmooth(sigma=2.0)(im) for im in x]).clamp(0, 1)
    if kind == "inversion":
        return 1.0 - x
    if kind == "flip_lr":
        return x.flip(2)  # [N, 1, W, H]: axis 2 is the image's width
    if kind == "flip_ud":
        return x.flip(3)
    if kind == "crop":
        return _resize(x[:, :, 16:-16, 16:-16]) * x.amax(dim=(1, 2, 3), keepdim=True)
    if kind == "foreign_object":
        for im in x:
            cx, cy = (int(v) for v in torch.randint(16, SIZE - 32, (2,), generator=g))
            im[:, cx : cx + 16, cy : cy + 16] = 1.0
        return x
    raise ValueError(kind)


def _scores(models, images):
    """(negated summed log-likelihood, reconstruction MAE) per image."""
    import numpy as np

    from common.tokens import log_likelihoods_of, reconstruction_error

    vqvae, transformer, ordering = models
    ll = log_likelihoods_of(vqvae, transformer, ordering, images, batch_size=32)
    rec = np.concatenate([reconstruction_error(vqvae, images[i : i + 32]).numpy() for i in range(0, len(images), 32)])
    return -ll, rec


def recon(args) -> dict:
    import torch

    from common.evaluation import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr
    from common.training import codebook_stats

    reals = _heldout(args.datalist)
    vqvae, _, _ = _models()
    with torch.inference_mode():
        recons = torch.cat([vqvae(reals[i : i + 32])[0].clamp(0, 1) for i in range(0, len(reals), 32)])
        tokens = torch.cat([vqvae.index_quantize(reals[i : i + 32]) for i in range(0, len(reals), 32)])
    settings = ms_ssim_settings(reals.shape[2:])
    stats = codebook_stats(tokens, int(vqvae.quantizer.quantizer.num_embeddings))
    return {"what": "VQ-VAE reconstruction of the test split", "n": int(len(reals)),
            "ms_ssim": round(ms_ssim_reconstruction(reals, recons, settings=settings), 4), "ms_ssim_settings": settings,
            "psnr_db": round(psnr(reals, recons), 2), "mae": round(mae(reals, recons), 4),
            "codebook_usage_test_tokens": round(stats["codebook_usage"], 4),
            "perplexity_test_tokens": round(stats["perplexity"], 1)}


def ood(args) -> dict:
    import torch

    from common.evaluation.metrics import auc

    models = _models()
    workdir = Path(args.workdir)
    inlier = _heldout(args.datalist)
    ll_in, rec_in = _scores(models, inlier)
    sets: dict[str, tuple[str, "torch.Tensor"]] = {
        "mammography_population": ("far", _population("mammo", args.n_far, workdir, size=SIZE)),
        "oct_population": ("far", _population("oct", args.n_far, workdir, size=SIZE)),
        "brain_2d_population": ("far", _population("brain", args.n_far, workdir, dims=2)),
    }
    for name, filename in REAL_FAR.items():
        sets[f"pydicom_{name}"] = ("far", _variants(_dicom_image(filename), 16, seed=len(name)))
    sets["pydicom_real_chest_cr"] = ("domain shift", _variants(_dicom_image(REAL_CHEST), 16, seed=7))
    for kind in CORRUPTIONS:
        sets[f"cxr_{kind}"] = ("near", corrupt(inlier, kind, seed=1))
    rows = []
    for name, (group, images) in sets.items():
        ll, rec = _scores(models, images)
        rows.append({"set": name, "group": group, "n": int(len(images)),
                     "auroc_likelihood": round(auc(ll_in, ll), 4), "auroc_reconstruction": round(auc(rec_in, rec), 4),
                     "mean_nll_nats": round(float(ll.mean()), 1), "_ll": ll.tolist(), "_rec": rec.tolist()})
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("_")}), flush=True)
    far = [r for r in rows if r["group"] == "far"]
    result = {"what": "out-of-distribution AUROC (in = held-out built-in chest X-rays)", "n_in": int(len(inlier)),
              "mean_nll_nats_in": round(float(ll_in.mean()), 1),
              "far_ood_min_auroc_likelihood": min(r["auroc_likelihood"] for r in far),
              "far_ood_min_auroc_reconstruction": min(r["auroc_reconstruction"] for r in far),
              "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}
    if args.docs:
        _plot_roc(ll_in, rec_in, rows, BUNDLE / "docs" / "ood_roc.png")
    return result


def _roc(inl, out):
    import numpy as np

    scores = np.concatenate([inl, out])
    labels = np.concatenate([np.zeros(len(inl)), np.ones(len(out))])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0], np.cumsum(labels[order]) / labels.sum()])
    fpr = np.concatenate([[0], np.cumsum(1 - labels[order]) / (1 - labels).sum()])
    return fpr, tpr


def _plot_roc(ll_in, rec_in, rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from common.io.writers import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, key, inl, title in ((axes[0], "_ll", ll_in, "transformer likelihood"),
                                (axes[1], "_rec", rec_in, "VQ-VAE reconstruction error (baseline)")):
        for r in rows:
            fpr, tpr = _roc(inl, np.asarray(r[key]))
            style = "-" if r["group"] == "far" else ("--" if r["group"] == "near" else ":")
            auc_key = "auroc_likelihood" if key == "_ll" else "auroc_reconstruction"
            ax.plot(fpr, tpr, style, label=f"{r['set']} ({r[auc_key]:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(title)
        ax.set_xlabel("false positive rate (held-out chest X-rays)")
        ax.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("true positive rate")
    fig.suptitle("cxr_vqvae_transformer: out-of-distribution ROC (solid far, dashed near, dotted domain shift)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _prior_samples(prior: str, n: int, batch: int, **overrides):
    """n samples with the seeds `run_sampling` gives samples 0..n-1 of seed 0; seconds per sample."""
    import torch

    from common.sampling import GenerationSettings
    from common.sampling.runner import sample_seed

    p = _parser(prior=prior, **overrides)
    sampler = p.get_parsed_content("sampler")
    settings = GenerationSettings(num_inference_steps=p["num_inference_steps"], guidance_scale=1.0, progress=False)
    images, seconds = [], 0.0
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        noise = torch.stack([sampler.noise(1, torch.Generator().manual_seed(sample_seed(0, i)))[0] for i in range(lo, hi)])
        t0 = time.perf_counter()
        latents = sampler.sample_latents(None, None, hi - lo, torch.Generator().manual_seed(sample_seed(0, lo, 1)),
                                         noise, settings)
        images.append(sampler.decode(latents).clamp(0, 1).float().cpu())
        seconds += time.perf_counter() - t0
    return torch.cat(images), seconds / n


def priors(args) -> dict:
    from common.evaluation import extract_features, fid, ms_ssim_diversity

    reals = _heldout(args.datalist)
    real_features = extract_features(reals, "inception", progress=False)
    rows = {"heldout": {"n": int(len(reals)), "ms_ssim_diversity": round(ms_ssim_diversity(reals, max_pairs=200), 4)}}
    for prior, overrides in (("transformer", {}), ("diffusion", {"scheduler": args.scheduler,
                                                                  "num_inference_steps": args.steps})):
        samples, per = _prior_samples(prior, args.n, args.batch, **overrides)
        rows[prior] = {"n": args.n, "fid_vs_heldout": round(fid(real_features, extract_features(samples, "inception",
                                                                                                 progress=False)), 2),
                       "ms_ssim_diversity": round(ms_ssim_diversity(samples, max_pairs=200), 4),
                       "seconds_per_sample": round(per, 3), "batch": args.batch, **overrides}
        print(prior, json.dumps(rows[prior]), flush=True)
    return {"what": "both priors against the held-out chest X-rays", "rows": rows}


def score_speed(args) -> dict:
    """Seconds per 128x128 image of the scoring work (encode + one transformer pass), batch 1 and batch 16."""
    import torch

    from common.tokens import token_log_likelihoods

    vqvae, transformer, ordering = _models()
    reals = _heldout(args.datalist)[:32]
    out = {"what": "likelihood scoring speed", "threads": torch.get_num_threads()}
    for batch in (1, 16):
        token_log_likelihoods(vqvae, transformer, ordering, reals[:batch])  # warm-up
        t0 = time.perf_counter()
        for lo in range(0, 32, batch):
            token_log_likelihoods(vqvae, transformer, ordering, reals[lo : lo + batch])
        out[f"seconds_per_image_batch{batch}"] = round((time.perf_counter() - t0) / 32, 4)
    return out


def figure(args) -> dict:
    """Row 1-2: transformer / diffusion samples; row 3: held-out images and corruptions; row 4: their maps."""
    import numpy as np
    import torch
    from PIL import Image

    from common.io.writers import atomic_path, png_image
    from common.tokens import token_log_likelihoods
    from common.tokens.score import surprise_map

    vqvae, transformer, ordering = _models()
    t_samples, _ = _prior_samples("transformer", args.n, args.n)
    d_samples, _ = _prior_samples("diffusion", args.n, args.n, scheduler=args.scheduler, num_inference_steps=args.steps)
    reals = _heldout(args.datalist)[:1]
    probes = torch.cat([reals] + [corrupt(reals, k, seed=1) for k in ("noise", "inversion", "flip_ud", "foreign_object")]
                       + [_variants(_dicom_image(REAL_FAR["extremity_cr"]), 1, seed=0)])[: args.n]
    maps = [surprise_map(lp, (SIZE, SIZE), 10.0) for lp in token_log_likelihoods(vqvae, transformer, ordering, probes)]
    rows = [list(t_samples), list(d_samples), list(probes), [m[None] for m in maps]]
    tile = SIZE + 4
    canvas = Image.new("L", (tile * args.n, tile * len(rows)), 255)
    for r, images in enumerate(rows):
        for c, im in enumerate(images[: args.n]):
            canvas.paste(png_image(im.clamp(0, 1).numpy()), (c * tile, r * tile))
    path = (BUNDLE / "docs" if args.docs else REPO / "runs" / "cxr_vqvae_transformer" / "bench") / "samples_and_maps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return {"what": "figure", "path": str(path), "rows": ["transformer samples", "diffusion samples",
            "held-out image, noise, inversion, upside-down, foreign object, extremity CR", "their surprise maps (-log p, white >= 10 nats)"],
            "mean_surprise": [round(float(np.mean(m.numpy())), 4) for m in maps]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["recon", "ood", "priors", "score-speed", "figure"])
    ap.add_argument("--datalist", default=str(REPO / "data" / "cxr" / "datalist.json"))
    ap.add_argument("--workdir", default=str(REPO / "data" / "ood"), help="where the far-OOD populations are made")
    ap.add_argument("--n", type=int, default=200, help="samples per prior (figure: columns)")
    ap.add_argument("--n-far", type=int, default=100, help="images per far-OOD population")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--docs", action="store_true", help="write figures into the bundle's docs/")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    result = {"recon": recon, "ood": ood, "priors": priors, "score-speed": score_speed, "figure": figure}[args.command](args)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = REPO / "runs" / "cxr_vqvae_transformer" / "bench" / f"{args.command}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
