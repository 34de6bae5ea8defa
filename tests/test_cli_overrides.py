"""Strict overrides: a `python -m monai.bundle run` override that names no config id is a one-line error naming
the closest id, before anything runs (it used to be ignored silently: `--guidance 9.0` sampled with the default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN = str(Path(__import__("monai").__file__).parent / "bundle" / "__main__.py")
OCT = ["--config_file", "['bundles/oct_ldm/configs/inference.json','bundles/oct_ldm/configs/train.json']",
       "--bundle_root", "bundles/oct_ldm"]


@pytest.mark.parametrize("args, message", [
    (["--guidance", "9.0"], "unknown override --guidance: this bundle has no id 'guidance'; did you mean --guidance_scale?"),
    (["--autoencoder_train#max_epoch=1"], "did you mean --autoencoder_train#max_epochs?"),
    (["--zzzz", "1"], "unknown override --zzzz: this bundle has no id 'zzzz'; see the bundle's configs"),
])
def test_unknown_override_is_named_with_the_closest_id(args, message):
    from common.cli import OverrideError, check_overrides

    with pytest.raises(OverrideError) as err:
        check_overrides([MAIN, "run", "train_autoencoder", *OCT, *args])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_known_overrides_and_other_programs_pass():
    from common.cli import check_overrides

    check_overrides([MAIN, "run", *OCT, "--guidance_scale", "2", "--autoencoder_train#max_epochs", "1",
                     "--meta_file", "bundles/oct_ldm/configs/metadata.json", "--diffusion_train#dataset#seed=3"])
    check_overrides(["pytest", "--guidance", "9"])  # not a bundle run: nothing to check


def test_command_line_exits_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                        "bundles/cxr_vqvae_transformer/configs/inference.json", "--bundle_root",
                        "bundles/cxr_vqvae_transformer", "--output_dir", str(out), "--temprature", "0.5"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown override --temprature") and "did you mean --temperature?" in last
    assert not out.exists()


def test_only_rank_zero_logs_information_under_torchrun(monkeypatch):
    import logging

    from common.cli import quiet_other_ranks

    log = logging.getLogger("zoo.test")
    log.setLevel(logging.DEBUG)
    try:
        monkeypatch.setenv("RANK", "1")
        quiet_other_ranks()
        assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)
    finally:
        logging.disable(logging.NOTSET)
    monkeypatch.setenv("ZOO_LOG_ALL_RANKS", "1")  # asked for: every rank logs
    quiet_other_ranks()
    assert log.isEnabledFor(logging.INFO)
    monkeypatch.delenv("ZOO_LOG_ALL_RANKS")
    monkeypatch.setenv("RANK", "0")
    quiet_other_ranks()
    assert log.isEnabledFor(logging.INFO)
