"""Measure flair2t1_controlnet on held-out subjects of the built-in 2 mm brain population (test split).

    python ci/bench_flair2t1_controlnet.py recon  [--n 24]
    python ci/bench_flair2t1_controlnet.py eval   [--steps 5] [--guidance 1] [--scale 1] [--n 24]
    python ci/bench_flair2t1_controlnet.py steps  [--n 6] [--sweep 5 10 25 50]
    python ci/bench_flair2t1_controlnet.py sweep  [--n 6] [--guidance-sweep 1 2 4] [--scale-sweep 0.5 1 1.5]
    python ci/bench_flair2t1_controlnet.py diversity [--n 24]
    python ci/bench_flair2t1_controlnet.py speed
    python ci/bench_flair2t1_controlnet.py figure [--subject 0]

- recon: the autoencoder's reconstruction of the test T1 volumes slice by slice (the ceiling of the latent models).
- eval: every test FLAIR volume translated three ways: ours (the bundle's run_translation, the user's path),
  the L1 regression UNet baseline (models/regression_unet.safetensors, trained by train.json's train_regression
  beside the ControlNet under the same budget), and the inverted FLAIR histogram-matched to the training T1
  (quantile mapping of the brain voxels to the pooled training T1 brain intensities; background 0). Against the
  true T1: per volume PSNR, MAE and 3D MS-SSIM (settings valid for 80x112x80), per slice the same in 2D over the
  axial slices with >= 5 % brain in the truth (MS-SSIM settings valid for 80x112; the paper's kernel 7); FID of
  those axial slices (packaged InceptionV3) against the same slice levels of --n-ref (24) training subjects' real T1
  (realism, the truth's own FID as the floor); 3D consistency = mean |slice k+1 - slice k| over those slices,
  beside the truth's.
- steps: ours at several DDIM step counts on the first n subjects (PSNR / MS-SSIM, slice FID against --n-ref training
  subjects, seconds per volume).
- sweep: guidance (null = the zero FLAIR the ControlNet was trained to read as "no control") and conditioning
  scale, on the first n subjects (the same measures).
- loss: the held-out training objective (v-prediction MSE) on the test subjects' brain slices, at fixed timesteps and
  noise: the frozen base alone, the ControlNet given the null (zero) FLAIR, the ControlNet given the FLAIR (what the
  control adds; the training logs of the shipped run were not kept, this is measured on the shipped weights).
- diversity: MS-SSIM between the translations of different test subjects (all pairs) beside the same pairs of
  their true T1 volumes (like for like: a translation should vary between subjects as the T1s do); and between
  two translations of one subject with different seeds (what the noise alone changes).
- speed: one volume through `python -m monai.bundle run` (the user's command, shipped weights), timed twice.
- figure: FLAIR, ours, regression, histogram-matched FLAIR, truth for one subject (axial and coronal), to the card.
Results go to runs/flair2t1_controlnet/bench/<subcommand>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "bundles" / "flair2t1_controlnet"
OUT = REPO / "runs" / "flair2t1_controlnet" / "bench"
MIN_BRAIN = 0.05
MODELS: dict = {}  # --model-dir: weights trained elsewhere (no index check)


def _entries(datalist: Path, split: str, n: int) -> list[dict]:
    entries = json.loads(datalist.read_text())[split][:n]
    return [{k: str(datalist.parent / v) if k in ("image", "flair") else v for k, v in e.items()} for e in entries]


def _load(path: str):
    import nibabel as nib
    import numpy as np

    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def _parser(**overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p.update({"bundle_root": str(BUNDLE), "device": "cpu", "progress": False, **MODELS, **overrides})
    return p


def translate_ours(entries: list[dict], out_dir: Path, **overrides) -> tuple[list, float]:
    """Our translations through the bundle's run step (inputs linked into one folder); seconds per volume."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for e in entries:
            (inputs / Path(e["flair"]).name).symlink_to(e["flair"])
        p = _parser(input_dir=str(inputs), output_dir=str(out_dir), **overrides)
        p.get_parsed_content("translator")  # weights loaded before the clock starts
        start = time.perf_counter()
        p.get_parsed_content("run")  # the bundle's run step: run_translation
        seconds = (time.perf_counter() - start) / len(entries)
    return [np.asarray(_load(str(out_dir / Path(e["flair"]).name))) for e in entries], seconds


def translate_regression(entries: list[dict]) -> list:
    """The L1 regression baseline, slice by slice on the same scaled FLAIR."""
    import torch
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "train.json")])
    p.update({"bundle_root": str(BUNDLE), "device": "cpu", "export_to_bundle": True, **MODELS})
    from common.weights import load_into

    net = p.get_parsed_content("regression_def")
    load_into(net, p.get_parsed_content("regression_weights"), strict=True)
    net.eval()
    scaling = p.get_parsed_content("flair_scaling")
    out = []
    for e in entries:
        flair = scaling({"flair": torch.from_numpy(_load(e["flair"]))[None]})["flair"]
        slices = torch.as_tensor(flair).float().permute(3, 0, 1, 2)  # [Z, 1, X, Y]
        with torch.inference_mode():
            pred = torch.cat([net(slices[i:i + 40]) for i in range(0, slices.shape[0], 40)])
        out.append(pred.clamp(0, 1).permute(1, 2, 3, 0)[0].numpy())
    return out


def translate_histogram(entries: list[dict], train: list[dict]) -> list:
    """Inverted FLAIR, its brain voxels quantile-mapped onto the pooled training T1 brain intensities."""
    import numpy as np

    pooled = np.concatenate([(t := _load(e["image"]))[t > 0.05] for e in train])
    levels = np.linspace(0, 1, 1001)
    target = np.quantile(pooled, levels)
    out = []
    for e in entries:
        flair = _load(e["flair"])
        brain = flair > 0.02
        inverted = -flair[brain]
        ranks = np.searchsorted(np.sort(inverted), inverted, side="right") / inverted.size
        mapped = np.zeros_like(flair)
        mapped[brain] = np.interp(ranks, levels, target)
        out.append(mapped)
    return out


def _brain_levels(truth) -> list[int]:
    """The axial slice indices of a true T1 volume (numpy) with >= MIN_BRAIN of its voxels brain (> 0.05)."""
    return [k for k in range(truth.shape[2]) if (truth[:, :, k] > 0.05).mean() >= MIN_BRAIN]


def _metrics(preds: list, truths: list) -> dict:
    """Per volume and per brain slice PSNR / MAE / MS-SSIM, and adjacent-slice differences."""
    import numpy as np
    import torch

    from common.evaluation.metrics import _ms_ssim_values, ms_ssim_settings

    vol = {"psnr": [], "mae": [], "ms_ssim": []}
    sl = {"psnr": [], "mae": [], "ms_ssim": []}
    adjacent, adjacent_truth = [], []
    s3 = ms_ssim_settings(truths[0].shape)
    s2 = ms_ssim_settings(truths[0].shape[:2])
    for pred, truth in zip(preds, truths):
        mse = float(np.mean((pred - truth) ** 2))
        vol["psnr"].append(10 * np.log10(1.0 / mse))
        vol["mae"].append(float(np.mean(np.abs(pred - truth))))
        vol["ms_ssim"].append(float(_ms_ssim_values(torch.from_numpy(truth)[None, None], torch.from_numpy(pred)[None, None],
                                                    1.0, s3)[0]))
        keep = _brain_levels(truth)
        p2 = torch.from_numpy(np.ascontiguousarray(pred[:, :, keep].transpose(2, 0, 1)))[:, None]
        t2 = torch.from_numpy(np.ascontiguousarray(truth[:, :, keep].transpose(2, 0, 1)))[:, None]
        mse2 = ((p2 - t2) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
        sl["psnr"] += (10 * torch.log10(1.0 / mse2)).tolist()
        sl["mae"] += (p2 - t2).abs().mean(dim=(1, 2, 3)).tolist()
        sl["ms_ssim"] += _ms_ssim_values(t2, p2, 1.0, s2).tolist()
        adjacent.append(float(np.mean(np.abs(np.diff(pred[:, :, keep], axis=2)))))
        adjacent_truth.append(float(np.mean(np.abs(np.diff(truth[:, :, keep], axis=2)))))

    def stats(values: list) -> dict:
        a = np.asarray(values, dtype=np.float64)
        return {"mean": round(float(a.mean()), 4), "sd": round(float(a.std()), 4), "n": int(a.size)}

    return {"volume": {k: stats(v) for k, v in vol.items()}, "slice": {k: stats(v) for k, v in sl.items()},
            "adjacent_slice_mad": stats(adjacent), "adjacent_slice_mad_truth": stats(adjacent_truth),
            "ms_ssim_settings": {"3d": s3, "2d": s2}}


def _brain_slices(volumes: list, truths: list):
    """[N, 1, X, Y] axial slices of each volume at the truth's brain levels (>= 5 % brain)."""
    import numpy as np
    import torch

    out = []
    for v, t in zip(volumes, truths):
        keep = _brain_levels(t)
        out.append(np.ascontiguousarray(v[:, :, keep].transpose(2, 0, 1)))
    return torch.from_numpy(np.concatenate(out))[:, None].clamp(0, 1)


def cmd_eval(args) -> dict:
    test = _entries(args.datalist, "test", args.n)
    train = _entries(args.datalist, "training", args.n_ref)
    truths = [_load(e["image"]) for e in test]
    ours, seconds = translate_ours(test, OUT / "ours", num_inference_steps=args.steps, guidance_scale=args.guidance,
                                   conditioning_scale=args.scale)
    methods = {"ours": ours, "regression": translate_regression(test), "histogram_matched_flair": translate_histogram(test, train)}
    report = {"subjects": len(test), "settings": {"steps": args.steps, "scheduler": "ddim", "guidance_scale": args.guidance,
                                                  "conditioning_scale": args.scale}, "seconds_per_volume_ours": round(seconds, 2)}
    real = _reference_features(args)
    report["fid_truth_slices"] = _fid(real, truths, truths)
    for name, preds in methods.items():
        report[name] = _metrics(preds, truths)
        report[name]["fid_slices"] = _fid(real, preds, truths)
        print(name, json.dumps({k: report[name][k] for k in ("volume", "slice", "fid_slices", "adjacent_slice_mad")}), flush=True)
    return report


def cmd_diversity(args) -> dict:
    import numpy as np

    from common.evaluation.metrics import ms_ssim_diversity

    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    ours, seconds = translate_ours(test, OUT / "ours", num_inference_steps=args.steps)
    again, _ = translate_ours(test[:4], OUT / "ours_seed1", num_inference_steps=args.steps, seed=1)
    pairs = len(test) * (len(test) - 1) // 2
    def stack(vols):  # [N, 1, D, H, W], as ms_ssim_diversity takes them
        return np.stack(vols)[:, None]

    seed_pairs = [ms_ssim_diversity(stack([a, b]), max_pairs=1) for a, b in zip(ours[:4], again)]
    return {"subjects": len(test), "pairs": pairs, "steps": args.steps, "seconds_per_volume": round(seconds, 2),
            "ms_ssim_between_subjects_translations": round(ms_ssim_diversity(stack(ours), max_pairs=pairs), 4),
            "ms_ssim_between_subjects_truth": round(ms_ssim_diversity(stack(truths), max_pairs=pairs), 4),
            "ms_ssim_same_subject_two_seeds": round(float(np.mean(seed_pairs)), 4)}


def cmd_recon(args) -> dict:
    """The autoencoder's reconstruction of the test T1 volumes, slice by slice (posterior mean): the ceiling of any
    latent model's fidelity."""
    import torch

    p = _parser()
    ae = p.get_parsed_content("autoencoder")
    p.get_parsed_content("load_autoencoder")
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    recons = []
    for t in truths:
        slices = torch.from_numpy(t).permute(2, 0, 1)[:, None]
        with torch.inference_mode():
            out = torch.cat([ae.decode(ae.encode(slices[i:i + 40])[0]) for i in range(0, slices.shape[0], 40)])
        recons.append(out.clamp(0, 1)[:, 0].permute(1, 2, 0).numpy())
    m = _metrics(recons, truths)
    return {"subjects": len(test), "volume": m["volume"], "slice": m["slice"]}


def cmd_loss(args) -> dict:
    """v-MSE on held-out brain slices at timesteps 50, 150, ..., 950 (the same noise for the three variants)."""
    import torch

    from common.conditioning import Condition
    from common.sampling import UNetDenoiser

    p = _parser()
    sampler = p.get_parsed_content("sampler")  # loads the three networks (checked weights)
    ae, unet, controlnet = p.get_parsed_content("autoencoder"), p.get_parsed_content("diffusion"), p.get_parsed_content("controlnet")
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=p["num_train_timesteps"], schedule=p["beta_schedule"],
                              beta_start=p["beta_start"], beta_end=p["beta_end"], prediction_type=p["prediction_type"])
    scaling = p.get_parsed_content("flair_scaling")
    scale_factor = float(sampler.scale_factor)
    test = _entries(args.datalist, "test", args.n)
    variants = {"base_alone": UNetDenoiser(unet), "controlnet_null_flair": UNetDenoiser(unet, controlnet),
                "controlnet_flair": UNetDenoiser(unet, controlnet)}
    timesteps = list(range(50, 1000, 100))
    sums = {k: {t: 0.0 for t in timesteps} for k in variants}
    count = 0
    generator = torch.Generator().manual_seed(0)
    for e in test:
        truth = torch.from_numpy(_load(e["image"]))
        flair = torch.as_tensor(scaling({"flair": torch.from_numpy(_load(e["flair"]))[None]})["flair"]).float()
        keep = _brain_levels(truth.numpy())
        t1 = truth[:, :, keep].permute(2, 0, 1)[:, None]
        fl = flair[0][:, :, keep].permute(2, 0, 1)[:, None]
        with torch.inference_mode():
            z = ae.encode(t1)[0] * scale_factor
            for t in timesteps:
                noise = torch.randn(z.shape, generator=generator)
                tt = torch.full((z.shape[0],), t, dtype=torch.long)
                x = scheduler.add_noise(z, noise, tt)
                target = scheduler.get_velocity(z, noise, tt)
                for name, denoiser in variants.items():
                    control = torch.zeros_like(fl) if name == "controlnet_null_flair" else fl
                    pred = denoiser(x, tt, Condition(control=control) if denoiser.controlnet is not None else None)
                    sums[name][t] += float(((pred - target) ** 2).mean(dim=(1, 2, 3)).sum())
        count += len(keep)
    per_t = {k: {str(t): round(v / count, 4) for t, v in d.items()} for k, d in sums.items()}
    mean = {k: round(sum(d.values()) / (count * len(timesteps)), 4) for k, d in sums.items()}
    return {"subjects": len(test), "slices": count, "timesteps": timesteps, "v_mse_mean": mean, "v_mse_per_timestep": per_t}


def _reference_features(args):
    """InceptionV3 features of --n-ref training subjects' true T1 brain slices (FID's reference)."""
    from common.evaluation import extract_features

    train = [_load(e["image"]) for e in _entries(args.datalist, "training", args.n_ref)]
    return extract_features(_brain_slices(train, train), progress=False)


def _fid(real, preds: list, truths: list) -> float:
    from common.evaluation import extract_features, fid

    return round(fid(real, extract_features(_brain_slices(preds, truths), progress=False)), 3)


def _measured_row(test: list[dict], truths: list, real, **overrides) -> dict:
    """Ours with `overrides` on `test`: seconds per volume, volume and slice metrics, slice FID."""
    with tempfile.TemporaryDirectory() as tmp:
        preds, seconds = translate_ours(test, Path(tmp) / "out", **overrides)
    m = _metrics(preds, truths)
    return {"seconds_per_volume": round(seconds, 2), "volume": m["volume"], "slice": m["slice"],
            "fid_slices": _fid(real, preds, truths)}


def cmd_steps(args) -> dict:
    """Ours at several DDIM step counts: fidelity (PSNR, MS-SSIM), realism (slice FID) and time per volume."""
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    real = _reference_features(args)
    rows = []
    for steps in args.sweep:
        rows.append({"steps": steps, **_measured_row(test, truths, real, num_inference_steps=steps)})
        print(json.dumps(rows[-1]), flush=True)
    return {"subjects": len(test), "scheduler": "ddim", "fid_reference_subjects": args.n_ref,
            "fid_truth_slices": _fid(real, truths, truths), "rows": rows}


def cmd_sweep(args) -> dict:
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    real = _reference_features(args)
    rows = []
    for guidance in args.guidance_sweep:
        for scale in args.scale_sweep:
            rows.append({"guidance_scale": guidance, "conditioning_scale": scale,
                         **_measured_row(test, truths, real, num_inference_steps=args.steps, guidance_scale=guidance,
                                         conditioning_scale=scale)})
            print(json.dumps(rows[-1]), flush=True)
    return {"subjects": len(test), "steps": args.steps, "fid_truth_slices": _fid(real, truths, truths), "rows": rows}


def cmd_speed(args) -> dict:
    test = _entries(args.datalist, "test", 1)
    times = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
                   "--bundle_root", str(BUNDLE), "--input_image", test[0]["flair"], "--output_dir", tmp, "--progress", "false"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
            times.append(round(time.perf_counter() - start, 2))
    import torch

    return {"command": "python -m monai.bundle run --config_file bundles/flair2t1_controlnet/configs/inference.json "
                       "--bundle_root bundles/flair2t1_controlnet --input_image FLAIR.nii.gz --output_dir OUT",
            "volume": "80x112x80", "seconds_end_to_end": times, "torch_threads": torch.get_num_threads()}


def cmd_figure(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    test = _entries(args.datalist, "test", args.subject + 1)[args.subject:]
    train = _entries(args.datalist, "training", 24)
    with tempfile.TemporaryDirectory() as tmp:
        ours, _ = translate_ours(test, Path(tmp) / "out")
    columns = {"FLAIR (input)": _load(test[0]["flair"]), "ours (ControlNet)": ours[0],
               "L1 regression": translate_regression(test)[0],
               "FLAIR inverted +\nhistogram matched": translate_histogram(test, train)[0], "true T1": _load(test[0]["image"])}
    fig, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.6))
    for j, (title, vol) in enumerate(columns.items()):
        axes[0, j].imshow(np.rot90(vol[:, :, 40]), cmap="gray", vmin=0, vmax=1)
        axes[1, j].imshow(np.rot90(vol[:, 56, :]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(title, fontsize=9)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(f"{Path(test[0]['flair']).name.split('_')[0]} (held out): axial slice 40 and coronal slice 56", fontsize=9)
    fig.tight_layout()
    path = BUNDLE / "docs" / "translation.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    return {"figure": str(path.relative_to(REPO))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["recon", "eval", "loss", "steps", "sweep", "diversity", "speed", "figure"])
    ap.add_argument("--datalist", type=Path, default=REPO / "data" / "brain_3d" / "datalist.json")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sweep", type=int, nargs="+", default=[5, 10, 25, 50])
    ap.add_argument("--guidance-sweep", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--scale-sweep", type=float, nargs="+", default=[1.0])
    ap.add_argument("--subject", type=int, default=0)
    ap.add_argument("--n-ref", type=int, default=24, help="training subjects whose T1 slices are FID's reference")
    ap.add_argument("--model-dir", default=None, help="weights trained elsewhere (default: the shipped ones)")
    args = ap.parse_args()
    if args.model_dir:
        MODELS.update(model_dir=args.model_dir, check_weights=False)
    result = globals()[f"cmd_{args.command}"](args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.command}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
