"""Measure the shipped brain_ldm_3d weights: sampling speed and memory, reconstruction, covariate fidelity, figure.

  speed     the bundle's own command (`python -m monai.bundle run ... inference.json`) in a child process, one
            sample end to end (process start, config, weight loading, sampling, NIfTI writing): wall time and the
            child's peak resident memory (ru_maxrss); same seed every repeat, so the files must be identical.
  recon     autoencoder reconstruction of held-out subjects (datalist 'test' split): MS-SSIM (common.evaluation,
            settings fitted to the size), PSNR, MAE; ventricular and brain volume measured on the reconstructions
            against the ground truth (the ceiling of covariate fidelity).
  fidelity  covariate fidelity: for each of --settings covariate combinations taken from held-out subjects
            (spread over the ventricular-volume range), --per-setting samples; ventricular and brain volume
            measured on every sample with common.data.brain.analyse_volumes; Pearson r between requested and
            measured volumes (ml) over all samples; MS-SSIM between the samples of a setting (diversity, 40 pairs).
  background  mean intensity outside the head (voxels 3 or more away from every real held-out head used) in
            samples, in the autoencoder's reconstructions of the same real subjects, and in the real volumes: a
            sample's background can be no cleaner than the autoencoder's.
  agreement  per-sample closeness of few-step solvers to the reference sampler from the same noise (the same
            ODE, so an accurate solver lands on the same volume): mean and max |sample - reference| in [0, 1]
            units and the ventricular / brain volume differences, over --n samples of one held-out setting.
  diversity sample diversity against the data's, like for like: one sample per held-out subject with that subject's
            covariates, MS-SSIM between the samples (all pairs) beside the same pairs of the real subjects and of
            their autoencoder reconstructions (the autoencoder smooths, which raises MS-SSIM on its own); and the
            volumes' spread around the request (sd of measured minus requested) for samples and for the real subjects'
            own recorded volumes (0: the request is the truth).
  figure    a PNG of samples across ages (mid axial and coronal slices), covariates of the training subject
            nearest each age.

Results are printed and, with --json, written atomically to a file. Examples:
  python ci/bench_brain_ldm_3d.py speed --steps 50
  python ci/bench_brain_ldm_3d.py recon --datalist data/brain_3d/datalist.json
  python ci/bench_brain_ldm_3d.py fidelity --settings 4 --per-setting 20 --steps 25 --json runs/fidelity.json
  python ci/bench_brain_ldm_3d.py background --n 6 --steps 10 --scheduler dpmpp2m
  python ci/bench_brain_ldm_3d.py agreement --n 10 --configs dpmpp2m:5 ddim:10
  python ci/bench_brain_ldm_3d.py diversity --n 24 --steps 5 --scheduler dpmpp2m
  python ci/bench_brain_ldm_3d.py figure --out bundles/brain_ldm_3d/docs/samples_by_age.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "brain_ldm_3d"
INFERENCE = BUNDLE / "configs" / "inference.json"
DEFAULT_DATALIST = ROOT / "data" / "brain_3d" / "datalist.json"
COVARIATES = ("gender", "age", "ventricular_vol", "brain_vol")


def _fail(msg: str) -> None:
    sys.exit(f"bench_brain_ldm_3d: {msg}")


def _check_weights(names=("autoencoder.safetensors", "diffusion_model.safetensors")) -> None:
    for name in names:
        if not (BUNDLE / "models" / name).is_file():
            _fail(f"{BUNDLE / 'models' / name} missing: train with ci/train_brain_ldm_3d.sh")


def _write_json(result: dict, path: str | None) -> None:
    print(json.dumps(result, indent=2))
    if path:
        from common.io import write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json(result, path)


def _datalist(path: str, split: str) -> list[dict]:
    from common.training.data import load_datalist

    return load_datalist(path, split)


# ------------------------------------------------------------------------------------------------ speed
def speed(args: argparse.Namespace) -> dict:
    digests, runs = set(), []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}"
            cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(INFERENCE), "--bundle_root",
                   str(BUNDLE), "--output_dir", str(out), "--num_inference_steps", str(args.steps), "--scheduler",
                   args.scheduler, "--seed", str(args.seed), "--device", "$torch.device('cpu')"]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                _fail(f"inference failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            # children are waited for one at a time, so the running max is this child's peak unless an earlier
            # one was bigger (then the max is reported, an upper bound)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
            files = sorted(out.glob("*.nii.gz"))
            digests.add(hashlib.sha256(files[0].read_bytes()).hexdigest())
            runs.append({"wall_s": round(wall, 1), "peak_rss_mib": round(peak)})
            print(f"run {i + 1}: 1 sample, {args.scheduler} {args.steps} steps, {args.threads} thread(s): "
                  f"{wall:.1f} s end to end, peak RSS <= {peak:.0f} MiB -> {files[0].name}", flush=True)
    return {"what": "speed", "steps": args.steps, "scheduler": args.scheduler, "threads": args.threads,
            "runs": runs, "identical_outputs": len(digests) == 1}


# ------------------------------------------------------------------------------------------------ models
def _parser(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({"bundle_root": str(BUNDLE), "device": "cpu", "progress": False, **overrides})
    parser.parse()
    return parser


def recon(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ResizeWithPadOrCropd, ScaleIntensityRanged

    from common.evaluation import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr

    torch.set_num_threads(args.threads)
    parser = _parser()
    parser.get_parsed_content("load_autoencoder")  # only the autoencoder: recon runs before stage 2 exists
    ae = parser.get_parsed_content("autoencoder").eval()
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                    ScaleIntensityRanged("image", 0.0, 1.0, 0.0, 1.0, clip=True),
                    ResizeWithPadOrCropd("image", [80, 112, 80])])
    entries = _datalist(args.datalist, args.split)[: args.limit or None]
    reals, recons = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for e in entries:
            x = torch.as_tensor(load(dict(e))["image"]).float()[None]
            reals.append(x)
            recons.append(ae.reconstruct(x).clamp(0, 1))
    real, rec = torch.cat(reals), torch.cat(recons)
    settings = ms_ssim_settings(real.shape[2:])
    per = [ms_ssim_reconstruction(real[i : i + 1], rec[i : i + 1], settings=settings) for i in range(len(real))]
    # the ceiling of covariate fidelity: do the volumes survive the autoencoder? (analyser on the reconstructions)
    from common.data.brain import analyse_volumes

    got = [analyse_volumes(r[0].numpy(), spacing=(2.0, 2.0, 2.0)) for r in rec]
    volumes = {}
    for k in ("ventricular_vol", "brain_vol"):
        truth, measured = np.array([e[f"{k}_ml"] for e in entries]), np.array([g[f"{k}_ml"] for g in got])
        volumes[k] = {"pearson_r": round(float(np.corrcoef(truth, measured)[0, 1]), 3),
                      "mean_abs_error_ml": round(float(np.mean(np.abs(truth - measured))), 1)}
    return {"what": "autoencoder reconstruction", "split": args.split, "n": len(entries),
            "ms_ssim_mean": round(float(np.mean(per)), 4), "ms_ssim_min": round(float(np.min(per)), 4),
            "ms_ssim_settings": settings, "psnr": round(float(psnr(real, rec)), 2), "mae": round(float(mae(real, rec)), 4),
            "volumes_on_reconstructions_vs_truth": volumes, "seconds": round(time.perf_counter() - start, 1)}


def _sample(parser, covariates: dict, n: int, seed: int, batch: int):
    import torch

    from common.sampling import GenerationSettings

    sampler = parser.get_parsed_content("sampler")
    conditioner = parser.get_parsed_content("conditioner")
    settings = GenerationSettings.from_config(parser)
    images = []
    for lo in range(0, n, batch):
        k = min(batch, n - lo)
        cond = conditioner.from_values(k, **covariates)
        gen = torch.Generator().manual_seed(seed * 100003 + lo)
        images.append(sampler.sample(cond, None, num_samples=k, generator=gen, settings=settings).clamp(0, 1).float().cpu())
    return torch.cat(images)


def fidelity(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from common.data.brain import analyse_volumes, denormalise_covariates
    from common.evaluation.metrics import ms_ssim_diversity

    torch.set_num_threads(args.threads)
    parser = _parser(num_inference_steps=args.steps, scheduler=args.scheduler, device=args.device)
    diversity = []
    held_out = sorted(_datalist(args.datalist, args.split), key=lambda e: e["ventricular_vol"])
    picks = np.linspace(0, len(held_out) - 1, args.settings).round().astype(int)
    rows, start = [], time.perf_counter()
    for s, idx in enumerate(picks):
        cov = {k: float(held_out[idx][k]) for k in COVARIATES}
        want = denormalise_covariates(cov, dims=3)
        images = _sample(parser, cov, args.per_setting, seed=args.seed + s, batch=args.batch)
        diversity.append(ms_ssim_diversity(images, max_pairs=40, seed=s) if len(images) > 1 else float("nan"))
        for img in images:
            got = analyse_volumes(img[0].numpy(), spacing=(2.0, 2.0, 2.0))
            rows.append({**cov, "requested_ventricular_ml": want["ventricular_vol_ml"],
                         "requested_brain_ml": want["brain_vol_ml"], "measured_ventricular_ml": got["ventricular_vol_ml"],
                         "measured_brain_ml": got["brain_vol_ml"]})
        print(f"setting {s + 1}/{len(picks)} {cov}: requested vent {want['ventricular_vol_ml']:.1f} ml, brain "
              f"{want['brain_vol_ml']:.0f} ml; measured vent {np.mean([r['measured_ventricular_ml'] for r in rows[-len(images):]]):.1f}"
              f" ml, brain {np.mean([r['measured_brain_ml'] for r in rows[-len(images):]]):.0f} ml "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    def pearson(a: str, b: str) -> float:
        x, y = np.array([r[a] for r in rows]), np.array([r[b] for r in rows])
        return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")

    # the same measurement on the real held-out subjects: the analyser's own agreement with the ground truth
    from monai.transforms import LoadImage

    real_rows = []
    for e in held_out:
        got = analyse_volumes(np.asarray(LoadImage(image_only=True)(e["image"])), spacing=(2.0, 2.0, 2.0))
        real_rows.append((e["ventricular_vol_ml"], got["ventricular_vol_ml"], e["brain_vol_ml"], got["brain_vol_ml"]))
    real = np.array(real_rows)
    per_setting = []
    for s in range(len(picks)):
        chunk = rows[s * args.per_setting : (s + 1) * args.per_setting]
        per_setting.append({k: round(chunk[0][k], 4) for k in COVARIATES} | {
            "requested_ventricular_ml": round(chunk[0]["requested_ventricular_ml"], 1),
            "measured_ventricular_ml_mean": round(float(np.mean([r["measured_ventricular_ml"] for r in chunk])), 1),
            "measured_ventricular_ml_sd": round(float(np.std([r["measured_ventricular_ml"] for r in chunk])), 1),
            "requested_brain_ml": round(chunk[0]["requested_brain_ml"], 0),
            "measured_brain_ml_mean": round(float(np.mean([r["measured_brain_ml"] for r in chunk])), 0),
            "measured_brain_ml_sd": round(float(np.std([r["measured_brain_ml"] for r in chunk])), 0),
            "ms_ssim_between_samples": round(float(diversity[s]), 4)})
    return {"what": "covariate fidelity", "steps": args.steps, "scheduler": args.scheduler, "device": args.device,
            "settings": len(picks), "samples_per_setting": args.per_setting, "n_samples": len(rows),
            "pearson_ventricular": round(pearson("requested_ventricular_ml", "measured_ventricular_ml"), 3),
            "pearson_brain": round(pearson("requested_brain_ml", "measured_brain_ml"), 3),
            "ms_ssim_between_samples_mean": round(float(np.mean(diversity)), 4),
            "analyser_on_real_heldout": {
                "n": len(real), "pearson_ventricular": round(float(np.corrcoef(real[:, 0], real[:, 1])[0, 1]), 3),
                "pearson_brain": round(float(np.corrcoef(real[:, 2], real[:, 3])[0, 1]), 3)},
            "per_setting": per_setting, "seconds": round(time.perf_counter() - start, 1)}


def background(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from monai.transforms import LoadImage
    from scipy.ndimage import binary_dilation

    torch.set_num_threads(args.threads)
    parser = _parser(num_inference_steps=args.steps, scheduler=args.scheduler)
    held_out = _datalist(args.datalist, args.split)[: args.n]
    real = np.stack([np.asarray(LoadImage(image_only=True)(e["image"]), dtype=np.float32) for e in held_out])
    outside = ~binary_dilation(real.max(0) > 0.02, iterations=3)
    parser.get_parsed_content("load_autoencoder")  # the shipped weights (the config loads them lazily)
    ae = parser.get_parsed_content("autoencoder").eval()
    with torch.inference_mode():
        recon_bg = [float(ae.reconstruct(torch.from_numpy(r)[None, None]).clamp(0, 1)[0, 0].numpy()[outside].mean())
                    for r in real]
    sample_bg = []
    for i, e in enumerate(held_out):
        img = _sample(parser, {k: float(e[k]) for k in COVARIATES}, 1, seed=args.seed + i, batch=1)[0, 0].numpy()
        sample_bg.append(float(img[outside].mean()))
    return {"what": "background outside the head", "n": len(held_out), "outside_voxels": int(outside.sum()),
            "steps": args.steps, "scheduler": args.scheduler,
            "real": [round(float(r[outside].mean()), 4) for r in real],
            "autoencoder_reconstruction": [round(v, 4) for v in recon_bg],
            "samples": [round(v, 4) for v in sample_bg]}


def agreement(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from common.data.brain import analyse_volumes

    torch.set_num_threads(args.threads)
    held_out = sorted(_datalist(args.datalist, args.split), key=lambda e: e["ventricular_vol"])
    cov = {k: float(held_out[len(held_out) // 2][k]) for k in COVARIATES}

    def run(spec: str):
        name, steps = spec.split(":")
        images = _sample(_parser(num_inference_steps=int(steps), scheduler=name), cov, args.n, args.seed, args.batch)
        vols = [analyse_volumes(img[0].numpy(), spacing=(2.0, 2.0, 2.0)) for img in images]
        return images, np.array([[v["ventricular_vol_ml"], v["brain_vol_ml"]] for v in vols])

    ref, ref_vol = run(args.reference)
    rows = []
    for spec in args.configs:
        images, vol = run(spec)
        diff = (images - ref).abs()
        rows.append({"config": spec, "mean_abs_diff": round(float(diff.mean()), 5),
                     "max_abs_diff": round(float(diff.amax()), 4),
                     "ventricular_ml_mean_abs_diff": round(float(np.abs(vol[:, 0] - ref_vol[:, 0]).mean()), 2),
                     "brain_ml_mean_abs_diff": round(float(np.abs(vol[:, 1] - ref_vol[:, 1]).mean()), 1)})
        print(rows[-1], flush=True)
    return {"what": "agreement with the reference sampler, same noise", "reference": args.reference, "n": args.n,
            "covariates": cov, "reference_ventricular_ml_mean": round(float(ref_vol[:, 0].mean()), 1),
            "reference_brain_ml_mean": round(float(ref_vol[:, 1].mean()), 0), "rows": rows}


def diversity(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from monai.transforms import LoadImage

    from common.data.brain import analyse_volumes, denormalise_covariates
    from common.evaluation.metrics import ms_ssim_diversity

    torch.set_num_threads(args.threads)
    parser = _parser(num_inference_steps=args.steps, scheduler=args.scheduler)
    held_out = _datalist(args.datalist, args.split)[: args.n]
    start = time.perf_counter()
    real = torch.stack([torch.as_tensor(np.asarray(LoadImage(image_only=True)(e["image"]), np.float32))[None]
                        for e in held_out])
    parser.get_parsed_content("load_autoencoder")
    ae = parser.get_parsed_content("autoencoder").eval()
    with torch.inference_mode():
        recon = torch.cat([ae.reconstruct(r[None]).clamp(0, 1) for r in real])
    samples = torch.cat([_sample(parser, {k: float(e[k]) for k in COVARIATES}, 1, seed=args.seed + i, batch=1)
                         for i, e in enumerate(held_out)])
    pairs = len(held_out) * (len(held_out) - 1) // 2
    out = {"what": "diversity, like for like", "n": len(held_out), "pairs": pairs, "steps": args.steps,
           "scheduler": args.scheduler,
           "ms_ssim_samples": round(ms_ssim_diversity(samples, max_pairs=pairs), 4),
           "ms_ssim_real": round(ms_ssim_diversity(real, max_pairs=pairs), 4),
           "ms_ssim_reconstructions": round(ms_ssim_diversity(recon, max_pairs=pairs), 4)}
    for name, vols in (("samples", samples), ("reconstructions", recon)):
        err = {"ventricular": [], "brain": []}
        for v, e in zip(vols, held_out):
            got = analyse_volumes(v[0].numpy(), spacing=(2.0, 2.0, 2.0))
            want = denormalise_covariates({k: float(e[k]) for k in COVARIATES}, dims=3)
            err["ventricular"].append(got["ventricular_vol_ml"] - want["ventricular_vol_ml"])
            err["brain"].append(got["brain_vol_ml"] - want["brain_vol_ml"])
        out[f"{name}_volume_error_ml"] = {k: {"mean": round(float(np.mean(x)), 1), "sd": round(float(np.std(x)), 1)}
                                          for k, x in err.items()}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def figure(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from common.io import atomic_path, png_image

    torch.set_num_threads(args.threads)
    parser = _parser(num_inference_steps=args.steps, scheduler=args.scheduler, device=args.device)
    train = _datalist(args.datalist, "training")
    tiles, used = [], []
    for i, age in enumerate(args.ages):
        nearest = min(train, key=lambda e: abs(e["age"] - age))
        cov = {k: float(nearest[k]) for k in COVARIATES}
        img = _sample(parser, cov, 1, seed=args.seed + i, batch=1)[0, 0].numpy()
        axial = np.rot90(img[:, :, img.shape[2] // 2 + 4])  # x right, y up
        coronal = np.rot90(img[:, img.shape[1] // 2, :])
        pad = np.zeros((axial.shape[0] - coronal.shape[0], coronal.shape[1]), np.float32)
        tiles.append(np.concatenate([axial, np.concatenate([pad, coronal])], axis=1))
        used.append({**cov, "age_years": round(float(nearest["age_years"]), 1)})
    grid = np.concatenate(tiles, axis=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a display picture composed rows first
        png_image(np.clip(grid, 0, 1), spatial_order="yx").resize(
            (grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(tmp, format="PNG")
    return {"what": "figure", "path": str(out), "steps": args.steps, "columns": used}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("speed", "recon", "fidelity", "background", "agreement", "diversity", "figure"):
        p = sub.add_parser(name)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", default=None, help="also write the result to this file")
        p.add_argument("--datalist", default=str(DEFAULT_DATALIST))
        p.add_argument("--steps", type=int, default=50)
        p.add_argument("--scheduler", default="ddim")
        if name == "speed":
            p.add_argument("--repeats", type=int, default=1)
        if name == "recon":
            p.add_argument("--split", default="test")
            p.add_argument("--limit", type=int, default=0)
        if name in ("fidelity", "figure"):
            p.add_argument("--device", default="cpu", help="quality runs only: e.g. cuda (samples are drawn from CPU noise)")
        if name in ("background", "diversity"):
            p.add_argument("--split", default="test")
            p.add_argument("--n", type=int, default=6, help="held-out subjects (one sample each, their covariates)")
        if name == "agreement":
            p.add_argument("--split", default="test")
            p.add_argument("--n", type=int, default=10)
            p.add_argument("--batch", type=int, default=10)
            p.add_argument("--reference", default="ddim:50", help="scheduler:steps")
            p.add_argument("--configs", nargs="+", default=["dpmpp2m:4", "dpmpp2m:5", "dpmpp2m:8", "ddim:10"])
        if name == "fidelity":
            p.add_argument("--split", default="test")
            p.add_argument("--settings", type=int, default=4)
            p.add_argument("--per-setting", type=int, default=20)
            p.add_argument("--batch", type=int, default=10)
        if name == "figure":
            p.add_argument("--ages", type=float, nargs="+", default=[0.05, 0.35, 0.65, 0.95])
            p.add_argument("--out", default=str(BUNDLE / "docs" / "samples_by_age.png"))
    args = parser.parse_args(argv)
    _check_weights(("autoencoder.safetensors",) if args.cmd == "recon" else ("autoencoder.safetensors", "diffusion_model.safetensors"))
    if args.cmd != "speed" and not Path(args.datalist).is_file():
        _fail(f"datalist {args.datalist} not found: python -m common.data make brain --dims 3 --n 240 --out data/brain_3d")
    result = {"speed": speed, "recon": recon, "fidelity": fidelity, "background": background,
              "agreement": agreement, "diversity": diversity, "figure": figure}[args.cmd](args)
    _write_json(result, args.json)
    return 0 if result.get("identical_outputs", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
