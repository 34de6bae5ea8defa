"""SIGKILL during training: the same command resumes from the newest checkpoint that loads and loses at most one
checkpoint interval of progress (docs/reliability.md)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTERVAL = 2
TINY = ["--autoencoder_def#channels", "[8,16,16]", "--autoencoder_def#norm_num_groups", "8",
        "--discriminator_def#num_layers_d", "1", "--discriminator_def#channels", "8", "--image_size", "[64,64]",
        "--autoencoder_train#batch_size", "4", "--autoencoder_train#checkpoint_interval", str(INTERVAL),
        "--num_threads", "1"]


def _command(datalist: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "train_autoencoder", "--config_file",
            "['bundles/oct_ldm/configs/inference.json','bundles/oct_ldm/configs/train.json']",
            "--bundle_root", "bundles/oct_ldm", "--datalist", str(datalist), "--output_dir", str(out),
            "--autoencoder_train#max_epochs", str(epochs), *TINY]


def _iterations(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.glob("*.pt") if (m := re.search(r"iteration=(\d+)", p.name)))


def test_sigkill_then_rerun_resumes_within_one_checkpoint_interval(tmp_path):
    from common.data.make import make
    from common.weights import read_metadata

    datalist = make("oct", 10, tmp_path / "data", seed=2, size="64", progress=False)
    out = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_command(datalist, out, 500), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = out / "autoencoder" / "checkpoints"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and (not ckpt.is_dir() or max(_iterations(ckpt), default=0) < 4 * INTERVAL):
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    saved = _iterations(ckpt)
    assert saved and proc.returncode == -signal.SIGKILL
    newest = saved[-1]
    epochs = newest // 2 + 2  # 8 training images, batch 4: 2 iterations per epoch
    r = subprocess.run(_command(datalist, out, epochs), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r"resumed from \S+ at epoch \d+, iteration (\d+)", r.stdout)
    assert found, r.stdout[-2000:]
    resumed = int(found.group(1))
    assert newest - INTERVAL <= resumed <= newest  # at most one checkpoint interval lost
    assert int(read_metadata(out / "models" / "autoencoder.safetensors")["iteration"]) == 2 * epochs
