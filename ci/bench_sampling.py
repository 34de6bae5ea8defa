"""Benchmark latent diffusion sampling: MONAI's reference loop vs ``common.sampling.LatentDiffusionSampler``.

Subcommands (all CPU by default; sizes and steps are options because the full benchmark takes many minutes):

  brain    the published brain_ldm_3d architecture (random weights) at --size (default 160 224 160). In one
           process, on the same weights and noise: (1) ours with MONAI's DDIM and the reference's steps (same
           maths: the max difference must be < 1e-4), (2) ours with each few-step solver (--fast-scheduler)
           at each step count (--fast-steps), (3) the reference: MONAI ``LatentDiffusionInferer.sample`` + one-pass decode.
  bundles  the shipped weights of every bundle under bundles/ whose inference.json builds a ``sampler``
           (bundles without weights are skipped with a message): reference vs ours, same scheduler and steps.
  cascade  brain_sr_cascade's paper headline: one 160x224x160 sample of the cascade end to end (its inference.json
           run step in-process: brain_ldm_3d at 2 mm with the shipped weights, then the upscaler, the NIfTI written)
           against the single-stage reference: the published brain LDM architecture (random weights) sampled at
           160x224x160 with MONAI's ``LatentDiffusionInferer.sample``, DDIM --steps (50), one-pass decode.
  decode   decode-only study, one subprocess per configuration (peak RSS = the child's ru_maxrss): one pass vs
           slab vs tiled (several overlaps) on the published autoencoder at several sizes, max |diff| vs one pass.

Peak memory of a phase in one process: the kernel's resident-set high-water mark (VmHWM) is reset before each
phase (``/proc/self/clear_refs`` = 5) and read after it; freed heap is trimmed first (``malloc_trim``).

Examples:
  python ci/bench_sampling.py brain --size 80 112 80 --steps 50 --fast-steps 15
  python ci/bench_sampling.py bundles
  python ci/bench_sampling.py decode --sizes 64,96,64 96,128,96 --overlaps 2 4 8
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

SAME_MATHS_TOL = 1e-4


# ----------------------------------------------------------------------------- memory / timing
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _trim() -> None:
    from common.sampling.decode import release_freed_memory

    gc.collect()
    release_freed_memory()


def measure(fn):
    """(result, wall seconds, peak RSS MiB during fn, RSS MiB before fn)."""
    _trim()
    base = _rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        print("warning: cannot reset the RSS high-water mark; peak values include earlier phases", file=sys.stderr)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, wall, _rss_kb("VmHWM") / 1024, base / 1024


# ----------------------------------------------------------------------------- models
def published_autoencoder(seed: int = 0):
    """The published brain_ldm_3d AutoencoderKL (random weights)."""
    from monai.networks.nets import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, channels=(64, 128, 128, 128), latent_channels=3,
        num_res_blocks=2, norm_num_groups=32, norm_eps=1e-6, attention_levels=(False, False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False, include_fc=False,
    ).eval()


def published_brain(seed: int = 0):
    """The published brain_ldm_3d autoencoder and UNet (random weights; zero-initialised output layers perturbed
    so that the UNet output depends on its input and the same-maths comparison is not trivial)."""
    from monai.networks.nets import DiffusionModelUNet

    ae = published_autoencoder(seed)
    unet = DiffusionModelUNet(
        spatial_dims=3, in_channels=7, out_channels=3, channels=(256, 512, 768), num_res_blocks=2,
        attention_levels=(False, True, True), norm_num_groups=32, norm_eps=1e-6, resblock_updown=True,
        num_head_channels=(0, 512, 768), with_conditioning=True, transformer_num_layers=1, cross_attention_dim=4,
        upcast_attention=True, include_fc=True,
    ).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0.0, 0.02)
    return ae, unet


def published_ddim():
    """MONAI's DDIM with the published brain LDM's training schedule (the reference's scheduler)."""
    from monai.networks.schedulers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                         beta_end=0.0205, clip_sample=False)


def published_condition():
    """(condition, null condition) of one covariate setting (male, mid age, mid volumes) for the published UNet."""
    from common.conditioning.base import Condition

    cov = torch.tensor([[1.0, 0.5, 0.5, 0.5]])
    return (Condition(context=cov[:, None, :], vector=cov),
            Condition(context=torch.full_like(cov[:, None, :], -1.0), vector=torch.full_like(cov, -1.0)))


class CondUNet(nn.Module):
    """The UNet as MONAI's inferer calls it, with our Condition applied inside (concat channels + context);
    with guidance the inferer stacks [unconditional; conditional], so the null condition goes first."""

    def __init__(self, unet: nn.Module, cond, null, n: int) -> None:
        super().__init__()
        self.unet, self.n = unet, n
        self.cond = None if cond is None else _expand(cond, n)
        self.pair = None if null is None or cond is None else _expand(null, n).cat(self.cond)

    def forward(self, x, timesteps, context=None):
        c = self.pair if x.shape[0] == 2 * self.n and self.pair is not None else self.cond
        if c is None:
            return self.unet(x, timesteps=timesteps)
        from common.sampling.denoiser import unet_input

        return self.unet(unet_input(x, c), timesteps=timesteps, context=c.context)


def _expand(cond, n):
    return cond.expand(n)


def reference_sample(ae, unet, scheduler, scale_factor, noise, steps, guidance, cond, null):
    """What a user writes with MONAI alone: LatentDiffusionInferer.sample, whole-volume decode."""
    from monai.inferers import LatentDiffusionInferer

    scheduler.set_timesteps(steps)
    n = noise.shape[0]
    guided = guidance != 1.0
    inferer = LatentDiffusionInferer(scheduler, scale_factor=scale_factor)
    return inferer.sample(
        input_noise=noise, autoencoder_model=ae, diffusion_model=CondUNet(unet, cond, null if guided else None, n),
        scheduler=scheduler, conditioning=torch.zeros(n, 1, 1) if guided else None, mode="crossattn",
        verbose=False, cfg=guidance if guided else None,
    )


def _report(rows: list[dict], ref_key: str = "reference") -> None:
    ref = next((r for r in rows if r["name"] == ref_key), None)
    print(f"{'phase':<28}{'wall s':>10}{'peak RSS MiB':>14}{'time/ref':>10}{'mem/ref':>10}{'max|diff| vs ref':>18}")
    for r in rows:
        tr = r["wall_s"] / ref["wall_s"] if ref else float("nan")
        mr = r["peak_rss_mib"] / ref["peak_rss_mib"] if ref else float("nan")
        d = r.get("max_abs_diff")
        ds = "" if d is None else f"{d:.3g}"
        print(f"{r['name']:<28}{r['wall_s']:>10.1f}{r['peak_rss_mib']:>14.0f}{tr:>10.2f}{mr:>10.2f}{ds:>18}")


# ----------------------------------------------------------------------------- brain
def bench_brain(args) -> int:
    from common.sampling import GenerationSettings, LatentDiffusionSampler

    size = tuple(args.size)
    if any(s % 32 for s in size):
        raise SystemExit(f"--size must be multiples of 32 (8x autoencoder, 4x UNet), got {size}")
    latent_shape = (3, *[s // 8 for s in size])
    ae, unet = published_brain(args.seed)
    noise = torch.randn((1, *latent_shape), generator=torch.Generator().manual_seed(args.seed))
    cond, null = published_condition()
    scale = args.scale_factor
    ddim = published_ddim

    print(f"published brain_ldm_3d architecture, image {size}, latent {latent_shape}, threads "
          f"{torch.get_num_threads()}, reference DDIM {args.steps} steps, guidance {args.guidance}", flush=True)
    rows, outputs = [], {}

    def ours(sched, steps, decode, release=False):
        """Our sampler as inference.json runs it: every latent first, then (release) the UNet freed, then decode."""
        s = LatentDiffusionSampler(ae, unet, sched, scale, latent_shape, decode=decode, slab_mb=args.slab_mb)
        latents = s.sample_latents(cond, null, 1, noise=noise, settings=GenerationSettings(
            steps, args.guidance, progress=False))
        if release:
            s.release_denoiser()
        return s.decode(latents)

    phases = [] if args.skip_same_maths else [
        ("ours DDIM-%d %s" % (args.steps, args.decode), lambda: ours(ddim(), args.steps, args.decode))]
    if not args.skip_reference:
        phases.append(("reference", lambda: reference_sample(ae, unet, ddim(), scale, noise, args.steps,
                                                             args.guidance, cond, null)))
    from common.schedulers import build_scheduler

    fast = [(name, steps) for name in args.fast_scheduler for steps in args.fast_steps if steps]
    for k, (name, steps) in enumerate(fast):  # each a phase of its own; the last one releases the UNet (runs last)
        release = args.release and k == len(fast) - 1
        phases.append((f"ours {name}-{steps} {args.decode}{' +release' if release else ''}",
                       lambda name=name, steps=steps, release=release: ours(build_scheduler(name), steps,
                                                                            args.decode, release)))
    for name, fn in phases:
        out, wall, peak, base = measure(fn)
        outputs[name] = out
        rows.append({"name": name, "wall_s": wall, "peak_rss_mib": peak, "rss_before_mib": base})
        print(f"  {name}: {wall:.1f} s, peak RSS {peak:.0f} MiB (before {base:.0f} MiB)", flush=True)
    status = 0
    if "reference" in outputs:
        ref = outputs["reference"]
        rng = float(ref.max() - ref.min())
        for r in rows:
            r["max_abs_diff"] = float((outputs[r["name"]] - ref).abs().max())
            r["max_abs_diff_over_range"] = r["max_abs_diff"] / rng if rng else float("nan")
        if not args.skip_same_maths:
            same = rows[0]
            ok = same["max_abs_diff"] < SAME_MATHS_TOL
            print(f"same scheduler and steps: max |ours - reference| = {same['max_abs_diff']:.3g} "
                  f"(reference output range {rng:.3g}) -> {'PASS' if ok else 'FAIL'} (< {SAME_MATHS_TOL:g})")
            status = 0 if ok else 1
    _report(rows)
    if args.json:
        from common.io import write_json

        write_json({"size": size, "steps": args.steps, "rows": rows}, args.json, indent=1)
    return status


# ----------------------------------------------------------------------------- cascade
def bench_cascade(args) -> int:
    """The cascade end to end against the single-stage published brain LDM at the same 1 mm size."""
    from monai.bundle import ConfigParser

    bundle = REPO / "bundles" / "brain_sr_cascade"
    rows = []

    def cascade(out: str):
        p = ConfigParser()
        p.read_config(str(bundle / "configs" / "inference.json"))
        p.read_meta(str(bundle / "configs" / "metadata.json"))
        p.update({"bundle_root": str(bundle), "output_dir": out, "progress": False, "device": "cpu", "seed": args.seed})
        return p.get_parsed_content("run")

    def reference():
        ae, unet = published_brain(args.seed)
        noise = torch.randn((1, 3, 20, 28, 20), generator=torch.Generator().manual_seed(args.seed))
        cond, _ = published_condition()
        return reference_sample(ae, unet, published_ddim(), 1.0, noise, args.steps, 1.0, cond, None)

    print(f"cascade (shipped weights) vs single-stage published brain LDM at 160x224x160, DDIM {args.steps}, "
          f"threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("cascade (brain_ldm_3d 2 mm + upscaler)", lambda: cascade(tmp)), ("reference", reference)):
            out, wall, peak, base = measure(fn)
            rows.append({"name": name, "wall_s": wall, "peak_rss_mib": peak, "rss_before_mib": base})
            print(f"  {name}: {wall:.1f} s, peak RSS {peak:.0f} MiB (before {base:.0f} MiB)", flush=True)
            if name == "reference":
                print(f"  reference output shape {tuple(out.shape)}", flush=True)
            else:
                import nibabel as nib

                print(f"  cascade wrote {[Path(o).name for o in out]} of shape {nib.load(out[0]).shape}", flush=True)
    _report(rows)
    if args.json:
        from common.io import write_json

        write_json({"steps": args.steps, "rows": rows}, args.json, indent=1)
    return 0


# ----------------------------------------------------------------------------- bundles
def bench_bundles(args) -> int:
    from monai.bundle import ConfigParser

    status = 0
    roots = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "inference.json").is_file())
    if args.bundles:
        roots = [p for p in roots if p.name in args.bundles]
    for root in roots:
        models = list((root / "models").glob("*.safetensors")) if (root / "models").is_dir() else []
        if not models:
            print(f"[{root.name}] skipped: no weights in {root / 'models'}")
            continue
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        if "sampler" not in parser.config:
            print(f"[{root.name}] skipped: inference.json has no 'sampler' (not a latent diffusion bundle)")
            continue
        if "condition" not in parser.config:
            print(f"[{root.name}] skipped: its condition is an input image (no 'condition' item); its own bench "
                  "times it (ci/bench_<bundle>.py, bench_sampling.py cascade)")
            continue
        parser["bundle_root"] = str(root)
        parser["device"] = "$torch.device('cpu')"
        if "progress" in parser.config:
            parser["progress"] = False
        try:
            sampler = parser.get_parsed_content("sampler")
            cond = parser.get_parsed_content("condition") if "condition" in parser.config else None
            null = parser.get_parsed_content("null_condition") if "null_condition" in parser.config else None
        except Exception as e:  # a bundle whose weights have not landed yet
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            print(f"[{root.name}] skipped: cannot build its sampler ({msg[:200]})")
            continue
        from common.sampling import GenerationSettings

        settings = GenerationSettings.from_config(parser, progress=False,
                                                  **({"num_inference_steps": args.steps} if args.steps else {}))
        n = 1
        noise = torch.randn((n, *sampler.latent_shape), generator=torch.Generator().manual_seed(args.seed))
        ref_sched = copy.deepcopy(sampler.scheduler)
        steps, g = settings.num_inference_steps, settings.guidance_scale
        print(f"[{root.name}] {type(sampler.scheduler).__name__} {steps} steps, guidance {g}, latent "
              f"{sampler.latent_shape}, decode {sampler.decode_mode}, {args.repeats} rounds (order alternates; "
              f"best wall time and highest peak kept)", flush=True)
        phases = {
            "ours": lambda: sampler.sample(cond, null, n, noise=noise, settings=settings),
            "reference": lambda: reference_sample(sampler.autoencoder, sampler.denoiser.unet, ref_sched,
                                                  sampler.scale_factor, noise, steps, g, cond, null),
        }
        best: dict[str, dict] = {}
        outs = {}
        for rnd in range(args.repeats):
            for name in (("ours", "reference") if rnd % 2 == 0 else ("reference", "ours")):
                out, wall, peak, base = measure(phases[name])
                outs[name] = out
                row = best.setdefault(name, {"name": name, "wall_s": wall, "peak_rss_mib": peak, "walls": []})
                row["wall_s"], row["peak_rss_mib"] = min(row["wall_s"], wall), max(row["peak_rss_mib"], peak)
                row["walls"].append(round(wall, 2))
        rows = [best["ours"], best["reference"]]
        print(f"[{root.name}] wall times per round: ours {best['ours']['walls']}, reference {best['reference']['walls']}")
        d = float((outs["ours"] - outs["reference"]).abs().max())
        rows[0]["max_abs_diff"] = d
        _report(rows)
        ok = d < SAME_MATHS_TOL
        print(f"[{root.name}] same scheduler and steps: max |diff| {d:.3g} -> {'PASS' if ok else 'FAIL'}")
        status |= 0 if ok else 1
    return status


# ----------------------------------------------------------------------------- decode study
def _decode_one(args) -> int:
    """Child process: decode one latent with one mode; save the output, print wall time and ru_maxrss."""
    from common.sampling.decode import decode_latents

    ae = published_autoencoder(args.seed)
    _trim()
    shape = (3, *[s // 8 for s in args.size])
    z = torch.randn((1, *shape), generator=torch.Generator().manual_seed(args.seed + 1))
    base = _rss_kb("VmRSS") / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        kw = {"slab_mb": args.slab_mb, "tile": args.tile, "overlap": args.overlap, "ramp": args.ramp}
        out = decode_latents(ae, z, args.mode, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.out, out.numpy())
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "maxrss_mib": peak, "rss_before_mib": base}))
    return 0


def bench_decode(args) -> int:
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes]
    configs = [("full", {}), ("slab", {})] + [("tiled", {"overlap": o}) for o in args.overlaps]
    if args.no_full:
        configs = configs[1:]
    print(f"decode study, published brain autoencoder (random weights), threads {args.threads or 'default'}")
    print(f"{'size':<16}{'mode':<18}{'wall s':>9}{'cpu s':>9}{'peak RSS MiB':>14}{'(before)':>10}"
          f"{'max|diff| vs full':>20}{'/range':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            full = None
            for mode, extra in configs:
                out = Path(tmp) / f"{mode}.npy"
                cmd = [sys.executable, __file__, "_decode_one", "--mode", mode, "--size", *map(str, size),
                       "--out", str(out), "--tile", str(args.tile), "--slab-mb", str(args.slab_mb),
                       "--overlap", str(extra.get("overlap", 0)), "--seed", str(args.seed)]
                env = dict(os.environ)
                if args.threads:
                    env["OMP_NUM_THREADS"] = str(args.threads)
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode:
                    print(f"{str(size):<16}{mode:<18} failed: {res.stderr.strip().splitlines()[-1:]}")
                    continue
                info = json.loads(res.stdout.strip().splitlines()[-1])
                arr = np.load(out)
                if mode == "full":
                    full = arr
                label = mode if mode != "tiled" else f"tiled ov={extra['overlap']}"
                diff = rel = ""
                if full is not None and mode != "full":
                    d = float(np.abs(arr - full).max())
                    diff, rel = f"{d:.3g}", f"{d / float(full.max() - full.min()):.3g}"
                print(f"{str(size):<16}{label:<18}{info['wall_s']:>9.1f}{info['cpu_s']:>9.1f}{info['maxrss_mib']:>14.0f}"
                      f"{info['rss_before_mib']:>10.0f}{diff:>20}{rel:>10}", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("brain", help="published brain architecture: reference vs ours")
    b.add_argument("--size", type=int, nargs=3, default=[160, 224, 160])
    b.add_argument("--steps", type=int, default=50, help="reference (and same-maths) DDIM steps")
    b.add_argument("--fast-scheduler", nargs="+", default=["dpmpp2m"], help="few-step solver(s)")
    b.add_argument("--fast-steps", type=int, nargs="+", default=[15], help="step count(s); 0 skips the few-step phase")
    b.add_argument("--guidance", type=float, default=1.0)
    b.add_argument("--decode", default="slab", choices=["full", "slab", "tiled", "auto"])
    b.add_argument("--slab-mb", type=float, default=64.0)
    b.add_argument("--scale-factor", type=float, default=1.0)
    b.add_argument("--skip-reference", action="store_true")
    b.add_argument("--skip-same-maths", action="store_true", help="no DDIM phase of ours (the same-maths check)")
    b.add_argument("--no-release", dest="release", action="store_false",
                   help="keep the UNet while decoding in the last few-step phase (default: release it, as 3D bundles do)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--json", default="")
    u = sub.add_parser("bundles", help="shipped weights of each bundle: reference vs ours")
    u.add_argument("--bundles", nargs="*", default=[])
    u.add_argument("--steps", type=int, default=0, help="steps for both (0: the bundle's own)")
    u.add_argument("--repeats", type=int, default=2, help="rounds; the phase order alternates between rounds")
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--threads", type=int, default=0)
    c = sub.add_parser("cascade", help="brain_sr_cascade end to end vs the single-stage 1 mm reference")
    c.add_argument("--steps", type=int, default=50, help="the reference's DDIM steps")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--json", default="")
    d = sub.add_parser("decode", help="decode-only study, one subprocess per configuration")
    d.add_argument("--sizes", nargs="+", default=["64,96,64", "96,128,96"], help="image sizes D,H,W (multiples of 8)")
    d.add_argument("--overlaps", type=int, nargs="*", default=[2, 4, 8])
    d.add_argument("--tile", type=int, default=8)
    d.add_argument("--slab-mb", type=float, default=64.0)
    d.add_argument("--no-full", action="store_true", help="skip the one-pass decode (no differences reported)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=0)
    o = sub.add_parser("_decode_one")
    o.add_argument("--mode", required=True)
    o.add_argument("--size", type=int, nargs=3, required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--tile", type=int, default=8)
    o.add_argument("--overlap", type=int, default=0)
    o.add_argument("--ramp", type=int, default=0)
    o.add_argument("--slab-mb", type=float, default=64.0)
    o.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return {"brain": bench_brain, "cascade": bench_cascade, "bundles": bench_bundles, "decode": bench_decode, "_decode_one": _decode_one}[
        args.cmd
    ](args)


if __name__ == "__main__":
    sys.exit(main())
