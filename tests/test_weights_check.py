"""Inference checks a bundle's shipped weights against the sha256 the zoo index lists: a tampered but loadable
file is refused with one line naming the fix (download --force, or --check_weights false for weights you
trained), and nothing is written; weights outside the bundle (--model_dir) are the user's and load unchecked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tampered_copy(tmp_path: Path) -> Path:
    """oct_ldm copied, one byte of a weight tensor changed (the file still loads)."""
    bundle = tmp_path / "oct_ldm"
    shutil.copytree(REPO / "bundles" / "oct_ldm", bundle)
    weights = bundle / "models" / "diffusion_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's data: a tiny change of one float
    weights.write_bytes(bytes(data))
    return bundle


def _sample(bundle: Path, out: Path, **kw):
    from monai.bundle import run

    run(config_file=str(bundle / "configs" / "inference.json"), logging_file=None, bundle_root=str(bundle),
        output_dir=str(out), num_inference_steps=2, progress=False, device="cpu", **{"class": "cnv"}, **kw)


def test_tampered_shipped_weights_are_refused_in_one_line(tmp_path):
    bundle = _tampered_copy(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        _sample(bundle, out)
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    hit = [m for m in chain if "is not that of the oct_ldm" in m]
    assert hit and "\n" not in hit[0], chain
    assert "python -m common.zoo download oct_ldm --force" in hit[0] and "--check_weights false" in hit[0]
    assert not out.exists()
    # the user's own weights: accepted when asked for
    _sample(bundle, out, check_weights=False)
    assert len(list(out.glob("*.png"))) == 1


def test_shipped_weights_pass_and_other_folders_are_not_checked(tmp_path):
    from common.zoo.index import checked_weights

    bundle = REPO / "bundles" / "oct_ldm"
    path = bundle / "models" / "diffusion_model.safetensors"
    assert checked_weights(bundle, path) == str(path)
    mine = tmp_path / "diffusion_model.safetensors"
    mine.write_bytes(b"not checked here: load_into reports what is wrong with it")
    assert checked_weights(bundle, mine) == str(mine)
