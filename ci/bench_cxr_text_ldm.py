"""Measure the cxr_text_ldm shipped weights: autoencoder reconstruction and sampling speed.

    python ci/bench_cxr_text_ldm.py --datalist /work/data/cxr128/datalist.json --out bench.json [--skip-speed]

- reconstruction: MS-SSIM (settings chosen for 128x128 by common.evaluation), PSNR and MAE of the autoencoder
  on the test split (posterior mean, as the diffusion stage's latents);
- speed: one 128x128 sample with classifier-free guidance (one batched UNet call per step), 50 DDIM steps,
  timed inside the process (model loading, text encoding, sampling + decoding) and end to end through
  ``python -m monai.bundle run`` (the user's command, including Python start-up).
- borders: the line-and-frame check (issue 21): the decoder's image of an all-zero latent and the mean
  reconstruction error per row and column of the test split; a border row or column that stands out from the
  interior is a drawn artifact (the 2026-11 weights drew a bright line at y = H-3 and a faint frame);
- real: the undeformed source radiograph (pydicom-data RG1_UNCI.dcm, as the population frames it) through the
  autoencoder;
- figure (``--figure PNG``): the real radiograph, population test cases and samples for their prompts, side by side.
Numbers go to ``--out`` as JSON together with the CPU, the thread count and the load average at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "cxr_text_ldm"
sys.path.insert(0, str(REPO))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _parser(**overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p["bundle_root"] = str(BUNDLE)
    for k, v in overrides.items():
        p[k] = v
    return p


def load_radiographs(files: list[dict]):
    """The datalist entries' PNGs as one float tensor [N, 1, W, H] in [0, 1] (LoadImage's layout, 0-255 scaled)."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, ScaleIntensityRange

    load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensityRange(0, 255, 0, 1, clip=True)])
    return torch.stack([torch.as_tensor(load(f["image"])).float() for f in files])


def _reconstruct(ae, x, batch: int = 16):
    """The autoencoder's reconstruction from the posterior mean (what the diffusion stage's latents encode)."""
    import torch

    with torch.inference_mode():
        return torch.cat([ae.decode(ae.encode(x[i : i + batch])[0]).clamp(0, 1) for i in range(0, len(x), batch)])


def reconstruction(datalist: str, split: str, limit: int) -> dict:
    """Autoencoder MS-SSIM / PSNR / MAE on one datalist split."""
    from common.evaluation.metrics import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr
    from common.training import load_datalist

    files = load_datalist(datalist, split=split, max_items=limit)
    ae = _autoencoder()
    t0 = time.perf_counter()
    real = load_radiographs(files)
    recon = _reconstruct(ae, real)
    settings = ms_ssim_settings(real.shape[2:])
    return {
        "split": split,
        "n_images": int(real.shape[0]),
        "ms_ssim": round(ms_ssim_reconstruction(real, recon, settings=settings), 4),
        "ms_ssim_settings": settings,
        "psnr_db": round(psnr(real, recon), 2),
        "mae": round(mae(real, recon), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


MODEL_OVERRIDES: dict = {}  # --model-dir: other weights than the shipped ones (unchecked)


def _autoencoder():
    p = _parser(**MODEL_OVERRIDES)
    p.get_parsed_content("load_autoencoder")
    return p.get_parsed_content("autoencoder_def").eval()


def borders(datalist: str, split: str, limit: int) -> dict:
    """How far border rows / columns stand out: in the zero-latent decode and in the mean reconstruction error."""
    import torch

    from common.training import load_datalist

    ae = _autoencoder()
    files = load_datalist(datalist, split=split, max_items=limit)
    with torch.inference_mode():
        blank = ae.decode(torch.zeros(1, ae.latent_channels, 32, 32)).clamp(0, 1)[0, 0]  # [W, H], as LoadImage reads
    x = load_radiographs(files)
    err = (_reconstruct(ae, x) - x)[:, 0].mean(0)  # [W, H] mean signed error

    def profile(a: torch.Tensor) -> dict:
        rows, cols = a.mean(0), a.mean(1)  # mean over x per row y; over y per column x
        inner_r, inner_c = rows[8:-8], cols[8:-8]

        def stand_out(v: torch.Tensor, inner: torch.Tensor) -> list[float]:
            return [round(float((v[k] - inner.median()).abs()), 4) for k in (0, 1, 2, -3, -2, -1)]

        return {"rows_first3_last3_vs_interior": stand_out(rows, inner_r),
                "cols_first3_last3_vs_interior": stand_out(cols, inner_c),
                "interior_row_spread": round(float((inner_r - inner_r.median()).abs().max()), 4),
                "interior_col_spread": round(float((inner_c - inner_c.median()).abs().max()), 4)}

    return {"zero_latent_decode": profile(blank), "mean_reconstruction_error": profile(err), "n_images": len(files)}


def real_radiograph() -> dict:
    """The source film (undeformed, the population's framing) through the autoencoder."""
    import torch

    from common.data.cxr_source import film_picture
    from common.evaluation.metrics import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr

    x = torch.as_tensor(film_picture((128, 128))).T.contiguous()[None, None]  # [1, 1, W, H]
    rec = _reconstruct(_autoencoder(), x)
    return {"image": "pydicom-data RG1_UNCI.dcm, undeformed, 128x128",
            "ms_ssim": round(ms_ssim_reconstruction(x, rec, settings=ms_ssim_settings(x.shape[2:])), 4),
            "psnr_db": round(psnr(x, rec), 2), "mae": round(mae(x, rec), 4)}


def figure(datalist: str, path: str, seed: int = 0) -> dict:
    """Real radiograph | population test cases | samples of their prompts (w = 3, DDIM 50), one column per finding."""
    import numpy as np
    import torch

    from common.data.cxr_source import film_picture
    from common.data.figure import _tile, write_grid
    from common.training import load_datalist

    entries = load_datalist(datalist, split="test")
    wanted = [("no_finding", "none"), ("effusion", "right"), ("effusion", "bilateral"), ("cardiomegaly", "none"),
              ("pneumothorax", "left"), ("pneumothorax", "right"), ("effusion", "left")]
    picks = []
    for finding, side in wanted:
        side_key = "pneumothorax_side" if finding == "pneumothorax" else "effusion_side"
        match = [e for e in entries if e["finding"] == finding and e[side_key] == side
                 and (finding != "effusion" or e["effusion_size"] == "large")]
        if not match:
            raise SystemExit(f"error: the test split of {datalist} has no {finding} ({side}) case for the figure: "
                             "make a larger population (e.g. --n 3000)")
        picks.append(match[0])
    p = _parser(progress=False, num_inference_steps=50, scheduler="ddim", guidance_scale=3.0, **MODEL_OVERRIDES)
    sampler, conditioner = p.get_parsed_content("sampler"), p.get_parsed_content("conditioner")
    tiles = [_tile(film_picture(), "real RG1_UNCI", spatial_order="yx")]
    tiles += [_tile(img[0].numpy(), f"data {e['case'][-5:]}") for img, e in zip(load_radiographs(picks), picks)]
    tiles.append(_tile(np.zeros((128, 128), np.float32), "samples (w 3):"))
    for k, e in enumerate(picks):
        img = sampler.sample(conditioner.from_values(1, prompt=e["report"]), conditioner.null(1), num_samples=1,
                             generator=torch.Generator().manual_seed(seed + k), num_inference_steps=50,
                             guidance_scale=3.0, progress=False).clamp(0, 1)[0, 0].numpy()
        tiles.append(_tile(img, e["report"][:22]))
    write_grid(tiles, 8, path)
    return {"figure": str(path), "reports": [e["report"] for e in picks]}


def speed(repeats: int) -> dict:
    """In-process timings of one guided 128x128 sample, 50 DDIM steps; then the CLI end to end."""
    import torch

    t0 = time.perf_counter()
    p = _parser(progress=False, num_inference_steps=50, scheduler="ddim", guidance_scale=3.0)
    sampler = p.get_parsed_content("sampler")
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    cond, null = p.get_parsed_content("condition"), p.get_parsed_content("null_condition")
    from common.sampling import GenerationSettings

    settings = GenerationSettings.from_config(p)
    t_text = time.perf_counter() - t0
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        img = sampler.sample(cond, null, num_samples=1, generator=torch.Generator().manual_seed(r), settings=settings)
        runs.append(time.perf_counter() - t0)
    assert img.shape == (1, 1, 128, 128)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
               "--bundle_root", str(BUNDLE), "--output_dir", tmp, "--progress", "False"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        t_cli = time.perf_counter() - t0
        written = sorted(os.listdir(tmp))
    return {
        "steps": 50, "scheduler": "ddim", "guidance_scale": 3.0, "image_size": [128, 128],
        "load_models_s": round(t_load, 2), "encode_prompt_s": round(t_text, 3),
        "sample_s": [round(t, 2) for t in runs], "sample_s_median": round(sorted(runs)[len(runs) // 2], 2),
        "cli_end_to_end_s": round(t_cli, 2), "cli_files": written,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datalist", required=True, help="built-in CXR datalist (python -m common.data make cxr ...)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-recon", action="store_true")
    ap.add_argument("--model-dir", default=None, help="weights folder instead of the shipped ones (hashes not checked)")
    ap.add_argument("--figure", default=None, help="also write the real | data | samples figure to this PNG")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    if args.model_dir:
        MODEL_OVERRIDES.update(model_dir=args.model_dir, check_weights=False)
    result = {"cpu": _cpu(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "loadavg_start": list(os.getloadavg())}
    if not args.skip_recon:
        result["reconstruction"] = reconstruction(args.datalist, args.split, args.limit)
        print(json.dumps(result["reconstruction"]), flush=True)
        result["borders"] = borders(args.datalist, args.split, args.limit)
        result["real_radiograph"] = real_radiograph()
        print(json.dumps({k: result[k] for k in ("borders", "real_radiograph")}), flush=True)
    if args.figure:
        result["figure"] = figure(args.datalist, args.figure)
    if not args.skip_speed:
        result["speed"] = speed(args.repeats)
        print(json.dumps(result["speed"]), flush=True)
    result["loadavg_end"] = list(os.getloadavg())
    result["weights_bytes"] = {f.name: f.stat().st_size for f in sorted((BUNDLE / "models").glob("*.safetensors"))}
    from common.io import write_json

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
