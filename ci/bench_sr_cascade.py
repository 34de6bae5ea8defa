"""Measure brain_sr_cascade on held-out subjects of the built-in 1 mm brain population (test split).

    python ci/bench_sr_cascade.py recon  [--n 12]
    python ci/bench_sr_cascade.py eval   [--n 12] [--steps 5] [--level 1]
    python ci/bench_sr_cascade.py baselines [--n 12]
    python ci/bench_sr_cascade.py headroom [--n 12]
    python ci/bench_sr_cascade.py learnability [--minutes 5] [--n 6]
    python ci/bench_sr_cascade.py sweep  [--n 4] [--levels 0 1 50 100 200 349] [--steps 5] [--consistency false]
    python ci/bench_sr_cascade.py steps  [--n 4] [--sweep 2 5 10 25]
    python ci/bench_sr_cascade.py fid    [--n 12]
    python ci/bench_sr_cascade.py figure [--subject 0]
    python ci/bench_sr_cascade.py pipeline [--n 12]

- recon: the upscaler's autoencoder on the true 1 mm test volumes (encode, slab decode): the ceiling of the latent model.
- eval: every test subject's 2 mm volume (its 2x2x2 block means, as the population writes it) upscaled to 1 mm six
  ways: ours through the bundle's upscale.json run step (the user's path), ours without the consistency projection,
  trilinear and cubic B-spline interpolation (scipy.ndimage.zoom order 1 / 3, grid_mode: voxel centres where the
  block means put them), each also followed by the bundle's consistency projection (no model: what the projection
  alone gives; `baselines` computes only these rows). Against the true 1 mm volume: PSNR, MAE, 3D MS-SSIM (settings valid for 160x224x160:
  kernel 9, 5 scales, as common.evaluation.metrics.ms_ssim_settings picks) and sharpness = mean gradient magnitude over the brain (truth > 0.05) relative to the truth's.
- headroom: what any upscaler could gain over the model-free cubic B-spline + projection. Each test subject is
  regenerated without its scanner noise (common.data.brain.generate_subject(noise=False): the same draws, so only the
  noise differs; checked: with noise it equals the file); that noise-free 1 mm volume, projected onto the input's
  block means, errs only by the noise inside each block, which no upscaler can know: the ceiling. Rows: cubic +
  projection, the noise-free truth, the noise-free truth + projection (the ceiling), against the true (noisy) volume.
- learnability: is the detail cubic interpolation misses learnable from the 2 mm volume at all, on a CPU budget? A
  small CNN (6 convolutions of 32 channels on the 2 mm grid, 8 outputs moved back into each 2x2x2 block by MONAI's
  pixelshuffle) regresses 10x the cubic residual (MSE, Adam 1e-3, batches of 4 random 24^3 crops of the first n
  training subjects) for --minutes, then upscales the first test subject: PSNR with and without the projection,
  beside cubic B-spline. A reference for the upscaler's learned part, not a shipped model.
- sweep: ours at several noise levels (0..349) on the first n subjects: fidelity against sharpness.
- steps: ours at several DDIM step counts on the first n subjects, with seconds per volume.
- fid: 2.5D FID (packaged InceptionV3, 8 slices per plane over the central half) against the held-out 1 mm volumes
  (validation + test) of: cascade samples (inference.json, brain_ldm_3d at the held-out subjects' covariates, then
  ours), the same 2 mm samples upscaled trilinearly, the held-out volumes' own 2 mm copies upscaled trilinearly, and
  training volumes (the floor).
- figure: 2 mm input, trilinear, ours, truth for one test subject (axial and coronal), to the card.
- pipeline: pipelines/flair_to_hr_t1.json end to end (its run, in-process) on the test subjects' FLAIR at 2 mm (block
  means of their 1 mm FLAIR): its 1 mm T1 against the true 1 mm T1 (PSNR, MAE, 3D MS-SSIM), beside the FLAIR inverted
  and histogram-matched to the training T1 (ci/bench_flair2t1_controlnet.py's baseline) at 2 mm, then trilinear;
  seconds per volume.
Results go to runs/brain_sr_cascade/bench/<subcommand>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "bundles" / "brain_sr_cascade"
OUT = REPO / "runs" / "brain_sr_cascade" / "bench"
BRAIN = 0.05  # truth intensity above which a voxel counts as brain for sharpness
MODELS: dict = {}  # --model-dir: weights trained elsewhere (no index check)


def _entries(datalist: Path, split: str, n: int) -> list[dict]:
    entries = json.loads(datalist.read_text())[split][:n]
    return [{k: str(datalist.parent / v) if k in ("image", "image_lowres") else v for k, v in e.items()} for e in entries]


def _load(path: str):
    import nibabel as nib
    import numpy as np

    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def _parser(configs: tuple[str, ...] = ("inference.json",), **overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / c) for c in configs])
    p.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    p.update({"bundle_root": str(BUNDLE), "device": "cpu", "progress": False, **MODELS, **overrides})
    return p


def upscale_ours(entries: list[dict], out_dir: Path, **overrides) -> tuple[list, float]:
    """Our upscaling through the bundle's upscale.json run step (inputs linked into one folder); seconds per volume."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for e in entries:
            (inputs / Path(e["image_lowres"]).name).symlink_to(e["image_lowres"])
        p = _parser(("inference.json", "upscale.json"), input_dir=str(inputs), output_dir=str(out_dir), **overrides)
        start = time.perf_counter()
        p.get_parsed_content("run")
        seconds = (time.perf_counter() - start) / len(entries)
    return [_load(str(out_dir / Path(e["image_lowres"]).name)) for e in entries], seconds


def interpolate(low, base: str):
    """The bundle's own B-spline interpolation to the 2x grid (common.sampling.upscale.interpolate_up, the base our
    residual upscaler adds its detail to), as numpy."""
    import torch

    from common.sampling.upscale import interpolate_up

    return interpolate_up(torch.from_numpy(low), base).numpy()


def sharpness(volume, truth) -> float:
    """Mean gradient magnitude over the brain, relative to the truth's (1 = as sharp as the truth)."""
    import numpy as np

    def grad(v):
        return np.sqrt(sum(g ** 2 for g in np.gradient(v.astype(np.float64))))

    brain = truth > BRAIN
    return float(grad(volume)[brain].mean() / grad(truth)[brain].mean())


def _metrics(preds: list, truths: list) -> dict:
    import numpy as np
    import torch

    from common.evaluation.metrics import _ms_ssim_values, ms_ssim_settings

    settings = ms_ssim_settings(truths[0].shape)
    rows = {"psnr": [], "mae": [], "ms_ssim": [], "sharpness": []}
    for pred, truth in zip(preds, truths):
        mse = float(np.mean((pred.astype(np.float64) - truth) ** 2))
        rows["psnr"].append(10 * np.log10(1.0 / mse))
        rows["mae"].append(float(np.mean(np.abs(pred - truth))))
        rows["ms_ssim"].append(float(_ms_ssim_values(torch.from_numpy(truth)[None, None], torch.from_numpy(pred)[None, None],
                                                     1.0, settings)[0]))
        rows["sharpness"].append(sharpness(pred, truth))
    out = {k: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4)} for k, v in rows.items()}
    out["ms_ssim_settings"] = {k: settings[k] for k in ("kernel_size", "scales")}
    return out


def cmd_recon(args) -> dict:
    """The autoencoder alone on the true 1 mm volumes (posterior mean, slab decode): of their residual over the
    interpolation of their 2 mm copy when the bundle is residual (then plus that interpolation)."""
    import torch

    from common.sampling.decode import decode_latents
    from common.sampling.upscale import interpolate_up

    test = _entries(args.datalist, "test", args.n)
    p = _parser()
    p.get_parsed_content("load_autoencoder")
    ae = p.get_parsed_content("autoencoder")
    base, scale = p.get_parsed_content("residual_base"), float(p.get_parsed_content("residual_scale"))
    truths, recons = [], []
    with torch.inference_mode():
        for e in test:
            truth = torch.from_numpy(_load(e["image"]))
            low = torch.from_numpy(_load(e["image_lowres"]))
            up = None if base is None else interpolate_up(low, base)  # once: the target's base and the recon's
            target = truth if up is None else (truth - up) * scale  # interpolation_residual, its base kept
            z, _ = ae.encode(target[None, None])
            recon = decode_latents(ae, z, "slab")[0, 0]
            if up is not None:
                recon = up + recon / scale
            recons.append(recon.clamp(0, 1).numpy())
            truths.append(truth.numpy())
    return {"subjects": len(test), "autoencoder": _metrics(recons, truths)}


def _interpolation_rows(lows: list) -> dict:
    """The baselines without a model: trilinear and cubic B-spline, each also with the bundle's consistency
    projection (what the projection alone adds; ours = cubic + the model's detail + the projection)."""
    import torch

    from common.sampling.upscale import project_consistent

    rows = {}
    for name, base in (("trilinear", "trilinear"), ("cubic_bspline", "cubic")):
        ups = [interpolate(v, base) for v in lows]
        rows[name] = ups
        rows[f"{name}_projected"] = [project_consistent(torch.from_numpy(u)[None, None], torch.from_numpy(v)[None, None])
                                     [0, 0].clamp(0, 1).numpy() for u, v in zip(ups, lows)]
    return rows


def cmd_baselines(args) -> dict:
    """The interpolation baselines alone (eval computes the same rows beside ours)."""
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    rows = _interpolation_rows([_load(e["image_lowres"]) for e in test])
    return {"subjects": len(test), **{name: _metrics(preds, truths) for name, preds in rows.items()}}


def cmd_headroom(args) -> dict:
    import numpy as np
    import torch

    from common.data.brain import generate_subject
    from common.sampling.upscale import project_consistent

    datalist = json.loads(args.datalist.read_text())
    seed = int(datalist["population"]["seed"])
    test = _entries(args.datalist, "test", args.n)
    truths, lows, clean = [], [], []
    for e in test:
        index = int(e["subject"].split("-")[1])
        truth, low = _load(e["image"]), _load(e["image_lowres"])
        if not np.array_equal(generate_subject(seed, index, dims=3, spacing=1).t1, truth):
            raise SystemExit(f"{e['image']} is not subject {index} of seed {seed}: regenerate the population")
        truths.append(truth)
        lows.append(low)
        clean.append(generate_subject(seed, index, dims=3, spacing=1, noise=False).t1)
    projected = [project_consistent(torch.from_numpy(c)[None, None], torch.from_numpy(v)[None, None])[0, 0]
                 .clamp(0, 1).numpy() for c, v in zip(clean, lows)]
    rows = {"cubic_bspline_projected": _interpolation_rows(lows)["cubic_bspline_projected"],
            "noise_free_truth": clean, "noise_free_truth_projected_ceiling": projected}
    report: dict = {"subjects": len(test)}
    for name, preds in rows.items():
        report[name] = _metrics(preds, truths)
        print(name, json.dumps(report[name]), flush=True)
    report["headroom_db"] = round(report["noise_free_truth_projected_ceiling"]["psnr"]["mean"]
                                  - report["cubic_bspline_projected"]["psnr"]["mean"], 2)
    return report


def cmd_learnability(args) -> dict:
    import numpy as np
    import torch
    from monai.networks.utils import pixelshuffle, pixelunshuffle
    from torch import nn

    from common.sampling.upscale import interpolate_up, project_consistent

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pairs = []
    for e in _entries(args.datalist, "training", args.n):
        low = torch.from_numpy(_load(e["image_lowres"]))[None, None]
        target = (torch.from_numpy(_load(e["image"]))[None, None] - interpolate_up(low[0], "cubic")[None]) * 10.0
        pairs.append((low, pixelunshuffle(target, 3, 2)))
    width, crop, edge = 32, 24, 5
    layers: list = [nn.Conv3d(1, width, 3, padding=1), nn.SiLU()]
    for _ in range(4):
        layers += [nn.Conv3d(width, width, 3, padding=1), nn.SiLU()]
    net = nn.Sequential(*layers, nn.Conv3d(width, 8, 3, padding=1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    start, iterations = time.perf_counter(), 0
    while time.perf_counter() - start < args.minutes * 60:
        lows, targets = [], []
        for _ in range(4):
            low, target = pairs[rng.integers(len(pairs))]
            i, j, k = (int(rng.integers(0, n - crop + 1)) for n in low.shape[2:])
            lows.append(low[..., i:i + crop, j:j + crop, k:k + crop])
            targets.append(target[..., i:i + crop, j:j + crop, k:k + crop])
        error = net(torch.cat(lows)) - torch.cat(targets)
        loss = (error[..., edge:-edge, edge:-edge, edge:-edge] ** 2).mean()  # away from the crops' zero padding
        opt.zero_grad()
        loss.backward()
        opt.step()
        iterations += 1
    test = _entries(args.datalist, "test", 1)[0]
    truth, low = _load(test["image"]), torch.from_numpy(_load(test["image_lowres"]))[None, None]
    cubic = interpolate_up(low[0], "cubic")[None]
    with torch.inference_mode():
        learned = cubic + pixelshuffle(net(low), 3, 2) / 10.0
    rows = {"cubic_bspline": cubic, "cubic_bspline_projected": project_consistent(cubic, low),
            "cnn": learned, "cnn_projected": project_consistent(learned, low)}
    report: dict = {"subject": test["subject"], "training_subjects": len(pairs), "iterations": iterations,
                    "minutes": args.minutes, "threads": torch.get_num_threads()}
    for name, pred in rows.items():
        report[name] = _metrics([pred[0, 0].clamp(0, 1).numpy()], [truth])
        print(name, json.dumps(report[name]), flush=True)
    return report


def cmd_eval(args) -> dict:
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    lows = [_load(e["image_lowres"]) for e in test]
    report: dict = {"subjects": len(test), "steps": args.steps, "noise_level": args.level}
    with tempfile.TemporaryDirectory() as tmp:
        ours, sec = upscale_ours(test, Path(tmp) / "a", num_inference_steps=args.steps, noise_level=args.level)
        raw, _ = upscale_ours(test, Path(tmp) / "b", num_inference_steps=args.steps, noise_level=args.level,
                              consistency=False)
    rows = {"ours": ours, "ours_without_consistency": raw, **_interpolation_rows(lows)}
    for name, preds in rows.items():
        report[name] = _metrics(preds, truths)
        print(name, json.dumps(report[name]), flush=True)
    report["ours"]["seconds_per_volume_in_process"] = round(sec, 1)
    for base in ("trilinear", "cubic_bspline", "cubic_bspline_projected"):
        report[f"psnr_gain_over_{base}_db"] = round(report["ours"]["psnr"]["mean"] - report[base]["psnr"]["mean"], 2)
    return report


def _sweep_rows(args, name: str, values: list, **fixed) -> dict:
    """Ours on the first n test subjects once per value of the setting ``name`` (the other settings ``fixed``)."""
    test = _entries(args.datalist, "test", args.n)
    truths = [_load(e["image"]) for e in test]
    rows = []
    for value in values:
        with tempfile.TemporaryDirectory() as tmp:
            preds, sec = upscale_ours(test, Path(tmp) / "o", **{name: value, **fixed})
        row = {name: value, "seconds_per_volume_in_process": round(sec, 1), **_metrics(preds, truths)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"subjects": len(test), **fixed, "rows": rows}


def cmd_sweep(args) -> dict:
    """Fidelity against sharpness over the noise level put on the input."""
    return _sweep_rows(args, "noise_level", args.levels, num_inference_steps=args.steps, consistency=args.consistency)


def cmd_steps(args) -> dict:
    """Fidelity and time over the DDIM step count."""
    return _sweep_rows(args, "num_inference_steps", args.sweep, noise_level=args.level)


def _features(volumes: list):
    import numpy as np
    import torch

    from common.evaluation import extract_features

    return extract_features(torch.from_numpy(np.stack(volumes)[:, None]), method="2.5d", progress=False)


def cmd_fid(args) -> dict:
    """2.5D FID against the held-out 1 mm volumes (validation + test); MS-SSIM diversity of the samples and of those
    volumes (all pairs)."""
    from common.evaluation import fid

    held = _entries(args.datalist, "validation", args.n) + _entries(args.datalist, "test", args.n)
    train = _entries(args.datalist, "training", len(held))
    real = _features([_load(e["image"]) for e in held])
    samples, lows = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, e in enumerate(held):
            out = Path(tmp) / f"s{i}"
            covariates = {k: float(e[k]) for k in ("gender", "age", "ventricular_vol", "brain_vol")}
            _parser(output_dir=str(out), seed=i, save_lowres=True, **covariates).get_parsed_content("run")
            name = sorted(out.glob("*.nii.gz"))[0].name
            samples.append(_load(str(out / name)))
            lows.append(_load(str(out / "lowres" / name)))
    seconds = (time.perf_counter() - start) / len(held)
    import numpy as np

    from common.evaluation.metrics import ms_ssim_diversity

    pairs = len(held) * (len(held) - 1) // 2
    report = {
        # like for like: the samples were drawn with the held-out subjects' covariates
        "ms_ssim_diversity_cascade_samples": ms_ssim_diversity(np.stack(samples)[:, None], max_pairs=pairs),
        "ms_ssim_diversity_heldout_1mm": ms_ssim_diversity(np.stack([_load(e["image"]) for e in held])[:, None],
                                                           max_pairs=pairs),
        "real_volumes": len(held), "samples": len(samples), "cascade_seconds_per_sample_in_process": round(seconds, 1),
        "fid_cascade_samples": fid(real, _features(samples)),
        "fid_brain_ldm_3d_samples_trilinear": fid(real, _features([interpolate(v, "trilinear") for v in lows])),
        "fid_heldout_2mm_trilinear": fid(real, _features([interpolate(_load(e["image_lowres"]), "trilinear") for e in held])),
        "fid_training_volumes_floor": fid(real, _features([_load(e["image"]) for e in train])),
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}


def cmd_figure(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    test = _entries(args.datalist, "test", args.subject + 1)[args.subject:]
    low = _load(test[0]["image_lowres"])
    with tempfile.TemporaryDirectory() as tmp:
        ours, _ = upscale_ours(test, Path(tmp) / "out", num_inference_steps=args.steps, noise_level=args.level)
    columns = {"2 mm input": np.repeat(np.repeat(np.repeat(low, 2, 0), 2, 1), 2, 2), "trilinear": interpolate(low, "trilinear"),
               "cubic B-spline": interpolate(low, "cubic"), "ours (LDM upscaler)": ours[0], "true 1 mm": _load(test[0]["image"])}
    crop = (slice(30, 130), slice(60, 180))  # a zoom on the ventricles and cortex
    fig, axes = plt.subplots(2, len(columns), figsize=(2.6 * len(columns), 5.6))
    for j, (title, vol) in enumerate(columns.items()):
        axes[0, j].imshow(np.rot90(vol[:, :, 90][crop]), cmap="gray", vmin=0, vmax=1)
        axes[1, j].imshow(np.rot90(vol[crop[0], 112, 40:140]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(title, fontsize=9)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(f"{Path(test[0]['image']).name.split('_')[0]} (held out): axial slice 90 and coronal slice 112 "
                 "(1 mm grid, zoomed)", fontsize=9)
    fig.tight_layout()
    path = BUNDLE / "docs" / "upscaling.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)
    return {"figure": str(path.relative_to(REPO))}


def cmd_pipeline(args) -> dict:
    import nibabel as nib
    import numpy as np
    from monai.bundle import run

    sys.path.insert(0, str(REPO / "ci"))
    from bench_flair2t1_controlnet import translate_histogram

    from common.data.brain import downsample2
    from common.io.writers import write_nifti

    test = _entries(args.datalist, "test", args.n)
    train = _entries(args.datalist, "training", 12)
    truths = [_load(e["image"]) for e in test]
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = Path(tmp) / "flair", Path(tmp) / "out"
        inputs.mkdir()
        flairs = []
        for e in test:
            src = nib.load(str(Path(e["image"]).parent / e["flair"]))
            low, affine = downsample2(np.asarray(src.dataobj, dtype=np.float32), src.affine)
            path = inputs / f"{e['subject']}_flair_2mm.nii.gz"
            write_nifti(low, path, affine)
            flairs.append({"flair": str(path)})
        start = time.perf_counter()
        run(config_file=str(REPO / "pipelines" / "flair_to_hr_t1.json"), logging_file=None, input_dir=str(inputs),
            output_dir=str(out), bundle_dirs=[str(REPO / "bundles")])
        seconds = (time.perf_counter() - start) / len(test)
        ours = [_load(str(out / "t1_1mm" / Path(f["flair"]).name)) for f in flairs]
        baseline = [interpolate(v, "trilinear") for v in translate_histogram(flairs, train)]
    report = {"subjects": len(test), "seconds_per_volume_end_to_end": round(seconds, 1),
              "flair_to_hr_t1": _metrics(ours, truths),
              "flair_inverted_histogram_matched_trilinear": _metrics(baseline, truths)}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["recon", "eval", "baselines", "headroom", "learnability", "sweep", "steps", "fid", "figure", "pipeline"])
    ap.add_argument("--datalist", type=Path, default=REPO / "data" / "brain_3d_1mm" / "datalist.json")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1, 50, 100, 200, 349])
    ap.add_argument("--sweep", type=int, nargs="+", default=[2, 5, 10, 25])
    ap.add_argument("--subject", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=5.0, help="learnability: training budget")
    ap.add_argument("--consistency", type=lambda v: v.lower() == "true", default=True, help="sweep: true | false")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=None, help="weights trained elsewhere (default: the shipped ones)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.model_dir:
        MODELS.update(model_dir=args.model_dir, check_weights=False)
    result = globals()[f"cmd_{args.command}"](args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.command}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
