"""The bundles' configs/evaluate.json: they parse, reuse their inference.json's autoencoder, and run end to end
(here on a tiny set, metrics that need no network) writing the report where output_dir says."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {"brain_ldm_3d": ".nii.gz", "cxr_text_ldm": ".png"}


def _write(path, arr):
    if path.suffix == ".png":
        Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    else:
        nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), path)


def _parser(bundle, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    configs = REPO / "bundles" / bundle / "configs"
    parser.read_config([str(configs / "inference.json"), str(configs / "evaluate.json")])  # the overlay
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_evaluate_config_defaults_and_autoencoder_reference(bundle):
    from monai.networks.nets import AutoencoderKL

    parser = _parser(bundle)
    assert parser["run"] == "$@evaluator.run_cli()" and parser["evaluator"]["_target_"] == "common.evaluation.EvaluationRunner"
    assert {"fid", "ms_ssim_diversity", "mmd", "ms_ssim_reconstruction"} <= set(parser["metrics"])
    assert isinstance(parser.get_parsed_content("autoencoder"), AutoencoderKL)  # the def from inference.json
    assert _parser(bundle, metrics=["mmd"]).get_parsed_content("autoencoder") is None


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_evaluate_config_runs_and_writes_the_report(bundle, tmp_path):
    suffix = BUNDLES[bundle]
    shape = (12, 14, 12) if suffix == ".nii.gz" else (24, 24)
    rng = np.random.default_rng(0)
    (tmp_path / "samples").mkdir(), (tmp_path / "data").mkdir()
    for i in range(3):
        _write(tmp_path / "samples" / f"s{i}{suffix}", rng.random(shape))
        _write(tmp_path / "data" / f"r{i}{suffix}", rng.random(shape))
    (tmp_path / "data" / "datalist.json").write_text(json.dumps({"test": [{"image": f"r{i}{suffix}"} for i in range(3)]}))
    parser = _parser(bundle, samples_dir=str(tmp_path / "samples"), datalist=str(tmp_path / "data" / "datalist.json"),
                     output_dir=str(tmp_path / "eval"), metrics=["ms_ssim_diversity", "mmd"], spatial_size=list(shape),
                     progress=False, device="cpu")
    report = parser.get_parsed_content("run")
    on_disk = json.loads((tmp_path / "eval" / "evaluation_report.json").read_text())
    assert on_disk["name"] == bundle and [r["metric"] for r in on_disk["results"]] == ["ms_ssim_diversity", "mmd"]
    assert on_disk["results"] == report["results"] and 0 <= report["results"][0]["value"] < 0.5  # random images


def test_bundle_run_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    """`run` goes through run_cli: SystemExit passes MONAI's `except Exception` wrapping of config expressions."""
    (tmp_path / "samples").mkdir()
    parser = _parser("cxr_text_ldm", samples_dir=str(tmp_path / "samples"), output_dir=str(tmp_path / "eval"), metrics=["mmd"])
    with pytest.raises(SystemExit) as exc:
        parser.get_parsed_content("run")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: samples folder") and "\n" not in err
    assert not (tmp_path / "eval").exists()
