"""Measure the cxr_text_ldm shipped weights: autoencoder reconstruction and sampling speed.

    python ci/bench_cxr_text_ldm.py --datalist /work/data/cxr128/datalist.json --out bench.json [--skip-speed]

- reconstruction: MS-SSIM (settings chosen for 128x128 by common.evaluation), PSNR and MAE of the autoencoder
  on the test split (posterior mean, as the diffusion stage's latents);
- speed: one 128x128 sample with classifier-free guidance (one batched UNet call per step), 50 DDIM steps,
  timed inside the process (model loading, text encoding, sampling + decoding) and end to end through
  ``python -m monai.bundle run`` (the user's command, including Python start-up).
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


def reconstruction(datalist: str, split: str, limit: int) -> dict:
    """Autoencoder MS-SSIM / PSNR / MAE on one datalist split."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, ScaleIntensityRange

    from common.evaluation.metrics import mae, ms_ssim_reconstruction, ms_ssim_settings, psnr
    from common.training import load_datalist

    files = load_datalist(datalist, split=split, max_items=limit)
    load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensityRange(0, 255, 0, 1, clip=True)])
    p = _parser()
    p.get_parsed_content("load_autoencoder")
    ae = p.get_parsed_content("autoencoder_def").eval()
    reals, recons = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), 16):
            x = torch.stack([torch.as_tensor(load(f["image"])).float() for f in files[i : i + 16]])
            z_mu, _ = ae.encode(x)
            reals.append(x)
            recons.append(ae.decode(z_mu).clamp(0, 1))
    real, recon = torch.cat(reals), torch.cat(recons)
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
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    result = {"cpu": _cpu(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "loadavg_start": list(os.getloadavg())}
    if not args.skip_recon:
        result["reconstruction"] = reconstruction(args.datalist, args.split, args.limit)
        print(json.dumps(result["reconstruction"]), flush=True)
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
