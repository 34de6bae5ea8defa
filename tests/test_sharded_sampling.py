"""Sampling sharded over processes with torchrun: each rank samples its own block of indices, two processes write
exactly the files one process writes, and skip_existing redoes only the missing samples on a rerun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["-m", "monai.bundle", "run", "--config_file", "bundles/oct_ldm/configs/inference.json", "--bundle_root",
        "bundles/oct_ldm", "--class", "cnv", "--num_samples", "5", "--batch_size", "2", "--num_inference_steps", "2",
        "--scheduler", "dpmpp2m", "--seed", "3", "--progress", "false"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           *ARGS, "--output_dir", str(out), *extra], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)


def test_shard_blocks_and_batches():
    from common.sampling.runner import contiguous_batches, shard_indices

    os.environ.update(WORLD_SIZE="2", RANK="1")
    try:
        assert shard_indices(5) == [2, 3, 4]
    finally:
        del os.environ["WORLD_SIZE"], os.environ["RANK"]
    assert shard_indices(5) == [0, 1, 2, 3, 4]
    assert contiguous_batches([0, 1, 2, 4, 5, 9], 2) == [(0, 2), (2, 3), (4, 6), (9, 10)]


def test_two_processes_write_the_files_of_one_and_skip_finished_ones(tmp_path):
    one = subprocess.run([sys.executable, *ARGS, "--output_dir", str(tmp_path / "one")], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    r = _torchrun(tmp_path / "two")
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == [f"oct_cnv_seed3_{i:04d}.png" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == files
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # a rerun after a crash: only the missing sample is made again
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir()}
    (tmp_path / "two" / files[3]).unlink()
    r = _torchrun(tmp_path / "two", "--skip_existing", "true")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "finished sample(s) kept" in r.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir()}
    assert sorted(after) == files
    assert all(after[n] == mtimes[n] for n in files if n != files[3])
    assert (tmp_path / "two" / files[3]).read_bytes() == (tmp_path / "one" / files[3]).read_bytes()


def test_another_batch_size_gives_the_same_samples_within_one_grey_level(tmp_path):
    """README: another --batch_size gives the same samples up to float rounding (at most one grey level)."""
    import numpy as np
    from PIL import Image

    outs = {}
    for batch in ("1", "3"):
        args = [a if a != "2" or i != ARGS.index("--batch_size") + 1 else batch for i, a in enumerate(ARGS)]
        r = subprocess.run([sys.executable, *args, "--output_dir", str(tmp_path / batch)], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[batch] = [np.asarray(Image.open(p), dtype=np.int16) for p in sorted((tmp_path / batch).iterdir())]
    assert len(outs["1"]) == len(outs["3"]) == 5
    assert max(int(np.abs(a - b).max()) for a, b in zip(outs["1"], outs["3"])) <= 1
