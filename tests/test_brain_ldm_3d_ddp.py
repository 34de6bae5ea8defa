"""brain_ldm_3d multi_gpu_train.json: two CPU processes (gloo) train both stages for a few iterations with
torchrun + `monai.bundle run`, each rank seeing its own half of the data (DistributedSampler)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from test_brain_ldm_3d import TINY_AE, TINY_DISC, TINY_UNET, write_tiny_population

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_ldm_3d" / "configs"


def _override_args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "") if isinstance(value, list) else str(value)]
    return args


def test_ddp_two_cpu_processes_both_stages(tmp_path):
    from common.weights import load_weights, read_metadata

    datalist = write_tiny_population(tmp_path / "data", n=4)
    root, runs = tmp_path / "bundle", tmp_path / "runs"
    common = {"bundle_root": root, "datalist": datalist, "output_dir": runs, "image_size": [16, 16, 16],
              "num_threads": 1, "diffusion_train#log_interval": 1, **TINY_AE, **TINY_DISC, **TINY_UNET,
              "autoencoder_train#patch_size": [16, 16, 16], "autoencoder_train#batch_size": 1,
              "autoencoder_train#max_epochs": 1, "autoencoder_train#perceptual_network": "$None",
              "autoencoder_train#log_interval": 1,
              "diffusion_train#batch_size": 1, "diffusion_train#max_epochs": 1}
    config = f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    # every rank's log lines (rank 0 alone logs by default): the test compares the two ranks' losses
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), ZOO_LOG_ALL_RANKS="1")
    for stage in ("autoencoder", "diffusion"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "monai.bundle", "run", f"train_{stage}", "--config_file", config,
               *_override_args(common)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # 4 subjects over 2 ranks, batch 1: 2 iterations per rank for the epoch
        assert "Iter: 2/2" in proc.stderr + proc.stdout, (proc.stderr + proc.stdout)[-2000:]
        assert "Iter: 3/" not in proc.stderr + proc.stdout
        if stage == "diffusion":  # ranks draw different noise (seed + rank), so their losses differ
            losses = [line.rsplit(":", 1)[1].strip() for line in (proc.stderr + proc.stdout).splitlines()
                      if "Iter: 1/2 -- loss" in line]
            assert len(losses) == 2 and losses[0] != losses[1], losses
    ae_meta = read_metadata(runs / "models" / "autoencoder.safetensors")
    dm_meta = read_metadata(runs / "models" / "diffusion_model.safetensors")
    assert ae_meta["iteration"] == "2" and dm_meta["iteration"] == "2" and float(dm_meta["scale_factor"]) > 0
    state, _ = load_weights(runs / "models" / "diffusion_model.safetensors")
    assert not any(k.startswith("module.") for k in state)  # DDP wrapper unwrapped before saving
